"""Drive N orders at concurrency C and the engine-limit baseline on the same server."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory

from pizza_saga import TASK_QUEUE
from pizza_saga.bench.baseline import BASELINE_TASK_QUEUE, BaselinePlan, BaselineWorkflow
from pizza_saga.billing import cards
from pizza_saga.common.devserver import DevServerConfig, running_dev_server
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.example import GOOD_CARD, example_order
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import OrderRequest, PizzaOrder, SagaPolicy
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from pizza_saga.worker import SEARCH_ATTRIBUTES, open_stores

ORDER_ACTIVITIES = 5
"""Activities of a completed order: distance, inventory, charge, bill, driver."""
IDLE_SAMPLES = 20
HISTORY_SAMPLES = 50


@dataclass(frozen=True)
class BenchSettings:
    """What the bench runs."""

    orders: int = 300
    concurrency: int = 20
    mix: dict[str, float] = field(
        default_factory=lambda: {"completed": 0.8, "declined": 0.1, "bill_failure": 0.1}
    )
    seed: int = 1
    local: bool = False
    """Local mode: orders with local activities, against a baseline of local activities."""


@dataclass
class Sample:
    """One workflow run as the driver saw it."""

    workflow_id: str
    kind: str
    """completed or rolled_back (orders), baseline."""
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
    """From the failing step's failure to the last compensation done."""
    failed_at = None
    last_done = None
    compensations = set()
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if ":compensation:" in event.activity_task_scheduled_event_attributes.activity_id:
                compensations.add(event.event_id)
        elif event.HasField("activity_task_failed_event_attributes") and failed_at is None:
            failed_at = event.event_time.ToDatetime()
        elif (
            event.HasField("activity_task_completed_event_attributes")
            and event.activity_task_completed_event_attributes.scheduled_event_id in compensations
        ):
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
    count: int,
    concurrency: int,
    run_one: Callable[[int], Awaitable[Sample]],
    progress: Progress,
    label: str,
) -> tuple[list[Sample], float]:
    """Run ``count`` workflows, ``concurrency`` at a time; samples and wall time (s)."""
    gate = asyncio.Semaphore(concurrency)
    task = progress.add_task(label, total=count)

    async def one(index: int) -> Sample:
        async with gate:
            sample = await run_one(index)
        progress.advance(task)
        return sample

    began = time.perf_counter()
    samples = await asyncio.gather(*(one(i) for i in range(count)))
    return list(samples), time.perf_counter() - began


async def run_order(client: Client, kind: str, prefix: str, index: int, local: bool) -> Sample:
    number = f"{prefix}{index:05d}"
    request = OrderRequest(order=order_for(kind, number), policy=SagaPolicy(local_activities=local))
    started = time.perf_counter()
    handle = await client.start_workflow(
        PizzaOrderWorkflow.run,
        request,
        id=workflow_id_for(number),
        task_queue=TASK_QUEUE,
    )
    try:
        await handle.result()
        outcome = "completed"
    except WorkflowFailureError:
        outcome = "rolled_back"
    return Sample(handle.id, outcome, started, time.perf_counter())


async def run_baseline(client: Client, prefix: str, index: int, local: bool) -> Sample:
    started = time.perf_counter()
    workflow_id = f"bench-baseline-{prefix}{index:05d}"
    await client.execute_workflow(
        BaselineWorkflow.run,
        BaselinePlan(ORDER_ACTIVITIES, local),
        id=workflow_id,
        task_queue=BASELINE_TASK_QUEUE,
    )
    return Sample(workflow_id, "baseline", started, time.perf_counter())


