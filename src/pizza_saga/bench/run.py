"""Drive N orders at concurrency C and the engine-limit baseline on the same server.

Six runners share one server and one store database, in interleaved blocks: the engine
limit and the orders with regular activities, both again in local mode (short steps as
local activities), and both again outside the SDK's sandbox. Orders and engine run on the
same workflow runner, in the same worker process: the default (sandboxed) one, or a second
process whose workers are both unsandboxed. With ``via="api"`` the orders also go through the HTTP
API (POST /api/orders?wait=true on a `pizza api` process), and the API's overhead is measured
against placing them directly. The store is a SQLite file, or a database on a private
PostgreSQL cluster (common/pgcluster.py) that the bench starts and stops.
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
from typing import Any, Literal

import aiohttp
from rich.progress import Progress
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory

from pizza_saga.app import (
    SEARCH_ATTRIBUTES,
    build_service,
    connect_client,
    open_stores,
    upgrade_stores,
)
from pizza_saga.bench.baseline import BaselineWorkflow
from pizza_saga.bench.baseline_steps import BASELINE_TASK_QUEUE, BaselinePlan, unsandboxed_queue
from pizza_saga.bench.cpu import (
    CpuReader,
    own_cpu_seconds,
    peak_rss_mib,
    process_cpu_seconds,
    processes_cpu_seconds,
    read_all,
    tree_cpu_seconds,
)
from pizza_saga.bench.worker import UNSANDBOXED
from pizza_saga.billing import cards
from pizza_saga.common.crypto import load_or_create_key_file
from pizza_saga.common.db import open_engine
from pizza_saga.common.devserver import DevServerConfig, running_dev_server
from pizza_saga.common.pgcluster import PostgresCluster, require_bindir
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from pizza_saga.order.example import GOOD_CARD, example_order
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.service import OrderService

ENGINE_PLANS = {
    # distance, inventory, charge, bill, driver (a regular activity in local mode too)
    "completed": BaselinePlan(5, regular_from=4),
    # distance, inventory, the declined charge; then refund and revert
    "declined": BaselinePlan(3, fail_at=2, compensations=2),
    # distance, inventory, charge, the bounced bill; then refund and revert
    "bill_failure": BaselinePlan(4, fail_at=3, compensations=2),
}
"""The engine-limit workflow for each kind of order: the same activities, doing nothing."""
RUNNERS = (
    "engine",
    "orders",
    "local engine",
    "local orders",
    "unsandboxed engine",
    "unsandboxed orders",
)
"""What every bench runs, in block order: the engine limit and the orders, with regular
activities and in local mode, in the SDK's sandbox (the default); and both again outside it
(PIZZA_WORKFLOW_SANDBOX=false); `--via api` adds ``api`` (orders through the HTTP API)."""
LOCAL_RUNNERS = frozenset({"local engine", "local orders"})
PROCESSES = {
    "server": "the Temporal dev server",
    "worker": "the bench's two worker processes (orders and engine, sandboxed or not)",
    "client": "the bench's driver: starts the workflows, tokenizes the orders' cards",
    "database": "PostgreSQL: the postmaster and its backends",
    "api": "the `pizza api` process",
}
"""The processes whose CPU time the bench measures (SQLite runs inside worker and driver)."""
WARM_UP = 10
IDLE_SAMPLES = 20
"""Workflows run one at a time for the idle figures (fewer if the bench places fewer)."""
HISTORY_SAMPLES = 50
API_READY_SECONDS = 60.0
WORKER_READY_SECONDS = 60.0
"""How long the bench waits for its worker processes to poll."""
"""How long the bench waits for its `pizza api` process to answer /readyz."""

THROUGHPUT_TARGET = 0.95
"""Orders' throughput at least this share of the engine limit."""
WORKER_CPU_TARGET = 1.1
"""An order's worker CPU at most this many times the engine workflow's."""
ROLLBACK_TARGET = 1.1
"""An order's rollback under load (p50) at most this many times the engine's."""
LOCAL_THROUGHPUT_TARGET = 1.3
"""Local orders' throughput at least this many times the (regular) engine limit."""
SERVER_CPU_TARGET = 1.05
"""The Temporal server's CPU per order at most this many times the engine workflow's."""
WORKER_RSS_TARGET_MIB = 150
"""The default worker's peak resident memory, orders and engine workers together."""
LOCAL_ACTIONS_TARGET = 3
"""Billable actions of a completed local order: the start, one local-activity task, the driver."""


