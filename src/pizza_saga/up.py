"""`pizza up`: everything a developer needs in one process.

The Temporal dev server (as `pizza server` runs it, with the Web UI's codec server), a worker
and the API with the pages, until Ctrl-C or SIGTERM; then all of it stops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from pizza_saga.api.server import ApiServer
from pizza_saga.app import (
    Telemetry,
    adopt_version,
    api_hosts,
    build_api,
    build_service,
    build_worker_for,
    connect_client,
    ensure_schedules,
    housekeeping,
    open_stores,
    prepare_namespace,
)
from pizza_saga.common.devserver import DevServerConfig, describe_exit
from pizza_saga.common.settings import Settings
from pizza_saga.embedded import embedded_temporal
from pizza_saga.runtime import WorkerStopped, host_worker, log_to


@dataclass(frozen=True)
class Ports:
    """Where `pizza up` listens."""

    host: str
    """Address of the API and pages."""
    api: int
    codec: int


class Stopped(Exception):
    """Something `pizza up` runs ended by itself; the message says what and where to look."""


async def run_up(
    settings: Settings,
    server: DevServerConfig,
    ports: Ports,
    console: Console,
    stop: asyncio.Event,
    *,
    telemetry: Telemetry | None = None,
) -> None:
    """Run the dev server, codec server, worker and API until ``stop`` is set.

    Raises Stopped if the dev server, the worker or the API ends before that; PortInUse or
    OSError if a port is taken.
    """
    log_file = settings.home / "pizza-up.log"
    log_to(log_file)
    async with embedded_temporal(settings, server, codec_port=ports.codec) as temporal:
        dev = temporal.server
        client = await connect_client(settings, telemetry, target_host=server.address)
        await prepare_namespace(client)
        await ensure_schedules(client, settings)
        stores = open_stores(settings)
        worker = build_worker_for(client, stores, settings)
        service = build_service(client, stores, settings)
        web = build_api(
            service,
            ui_url=server.ui_url,
            namespace=client.namespace,
            telemetry=telemetry,
            allowed_hosts=api_hosts(ports.host, settings),
        )
        async with ApiServer(
            web, host=ports.host, port=ports.api, trusted_proxies=settings.proxy_addresses
        ) as api:
            hosting = asyncio.create_task(
                host_worker(
                    worker,
                    stop,
                    alongside=[dev.exited(), *housekeeping(stores)],
                    once=[adopt_version(client, settings, take_over=True)],
                    before_drain=api.stop,
                ),
                name="worker",
            )
            # Ready means orders can be placed: the worker polls (placing refuses before).
            while not hosting.done() and not await service.worker_polling():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            console.print(
                f"Pages and API  {api.url}  (new order: {api.url}/orders/new, "
                f"API docs: {api.url}/docs)\n"
                f"Temporal       {server.address}, Web UI {server.ui_url} "
                f"(decoding through the codec server on port {ports.codec})\n"
                f"Worker         task queue {settings.task_queue}; log {log_file}\n"
                f"Metrics        http://{settings.metrics_address}/metrics\n"
                f"State          {settings.home}\n"
                + "".join(escape(line) + "\n" for line in temporal.access_help())
                + "Ctrl-C stops all of it.",
                soft_wrap=True,
            )
            try:
                await hosting
            except WorkerStopped as err:
                raise Stopped(f"{err}; see {log_file}") from None
            if stop.is_set():
                return
            if dev.process.returncode is not None:
                raise Stopped(
                    "the Temporal dev server stopped unexpectedly "
                    f"({describe_exit(dev.process.returncode)}); see {dev.log_file}"
                )
            raise Stopped(f"the worker stopped unexpectedly; see {log_file}")