async def benchmark(bench: BenchSettings, progress: Progress) -> dict[str, Any]:
    """Run the whole bench; the results as the JSON report holds them."""
    rng = random.Random(bench.seed)
    kinds = rng.choices(list(bench.mix), weights=list(bench.mix.values()), k=bench.orders)
    prefix = secrets.token_hex(3).upper()
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
        open_stores(settings).inventory.stock_up(
            dict.fromkeys(MENU, 10 * bench.orders), overwrite=True
        )
        # A process of its own, so that its CPU and memory are the worker's alone.
        worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            [sys.executable, "-m", "pizza_saga.bench.worker"], env=env, stdin=subprocess.DEVNULL
        )
        stack.callback(_stop, worker)
        client = await connect(settings, env.get("TEMPORAL_ADDRESS"))

        # Warm up (imports, caches, the server's first workflows), then measure.
        await drive(
            10, 5, lambda i: run_baseline(client, f"W{prefix}", i, bench.local), progress, "warm-up"
        )
        await drive(
            10,
            5,
            lambda i: run_order(client, "completed", f"W{prefix}", i, bench.local),
            progress,
            "warm-up",
        )

        idle_base, _ = await drive(
            IDLE_SAMPLES,
            1,
            lambda i: run_baseline(client, f"I{prefix}", i, bench.local),
            progress,
            "baseline, idle",
        )
        idle_orders, _ = await drive(
            IDLE_SAMPLES,
            1,
            lambda i: run_order(client, "completed", f"I{prefix}", i, bench.local),
            progress,
            "orders, idle",
        )
        cpu_before = worker_stats(worker.pid).cpu_seconds
        _, base_wall = await drive(
            bench.orders,
            bench.concurrency,
            lambda i: run_baseline(client, prefix, i, bench.local),
            progress,
            "baseline",
        )
        cpu_base = worker_stats(worker.pid).cpu_seconds - cpu_before
        orders, orders_wall = await drive(
            bench.orders,
            bench.concurrency,
            lambda i: run_order(client, kinds[i], prefix, i, bench.local),
            progress,
            "orders",
        )
        stats = worker_stats(worker.pid)
        cpu_orders = stats.cpu_seconds - cpu_before - cpu_base

        histories: dict[str, list[WorkflowHistory]] = {"completed": [], "rolled_back": []}
        for sample in orders:
            kept = histories[sample.kind]
            if len(kept) < HISTORY_SAMPLES:
                kept.append(await client.get_workflow_handle(sample.workflow_id).fetch_history())

    completed = [s.latency_ms for s in orders if s.kind == "completed"]
    rolled_back = [s.latency_ms for s in orders if s.kind == "rolled_back"]
    rollbacks = [r for h in histories["rolled_back"] if (r := rollback_ms(h)) is not None]
    orders_per_s = bench.orders / orders_wall
    engine_per_s = bench.orders / base_wall
    return {
        "orders_per_s": round(orders_per_s, 1),
        "engine_limit_per_s": round(engine_per_s, 1),
        "ratio": round(orders_per_s / engine_per_s, 3),
        "engine_latency_ms": percentiles([s.latency_ms for s in idle_base])["p50"],
        "idle_latency_ms": percentiles([s.latency_ms for s in idle_orders])["p50"],
        "latency_ms": {
            "completed": percentiles(completed),
            "rolled_back": percentiles(rolled_back),
        },
        # Local activities leave markers, not activity events: no rollback timing there.
        "rollback_ms": (
            {k: v for k, v in percentiles(rollbacks).items() if k != "p95"}
            if rollbacks
            else {"p50": None, "p99": None}
        ),
        "history_events_per_order": {
            kind: round(statistics.mean(len(h.events) for h in hs), 1) if hs else 0
            for kind, hs in histories.items()
        },
        "actions_per_order": {
            kind: max((billable_actions(h) for h in hs), default=0)
            for kind, hs in histories.items()
        },
        "worker_cpu_seconds": {"baseline": round(cpu_base, 2), "orders": round(cpu_orders, 2)},
        "worker_peak_rss_mib": stats.peak_rss_mib,
        "settings": {
            **asdict(bench),
            "activities_per_order": ORDER_ACTIVITIES,
            "server": "embedded dev server (SQLite, WAL)" if own_server else "TEMPORAL_ADDRESS",
            "simulated_waits": 0,
            "cpus": os.cpu_count(),
        },
        "timeline": {
            "orders": [
                [round(s.finished - orders[0].started, 3), s.kind, round(s.latency_ms, 1)]
                for s in orders
            ],
        },
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
