"""What every `pizza` command shares: the consoles, exit statuses, settings, Temporal.

Errors are mapped here once: a service error by its kind, a store or Temporal error to one
line; `main` prints them and sets the exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pizza_saga.common.settings import Settings, SettingsError
from pizza_saga.runtime import exit_process

# Help as plain text: typer's rich help labels every flag, --help too, `<bool>`, as if it
# took a value; the plain formatter shows a flag bare (`--no-wait  Start it and return.`).
app = typer.Typer(
    help="A pizza order service on Temporal whose orders run as sagas.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="The store database (stock, payments).", no_args_is_help=True, rich_markup_mode=None
)
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
UNREACHABLE_REASON_CHARS = 200
"""A reason for not reaching Temporal is cut to this length: one line, not a dump."""

log = logging.getLogger("pizza_saga.cli")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main() -> None:
    """Entry point of the `pizza` console script."""
    from temporalio.service import RPCError

    from pizza_saga.common.crypto import KeyRingError
    from pizza_saga.common.db import StoreError
    from pizza_saga.order.service import ServiceError

    # What the product writes (store, vault, keys, the dev server's history, logs) holds
    # customers' data: readable by its owner only, whatever the shell's umask.
    os.umask(0o077)
    code: int = 0
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UserError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        code = e.exit_code
    except (StoreError, KeyRingError) as e:  # the store, or its keys, as configured
        err.print(f"[red]error:[/] {escape(str(e))}")
        code = EXIT_INVALID
    except ServiceError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        code = exit_code_of(e)
    except RPCError as e:
        # The service said no (permissions, limits, outage): its words, not a traceback.
        err.print(f"[red]error:[/] Temporal refused the request: {e.message}")
        code = EXIT_UNAVAILABLE
    exit_process(code)


def exit_code_of(error: Exception) -> int:
    """The exit status of a service error, by its kind (the API maps the same kinds)."""
    from pizza_saga.order.service import ErrorKind, ServiceError

    codes = {
        ErrorKind.INVALID: EXIT_INVALID,
        ErrorKind.NOT_FOUND: EXIT_INVALID,
        ErrorKind.DUPLICATE: EXIT_INVALID,
        ErrorKind.CONFLICT: EXIT_CONFLICT,
        ErrorKind.UNAVAILABLE: EXIT_UNAVAILABLE,
        ErrorKind.FORBIDDEN: EXIT_INVALID,
    }
    return codes[error.kind] if isinstance(error, ServiceError) else EXIT_INVALID


def fail(message: str, exit_code: int = EXIT_INVALID) -> NoReturn:
    raise UserError(message, exit_code)


def print_json(text: str) -> None:
    # Plain JSON on stdout, byte for byte what scripts parse; no terminal styling.
    sys.stdout.write(text + "\n")


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as e:
        fail(str(e))


def run_command(coro: Coroutine[Any, Any, T]) -> T:
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


def _retry_delays() -> Iterator[float]:
    """Seconds between attempts to reach Temporal: 0.5, 1, 2, 4, 8, then 10 for ever."""
    delay = CONNECT_RETRY_FIRST_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, CONNECT_RETRY_MAX_SECONDS)


def _unreachable_reason(error: Exception) -> str:
    """Why a connect failed, in the words of whoever said it ("Connection refused", "failed
    to lookup address information: ..."), not the transport's dump of nested errors."""
    text = str(error)
    found = re.search(r'(?:message|error): "([^"]+)"', text)
    if found:
        return found.group(1)
    text = " ".join(text.split())
    return text if len(text) <= UNREACHABLE_REASON_CHARS else text[:UNREACHABLE_REASON_CHARS] + "…"


def unreachable(address: str, reason: str) -> str:
    """The one line saying Temporal did not answer at ``address``, and what to do."""
    return (
        f"cannot reach Temporal at {address} ({reason}): start it with `pizza server`, "
        "or set TEMPORAL_ADDRESS to where it runs"
    )


def temporal_target() -> tuple[str, str]:
    """The configured Temporal address and namespace; bad TEMPORAL_* values exit 2."""
    from pizza_saga.common.temporal import connect_config

    try:
        config = connect_config()
    except Exception as e:  # the SDK's config loader reports bad TEMPORAL_* values
        fail(f"Temporal client configuration: {e}")
    address, namespace = str(config["target_host"]), str(config["namespace"])
    host, _, port = address.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"TEMPORAL_ADDRESS: {address!r} is not a host:port address")
    return address, namespace


async def connect_temporal(
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

    address, namespace = temporal_target()
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
            fail(str(e))
        except ValueError as e:
            fail(f"TEMPORAL_ADDRESS: {address!r} is not a host:port address ({e})")
        except RuntimeError as e:
            reason = _unreachable_reason(e)
            if retry_until is None:
                fail(unreachable(address, reason), EXIT_UNAVAILABLE)
        except RPCError as e:
            if e.status is RPCStatusCode.NOT_FOUND:
                fail(f"TEMPORAL_NAMESPACE: namespace {namespace!r} does not exist at {address}")
            if e.status is not RPCStatusCode.UNAVAILABLE:
                raise
            reason = e.message
            if retry_until is None:
                fail(unreachable(address, reason), EXIT_UNAVAILABLE)
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


def telemetry_for(settings: Settings, *, service_name: str, http: bool = False) -> Any:
    """The process's metrics endpoint and tracer, as configured; exits 3 if the metrics
    address cannot be served."""
    from pizza_saga.app import start_telemetry
    from pizza_saga.common.telemetry import MetricsUnavailable

    try:
        return start_telemetry(settings, service_name=service_name, http=http)
    except MetricsUnavailable as e:
        fail(str(e), EXIT_UNAVAILABLE)


def with_metrics(settings: Settings) -> Settings:
    """``settings`` with metrics on for a developer's all-in-one process (`pizza up`, the
    demo): PIZZA_METRICS_ADDRESS if set, else 127.0.0.1:9464, else any free port."""
    if settings.metrics_address:
        return settings
    from pizza_saga.common.ports import free_port

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_METRICS_PORT))
            port = DEFAULT_METRICS_PORT
        except OSError:
            port = free_port()
    return settings.model_copy(update={"metrics_address": f"127.0.0.1:{port}"})


def web_ui(settings: Settings) -> tuple[str, str]:
    from pizza_saga.common.temporal import connect_config

    config = connect_config()
    if settings.ui_url:
        return settings.ui_url, config["namespace"]
    host, _, port = str(config["target_host"]).rpartition(":")
    ui_port = int(port) + 1000 if port.isdigit() else 8233
    return f"http://{host or 'localhost'}:{ui_port}", config["namespace"]


async def order_service(settings: Settings, *, temporal: bool = True) -> Any:
    """The order service over the configured stores (and Temporal, unless ``temporal=False``)."""
    from pizza_saga.app import build_service, open_stores

    client = await connect_temporal(settings) if temporal else None
    return build_service(client, open_stores(settings), settings)
