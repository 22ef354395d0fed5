"""`make demo`: the seed's scenario, end to end, on an embedded dev server and worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI
from rich.console import Console

from pizza_saga.api.server import ApiServer
from pizza_saga.app import (
    Telemetry,
    adopt_version,
    build_api,
    build_service,
    build_worker_for,
    connect_client,
    open_stores,
    prepare_namespace,
)
from pizza_saga.common.devserver import DevServerConfig, wait_until_ready
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import DEFAULT_NAMESPACE
from pizza_saga.embedded import embedded_temporal
from pizza_saga.order.client import OrderOutcome
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.order.service import OrderService
from pizza_saga.render import print_outcome
from pizza_saga.runtime import host_worker, log_to

API_PORT = 8000
"""Where the demo serves the order pages (any free port if this one is taken)."""


async def run_demo(
    settings: Settings,
    server: DevServerConfig,
    console: Console,
    stop: asyncio.Event,
    *,
    codec_port: int,
    interactive: bool,
    api_port: int = API_PORT,
    telemetry: Telemetry | None = None,
) -> None:
    """Start server, codec server, worker and the pages; place the good and the broken-card
    order; on a terminal, serve until ``stop`` is set."""
    worker_log = settings.home / "demo-worker.log"
    log_to(worker_log)
    embedded = contextlib.AsyncExitStack()
    if await _answers(server.address):
        console.print(f"Using the Temporal server already running at {server.address}")
    else:
        console.print(f"Starting the Temporal dev server on {server.address} ({settings.home})")
        temporal = await embedded.enter_async_context(
            embedded_temporal(settings, server, codec_port=codec_port)
        )
        if interactive:  # off a terminal, the demo is gone before anyone could log in
            for line in temporal.access_help():
                console.print(line, markup=False, soft_wrap=True)
    async with embedded:
        client = await connect_client(settings, telemetry, target_host=server.address)
        await prepare_namespace(client)
        stores = open_stores(settings)
        service = build_service(client, stores, settings)
        pages = build_api(
            service, ui_url=server.ui_url, namespace=DEFAULT_NAMESPACE, telemetry=telemetry
        )
        async with _serving(pages, api_port) as api:
            scenario = asyncio.create_task(
                _scenario(service, console, server.ui_url, api.url, worker_log, interactive, stop)
            )
            await host_worker(
                build_worker_for(client, stores, settings),
                stop,
                alongside=[scenario],
                once=[adopt_version(client, settings, take_over=True)],
                before_drain=api.stop,
            )
            if scenario.done() and not scenario.cancelled():
                scenario.result()  # its error, if it failed


async def _scenario(
    service: OrderService,
    console: Console,
    ui_url: str,
    pages_url: str,
    worker_log: Path,
    interactive: bool,
    stop: asyncio.Event,
) -> None:
    """The seed's two orders, placed once a worker polls, and their outcomes; then, on a
    terminal, the servers stay up until ``stop``."""
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
    outcomes = await asyncio.gather(*(service.wait(order.order_number) for order in orders))
    for outcome in outcomes:
        console.print()
        print_outcome(console, outcome, ui_url, DEFAULT_NAMESPACE)
        # The customer's link: the order's page opens with its token.
        token = urlencode({"token": service.access.order_token(outcome.order_number)})
        console.print(f"Order page: {pages_url}/orders/{outcome.order_number}?{token}")
    _summarize(console, outcomes)
    console.print(f"Worker log: {worker_log}")
    if not interactive:
        console.print(
            "The links above were live while the demo ran; `pizza up` (with this PIZZA_HOME) "
            "serves them again."
        )
        return
    console.print(
        f"\nServing the Web UI at {ui_url} and the order pages at {pages_url}: "
        "look around, then Ctrl-C to stop."
    )
    await stop.wait()


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