ORDER_MIX = {"completed": 0.8, "declined": 0.1, "bill_failure": 0.1}
"""The share of each kind of order in a loaded run, unless told otherwise."""


@dataclass(frozen=True)
class BenchSettings:
    """What the bench runs."""

    orders: int = 600
    concurrency: int = 20
    mix: dict[str, float] = field(default_factory=lambda: dict(ORDER_MIX))
    seed: int = 1
    rounds: int = 2
    """Rounds of the loaded run; each runs every runner in turn, then in reverse."""
    store: Literal["sqlite", "postgres"] = "sqlite"
    """The store database: a SQLite file, or a database on a private PostgreSQL cluster."""
    via: Literal["client", "api"] = "client"
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


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 (ms, rounded), or zeros when there is nothing to measure."""
    if len(values) < 2:
        only = round(values[0], 1) if values else 0.0
        return {"p50": only, "p95": only, "p99": only}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


ONE_ACTION_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
}


LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker a local activity's result is recorded in (a patch's is ``core_patch``)."""


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
            if marker.marker_name == LOCAL_ACTIVITY_MARKER:  # a patch's marker is free
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


NO_WAITS = {
    "PIZZA_PREP_SECONDS": "0",
    "PIZZA_DRIVER_SECONDS": "0",
    "PIZZA_LOCAL_ACTIVITIES": "false",
}
"""The bench's deployment settings: no simulated waits, regular activities."""


async def run_order(
    client: Client, service: OrderService, kind: str, prefix: str, index: int
) -> Sample:
    """One order placed as every face places it (OrderService.place), timed from the call."""
    number = f"{prefix}{index:05d}"
    order = order_for(kind, number)
    started = time.perf_counter()
    placed = await service.place(order)
    return await _outcome(client.get_workflow_handle(placed.workflow_id), started)


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


