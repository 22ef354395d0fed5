"""Drive N orders at concurrency C and the engine-limit baseline on the same server.

With ``via="api"`` the same orders also go through the HTTP API (POST /api/orders?wait=true
on a `pizza api` process), and the API's overhead is measured against placing them directly.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from rich.progress import Progress
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory

from pizza_saga.app import SEARCH_ATTRIBUTES, open_stores
from pizza_saga.bench.baseline import BASELINE_TASK_QUEUE, BaselinePlan, BaselineWorkflow
from pizza_saga.billing import cards
from pizza_saga.billing.vault import CardVault
from pizza_saga.common.devserver import DevServerConfig, free_port, running_dev_server
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.example import GOOD_CARD, example_order
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import OrderRequest, PizzaOrder, SagaPolicy
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for

ENGINE_PLANS = {
    # distance, inventory, charge, bill, driver (a regular activity in local mode too)
    "completed": BaselinePlan(5, regular_from=4),
    # distance, inventory, the declined charge; then refund and revert
    "declined": BaselinePlan(3, fail_at=2, compensations=2),
    # distance, inventory, charge, the bounced bill; then refund and revert
    "bill_failure": BaselinePlan(4, fail_at=3, compensations=2),
}
"""The engine-limit workflow for each kind of order: the same activities, doing nothing."""
IDLE_SAMPLES = 20
HISTORY_SAMPLES = 50
API_READY_SECONDS = 60.0
"""How long the bench waits for its `pizza api` process to answer /readyz."""


@dataclass(frozen=True)
class BenchSettings:
    """What the bench runs."""

    orders: int = 600
    concurrency: int = 20
    mix: dict[str, float] = field(
        default_factory=lambda: {"completed": 0.8, "declined": 0.1, "bill_failure": 0.1}
    )
    seed: int = 1
    rounds: int = 2
    """Rounds of engine, orders, orders, engine blocks in the loaded run."""
    local: bool = False
    """Local mode: orders with local activities, against an engine of the same shape."""
    via: str = "client"
    """``client``: orders placed with the Temporal client; ``api``: also through the HTTP API."""


@dataclass
class Sample:
    """One workflow run as the driver saw it."""

    workflow_id: str
    kind: str
    """How it ended: completed or rolled_back."""
    started: float
    finished: float

    @property
    def latency_ms(self) -> float:
        return (self.finished - self.started) * 1000


@dataclass
class WorkerStats:
    cpu_seconds: float
    peak_rss_mib: float


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 (ms, rounded), or zeros when there is nothing to measure."""
    if len(values) < 2:
        only = round(values[0], 1) if values else 0.0
        return {"p50": only, "p95": only, "p99": only}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


def worker_stats(pid: int) -> WorkerStats:
    """CPU time and peak resident memory of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
    )
    return WorkerStats(cpu_seconds=cpu, peak_rss_mib=round(peak_kib / 1024, 1))


ONE_ACTION_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
}


def billable_actions(history: WorkflowHistory) -> int:
    """Temporal Cloud actions a history cost: the start, each activity schedule and retry,
    timer, signal, update and search attribute upsert, and one per workflow task that
    recorded local activity markers (queries are not in the history; the bench sends none).
    """
    actions = 0
    marker_tasks: set[int] = set()
    for event in history.events:
        if event.event_type in ONE_ACTION_EVENTS:
            actions += 1
        elif event.HasField("activity_task_started_event_attributes"):
            actions += event.activity_task_started_event_attributes.attempt - 1  # retries
        elif event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            marker_tasks.add(marker.workflow_task_completed_event_id)
    return actions + len(marker_tasks)


def rollback_ms(history: WorkflowHistory) -> float | None:
    """From the failing step's failure to the last compensation done.

    Counts from the first activity failure to the last activity completed after it (only
    compensations run after a failure), so it reads orders and the engine's runs alike.
    """
    failed_at = None
    last_done = None
    for event in history.events:
        if event.HasField("activity_task_failed_event_attributes") and failed_at is None:
            failed_at = event.event_time.ToDatetime()
        elif event.HasField("activity_task_completed_event_attributes") and failed_at is not None:
            last_done = event.event_time.ToDatetime()
    if failed_at is None or last_done is None:
        return None
    return (last_done - failed_at).total_seconds() * 1000


def order_for(kind: str, number: str) -> PizzaOrder:
    """An order that ends ``kind`` under the sandbox rules."""
    card = cards.DECLINED_CARD if kind == "declined" else GOOD_CARD
    data = example_order(order_number=number, card_number=card).model_dump()
    if kind == "bill_failure":
        data["customer"]["email"] = "bounce@example.com"
    return PizzaOrder.model_validate(data)


async def drive(
    indexes: range,
    concurrency: int,
    run_one: Callable[[int], Awaitable[Sample]],
    advance: Callable[[], None],
) -> tuple[list[Sample], float]:
    """Run one workflow per index, ``concurrency`` at a time; samples and wall time (s)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Sample:
        async with gate:
            sample = await run_one(index)
        advance()
        return sample

    began = time.perf_counter()
    samples = await asyncio.gather(*(one(i) for i in indexes))
    return list(samples), time.perf_counter() - began


