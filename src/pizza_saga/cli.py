"""The `pizza` command: run the server and worker, place and follow orders, look at state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from pizza_saga.common.errors import describe_validation_error
from pizza_saga.common.settings import Settings, SettingsError

app = typer.Typer(
    help="A pizza order service on Temporal whose orders run as sagas.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store database (stock, payments).", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Off a terminal rich assumes 80 columns; the ledger table needs more to stay readable.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3
DEFAULT_METRICS_PORT = 9464
"""Where `pizza up` and the demo serve metrics unless PIZZA_METRICS_ADDRESS says otherwise."""
EXIT_CONFLICT = 4
"""The order is not in a state the command can act on (finished, nothing waits)."""

CONNECT_RETRY_FIRST_SECONDS = 0.5
CONNECT_RETRY_MAX_SECONDS = 10.0
"""`pizza worker` waits for Temporal: retries 0.5 s apart, doubling up to 10 s."""

log = logging.getLogger("pizza_saga.cli")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main() -> None:
    """Entry point of the `pizza` console script."""
    from temporalio.service import RPCError

    from pizza_saga.common.db import StoreError
    from pizza_saga.order.service import ServiceError

    code: int = 0
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UserError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        code = e.exit_code
    except StoreError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        code = EXIT_INVALID
    except ServiceError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        code = _exit_code(e)
    except RPCError as e:
        # The service said no (permissions, limits, outage): its words, not a traceback.
        err.print(f"[red]error:[/] Temporal refused the request: {e.message}")
        code = EXIT_UNAVAILABLE
    _exit(code)


def _exit_code(error: Exception) -> int:
    """The exit status of a service error (the API answers the same errors with HTTP codes)."""
    from pizza_saga.order.service import (
        AlreadyFinished,
        NothingToResolve,
        NoWorker,
        TemporalUnavailable,
    )

    if isinstance(error, AlreadyFinished | NothingToResolve):
        return EXIT_CONFLICT
    if isinstance(error, TemporalUnavailable | NoWorker):
        return EXIT_UNAVAILABLE
    return EXIT_INVALID


def _exit(code: int) -> NoReturn:
    # The Temporal SDK's native threads can crash the interpreter while it finalizes
    # (SIGABRT in PyGILState_Release, or SIGSEGV; temporalio/sdk-python#300): once the
    # command's work and output are done, flush everything and leave without finalizing.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`) is no error
            stream.flush()
    os._exit(code)


def _fail(message: str, exit_code: int = EXIT_INVALID) -> NoReturn:
    raise UserError(message, exit_code)


def _print_json(text: str) -> None:
    # Plain JSON on stdout, byte for byte what scripts parse; no terminal styling.
    sys.stdout.write(text + "\n")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as e:
        _fail(str(e))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM stops it as Ctrl-C does, cleanly."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(stop)``: SIGTERM or Ctrl-C sets ``stop`` for a graceful end; a second
    signal ends the process at once (exit 130)."""

    async def runner() -> T:
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                log.warning("second stop signal: exiting now")
                _exit(130)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        return await main(stop)

    return asyncio.run(runner())


def _retry_delays() -> Iterator[float]:
    """Seconds between attempts to reach Temporal: 0.5, 1, 2, 4, 8, then 10 for ever."""
    delay = CONNECT_RETRY_FIRST_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, CONNECT_RETRY_MAX_SECONDS)


def _unreachable_reason(error: Exception) -> str:
    """The operating system's words for a failed connect ("Connection refused"), if given."""
    found = re.search(r'message: "([^"]+)"', str(error))
    return found.group(1) if found else " ".join(str(error).split())


