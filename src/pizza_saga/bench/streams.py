"""What open event streams cost new orders: latency through the API with N streams open on N
running orders, against none.

One dev server, the bench's worker process and a `pizza api` process, as `pizza bench --via
api` runs them. N orders are placed to wait in the kitchen (a long prep timer: no worker slot
held), and one customer's stream follows each of them through the API. New orders go through
POST /api/orders?wait=true one at a time, in four blocks: none open, streams open twice, none
again, so that drift weighs on both sides alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.progress import Progress

from pizza_saga.app import SEARCH_ATTRIBUTES, build_service, connect_client, open_stores
from pizza_saga.bench.cpu import CpuReader, process_cpu_seconds, read_all
from pizza_saga.bench.run import (
    NO_WAITS,
    Sample,
    api_ready,
    order_for,
    percentiles,
    run_via_api,
    start_api,
    stop_process,
)
from pizza_saga.common.crypto import load_or_create_key_file
from pizza_saga.common.devserver import DevServerConfig, running_dev_server
from pizza_saga.common.settings import Settings
from pizza_saga.order.menu import MENU
from pizza_saga.order.service import OrderService

STREAMS_TARGET = 1.2
"""New orders' latency (p50) with the streams open at most this many times that with none."""
KITCHEN_SECONDS = 1500.0
"""How long the followed orders wait in the kitchen: longer than the bench, shorter than
their deadline."""
WARM_UP = 10
QUIET_SECONDS = 10.0
"""How long the processes' CPU is read with the streams open and nothing else happening."""
STREAM_SECONDS = 120.0
"""Longest the bench waits for every stream to show its order waiting in the kitchen."""


@dataclass(frozen=True)
class StreamBenchSettings:
    """What the streams figure runs."""

    streams: int = 200
    """Running orders, each followed by one stream."""
    orders: int = 40
    """New orders timed in each of the four blocks."""