async def run_order(
    client: Client,
    vault: CardVault,
    kind: str,
    prefix: str,
    index: int,
    *,
    local: bool,
    task_queue: str,
) -> Sample:
    number = f"{prefix}{index:05d}"
    order = order_for(kind, number)
    # As the edge does: the card number becomes a vault token before the workflow starts.
    card = await asyncio.to_thread(
        functools.partial(vault.tokenize, order.credit_card_info.number, order_number=number)
    )
    request = OrderRequest(order=order.placed(card), policy=SagaPolicy(local_activities=local))
    started = time.perf_counter()
    handle = await client.start_workflow(
        PizzaOrderWorkflow.run,
        request,
        id=workflow_id_for(number),
        task_queue=task_queue,
    )
    return await _outcome(handle, started)


async def run_via_api(
    http: aiohttp.ClientSession, client: Client, kind: str, prefix: str, index: int
) -> Sample:
    """One order through POST /api/orders?wait=true, timed as its client sees it."""
    number = f"{prefix}{index:05d}"
    body = order_for(kind, number).model_dump(mode="json")
    started = time.perf_counter()
    async with http.post("/api/orders", params={"wait": "true"}, json=body) as response:
        answer = await response.json()
        if response.status not in (201, 202):
            raise RuntimeError(f"the API refused order {number}: {response.status} {answer}")
    if response.status == 202:  # still running after the API's longest wait
        return await _outcome(client.get_workflow_handle(answer["workflow_id"]), started)
    outcome = "completed" if answer["status"] == "COMPLETED" else "rolled_back"
    return Sample(answer["workflow_id"], outcome, started, time.perf_counter())


async def run_engine(client: Client, kind: str, prefix: str, index: int, local: bool) -> Sample:
    started = time.perf_counter()
    handle = await client.start_workflow(
        BaselineWorkflow.run,
        replace(ENGINE_PLANS[kind], local=local),
        id=f"bench-baseline-{prefix}{index:05d}",
        task_queue=BASELINE_TASK_QUEUE,
    )
    return await _outcome(handle, started)


async def _outcome(handle: WorkflowHandle[Any, Any], started: float) -> Sample:
    try:
        await handle.result()
        outcome = "completed"
    except WorkflowFailureError:
        outcome = "rolled_back"
    return Sample(handle.id, outcome, started, time.perf_counter())


@dataclass
class Measured:
    """What the loaded run gave for the orders or for the engine."""

    samples: list[Sample] = field(default_factory=list)
    wall_seconds: float = 0.0
    worker_cpu_seconds: float = 0.0