async def _client(
    settings: Settings, *, retry_until: asyncio.Event | None = None, telemetry: Any = None
) -> Any:
    """A client of the configured Temporal namespace (reporting through ``telemetry``).

    Bad configuration exits 2 at once. Temporal unreachable exits 3; with ``retry_until``
    it is retried with exponential backoff, logging each attempt, until it answers, or
    until the event is set (then None).
    """
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.service import RPCError, RPCStatusCode

    from pizza_saga.app import connect_client
    from pizza_saga.common.crypto import KeyRingError
    from pizza_saga.common.temporal import connect_config

    try:
        config = connect_config()
    except Exception as e:  # the SDK's config loader reports bad TEMPORAL_* values
        _fail(f"Temporal client configuration: {e}")
    address, namespace = config["target_host"], config["namespace"]
    host, _, port = str(address).rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(f"TEMPORAL_ADDRESS: {address!r} is not a host:port address")
    delays = _retry_delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            client = await connect_client(settings, telemetry)
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            return client
        except KeyRingError as e:
            _fail(str(e))
        except ValueError as e:
            _fail(f"TEMPORAL_ADDRESS: {address!r} is not a host:port address ({e})")
        except RuntimeError as e:
            if retry_until is None:
                _fail(
                    f"cannot reach Temporal at {address}: {e}. "
                    "Start it with `pizza server` or set TEMPORAL_ADDRESS.",
                    EXIT_UNAVAILABLE,
                )
            reason = _unreachable_reason(e)
        except RPCError as e:
            if e.status is RPCStatusCode.NOT_FOUND:
                _fail(f"TEMPORAL_NAMESPACE: namespace {namespace!r} does not exist at {address}")
            if retry_until is None or e.status is not RPCStatusCode.UNAVAILABLE:
                raise
            reason = e.message
        delay = next(delays)
        log.warning(
            "cannot reach Temporal at %s (attempt %d: %s); retrying in %.1f s",
            address,
            attempt,
            reason,
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(retry_until.wait(), delay)
        if retry_until.is_set():
            return None


def _telemetry(settings: Settings, *, service_name: str, http: bool = False) -> Any:
    """The process's metrics endpoint and tracer, as configured; exits 3 if the metrics
    address cannot be served."""
    from pizza_saga.app import start_telemetry
    from pizza_saga.common.telemetry import MetricsUnavailable

    try:
        return start_telemetry(settings, service_name=service_name, http=http)
    except MetricsUnavailable as e:
        _fail(str(e), EXIT_UNAVAILABLE)


def _with_metrics(settings: Settings) -> Settings:
    """``settings`` with metrics on for a developer's all-in-one process (`pizza up`, the
    demo): PIZZA_METRICS_ADDRESS if set, else 127.0.0.1:9464, else any free port."""
    if settings.metrics_address:
        return settings
    from pizza_saga.common.devserver import free_port

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_METRICS_PORT))
            port = DEFAULT_METRICS_PORT
        except OSError:
            port = free_port()
    return settings.model_copy(update={"metrics_address": f"127.0.0.1:{port}"})


def _ui_url(settings: Settings) -> tuple[str, str]:
    from pizza_saga.common.temporal import connect_config

    config = connect_config()
    if settings.ui_url:
        return settings.ui_url, config["namespace"]
    host, _, port = str(config["target_host"]).rpartition(":")
    ui_port = int(port) + 1000 if port.isdigit() else 8233
    return f"http://{host or 'localhost'}:{ui_port}", config["namespace"]


