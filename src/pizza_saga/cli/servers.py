"""`pizza server`, `codec-server`, `up` and `demo`: the dev server and what runs on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pizza_saga.cli._shared import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    app,
    fail,
    load_settings,
    out,
    run_command,
    telemetry_for,
    with_metrics,
)
from pizza_saga.runtime import run_until_signal


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
    from pizza_saga.common.devserver import DevServerConfig, describe_exit
    from pizza_saga.embedded import embedded_temporal

    settings = load_settings()
    ports = {"--port": port, "--ui-port": ui_port, "--codec-port": codec_port}
    _ensure_free(ports)
    config = DevServerConfig(
        db_filename=db_filename or settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    log_file = settings.home / "temporal-server.log"
    codec_log = settings.home / "codec-server.log"
    settings.home.mkdir(parents=True, exist_ok=True)
    _log_codec_requests(logging.FileHandler(codec_log))

    async def run() -> None:
        async with (
            _starting(log_file),
            embedded_temporal(settings, config, codec_port=codec_port) as temporal,
        ):
            out.print(
                f"Temporal dev server on {config.address}, Web UI {config.ui_url} "
                f"(decoding through the codec server on port {codec_port}), "
                f"state in {config.db_filename} (Ctrl-C to stop)"
            )
            for line in temporal.access_help():
                out.print(escape(line), soft_wrap=True)
            out.print(f"  Codec server requests are logged to {codec_log}")
            returncode = await temporal.server.exited()
        # The codec server has stopped with the block: nothing of ours is left listening.
        fail(
            f"the Temporal dev server stopped unexpectedly ({describe_exit(returncode)}); "
            f"see {log_file}",
            EXIT_FAILED,
        )

    run_command(run())


def _ensure_free(ports: dict[str, int], host: str | None = None) -> None:
    """Exit (2) if two options name one port, (3) if one of ``ports`` is taken.

    Ports of the API (``--api-port``) are checked on ``host``, the others on localhost.
    """
    from pizza_saga.common.devserver import PortInUse, ensure_free

    for option, number in ports.items():
        clash = [other for other, n in ports.items() if n == number and other != option]
        if clash:
            fail(f"{option}: {number} is also {clash[0]}; give each its own port")
    try:
        ensure_free({k: v for k, v in ports.items() if k != "--api-port"})
        if "--api-port" in ports:
            ensure_free({"--api-port": ports["--api-port"]}, host or "localhost")
    except PortInUse as e:
        fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
    except OSError as e:
        fail(f"--host {host}: cannot listen there: {e}", EXIT_UNAVAILABLE)


@contextlib.asynccontextmanager
async def _starting(log_file: Path) -> AsyncIterator[None]:
    """Turn what stops an embedded Temporal from starting into one line and an exit status."""
    from pizza_saga.common.codec_auth import TokenError
    from pizza_saga.common.crypto import KeyRingError
    from pizza_saga.common.devserver import PortInUse, StateInUse

    try:
        yield
    except (KeyRingError, TokenError, StateInUse) as e:
        fail(str(e))
    except PortInUse as e:  # taken between the check and the start
        fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
    except TimeoutError as e:
        fail(f"{e}; see {log_file}", EXIT_UNAVAILABLE)
    except OSError as e:
        fail(f"cannot start: {e}", EXIT_UNAVAILABLE)
    except RuntimeError as e:  # the dev server did not start
        fail(str(e), EXIT_UNAVAILABLE)


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
    from pizza_saga.common.codec_server import (
        access_help,
        save_login_url,
        serving,
        ui_origins,
    )
    from pizza_saga.common.crypto import EncryptionCodec, KeyRingError
    from pizza_saga.common.temporal import connect_config, key_ring

    settings = load_settings()
    try:
        codec = EncryptionCodec(key_ring(settings, connect_config()["target_host"]))
        token = codec_token(settings)
    except (KeyRingError, TokenError) as e:
        fail(str(e))
    origins = origin or ui_origins(8233)
    _log_codec_requests(logging.StreamHandler())

    async def run() -> None:
        try:
            async with serving(codec, port, origins, token=token.value) as url:
                login_file = save_login_url(settings.codec_login_file(port), url, token)
                out.print(f"Codec server on {url} for {', '.join(origins)} (Ctrl-C to stop)")
                for line in access_help(url, token, ui_url=origins[0], login_file=login_file):
                    out.print(escape(line), soft_wrap=True)
                await asyncio.Event().wait()
        except OSError as e:
            fail(f"--port {port}: cannot listen: {e.strerror}", 3)

    run_command(run())


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
    from pizza_saga.app import SEARCH_ATTRIBUTES
    from pizza_saga.cli.services import ensure_operators_for
    from pizza_saga.common.devserver import DevServerConfig
    from pizza_saga.up import Ports, Stopped, run_up

    settings = load_settings()
    ports = {"--port": port, "--ui-port": ui_port, "--codec-port": codec_port}
    _ensure_free({**ports, "--api-port": api_port}, host)
    ensure_operators_for(host, settings)
    server = DevServerConfig(
        db_filename=settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    settings = with_metrics(settings)
    telemetry = telemetry_for(settings, service_name="pizza-up", http=True)

    async def run(stop: asyncio.Event) -> None:
        try:
            async with _starting(settings.home / "temporal-server.log"):
                await run_up(
                    settings,
                    server,
                    Ports(host, api_port, codec_port),
                    out,
                    stop,
                    telemetry=telemetry,
                )
        except Stopped as e:
            fail(str(e), EXIT_FAILED)
        out.print("Stopped.")

    run_until_signal(run)


@app.command()
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Frontend gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Web UI port.")] = 8233,
    codec_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the codec server for the Web UI.")
    ] = 8081,
    api_port: Annotated[
        int,
        typer.Option(min=1, max=65535, help="Port of the order pages (another free one if taken)."),
    ] = 8000,
) -> None:
    """The seed's scenario: a good order and a bad-card rollback on an embedded server.

    On a terminal it keeps serving the Web UI and the pages until Ctrl-C; otherwise it exits
    when done.
    """
    from pizza_saga.app import SEARCH_ATTRIBUTES
    from pizza_saga.common.devserver import DevServerConfig
    from pizza_saga.demo import run_demo

    settings = load_settings()
    server = DevServerConfig(
        db_filename=settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    settings = with_metrics(settings)
    telemetry = telemetry_for(settings, service_name="pizza-demo", http=True)

    async def run(stop: asyncio.Event) -> None:
        async with _starting(settings.home / "temporal-server.log"):
            await run_demo(
                settings,
                server,
                out,
                stop,
                codec_port=codec_port,
                api_port=api_port,
                interactive=interactive,
                telemetry=telemetry,
            )

    run_until_signal(run)