async def benchmark(bench: BenchSettings, progress: Progress) -> dict[str, Any]:
    """Run the whole bench; the results as the JSON report holds them."""
    rng = random.Random(bench.seed)
    kinds = rng.choices(list(bench.mix), weights=list(bench.mix.values()), k=bench.orders)
    prefix = secrets.token_hex(3).upper()
    local = bench.local
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pizza-bench-")))
        env = {**os.environ, "PIZZA_HOME": str(home)}
        own_server = "TEMPORAL_ADDRESS" not in os.environ
        if own_server:
            config = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
            await stack.enter_async_context(running_dev_server(config, home / "server.log"))
            env["TEMPORAL_ADDRESS"] = config.address
        settings = Settings.from_env(env)
        # Enough stock for every order: the bench measures speed, not running out.
        stores = open_stores(settings)
        stores.inventory.stock_up(dict.fromkeys(MENU, 10 * bench.orders), overwrite=True)
        # A process of its own, so that its CPU and memory are the worker's alone.
        worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            [sys.executable, "-m", "pizza_saga.bench.worker"], env=env, stdin=subprocess.DEVNULL
        )
        stack.callback(_stop, worker)
        client = await connect(settings, env.get("TEMPORAL_ADDRESS"))
        runners: dict[str, Callable[[str, str, int], Awaitable[Sample]]] = {
            "engine": lambda kind, tag, i: run_engine(client, kind, tag, i, local),
            "orders": lambda kind, tag, i: run_order(
                client, stores.vault, kind, tag, i, local=local, task_queue=settings.task_queue
            ),
        }
        api_process: subprocess.Popen[bytes] | None = None
        if bench.via == "api":
            api_process, api_url = _start_api(env, home / "api.log", local=local)
            stack.callback(_stop, api_process, signal.SIGINT)
            http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    base_url=api_url,
                    connector=aiohttp.TCPConnector(limit=bench.concurrency + 5),
                    timeout=aiohttp.ClientTimeout(total=120),
                )
            )
            await _api_ready(http, api_process)
            runners["api"] = lambda kind, tag, i: run_via_api(http, client, kind, tag, i)

        async def phase(
            who: str, label: str, indexes: range, concurrency: int, kind: str | None = None
        ) -> tuple[list[Sample], float]:
            task = progress.add_task(f"{who}, {label}", total=len(indexes))
            # Workflow ids, and so the stores' idempotency keys, unique across phases (and
            # across the two ways of placing orders).
            tag = f"{'api-' if who == 'api' else ''}{label.replace(' ', '-')}-{prefix}"
            return await drive(
                indexes,
                concurrency,
                lambda i: runners[who](kind or kinds[i], tag, i),
                lambda: progress.advance(task),
            )

        # Warm up (imports, caches, the server's first workflows), then measure idle latency
        # of completed orders, and the rollback of bounced bills (the longest), one at a time.
        for who in runners:
            await phase(who, "warm-up", range(10), 5, "completed")
        idle = {
            who: (await phase(who, "idle", range(IDLE_SAMPLES), 1, "completed"))[0]
            for who in runners
        }
        idle_rollbacks: dict[str, list[WorkflowHistory]] = {}
        for who in runners:
            samples, _ = await phase(who, "idle rollback", range(IDLE_SAMPLES), 1, "bill_failure")
            idle_rollbacks[who] = [
                await client.get_workflow_handle(s.workflow_id).fetch_history() for s in samples
            ]
        loaded = {who: Measured() for who in runners}
        block_rates: list[tuple[str, float]] = []
        api_cpu_before = worker_stats(api_process.pid).cpu_seconds if api_process else 0.0
        for who, indexes in load_blocks(bench.orders, bench.rounds, runners=list(runners)):
            cpu_before = worker_stats(worker.pid).cpu_seconds
            samples, wall = await phase(who, "load", indexes, bench.concurrency)
            loaded[who].samples += samples
            loaded[who].wall_seconds += wall
            loaded[who].worker_cpu_seconds += worker_stats(worker.pid).cpu_seconds - cpu_before
            block_rates.append((who, round(len(indexes) / wall, 1)))
        peak_rss = worker_stats(worker.pid).peak_rss_mib
        api_cpu = worker_stats(api_process.pid).cpu_seconds - api_cpu_before if api_process else 0

        histories: dict[str, dict[str, list[WorkflowHistory]]] = {
            who: {"completed": [], "rolled_back": []} for who in runners
        }
        for who, measured in loaded.items():
            for sample in measured.samples:
                kept = histories[who][sample.kind]
                if len(kept) < HISTORY_SAMPLES:
                    handle = client.get_workflow_handle(sample.workflow_id)
                    kept.append(await handle.fetch_history())

    orders, engine = loaded["orders"], loaded["engine"]
    orders_per_s = bench.orders / orders.wall_seconds
    engine_per_s = bench.orders / engine.wall_seconds
    timeline_start = min(s.started for s in orders.samples)
    via_api: dict[str, Any] = {}
    if "api" in loaded:
        via_api = {"api": _api_results(bench, loaded, idle, api_cpu)}
    return {
        "orders_per_s": round(orders_per_s, 1),
        "engine_limit_per_s": round(engine_per_s, 1),
        "ratio": round(orders_per_s / engine_per_s, 3),
        "engine_latency_ms": percentiles([s.latency_ms for s in idle["engine"]])["p50"],
        "idle_latency_ms": percentiles([s.latency_ms for s in idle["orders"]])["p50"],
        "latency_ms": _latencies(orders.samples),
        "engine_latency_under_load_ms": _latencies(engine.samples),
        "idle_rollback_ms": _rollbacks(idle_rollbacks["orders"]),
        "engine_idle_rollback_ms": _rollbacks(idle_rollbacks["engine"]),
        "rollback_ms": _rollbacks(histories["orders"]["rolled_back"]),
        "engine_rollback_ms": _rollbacks(histories["engine"]["rolled_back"]),
        "history_events_per_order": {
            kind: round(statistics.mean(len(h.events) for h in hs), 1) if hs else 0
            for kind, hs in histories["orders"].items()
        },
        "actions_per_order": _actions(histories["orders"]),
        "engine_actions_per_workflow": _actions(histories["engine"]),
        "worker_cpu_seconds": {
            "baseline": round(engine.worker_cpu_seconds, 2),
            "orders": round(orders.worker_cpu_seconds, 2),
        },
        "worker_peak_rss_mib": peak_rss,
        **via_api,
        "block_rates_per_s": block_rates,
        "settings": {
            **asdict(bench),
            "engine_plans": {kind: asdict(plan) for kind, plan in ENGINE_PLANS.items()},
            "blocks": "engine, orders, orders, engine; once per round",
            "server": "embedded dev server (SQLite, WAL)" if own_server else "TEMPORAL_ADDRESS",
            "simulated_waits": 0,
            "cpus": os.cpu_count(),
        },
        "timeline": {
            "orders": [
                [round(s.finished - timeline_start, 3), s.kind, round(s.latency_ms, 1)]
                for s in sorted(orders.samples, key=lambda s: s.finished)
            ],
        },
    }