async def run_engine(
    client: Client,
    kind: str,
    prefix: str,
    index: int,
    *,
    local: bool = False,
    task_queue: str = BASELINE_TASK_QUEUE,
) -> Sample:
    started = time.perf_counter()
    handle = await client.start_workflow(
        BaselineWorkflow.run,
        replace(ENGINE_PLANS[kind], local=local),
        id=f"bench-baseline-{prefix}{index:05d}",
        task_queue=task_queue,
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
    """What the loaded run gave for one runner."""

    samples: list[Sample] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: dict[str, float | None] = field(default_factory=dict)
    """CPU time each process spent during this runner's blocks; None: not measured."""

    def add_cpu(self, before: dict[str, float | None], after: dict[str, float | None]) -> None:
        """Add one block's CPU time, from readings before and after it."""
        for name, then in before.items():
            now, so_far = after[name], self.cpu_seconds.get(name, 0.0)
            if then is None or now is None or so_far is None:
                self.cpu_seconds[name] = None
            else:
                self.cpu_seconds[name] = so_far + now - then

    @property
    def worker_cpu_seconds(self) -> float:
        return self.cpu_seconds.get("worker") or 0.0


@dataclass
class History:
    """Histories of one runner's workflows, by how they ended."""

    completed: list[WorkflowHistory] = field(default_factory=list)
    rolled_back: list[WorkflowHistory] = field(default_factory=list)
    idle_rollbacks: list[WorkflowHistory] = field(default_factory=list)
    """Bounced bills run one at a time (none in local mode: no activity events to time)."""

    def of(self, kind: str) -> list[WorkflowHistory]:
        return self.completed if kind == "completed" else self.rolled_back


async def benchmark(bench: BenchSettings, progress: Progress) -> dict[str, Any]:
    """Run the whole bench; the results as the JSON report holds them.

    On PostgreSQL, PostgresUnavailable before anything starts if this machine cannot run it.
    """
    rng = random.Random(bench.seed)
    kinds = rng.choices(list(bench.mix), weights=list(bench.mix.values()), k=bench.orders)
    prefix = secrets.token_hex(3).upper()
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pizza-bench-")))
        # Orders with no simulated waits and regular activities, whoever places them (the
        # runners below, the API's process); the bench measures the saga, not the kitchen.
        env = {**os.environ, "PIZZA_HOME": str(home), **NO_WAITS}
        database, database_cpu = _store_database(bench, stack, env)
        own_server = "TEMPORAL_ADDRESS" not in os.environ
        server_cpu: CpuReader | None = None  # an outside server's is not measured
        if own_server:
            config = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
            server = await stack.enter_async_context(
                running_dev_server(config, home / "server.log")
            )
            env["TEMPORAL_ADDRESS"] = config.address
            server_cpu = functools.partial(process_cpu_seconds, server.process.pid)
        settings = Settings.from_env(env)
        stores = open_stores(settings)
        stack.callback(stores.engine.dispose)
        # Enough stock for every order: the bench measures speed, not running out.
        stock = 10 * len(RUNNERS) * bench.orders
        stores.inventory.stock_up(dict.fromkeys(MENU, stock), overwrite=True)
        # Processes of their own, so that their CPU and memory are the workers' alone: the
        # default (sandboxed) pair, and the unsandboxed pair.
        workers = [
            subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
                [sys.executable, "-m", "pizza_saga.bench.worker", *flags],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            for flags in ((), (UNSANDBOXED,))
        ]
        for worker in workers:
            stack.callback(stop_process, worker)
        # Read before and after every loaded block (PROCESSES; None: not measured).
        readers: dict[str, CpuReader | None] = {
            "server": server_cpu,
            "worker": functools.partial(processes_cpu_seconds, [w.pid for w in workers]),
            "client": own_cpu_seconds,
        }
        if database_cpu is not None:
            readers["database"] = database_cpu
        client = await connect_client(settings, target_host=env.get("TEMPORAL_ADDRESS"))

        def order_runner(**options: Any) -> Callable[[str, str, int], Awaitable[Sample]]:
            # The deployment's settings for orders, but on another queue or with local
            # activities: a service of their own, placing orders the way every face does.
            service = build_service(client, stores, settings.model_copy(update=options))
            return lambda kind, tag, i: run_order(client, service, kind, tag, i)

        await workers_ready(
            [
                build_service(client, stores, settings),
                build_service(
                    client,
                    stores,
                    settings.model_copy(
                        update={"task_queue": unsandboxed_queue(settings.task_queue)}
                    ),
                ),
            ],
            workers,
        )
        runners: dict[str, Callable[[str, str, int], Awaitable[Sample]]] = {
            "engine": lambda kind, tag, i: run_engine(client, kind, tag, i),
            "orders": order_runner(),
            "local engine": lambda kind, tag, i: run_engine(client, kind, tag, i, local=True),
            "local orders": order_runner(local_activities=True),
            "unsandboxed engine": lambda kind, tag, i: run_engine(
                client, kind, tag, i, task_queue=unsandboxed_queue(BASELINE_TASK_QUEUE)
            ),
            "unsandboxed orders": order_runner(task_queue=unsandboxed_queue(settings.task_queue)),
        }
        if bench.via == "api":
            api_process, api_url = start_api(env, home / "api.log")
            stack.callback(stop_process, api_process, signal.SIGINT)
            http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    base_url=api_url,
                    connector=aiohttp.TCPConnector(limit=bench.concurrency + 5),
                    timeout=aiohttp.ClientTimeout(total=120),
                )
            )
            await api_ready(http, api_process)
            runners["api"] = lambda kind, tag, i: run_via_api(http, client, kind, tag, i)
            readers["api"] = functools.partial(process_cpu_seconds, api_process.pid)

        async def phase(
            who: str, label: str, indexes: range, concurrency: int, kind: str | None = None
        ) -> tuple[list[Sample], float]:
            task = progress.add_task(f"{who}, {label}", total=len(indexes))
            # Workflow ids, and so the stores' idempotency keys, unique across runners and
            # phases.
            # The runner's initials keep order numbers within their 40 characters.
            initials = "".join(word[0] for word in who.split())
            tag = f"{initials}-{label}-{prefix}".replace(" ", "-")
            try:
                return await drive(
                    indexes,
                    concurrency,
                    lambda i: runners[who](kind or kinds[i], tag, i),
                    lambda: progress.advance(task),
                )
            finally:
                # Only the phase under way is drawn: the display's CPU is the client's.
                progress.remove_task(task)

        async def histories_of(samples: list[Sample]) -> list[WorkflowHistory]:
            return [
                await client.get_workflow_handle(s.workflow_id).fetch_history() for s in samples
            ]

        # Warm up (imports, caches, the server's first workflows), then measure idle latency
        # of completed orders, and the rollback of bounced bills (the longest), one at a time.
        idle_samples = range(min(IDLE_SAMPLES, bench.orders))
        for who in runners:
            await phase(who, "warm-up", range(WARM_UP), 5, "completed")
        idle = {who: (await phase(who, "idle", idle_samples, 1, "completed"))[0] for who in runners}
        histories = {who: History() for who in runners}
        for who in runners:
            if who not in LOCAL_RUNNERS:
                samples, _ = await phase(who, "idle rollback", idle_samples, 1, "bill_failure")
                histories[who].idle_rollbacks = await histories_of(samples)

        loaded = {who: Measured() for who in runners}
        block_rates: list[tuple[str, float]] = []
        for who, indexes in load_blocks(bench.orders, bench.rounds, runners=list(runners)):
            before = read_all(readers)
            samples, wall = await phase(who, "load", indexes, bench.concurrency)
            loaded[who].add_cpu(before, read_all(readers))
            loaded[who].samples += samples
            loaded[who].wall_seconds += wall
            block_rates.append((who, round(len(indexes) / wall, 1)))
        peak_rss = peak_rss_mib(workers[0].pid)
        unsandboxed_peak_rss = peak_rss_mib(workers[1].pid)

        for who, measured in loaded.items():
            for sample in measured.samples:
                kept = histories[who].of(sample.kind)
                if len(kept) < HISTORY_SAMPLES:
                    handle = client.get_workflow_handle(sample.workflow_id)
                    kept.append(await handle.fetch_history())

    regular = _against_engine(bench, loaded, idle, histories, "orders", "engine")
    unsandboxed = _against_engine(
        bench, loaded, idle, histories, "unsandboxed orders", "unsandboxed engine"
    )
    local = _against_engine(bench, loaded, idle, histories, "local orders", "local engine")
    cpu_ms_per_order = {
        who: {
            process: None if seconds is None else round(seconds * 1000 / bench.orders, 1)
            for process, seconds in measured.cpu_seconds.items()
        }
        for who, measured in loaded.items()
    }
    looked_at = loaded["orders"].samples + loaded["local orders"].samples
    timeline_start = min(s.started for s in looked_at)
    via_api: dict[str, Any] = {}
    if "api" in loaded:
        via_api = {"api": _api_results(bench, loaded, idle)}
    return {
        "store": bench.store,
        **regular,
        "worker_peak_rss_mib": peak_rss,
        "unsandboxed_worker_peak_rss_mib": unsandboxed_peak_rss,
        "local": local,
        "unsandboxed": unsandboxed,
        **via_api,
        "cpu_ms_per_order": cpu_ms_per_order,
        "targets": _targets(bench, loaded, regular, local, peak_rss),
        "block_rates_per_s": block_rates,
        "settings": {
            **asdict(bench),
            "runners": list(runners),
            "engine_plans": {kind: asdict(plan) for kind, plan in ENGINE_PLANS.items()},
            "blocks": "every runner in turn, then in reverse; once per round",
            "server": "embedded dev server (SQLite, WAL)" if own_server else "TEMPORAL_ADDRESS",
            "store_database": database,
            "cpu_processes": {
                process: PROCESSES[process] if read is not None else "not measured (outside)"
                for process, read in readers.items()
            },
            "simulated_waits": 0,
            "cpus": os.cpu_count(),
        },
        "timeline": {
            who: [
                [round(s.finished - timeline_start, 3), s.kind, round(s.latency_ms, 1)]
                for s in sorted(loaded[who].samples, key=lambda s: s.finished)
            ]
            for who in ("orders", "local orders")
        },
    }