@app.command()
def server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Frontend gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Web UI port.")] = 8233,
    db_filename: Annotated[
        Path | None,
        typer.Option(help="SQLite file of the server's state (default: PIZZA_HOME/temporal.db)."),
    ] = None,
    codec_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the codec server for the Web UI.")
    ] = 8081,
) -> None:
    """Run the Temporal dev server, its Web UI and the UI's codec server, until Ctrl-C.

    Exits 3 if a port is taken, 1 if the dev server dies under it.
    """
    from pizza_saga.app import SEARCH_ATTRIBUTES
    from pizza_saga.common.codec_auth import TokenError, codec_token
    from pizza_saga.common.codec_server import access_help, serving, ui_origins
    from pizza_saga.common.crypto import EncryptionCodec, KeyRingError
    from pizza_saga.common.devserver import (
        DevServerConfig,
        PortInUse,
        describe_exit,
        ensure_free,
        running_dev_server,
    )
    from pizza_saga.common.temporal import key_ring

    settings = _settings()
    ports = {"--port": port, "--ui-port": ui_port, "--codec-port": codec_port}
    for option, number in ports.items():
        clash = [other for other, n in ports.items() if n == number and other != option]
        if clash:
            _fail(f"{option}: {number} is also {clash[0]}; give each its own port")
    config = DevServerConfig(
        db_filename=db_filename or settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
        codec_endpoint=f"http://localhost:{codec_port}",
    )
    log_file = settings.home / "temporal-server.log"
    codec_log = settings.home / "codec-server.log"
    try:
        ensure_free(ports)
    except PortInUse as e:
        _fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
    try:
        codec = EncryptionCodec(key_ring(settings, config.address))
        token = codec_token(settings)
    except (KeyRingError, TokenError) as e:
        _fail(str(e))
    _log_codec_requests(logging.FileHandler(codec_log))

    async def run() -> None:
        try:
            async with (
                serving(codec, codec_port, ui_origins(ui_port), token=token.value) as endpoint,
                running_dev_server(config, log_file) as dev,
            ):
                out.print(
                    f"Temporal dev server on {config.address}, Web UI {config.ui_url} "
                    f"(decoding through the codec server on port {codec_port}), "
                    f"state in {config.db_filename} (Ctrl-C to stop)"
                )
                for line in access_help(endpoint, token, ui_url=config.ui_url):
                    out.print(escape(line), soft_wrap=True)
                out.print(f"  Codec server requests are logged to {codec_log}")
                returncode = await dev.exited()
        except PortInUse as e:  # taken between the check and the start
            _fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
        except TimeoutError as e:
            _fail(f"{e}; see {log_file}", EXIT_UNAVAILABLE)
        except OSError as e:
            _fail(f"cannot start: {e}", EXIT_UNAVAILABLE)
        except RuntimeError as e:
            _fail(str(e), EXIT_UNAVAILABLE)
        # The codec server has stopped with the block: nothing of ours is left listening.
        _fail(
            f"the Temporal dev server stopped unexpectedly ({describe_exit(returncode)}); "
            f"see {log_file}",
            EXIT_FAILED,
        )

    _run(run())


def _log_codec_requests(handler: logging.Handler) -> None:
    """Send the codec server's one line per request to ``handler``, card numbers masked."""
    from pizza_saga.common.codec_server import log as codec_log
    from pizza_saga.common.logmask import install_card_masking

    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    codec_log.addHandler(handler)
    codec_log.setLevel(logging.INFO)
    codec_log.propagate = False
    install_card_masking(codec_log)


@app.command("codec-server")
def codec_server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8081,
    origin: Annotated[
        list[str] | None,
        typer.Option(help="Web UI origin allowed to call it (repeatable).", show_default=False),
    ] = None,
) -> None:
    """Serve /encode and /decode for a Temporal Web UI (default origin: localhost:8233).

    Only to holders of its token (PIZZA_CODEC_TOKEN, PIZZA_CODEC_TOKEN_FILE or one made
    once in PIZZA_HOME); logs each request to stderr.
    """
    from pizza_saga.common.codec_auth import TokenError, codec_token
    from pizza_saga.common.codec_server import access_help, serving, ui_origins
    from pizza_saga.common.crypto import EncryptionCodec, KeyRingError
    from pizza_saga.common.temporal import connect_config, key_ring

    settings = _settings()
    try:
        codec = EncryptionCodec(key_ring(settings, connect_config()["target_host"]))
        token = codec_token(settings)
    except (KeyRingError, TokenError) as e:
        _fail(str(e))
    origins = origin or ui_origins(8233)
    _log_codec_requests(logging.StreamHandler())

    async def run() -> None:
        try:
            async with serving(codec, port, origins, token=token.value) as url:
                out.print(f"Codec server on {url} for {', '.join(origins)} (Ctrl-C to stop)")
                for line in access_help(url, token, ui_url=origins[0]):
                    out.print(escape(line), soft_wrap=True)
                await asyncio.Event().wait()
        except OSError as e:
            _fail(f"--port {port}: cannot listen: {e.strerror}", 3)

    _run(run())