def load_blocks(
    orders: int, rounds: int, *, runners: Sequence[str] = ("engine", "orders")
) -> list[tuple[str, range]]:
    """The loaded run's blocks: the runners in turn, then in reverse, in each round
    (engine, orders, orders, engine; or engine, orders, api, api, orders, engine).

    Drift over the run (the server's database grows, the machine's other load comes and
    goes) weighs on all alike; each runner runs every index once.
    """
    cuts = [orders * i // (2 * rounds) for i in range(2 * rounds + 1)]
    chunks = [range(a, b) for a, b in itertools.pairwise(cuts)]
    blocks = []
    for first, second in zip(chunks[0::2], chunks[1::2], strict=True):
        blocks += [(who, first) for who in runners]
        blocks += [(who, second) for who in reversed(runners)]
    return blocks


def _api_results(
    bench: BenchSettings,
    loaded: dict[str, Measured],
    idle: dict[str, list[Sample]],
    api_cpu_seconds: float,
) -> dict[str, Any]:
    """The API against placing directly: throughput, latency, and its overhead per order
    (the difference of the p50 latencies of the same orders, idle and under load)."""
    api, direct = loaded["api"], loaded["orders"]
    api_per_s = bench.orders / api.wall_seconds
    direct_per_s = bench.orders / direct.wall_seconds
    idle_api = percentiles([s.latency_ms for s in idle["api"]])["p50"]
    idle_direct = percentiles([s.latency_ms for s in idle["orders"]])["p50"]
    loaded_api = _latencies(api.samples)["completed"]["p50"]
    loaded_direct = _latencies(direct.samples)["completed"]["p50"]
    return {
        "orders_per_s": round(api_per_s, 1),
        "ratio_to_direct": round(api_per_s / direct_per_s, 3),
        "idle_latency_ms": idle_api,
        "latency_ms": _latencies(api.samples),
        "overhead_ms": {
            "idle_p50": round(idle_api - idle_direct, 1),
            "loaded_p50": round(loaded_api - loaded_direct, 1),
        },
        "api_cpu_seconds": round(api_cpu_seconds, 2),
        "api_cpu_ms_per_order": round(api_cpu_seconds * 1000 / bench.orders, 1),
        "worker_cpu_ms_per_order": {
            "api": round(api.worker_cpu_seconds * 1000 / bench.orders, 1),
            "direct": round(direct.worker_cpu_seconds * 1000 / bench.orders, 1),
        },
    }


def _start_api(
    env: dict[str, str], log: Path, *, local: bool
) -> tuple[subprocess.Popen[bytes], str]:
    """A `pizza api` process placing orders as the bench does (no simulated waits)."""
    port = free_port()
    api_env = {
        **env,
        "PIZZA_PREP_SECONDS": "0",
        "PIZZA_DRIVER_SECONDS": "0",
        "PIZZA_LOCAL_ACTIVITIES": "true" if local else "false",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pizza_saga", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=api_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"


async def _api_ready(http: aiohttp.ClientSession, process: subprocess.Popen[bytes]) -> None:
    """Wait until the API answers /readyz 200 (its worker polls); RuntimeError if it exits
    or is not ready within API_READY_SECONDS."""
    deadline = time.monotonic() + API_READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pizza api exited ({process.returncode}) before it was ready")
        try:
            async with http.get("/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"pizza api was not ready within {API_READY_SECONDS:g} s")


def _latencies(samples: list[Sample]) -> dict[str, dict[str, float]]:
    return {
        kind: percentiles([s.latency_ms for s in samples if s.kind == kind])
        for kind in ("completed", "rolled_back")
    }


def _rollbacks(histories: list[WorkflowHistory]) -> dict[str, float | None]:
    # Local activities leave markers, not activity events: no rollback timing there.
    rollbacks = [r for h in histories if (r := rollback_ms(h)) is not None]
    if not rollbacks:
        return {"p50": None, "p99": None}
    return {k: v for k, v in percentiles(rollbacks).items() if k != "p95"}


def _actions(histories: dict[str, list[WorkflowHistory]]) -> dict[str, int]:
    """The most any sampled run of each kind cost."""
    return {
        kind: max((billable_actions(h) for h in hs), default=0) for kind, hs in histories.items()
    }


def _stop(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    process.send_signal(how)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