async def stream_benchmark(bench: StreamBenchSettings, progress: Progress) -> dict[str, Any]:
    """Run the streams figure; its results as the JSON report holds them."""
    prefix = secrets.token_hex(3).upper()
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pizza-bench-")))
        env = {**os.environ, "PIZZA_HOME": str(home), **NO_WAITS}
        env.pop("PIZZA_VAULT_KEYS", None)
        env["PIZZA_VAULT_KEY_FILE"] = str(home / "vault-keys.json")
        load_or_create_key_file(home / "vault-keys.json")
        env["PIZZA_DATABASE_URL"] = f"sqlite:///{home / 'pizza.db'}"
        # The bench's streams all come from this machine: room for them under the caps.
        env["PIZZA_STREAMS_PER_CLIENT"] = env["PIZZA_STREAMS_MAX"] = str(bench.streams + 10)
        own_server = "TEMPORAL_ADDRESS" not in os.environ
        readers: dict[str, CpuReader | None] = {"server": None}
        if own_server:
            config = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
            server = await stack.enter_async_context(
                running_dev_server(config, home / "server.log")
            )
            env["TEMPORAL_ADDRESS"] = config.address
            readers["server"] = functools.partial(process_cpu_seconds, server.process.pid)
        settings = Settings.from_env(env)
        stores = open_stores(settings)
        stack.callback(stores.engine.dispose)
        stores.inventory.stock_up(
            dict.fromkeys(MENU, 100 * (bench.streams + bench.orders)), overwrite=True
        )
        worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            [sys.executable, "-m", "pizza_saga.bench.worker"], env=env, stdin=subprocess.DEVNULL
        )
        stack.callback(stop_process, worker)
        api_process, api_url = start_api(env, home / "api.log")
        stack.callback(stop_process, api_process, signal.SIGINT)
        readers["worker"] = functools.partial(process_cpu_seconds, worker.pid)
        readers["api"] = functools.partial(process_cpu_seconds, api_process.pid)
        client = await connect_client(settings, target_host=env.get("TEMPORAL_ADDRESS"))
        # The followed orders wait in the kitchen; the new ones (placed by the API) do not.
        kitchen = build_service(
            client, stores, settings.model_copy(update={"prep_seconds": KITCHEN_SECONDS})
        )
        http = await stack.enter_async_context(
            aiohttp.ClientSession(base_url=api_url, timeout=aiohttp.ClientTimeout(total=120))
        )
        await api_ready(http, api_process)

        async def block(label: str) -> tuple[list[Sample], dict[str, float | None]]:
            task = progress.add_task(label, total=bench.orders)
            before = read_all(readers)
            samples = []
            for i in range(bench.orders):  # one at a time: each order's own latency
                samples.append(await run_via_api(http, client, "completed", f"{label}-{prefix}", i))
                progress.advance(task)
            after = read_all(readers)
            progress.remove_task(task)
            return samples, _spent(before, after)

        for i in range(WARM_UP):
            await run_via_api(http, client, "completed", f"warm-{prefix}", i)
        none_first = await block("none")
        followed = [f"K{prefix}{i:05d}" for i in range(bench.streams)]
        task = progress.add_task("placing the followed orders", total=bench.streams)
        for number in followed:
            await kitchen.place(order_for("completed", number))
            progress.advance(task)
        progress.remove_task(task)
        async with _streams(api_url, kitchen, followed) as opened:
            began = time.perf_counter()
            before = read_all(readers)
            await asyncio.sleep(QUIET_SECONDS)  # the bench measures what idle streams cost
            quiet = _spent(before, read_all(readers), per=time.perf_counter() - began)
            streams_first = await block("streams")
            streams_second = await block("streams-again")
            still_open = opened()
        none_second = await block("none-again")

    none = none_first[0] + none_second[0]
    streams = streams_first[0] + streams_second[0]
    none_p = percentiles([s.latency_ms for s in none])
    streams_p = percentiles([s.latency_ms for s in streams])
    ratio = round(streams_p["p50"] / none_p["p50"], 3) if none_p["p50"] else None
    return {
        "streams": bench.streams,
        "streams_open_at_the_end": still_open,
        "latency_ms": {"none": none_p, "streams": streams_p},
        "ratio_p50": ratio,
        "ratio_p95": round(streams_p["p95"] / none_p["p95"], 3) if none_p["p95"] else None,
        "cpu_ms_per_order": {
            "none": _per_order(none_first[1], none_second[1], 2 * bench.orders),
            "streams": _per_order(streams_first[1], streams_second[1], 2 * bench.orders),
        },
        "quiet_cpu_ms_per_s": {
            who: None if ms is None else round(ms, 1) for who, ms in quiet.items()
        },
        "target": {
            "what": f"new orders' latency p50 with {bench.streams} streams open / with none",
            "value": ratio,
            "op": "<=",
            "target": STREAMS_TARGET,
            "met": None if ratio is None else ratio <= STREAMS_TARGET,
        },
        "settings": {
            **asdict(bench),
            "blocks": "none, streams, streams, none; each order alone (POST ?wait=true)",
            "followed_orders": f"waiting in the kitchen ({KITCHEN_SECONDS:g} s prep timer)",
            "server": "embedded dev server (SQLite, WAL)" if own_server else "TEMPORAL_ADDRESS",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def _spent(
    before: dict[str, float | None], after: dict[str, float | None], *, per: float = 1.0
) -> dict[str, float | None]:
    """CPU milliseconds each process spent between two readings (divided by ``per``)."""
    spent: dict[str, float | None] = {}
    for who, then in before.items():
        now = after[who]
        spent[who] = None if then is None or now is None else (now - then) * 1000 / per
    return spent


def _per_order(
    first: dict[str, float | None], second: dict[str, float | None], orders: int
) -> dict[str, float | None]:
    """Each process's CPU ms per order over two blocks."""
    both: dict[str, float | None] = {}
    for who, a in first.items():
        b = second[who]
        both[who] = None if a is None or b is None else round((a + b) / orders, 1)
    return both


@contextlib.asynccontextmanager
async def _streams(api_url: str, service: OrderService, numbers: list[str]) -> AsyncIterator[Any]:
    """One customer's stream open on each order (read as a browser reads it), once every
    one shows its order waiting in the kitchen; yields a count of those still open."""
    # No pool limit: each stream holds its connection for as long as it is open.
    session = aiohttp.ClientSession(
        base_url=api_url,
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )
    waiting = [asyncio.Event() for _ in numbers]
    open_now = 0

    async def follow(number: str, in_kitchen: asyncio.Event) -> None:
        nonlocal open_now
        token = service.access.order_token(number)
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
        async with session.get(f"/api/orders/{number}/events", headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"the stream of {number} was refused: {response.status}")
            open_now += 1
            try:
                async for line in response.content:
                    if line.startswith(b"data:") and _in_kitchen(json.loads(line[5:])):
                        in_kitchen.set()
            finally:
                open_now -= 1

    tasks = [
        asyncio.create_task(follow(n, e), name=f"stream {n}")
        for n, e in zip(numbers, waiting, strict=True)
    ]
    try:
        async with asyncio.timeout(STREAM_SECONDS):
            for event, task in zip(waiting, tasks, strict=True):
                done = asyncio.ensure_future(event.wait())
                await asyncio.wait({done, task}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    done.cancel()
                    task.result()  # its error, or the stream ended too soon
                    raise RuntimeError(f"a stream ended before its order waited: {task.get_name()}")
        yield lambda: open_now
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


def _in_kitchen(snapshot: dict[str, Any]) -> bool:
    """The order waits on its prep timer: its distance known, nothing in flight."""
    ledger = snapshot.get("ledger") or []
    distance = any(r["step"] == "get_distance" and r["state"] == "SUCCEEDED" for r in ledger)
    return snapshot["status"] == "RUNNING" and distance and not snapshot["pending_activities"]