@app.command()
def worker() -> None:
    """Run the worker for orders on task queue PIZZA_TASK_QUEUE, until Ctrl-C or SIGTERM.

    Waits for Temporal if it is not up yet. On SIGTERM or Ctrl-C it stops taking tasks and
    lets running activities finish (at most PIZZA_SHUTDOWN_GRACE_SECONDS), then exits 0.
    """
    from pizza_saga.app import (
        build_service,
        build_worker_for,
        open_stores,
        prepare_namespace,
        set_up_logging,
    )
    from pizza_saga.common.faults import CrashAt
    from pizza_saga.order.metrics import report_orders_needing_operator

    settings = _settings()
    set_up_logging(settings)
    telemetry = _telemetry(settings, service_name="pizza-worker")

    async def run(stop: asyncio.Event) -> None:
        try:
            await serve(stop)
        finally:
            telemetry.flush()

    async def serve(stop: asyncio.Event) -> None:
        client = await _client(settings, retry_until=stop, telemetry=telemetry)
        if client is None:
            log.info("stopped before Temporal answered")
            return
        stores = open_stores(settings)
        await prepare_namespace(client)
        if stop.is_set():
            return
        faults = [CrashAt(settings.crash_at)] if settings.crash_at else []
        worker = build_worker_for(client, stores, settings, interceptors=faults)
        metrics = f"; metrics on http://{settings.metrics_address}/metrics"
        out.print(
            f"Worker polling {settings.task_queue} with {settings.activity_slots} activity and "
            f"{settings.workflow_slots} workflow task slots; state in {settings.home}"
            f"{metrics if settings.metrics_address else ''} (Ctrl-C or SIGTERM to stop)",
            soft_wrap=True,
        )
        if settings.metrics_address:
            waiting = build_service(client, stores, settings)
            reporting = asyncio.create_task(
                report_orders_needing_operator(waiting, telemetry.meter)
            )
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not running.done():
            log.info(
                "stopping: polling no more; running activities have up to %g s to finish",
                settings.shutdown_grace_seconds,
            )
            await worker.shutdown()
        if settings.metrics_address:
            reporting.cancel()
        try:
            await running
        except Exception as e:  # the SDK's fatal worker errors (namespace gone, ...)
            _fail(f"the worker stopped: {e}", EXIT_FAILED)
        log.info("worker stopped")

    _run_until_signal(run)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API (/api, /docs) and the order pages, until Ctrl-C."""
    from pizza_saga.app import build_api, build_service, open_stores, set_up_logging

    settings = _settings()
    set_up_logging(settings)
    telemetry = _telemetry(settings, service_name="pizza-api", http=True)

    async def run(stop: asyncio.Event) -> None:
        from pizza_saga.api.server import ApiServer

        client = await _client(settings, telemetry=telemetry)
        service = build_service(client, open_stores(settings), settings)
        ui_url, namespace = _ui_url(settings)
        web = build_api(service, ui_url=ui_url, namespace=namespace, telemetry=telemetry)
        try:
            server = ApiServer(web, host=host, port=port)
            await server.start()
        except OSError as e:
            _fail(f"--port {port}: cannot listen on {host}:{port}: {e.strerror}", EXIT_UNAVAILABLE)
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

    _run_until_signal(run)


def new_order_number() -> str:
    """A fresh order number, so every `pizza order` is a new order."""
    return f"XD{secrets.token_hex(4).upper()}"


def load_order(file: Path | None, card: str | None, order_number: str | None) -> Any:
    """The order to place: the file's (or the seed's), with the flags applied, validated."""
    from pizza_saga.order.example import example_order
    from pizza_saga.order.models import PizzaOrder

    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            _fail(f"--file {file}: cannot read it: {e}")
        try:
            order = PizzaOrder.model_validate_json(text)
        except ValidationError as e:
            _fail(describe_validation_error(e, f"--file {file}"))
        data = order.model_dump()
    else:
        data = example_order(order_number=new_order_number()).model_dump()
    for flag, value, path in (
        ("--order-number", order_number, ("order_number",)),
        ("--card", card, ("credit_card_info", "number")),
    ):
        if value is None:
            continue
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        try:
            PizzaOrder.model_validate(data)
        except ValidationError as e:
            _fail(describe_validation_error(e, flag))
    return PizzaOrder.model_validate(data)


@app.command()
def order(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Order as JSON (see --example).")
    ] = None,
    card: Annotated[str | None, typer.Option(help="Card number to pay with.")] = None,
    order_number: Annotated[
        str | None, typer.Option(help="Order number (default: the file's, or a new one).")
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start it and return.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    example: Annotated[
        bool,
        typer.Option(
            "--example", help="Print the seed's order, under a new number, as JSON and exit."
        ),
    ] = False,
) -> None:
    """Place an order and wait for its outcome (exit 0 completed, 1 failed, 2 bad input)."""
    from pizza_saga.order.example import example_order

    if example:
        # A new number each time: a file made from it can be placed (once) without editing.
        _print_json(example_order(order_number=new_order_number()).model_dump_json(indent=2))
        return
    settings = _settings()
    pizza_order = load_order(file, card, order_number)
    code = _run(_place(settings, pizza_order, wait=not no_wait, as_json=as_json))
    raise typer.Exit(code)


async def _service(settings: Settings, *, temporal: bool = True) -> Any:
    """The order service over the configured stores (and Temporal, unless ``temporal=False``)."""
    from pizza_saga.app import build_service, open_stores

    client = await _client(settings) if temporal else None
    return build_service(client, open_stores(settings), settings)


async def _place(settings: Settings, pizza_order: Any, *, wait: bool, as_json: bool) -> int:
    from pizza_saga.order.client import OrderStatus
    from pizza_saga.render import print_outcome, workflow_url

    service = await _service(settings)
    placed = await service.place(pizza_order)
    ui_url, namespace = _ui_url(settings)
    if not wait:
        if as_json:
            _print_json(
                placed.model_dump_json(include={"order_number", "workflow_id", "run_id", "status"})
            )
        else:
            out.print(
                f"Order {placed.order_number} placed: "
                f"{workflow_url(ui_url, namespace, placed.workflow_id, placed.run_id)}",
                soft_wrap=True,
            )
        return 0
    outcome = await _follow(service, placed.order_number)
    if as_json:
        _print_json(outcome.model_dump_json())
    else:
        print_outcome(out, outcome, ui_url, namespace)
    return 0 if outcome.status is OrderStatus.COMPLETED else EXIT_FAILED


async def _follow(service: Any, order_number: str) -> Any:
    """The order's final outcome; says on stderr, once, when its rollback needs a person."""
    from temporal_saga import CompensationState

    told: set[str] = set()
    outcome = None
    async for outcome in service.watch(order_number):
        for record in outcome.ledger or []:
            if (
                record.compensation_state is CompensationState.NEEDS_OPERATOR
                and record.step not in told
            ):
                told.add(record.step)
                err.print(
                    f"Order {order_number} waits for an operator: {record.compensation} "
                    f"(undoing {record.step}) failed {record.compensation_attempts} times"
                    f" ({escape(record.compensation_error or 'no error recorded')}). Run "
                    f"`pizza resolve {order_number} --retry` or "
                    f"`pizza resolve {order_number} --skip --reason TEXT`; still waiting..."
                )
    assert outcome is not None
    return outcome