def _store_database(
    bench: BenchSettings, stack: AsyncExitStack, env: dict[str, str]
) -> tuple[str, CpuReader | None]:
    """Point ``env`` (PIZZA_HOME set) at the bench's own store database and card vault keys.

    On PostgreSQL: a private cluster and a database on it, upgraded as `pizza db upgrade`
    does, gone when ``stack`` closes. What the database is, and how to read its CPU time
    (None: it runs inside the processes that use it).
    """
    home = Path(env["PIZZA_HOME"])
    # The card vault's keys: a throwaway ring (a shared store must be given its keys).
    env.pop("PIZZA_VAULT_KEYS", None)
    env["PIZZA_VAULT_KEY_FILE"] = str(home / "vault-keys.json")
    load_or_create_key_file(home / "vault-keys.json")
    if bench.store == "sqlite":
        env["PIZZA_DATABASE_URL"] = f"sqlite:///{home / 'pizza.db'}"
        return "SQLite, a file in the bench's home", None
    # In this thread (a few seconds, before anything else runs): Ctrl-C meanwhile stops it.
    bindir = require_bindir()
    cluster = PostgresCluster.start(bindir)
    stack.callback(cluster.stop)
    url = env["PIZZA_DATABASE_URL"] = stack.enter_context(cluster.database())
    engine = open_engine(url, pool_size=1)
    try:
        upgrade_stores(engine)
    finally:
        engine.dispose()
    postgres = f"PostgreSQL {bindir.parent.name}, a private cluster (fsync off)"
    return postgres, functools.partial(tree_cpu_seconds, cluster.postmaster_pid)


