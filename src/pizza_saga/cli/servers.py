"""`pizza server`, `codec-server`, `up` and `demo`: the dev server and what runs on it."""

from __future__ import annotations

import asyncio
import logging
import sys
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

    settings = load_settings()
    ports = {"--port": port, "--ui-port": ui_port, "--codec-port": codec_port}
    for option, number in ports.items():
        clash = [other for other, n in ports.items() if n == number and other != option]
        if clash:
            fail(f"{option}: {number} is also {clash[0]}; give each its own port")
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
        fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
    try:
        codec = EncryptionCodec(key_ring(settings, config.address))
        token = codec_token(settings)
    except (KeyRingError, TokenError) as e:
        fail(str(e))
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
            fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
        except TimeoutError as e:
            fail(f"{e}; see {log_file}", EXIT_UNAVAILABLE)
        except OSError as e:
            fail(f"cannot start: {e}", EXIT_UNAVAILABLE)
        except RuntimeError as e:
            fail(str(e), EXIT_UNAVAILABLE)
        # The codec server has stopped with the block: nothing of ours is left listening.
        fail(
            f"the Temporal dev server stopped unexpectedly ({describe_exit(returncode)}); "
            f"see {log_file}",
            EXIT_FAILED,
        )

    run_command(run())


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
                out.print(f"Codec server on {url} for {', '.join(origins)} (Ctrl-C to stop)")
                for line in access_help(url, token, ui_url=origins[0]):
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
    from pizza_saga.common.devserver import DevServerConfig, PortInUse, ensure_free

    settings = load_settings()
    ports = {
        "--port": port,
        "--ui-port": ui_port,
        "--codec-port": codec_port,
        "--api-port": api_port,
    }
    for option, number in ports.items():
        clash = [other for other, n in ports.items() if n == number and other != option]
        if clash:
            fail(f"{option}: {number} is also {clash[0]}; give each its own port")
    try:
        ensure_free({k: v for k, v in ports.items() if k != "--api-port"})
        ensure_free({"--api-port": api_port}, host)
    except PortInUse as e:
        fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
    except OSError as e:
        fail(f"--host {host}: cannot listen there: {e}", EXIT_UNAVAILABLE)
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

    settings = with_metrics(settings)
    telemetry = telemetry_for(settings, service_name="pizza-up", http=True)

    async def run(stop: asyncio.Event) -> None:
        try:
            await run_up(
                settings, server, Ports(host, api_port, codec_port), out, stop, telemetry=telemetry
            )
        except (KeyRingError, TokenError) as e:
            fail(str(e))
        except PortInUse as e:  # taken between the check and the start
            fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
        except Stopped as e:
            fail(str(e), EXIT_FAILED)
        except (OSError, RuntimeError, TimeoutError) as e:
            fail(f"cannot start: {e}", EXIT_UNAVAILABLE)
        out.print("Stopped.")

    run_until_signal(run)


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

    settings = load_settings()
    from pizza_saga.app import SEARCH_ATTRIBUTES

    server = DevServerConfig(
        db_filename=settings.server_db,
        port=port,
        ui_port=ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    settings = with_metrics(settings)
    telemetry = telemetry_for(settings, service_name="pizza-demo", http=True)

    async def run() -> None:
        try:
            await run_demo(
                settings, server, codec_port, out, interactive=interactive, telemetry=telemetry
            )
        except TokenError as e:
            fail(str(e))
        except PortInUse as e:
            fail(f"{e}; stop it or choose another port", EXIT_UNAVAILABLE)
        except OSError as e:
            fail(f"cannot listen: {e.strerror} (another server on these ports?)", 3)
        except RuntimeError as e:  # the dev server did not start
            fail(str(e), 3)

    run_command(run())