@app.command()
def status(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """An order's outcome so far and its saga ledger."""
    from pizza_saga.render import print_outcome

    settings = _settings()

    async def run() -> None:
        outcome = await (await _service(settings)).outcome(order_number)
        if as_json:
            _print_json(outcome.model_dump_json())
        else:
            ui_url, namespace = _ui_url(settings)
            print_outcome(out, outcome, ui_url, namespace)

    _run(run())


@app.command()
def cancel(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Ask, and return.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Cancel an order: what it did is undone, then it ends CANCELLED (exit 0).

    Exit 4 when the order has already finished (nothing is cancelled).
    """
    from pizza_saga.order.client import OrderStatus
    from pizza_saga.render import print_outcome

    settings = _settings()

    async def run() -> int:
        service = await _service(settings)
        await service.cancel(order_number)
        if no_wait:
            out.print(f"Cancellation of order {order_number} requested")
            return 0
        outcome = await _follow(service, order_number)
        if as_json:
            _print_json(outcome.model_dump_json())
        else:
            print_outcome(out, outcome, *_ui_url(settings))
        return 0 if outcome.status is OrderStatus.CANCELLED else EXIT_FAILED

    raise typer.Exit(_run(run()))


@app.command()
def resolve(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    retry: Annotated[bool, typer.Option("--retry", help="Try the compensation again.")] = False,
    skip: Annotated[
        bool, typer.Option("--skip", help="Record that a person handled it; do not run it.")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --skip).")] = None,
    step: Annotated[
        str | None, typer.Option(help="Which step's compensation, if several wait.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the step as JSON.")] = False,
) -> None:
    """Decide about a compensation that needs an operator (see `pizza needs-operator`).

    Exit 4 when nothing waits for that decision (or the order has finished).
    """
    from pydantic import TypeAdapter
    from temporal_saga import OperatorAction, StepRecord

    from pizza_saga.render import ledger_table

    if retry == skip:
        _fail("say either --retry or --skip")
    settings = _settings()

    async def run() -> None:
        from pizza_saga.order.service import InvalidInput

        try:
            record = await (await _service(settings)).resolve(
                order_number,
                action=OperatorAction.RETRY if retry else OperatorAction.SKIP,
                step=step,
                reason=reason,
            )
        except InvalidInput as e:
            _fail(f"--{e.field}: {e.reason}" if e.field else str(e))
        if as_json:
            _print_json(TypeAdapter(StepRecord).dump_json(record).decode())
        else:
            out.print(ledger_table([record]))

    _run(run())


@app.command("needs-operator")
def needs_operator(
    as_json: Annotated[bool, typer.Option("--json", help="Print as a JSON list.")] = False,
) -> None:
    """Orders whose rollback waits for an operator's decision."""
    settings = _settings()

    async def run() -> None:
        service = await _service(settings)
        numbers: list[str] = []
        token = None
        while True:
            page = await service.list_orders(needs_operator=True, page_token=token)
            numbers += [summary.order_number for summary in page.orders]
            token = page.next_page_token
            if token is None:
                break
        if as_json:
            _print_json(json.dumps(numbers))
        elif numbers:
            for number in numbers:
                out.print(f"{number}  (pizza status {number})")
        else:
            out.print("No order needs an operator.")

    _run(run())


@app.command()
def inventory(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print as JSON: item -> quantity.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="ITEM=QUANTITY", help="Set an item's stock (repeatable)."),
    ] = None,
) -> None:
    """Pizzas on hand (and, with --set, restock)."""
    from pizza_saga.order.service import InvalidInput
    from pizza_saga.render import stock_table

    settings = _settings()
    changes: dict[str, int] = {}
    for assignment in set_ or []:
        item, sep, quantity = assignment.rpartition("=")
        if not sep or not quantity.isdigit():
            _fail(f"--set {assignment!r}: say ITEM=QUANTITY, with a whole number")
        changes[item] = int(quantity)
    service = _run(_service(settings, temporal=False))
    try:
        stock = service.set_stock(changes) if changes else service.stock()
    except InvalidInput as e:
        _fail(f"--set: {e}")
    if as_json:
        _print_json(json.dumps(stock))
    else:
        out.print(stock_table(stock))