def _against_engine(
    bench: BenchSettings,
    loaded: dict[str, Measured],
    idle: dict[str, list[Sample]],
    histories: dict[str, History],
    orders: str,
    engine: str,
) -> dict[str, Any]:
    """The figures of one kind of orders beside those of its engine limit."""
    orders_per_s = bench.orders / loaded[orders].wall_seconds
    engine_per_s = bench.orders / loaded[engine].wall_seconds
    ours, theirs = histories[orders], histories[engine]
    return {
        "orders_per_s": round(orders_per_s, 1),
        "engine_limit_per_s": round(engine_per_s, 1),
        "ratio": round(orders_per_s / engine_per_s, 3),
        "engine_latency_ms": percentiles([s.latency_ms for s in idle[engine]])["p50"],
        "idle_latency_ms": percentiles([s.latency_ms for s in idle[orders]])["p50"],
        "latency_ms": _latencies(loaded[orders].samples),
        "engine_latency_under_load_ms": _latencies(loaded[engine].samples),
        "idle_rollback_ms": _rollbacks(ours.idle_rollbacks),
        "engine_idle_rollback_ms": _rollbacks(theirs.idle_rollbacks),
        "rollback_ms": _rollbacks(ours.rolled_back),
        "engine_rollback_ms": _rollbacks(theirs.rolled_back),
        "history_events_per_order": _events(ours),
        "engine_history_events_per_workflow": _events(theirs),
        "actions_per_order": _actions(ours),
        "engine_actions_per_workflow": _actions(theirs),
        "worker_cpu_seconds": {
            "baseline": round(loaded[engine].worker_cpu_seconds, 2),
            "orders": round(loaded[orders].worker_cpu_seconds, 2),
        },
    }


