"""`make demo`: the seed's scenario, end to end, on an embedded dev server and worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from rich.console import Console

from pizza_saga.api.server import ApiServer
from pizza_saga.app import (
    Telemetry,
    build_api,
    build_service,
    build_worker_for,
    connect_client,
    open_stores,
    prepare_namespace,
)
from pizza_saga.common.codec_auth import codec_token
from pizza_saga.common.codec_server import access_help, serving, ui_origins
from pizza_saga.common.crypto import EncryptionCodec
from pizza_saga.common.devserver import DevServerConfig, running_dev_server, wait_until_ready
from pizza_saga.common.logmask import install_card_masking
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import DEFAULT_NAMESPACE, key_ring
from pizza_saga.order.client import OrderOutcome, order_outcome
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.render import print_outcome

API_PORT = 8000
"""Where the demo serves the order pages (any free port if this one is taken)."""


async def run_demo(
    settings: Settings,
    server: DevServerConfig,
    codec_port: int,
    console: Console,
    *,
    interactive: bool,
    api_port: int = API_PORT,
    telemetry: Telemetry | None = None,
) -> None:
    """Start server, codec server, worker and the pages; place the good and the broken-card
    order."""
    worker_log = settings.home / "demo-worker.log"
    _log_to(worker_log)
    embedded = contextlib.AsyncExitStack()
    if await _answers(server.address):
        console.print(f"Using the Temporal server already running at {server.address}")
    else:
        console.print(f"Starting the Temporal dev server on {server.address} ({settings.home})")
        server = dataclasses.replace(server, codec_endpoint=f"http://localhost:{codec_port}")
        codec = EncryptionCodec(key_ring(settings, server.address))
        token = codec_token(settings)
        endpoint = await embedded.enter_async_context(
            serving(codec, codec_port, ui_origins(server.ui_port), token=token.value)
        )
        for line in access_help(endpoint, token, ui_url=server.ui_url):
            console.print(line, markup=False, soft_wrap=True)
        await embedded.enter_async_context(
            running_dev_server(server, settings.home / "temporal-server.log")
        )
    async with embedded:
        client = await connect_client(settings, telemetry, target_host=server.address)
        await prepare_namespace(client)
        stores = open_stores(settings)
        service = build_service(client, stores, settings)
        pages = build_api(
            service, ui_url=server.ui_url, namespace=DEFAULT_NAMESPACE, telemetry=telemetry
        )
        async with (
            build_worker_for(client, stores, settings),
            _serving(pages, api_port) as api,
        ):
            while not await service.worker_polling():  # noqa: ASYNC110 (polls the server)
                await asyncio.sleep(0.05)
            stamp = _stamp()
            orders = [
                example_order(order_number=f"XD{stamp}G", card_number=GOOD_CARD),
                example_order(order_number=f"XD{stamp}B", card_number=BROKEN_CARD),
            ]
            for order in orders:
                await service.place(order)
                console.print(
                    f"Placed order {order.order_number} paid with card "
                    f"ending {order.credit_card_info.number[-4:]}"
                )
            outcomes = await asyncio.gather(
                *(order_outcome(client, order.order_number) for order in orders)
            )
            for outcome in outcomes:
                console.print()
                print_outcome(console, outcome, server.ui_url, DEFAULT_NAMESPACE)
                console.print(f"Order page: {api.url}/orders/{outcome.order_number}")
            _summarize(console, outcomes)
            console.print(f"Worker log: {worker_log}")
            if interactive:
                console.print(
                    f"\nServing the Web UI at {server.ui_url} and the order pages at {api.url}: "
                    "look around, then Ctrl-C to stop."
                )
                await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def _serving(app: FastAPI, port: int) -> AsyncIterator[ApiServer]:
    """The pages served on ``port``, or on any free port if that one is taken."""
    server = ApiServer(app, port=port)
    try:
        await server.start()
    except OSError:
        server = ApiServer(app, port=0)
        await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _log_to(path: Path) -> None:
    # The worker's log (the failed charge's stack trace among it) goes to a file: the
    # terminal shows outcomes, the log is there for whoever wants the details.
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    install_card_masking()


async def _answers(address: str) -> bool:
    try:
        await asyncio.wait_for(wait_until_ready(address, within=0), timeout=2)
    except (TimeoutError, RuntimeError):
        return False
    return True


def _stamp() -> str:
    # Order numbers must be new on every run: a number, once used, is refused.
    import secrets

    return secrets.token_hex(3).upper()


def _summarize(console: Console, outcomes: list[OrderOutcome]) -> None:
    good, bad = outcomes
    undone = [r.compensation for r in reversed(bad.ledger or []) if r.compensation]
    console.print(
        f"\n[bold]Done:[/] {good.order_number} {good.status}, "
        f"{bad.order_number} {bad.status} after its compensations ({', '.join(undone)})."
    )