@app.command()
def payments(
    as_json: Annotated[bool, typer.Option("--json", help="Print as a JSON list.")] = False,
    order_number: Annotated[
        str | None, typer.Option(help="Only this order's charge and refund.")
    ] = None,
) -> None:
    """Every charge and refund, oldest first (amounts in cents, only the card's last 4)."""
    from pizza_saga.render import payments_table

    service = _run(_service(_settings(), temporal=False))
    entries = service.payments(order_number=order_number)
    if as_json:
        _print_json(
            json.dumps(
                [
                    {
                        "order_number": p.order_number,
                        "kind": p.kind,
                        "amount": p.amount,
                        "card_last4": p.card_last4,
                        "created_at": p.created_at.isoformat(),
                    }
                    for p in entries
                ]
            )
        )
    else:
        out.print(payments_table(entries))


@app.command()
def bench(
    orders: Annotated[int, typer.Option(min=10, max=100_000, help="Orders to place.")] = 600,
    concurrency: Annotated[int, typer.Option(min=1, max=1000, help="Orders in flight.")] = 20,
    completed: Annotated[float, typer.Option(min=0, help="Share that completes.")] = 0.8,
    declined: Annotated[float, typer.Option(min=0, help="Share with a declined card.")] = 0.1,
    bill_failure: Annotated[float, typer.Option(min=0, help="Share whose bill bounces.")] = 0.1,
    results_path: Annotated[
        Path, typer.Option("--out", help="JSON results; the PNG plot goes beside it.")
    ] = Path("bench/results.json"),
    store: Annotated[
        str,
        typer.Option(
            help="sqlite, or postgres: the stores on a private PostgreSQL cluster the bench "
            "starts (needs PostgreSQL's server binaries).",
        ),
    ] = "sqlite",
    via: Annotated[
        str,
        typer.Option(
            help="client, or api: also place the orders through `pizza api` "
            "(POST /api/orders?wait=true) and measure its overhead against the client.",
        ),
    ] = "client",
) -> None:
    """Measure the order saga against the engine's limit on the same server (waits zero),
    with regular activities and in local mode."""
    from rich.progress import Progress

    from pizza_saga.bench.report import results_view, write_json, write_plot
    from pizza_saga.bench.run import BenchSettings, benchmark
    from pizza_saga.common.pgcluster import PostgresUnavailable

    if via not in ("client", "api"):
        _fail(f"--via: {via!r} is neither client nor api")
    if store not in ("sqlite", "postgres"):
        _fail(f"--store: {store!r} is neither sqlite nor postgres")
    if completed + declined + bill_failure <= 0:
        _fail("--completed, --declined, --bill-failure: at least one share must be above 0")
    bench_settings = BenchSettings(
        orders=orders,
        concurrency=concurrency,
        mix={"completed": completed, "declined": declined, "bill_failure": bill_failure},
        store="postgres" if store == "postgres" else "sqlite",
        via="api" if via == "api" else "client",
    )

    async def run() -> None:
        try:
            # Drawn twice a second: on a terminal its CPU counts as the client's (about 2 ms
            # a second; ten times a second with every phase shown it was about 95).
            with Progress(console=err, transient=True, refresh_per_second=2) as progress:
                results = await benchmark(bench_settings, progress)
        except PostgresUnavailable as e:
            _fail(f"--store postgres: {e}")
        write_json(results, results_path)
        plot = results_path.with_suffix(".png")
        plotted = write_plot(results, plot)
        out.print(results_view(results))
        out.print(f"Results: {results_path}" + (f" and {plot}" if plotted else " (no plot)"))

    _run(run())