def _targets(
    bench: BenchSettings,
    loaded: dict[str, Measured],
    regular: dict[str, Any],
    local: dict[str, Any],
    peak_rss: float,
) -> dict[str, dict[str, Any]]:
    """What the order saga should reach in the default (sandboxed) configuration, each with
    its value and whether it is met; beside it, for information, the same ratio with orders
    and engine both unsandboxed."""
    engine_per_s = bench.orders / loaded["engine"].wall_seconds
    local_per_s = bench.orders / loaded["local orders"].wall_seconds

    def throughput(orders: str, engine: str) -> float | None:
        return _ratio(loaded[engine].wall_seconds, loaded[orders].wall_seconds)

    def cpu(process: str, orders: str, engine: str) -> float | None:
        return _ratio(
            loaded[orders].cpu_seconds.get(process), loaded[engine].cpu_seconds.get(process)
        )

    rollback = _target(
        "orders' rollback p50 under load / the engine's",
        _ratio(regular["rollback_ms"]["p50"], regular["engine_rollback_ms"]["p50"]),
        "<=",
        ROLLBACK_TARGET,
    )
    rollback["idle_ratio"] = _ratio(
        regular["idle_rollback_ms"]["p50"], regular["engine_idle_rollback_ms"]["p50"]
    )
    targets = {
        "throughput": _target(
            "orders' throughput / the engine limit",
            throughput("orders", "engine"),
            ">=",
            THROUGHPUT_TARGET,
        ),
        "worker_cpu": _target(
            "orders' worker CPU per order / the engine's",
            cpu("worker", "orders", "engine"),
            "<=",
            WORKER_CPU_TARGET,
        ),
        "server_cpu": _target(
            "orders' Temporal server CPU per order / the engine's",
            cpu("server", "orders", "engine"),
            "<=",
            SERVER_CPU_TARGET,
        ),
        "rollback": rollback,
        "local_throughput": _target(
            "local orders' throughput / the engine limit (regular)",
            _ratio(local_per_s, engine_per_s),
            ">=",
            LOCAL_THROUGHPUT_TARGET,
        ),
        "local_actions": _target(
            "local orders' billable actions per completed order",
            local["actions_per_order"]["completed"] or None,
            "<=",
            LOCAL_ACTIONS_TARGET,
        ),
        "worker_rss": _target(
            "worker peak RSS (MiB), orders and engine workers",
            peak_rss,
            "<=",
            WORKER_RSS_TARGET_MIB,
        ),
    }
    unsandboxed = ("unsandboxed orders", "unsandboxed engine")
    targets["throughput"]["unsandboxed_ratio"] = throughput(*unsandboxed)
    targets["worker_cpu"]["unsandboxed_ratio"] = cpu("worker", *unsandboxed)
    targets["server_cpu"]["unsandboxed_ratio"] = cpu("server", *unsandboxed)
    return targets


def _target(
    what: str, value: float | None, op: Literal["<=", ">="], bound: float
) -> dict[str, Any]:
    """A target: its value, the bound it is held to, and met (None: nothing to measure)."""
    met = None if value is None else value >= bound if op == ">=" else value <= bound
    return {"what": what, "value": value, "op": op, "target": bound, "met": met}


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return round(ours / theirs, 3)


def load_blocks(
    orders: int, rounds: int, *, runners: Sequence[str] = ("engine", "orders")
) -> list[tuple[str, range]]:
    """The loaded run's blocks: the runners in turn, then in reverse, in each round
    (engine, orders, orders, engine; or engine, orders, local engine, local orders, local
    orders, local engine, orders, engine).

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
    bench: BenchSettings, loaded: dict[str, Measured], idle: dict[str, list[Sample]]
) -> dict[str, Any]:
    """The API against placing directly: throughput, latency, and its overhead per order
    (the difference of the p50 latencies of the same orders, idle and under load)."""
    api, direct = loaded["api"], loaded["orders"]
    api_cpu_seconds = api.cpu_seconds.get("api") or 0.0
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


def start_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A `pizza api` process placing orders as the bench's `orders` runner does."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pizza_saga", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"


async def api_ready(http: aiohttp.ClientSession, process: subprocess.Popen[bytes]) -> None:
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


def _actions(history: History) -> dict[str, int]:
    """The most any sampled run of each kind cost."""
    return {
        kind: max((billable_actions(h) for h in history.of(kind)), default=0)
        for kind in ("completed", "rolled_back")
    }


def _events(history: History) -> dict[str, float]:
    """History events per run of each kind, on average over the sampled runs."""
    return {
        kind: round(statistics.mean(len(h.events) for h in hs), 1)
        if (hs := history.of(kind))
        else 0
        for kind in ("completed", "rolled_back")
    }


async def workers_ready(
    services: Sequence[OrderService], processes: Sequence[subprocess.Popen[bytes]]
) -> None:
    """Wait until a worker polls each service's task queue (placing refuses before);
    RuntimeError if a worker process exits first or none polls within WORKER_READY_SECONDS."""
    deadline = time.monotonic() + WORKER_READY_SECONDS
    for service in services:
        while not await service.worker_polling():
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a bench worker exited ({process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no bench worker polled within {WORKER_READY_SECONDS:g} s")
            await asyncio.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    """Stop ``process`` (SIGTERM, or ``how``), killing it if it has not exited in 15 s."""
    process.send_signal(how)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
