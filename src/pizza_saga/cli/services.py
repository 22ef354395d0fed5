"""`pizza worker` and `pizza api`: the processes a deployment runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import typer
from temporalio.worker import Interceptor

from pizza_saga.cli._shared import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    app,
    connect_temporal,
    fail,
    load_settings,
    log,
    out,
    telemetry_for,
    temporal_target,
    web_ui,
)
from pizza_saga.common.settings import Settings
from pizza_saga.runtime import WorkerStopped, host_worker, run_until_signal


@app.command()
def worker() -> None:
    """Run the worker for orders on task queue PIZZA_TASK_QUEUE, until Ctrl-C or SIGTERM.

    Waits for Temporal if it is not up yet. On SIGTERM or Ctrl-C it stops taking tasks and
    lets running activities finish (at most PIZZA_SHUTDOWN_GRACE_SECONDS), then exits 0.
    """
    serve_worker(load_settings())


def serve_worker(settings: Settings, *, interceptors: Sequence[Interceptor] = ()) -> None:
    """`pizza worker` on ``settings``, its worker with ``interceptors`` too (until a signal)."""
    from pizza_saga.app import (
        adopt_version,
        build_service,
        build_worker_for,
        check_store_keys,
        ensure_schedules,
        housekeeping,
        open_stores,
        prepare_namespace,
        set_up_logging,
    )
    from pizza_saga.order.metrics import report_orders_needing_operator

    set_up_logging(settings)
    telemetry = telemetry_for(settings, service_name="pizza-worker")

    async def run(stop: asyncio.Event) -> None:
        try:
            await serve(stop)
        finally:
            telemetry.flush()

    async def serve(stop: asyncio.Event) -> None:
        # Misconfiguration is said at once, not after waiting for Temporal.
        temporal_target()
        check_store_keys(settings)
        client = await connect_temporal(settings, retry_until=stop, telemetry=telemetry)
        if client is None:
            log.info("stopped before Temporal answered")
            return
        stores = open_stores(settings)
        await prepare_namespace(client)
        await ensure_schedules(client, settings)
        if stop.is_set():
            return
        worker = build_worker_for(client, stores, settings, interceptors=interceptors)
        metrics = f"; metrics on http://{settings.metrics_address}/metrics"
        out.print(
            f"Worker polling {settings.task_queue} with {settings.activity_slots} activity and "
            f"{settings.workflow_slots} workflow task slots; state in {settings.home}"
            f"{metrics if settings.metrics_address else ''} (Ctrl-C or SIGTERM to stop)",
            soft_wrap=True,
        )
        alongside = housekeeping(stores)
        if settings.metrics_address:
            waiting = build_service(client, stores, settings)
            alongside.append(report_orders_needing_operator(waiting, telemetry.meter))

        async def announce_drain() -> None:
            log.info(
                "stopping: polling no more; running activities have up to %g s to finish",
                settings.shutdown_grace_seconds,
            )

        try:
            await host_worker(
                worker,
                stop,
                alongside=alongside,
                once=[adopt_version(client, settings)],
                before_drain=announce_drain,
            )
        except WorkerStopped as e:  # the SDK's fatal worker errors (namespace gone, ...)
            fail(str(e), EXIT_FAILED)
        log.info("worker stopped")

    run_until_signal(run)


def ensure_operators_for(host: str, settings: Settings) -> None:
    """Exit (2) if ``host`` is reachable from other machines and no operator key exists."""
    import ipaddress

    from pizza_saga.app import open_stores

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: reachable from wherever it resolves
        loopback = False
    if loopback or open_stores(settings).operators.any_active():
        return
    fail(
        f"--host {host}: the API would be open to the network with no operator key; make "
        "one first (`pizza operator add NAME`), or serve on 127.0.0.1"
    )


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API (/api, /docs) and the order pages, until Ctrl-C.

    On an address other than loopback only once an operator key exists (`pizza operator
    add`): without one, nobody could resolve, restock or read payments there.
    """
    from pizza_saga.app import api_hosts, build_api, build_service, open_stores, set_up_logging

    settings = load_settings()
    ensure_operators_for(host, settings)
    set_up_logging(settings)
    telemetry = telemetry_for(settings, service_name="pizza-api", http=True)

    async def run(stop: asyncio.Event) -> None:
        from pizza_saga.api.server import ApiServer

        client = await connect_temporal(settings, telemetry=telemetry)
        service = build_service(client, open_stores(settings), settings)
        ui_url, namespace = web_ui(settings)
        web = build_api(
            service,
            ui_url=ui_url,
            namespace=namespace,
            telemetry=telemetry,
            allowed_hosts=api_hosts(host, settings),
        )
        try:
            server = ApiServer(web, host=host, port=port, trusted_proxies=settings.proxy_addresses)
            await server.start()
        except OSError as e:
            fail(f"--port {port}: cannot listen on {host}:{port}: {e.strerror}", EXIT_UNAVAILABLE)
        metrics = f"; metrics on http://{settings.metrics_address}/metrics"
        out.print(
            f"API and pages on {server.url} (docs: /docs"
            f"{metrics if settings.metrics_address else ''}; Ctrl-C to stop)"
        )
        try:
            await stop.wait()  # SIGTERM or Ctrl-C: end the event streams, finish requests
        finally:
            await server.stop()
            telemetry.flush()

    run_until_signal(run)