@app.command()
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Frontend gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Web UI port.")] = 8233,
    codec_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the codec server for the Web UI.")
    ] = 8081,
) -> None:
    """The seed's scenario: a good order and a bad-card rollback on an embedded server.

    On a terminal it keeps serving the Web UI until Ctrl-C; otherwise it exits when done.
    """
    from pizza_saga.common.codec_auth import TokenError
    from pizza_saga.common.devserver import DevServerConfig, PortInUse
    from pizza_saga.demo import run_demo

    settings = _settings()
    from pizza_saga.app import SEARCH_ATTRIBUTES

    server = DevServerConfig(
        db_filename=settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    settings = _with_metrics(settings)
    telemetry = _telemetry(settings, service_name="pizza-demo", http=True)

    async def run() -> None:
        try:
            await run_demo(
                settings, server, codec_port, out, interactive=interactive, telemetry=telemetry
            )
        except TokenError as e:
            _fail(str(e))
        except PortInUse as e:
            _fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
        except OSError as e:
            _fail(f"cannot listen: {e.strerror} (another server on these ports?)", 3)
        except RuntimeError as e:  # the dev server did not start
            _fail(str(e), 3)

    _run(run())


@app.command()
def doctor() -> None:
    """Check that this deployment can take orders, one line per check (exit 0: all pass).

    Temporal and its namespace, the SagaNeedsOperator search attribute, a worker polling
    PIZZA_TASK_QUEUE, the encryption keys (on the latest order's history), and the store's
    reachability and schema; each failed check says what to do.
    """
    from pizza_saga.doctor import examine

    settings = _settings()
    checks = _run(examine(settings))
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        out.print(f"{mark} {check.name}: {escape(check.detail)}", soft_wrap=True)
    failed = [check.name for check in checks if not check.ok]
    if failed:
        out.print(f"[red]{len(failed)} of {len(checks)} checks failed[/]: {', '.join(failed)}")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"[green]All {len(checks)} checks passed[/]")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store database's schema to this version; stock new menu items.

    Run once per deployment before starting workers on a shared (PostgreSQL) database; the
    embedded SQLite default does this by itself.
    """
    from pizza_saga.app import upgrade_stores
    from pizza_saga.common.db import open_engine, shown

    settings = _settings()
    engine = open_engine(settings.store_url)
    before, after = upgrade_stores(engine)
    where = shown(engine.url)
    if before == after:
        out.print(f"Store database {where} is at schema {after}: nothing to do")
    else:
        out.print(f"Store database {where} upgraded from schema {before or 'none'} to {after}")


@app.command()
def up(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal's gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Web UI port.")] = 8233,
    codec_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the codec server for the Web UI.")
    ] = 8081,
    api_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the API and the pages.")
    ] = 8000,
    host: Annotated[str, typer.Option(help="Address of the API and the pages.")] = "127.0.0.1",
) -> None:
    """Run the Temporal dev server, a worker and the API with its pages, until Ctrl-C.

    For a developer: one command, one process. Exits 3 if a port is taken, 1 if the dev
    server or the worker stops under it.
    """
    from pizza_saga.common.devserver import DevServerConfig, PortInUse, ensure_free

    settings = _settings()
    ports = {
        "--port": port,
        "--ui-port": ui_port,
        "--codec-port": codec_port,
        "--api-port": api_port,
    }
    for option, number in ports.items():
        clash = [other for other, n in ports.items() if n == number and other != option]
        if clash:
            _fail(f"{option}: {number} is also {clash[0]}; give each its own port")
    try:
        ensure_free({k: v for k, v in ports.items() if k != "--api-port"})
        ensure_free({"--api-port": api_port}, host)
    except PortInUse as e:
        _fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
    except OSError as e:
        _fail(f"--host {host}: cannot listen there: {e}", EXIT_UNAVAILABLE)
    from pizza_saga.app import SEARCH_ATTRIBUTES
    from pizza_saga.common.codec_auth import TokenError
    from pizza_saga.common.crypto import KeyRingError
    from pizza_saga.up import Ports, Stopped, run_up

    server = DevServerConfig(
        db_filename=settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
        codec_endpoint=f"http://localhost:{codec_port}",
    )

    settings = _with_metrics(settings)
    telemetry = _telemetry(settings, service_name="pizza-up", http=True)

    async def run(stop: asyncio.Event) -> None:
        try:
            await run_up(
                settings, server, Ports(host, api_port, codec_port), out, stop, telemetry=telemetry
            )
        except (KeyRingError, TokenError) as e:
            _fail(str(e))
        except PortInUse as e:  # taken between the check and the start
            _fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
        except Stopped as e:
            _fail(str(e), EXIT_FAILED)
        except (OSError, RuntimeError, TimeoutError) as e:
            _fail(f"cannot start: {e}", EXIT_UNAVAILABLE)
        out.print("Stopped.")

    _run_until_signal(run)
