"""`pizza bench --peers`: the order saga on Temporal beside the same saga on DBOS Transact.

Three runners on this machine, in interleaved blocks (each in turn, then in reverse, as
`pizza bench` runs its own), every one placing the same orders at the same concurrency:

- ``orders``: the product's orders with regular activities, on the bench's worker process
  (the deployment's worker, SDK sandbox on) and an embedded Temporal dev server;
- ``local orders``: the same orders in local mode (PIZZA_LOCAL_ACTIVITIES);
- ``dbos``: the same saga on DBOS Transact, its system database a SQLite file. The same
  steps in the same order (distance, stock, charge, bill, driver), each a DBOS step doing
  what the product's activity does, on the product's own stores (a SQLite file of their
  own); on a failure the same compensations in reverse (refund, then stock). DBOS runs
  inside the application: one process of its own places the orders (tokenizing their cards,
  as the order service does) and runs their steps, so its CPU is DBOS's alone.

After every phase the bench checks that money and stock add up on each runner's stores:
the net charged is the price of the orders that completed, the stock taken their pizzas,
and every order ended as its kind says. A comparison doing different work would be
worthless.

DBOS Transact is an optional extra (``pip install -e '.[peers]'``); this module alone imports
it, in the DBOS process only.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import logging
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from rich.console import Group
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import Connection, Engine, create_engine, event
from temporal_saga import StepOutcome
from temporal_saga.effects import EffectKey, EffectRefused

from pizza_saga.app import SEARCH_ATTRIBUTES, Stores, build_service, connect_client, open_stores
from pizza_saga.bench.cpu import (
    CpuReader,
    machine_busy_seconds,
    own_cpu_seconds,
    process_cpu_seconds,
    read_all,
)
from pizza_saga.bench.run import (
    IDLE_SAMPLES,
    NO_WAITS,
    ORDER_MIX,
    WARM_UP,
    Measured,
    Sample,
    drive,
    load_blocks,
    order_for,
    percentiles,
    run_order,
    stop_process,
    workers_ready,
)
from pizza_saga.billing import cards
from pizza_saga.billing.activities import BILL_STEP, BOUNCING_EMAIL_PREFIX, CHARGE_STEP
from pizza_saga.billing.models import (
    Bill,
    BillReceipt,
    CardToken,
    ChargeReceipt,
    ChargeRequest,
    RefundReceipt,
    RefundRequest,
)
from pizza_saga.billing.store import Charged, net_charged
from pizza_saga.billing.vault import CardTokenError
from pizza_saga.common.crypto import load_or_create_key_file
from pizza_saga.common.devserver import SQLITE_PRAGMAS, DevServerConfig, running_dev_server
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.activities import STEP as INVENTORY_STEP
from pizza_saga.inventory.models import StockReleased, StockRequest
from pizza_saga.inventory.store import OutOfStock
from pizza_saga.order.activities import (
    HEARTBEAT_EVERY_SECONDS,
    NO_DRIVER_POSTAL_CODE,
    get_distance,
)
from pizza_saga.order.menu import MENU, price_order
from pizza_saga.order.models import (
    DeliveryRequest,
    DriverAnswer,
    OrderConfirmation,
    PlacedOrder,
    SimulatedWaits,
)
from pizza_saga.order.workflow import MAX_DELIVERY_KM, STEP_RETRY

RUNNERS = ("orders", "local orders", "dbos")
"""What the comparison runs, in block order."""
PROCESSES = {
    "server": "the Temporal dev server",
    "worker": "the product's worker process (sandboxed)",
    "client": "the bench's driver: places the orders, tokenizes their cards",
    "dbos": "the DBOS process: places the orders and runs their steps",
}
"""The processes whose CPU time is read."""
SHOWN = {"server": "Temporal server", "worker": "worker", "client": "client", "dbos": "DBOS"}
"""The processes as the table names them."""
INVOLVED = {
    "orders": ("server", "worker", "client"),
    "local orders": ("server", "worker", "client"),
    "dbos": ("dbos",),
}
"""The processes each runner's orders run on; the others idle meanwhile."""
THROUGHPUT_TARGET = 1.0
"""Local orders' throughput at least DBOS's on the same machine."""
DBOS_WORKFLOW_PREFIX = "pizza-dbos-order-"
DBOS_APP = "pizza-peers"
DRIVER_ATTEMPTS = 3
DBOS_READY_SECONDS = 120.0
"""How long the bench waits for its DBOS process to launch."""

T = TypeVar("T")


@dataclass(frozen=True)
class PeersSettings:
    """What the comparison runs."""

    orders: int = 600
    """Orders per runner under load (the warm-up and idle phases come on top)."""
    concurrency: int = 20
    mix: dict[str, float] = field(default_factory=lambda: dict(ORDER_MIX))
    seed: int = 1
    rounds: int = 2
    """Rounds of the loaded run; each runs every runner in turn, then in reverse."""
    dbos_sqlite: Literal["wal", "defaults"] = "wal"
    """DBOS's system database on the SQLite settings of the product's stores and Temporal
    dev server (WAL, synchronous=normal), or on DBOS's own defaults (a rollback journal,
    synchronous=full)."""


@dataclass
class Books:
    """Money and stock on one runner's stores, checked phase by phase."""

    orders: int = 0
    as_planned: int = 0
    """Orders that ended as their kind says (completed, or rolled back)."""
    completed: int = 0
    expected_cents: int = 0
    """The price of the completed orders."""
    charged_cents: int = 0
    """Net charged over the same phases: charges less refunds."""
    expected_pizzas: int = 0
    pizzas_taken: int = 0
    """Stock on hand before the phases less after them."""

    @property
    def ok(self) -> bool:
        return (
            self.as_planned == self.orders
            and self.charged_cents == self.expected_cents
            and self.pizzas_taken == self.expected_pizzas
        )


def _money_and_stock(stores: Stores) -> tuple[int, int]:
    """Net cents charged, and pizzas on hand, on ``stores``."""
    return net_charged(stores.payments.payments()), sum(stores.inventory.on_hand().values())


def _planned(kind: str) -> str:
    return "completed" if kind == "completed" else "rolled_back"


PRICE = price_order(p.price for p in order_for("completed", "PRICE").items).total
PIZZAS = len(order_for("completed", "PIZZAS").items)
"""What every completed order of the bench costs and takes (all are the seed's order)."""


async def peers_benchmark(bench: PeersSettings, progress: Progress) -> dict[str, Any]:
    """Run the comparison; its results as the JSON report holds them."""
    rng = random.Random(bench.seed)
    kinds = rng.choices(list(bench.mix), weights=list(bench.mix.values()), k=bench.orders)
    prefix = secrets.token_hex(3).upper()
    began_at = datetime.now(UTC)
    load_before = os.getloadavg()
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pizza-peers-")))
        env = {**os.environ, "PIZZA_HOME": str(home), **NO_WAITS}
        env.pop("PIZZA_VAULT_KEYS", None)
        env["PIZZA_VAULT_KEY_FILE"] = str(home / "vault-keys.json")
        load_or_create_key_file(home / "vault-keys.json")
        env["PIZZA_DATABASE_URL"] = f"sqlite:///{home / 'pizza.db'}"
        # DBOS's stores: the same classes on a file of their own; its system database another.
        dbos_env = {**env, "PIZZA_DATABASE_URL": f"sqlite:///{home / 'dbos-stores.db'}"}
        system_database = f"sqlite:///{home / 'dbos-system.sqlite'}"
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
        dbos_settings = Settings.from_env(dbos_env)
        stores = {"temporal": open_stores(settings), "dbos": open_stores(dbos_settings)}
        # Enough stock for every order of every phase: the bench measures speed.
        stock = 10 * len(RUNNERS) * (bench.orders + WARM_UP + IDLE_SAMPLES)
        for opened in stores.values():
            stack.callback(opened.engine.dispose)
            opened.inventory.stock_up(dict.fromkeys(MENU, stock), overwrite=True)
        store_of = {"orders": "temporal", "local orders": "temporal", "dbos": "dbos"}
        # The product's worker as the bench runs it (sandboxed, a process of its own).
        worker = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            [sys.executable, "-m", "pizza_saga.bench.worker"], env=env, stdin=subprocess.DEVNULL
        )
        stack.callback(stop_process, worker)
        dbos = DbosProcess(dbos_env, home / "dbos.log", system_database, bench.dbos_sqlite)
        stack.callback(dbos.stop)
        readers: dict[str, CpuReader | None] = {
            "server": server_cpu,
            "worker": functools.partial(process_cpu_seconds, worker.pid),
            "client": own_cpu_seconds,
            "dbos": functools.partial(process_cpu_seconds, dbos.pid),
        }
        client = await connect_client(settings, target_host=env.get("TEMPORAL_ADDRESS"))
        services = {
            "orders": build_service(client, stores["temporal"], settings),
            "local orders": build_service(
                client, stores["temporal"], settings.model_copy(update={"local_activities": True})
            ),
        }
        await dbos.ready()
        await workers_ready(list(services.values()), [worker])

        books = {who: Books() for who in RUNNERS}
        block_rates: list[tuple[str, float]] = []

        loaded = {who: Measured() for who in RUNNERS}
        machine = dict.fromkeys(RUNNERS, 0.0)  # the whole machine's CPU in each one's blocks

        async def phase(
            who: str,
            label: str,
            indexes: range,
            concurrency: int,
            kind: str | None = None,
            *,
            measured: bool = False,
        ) -> list[Sample]:
            """Run one phase of ``who``'s orders and check its books; with ``measured``, a
            loaded block: its samples, wall time and CPU go to ``loaded``."""
            planned = [kind or kinds[i] for i in indexes]
            initials = "".join(word[0] for word in who.split())
            tag = f"{initials}-{label}-{prefix}".replace(" ", "-")
            task = progress.add_task(f"{who}, {label}", total=len(indexes))
            ledger = stores[store_of[who]]
            money, shelf = await asyncio.to_thread(_money_and_stock, ledger)
            # Read right around the orders: the books' queries are not the runner's work.
            busy, before = machine_busy_seconds(), read_all(readers)
            try:
                if who == "dbos":
                    samples, wall = await dbos.run(tag, indexes, concurrency, planned)
                else:
                    service = services[who]
                    samples, wall = await drive(
                        indexes,
                        concurrency,
                        lambda i: run_order(client, service, planned[i - indexes.start], tag, i),
                        lambda: progress.advance(task),
                    )
            finally:
                progress.remove_task(task)
            if measured:
                loaded[who].add_cpu(before, read_all(readers))
                machine[who] += machine_busy_seconds() - busy
                loaded[who].samples += samples
                loaded[who].wall_seconds += wall
                block_rates.append((who, round(len(indexes) / wall, 1)))
            money_after, shelf_after = await asyncio.to_thread(_money_and_stock, ledger)
            kept = books[who]
            done = sum(s.kind == "completed" for s in samples)
            kept.orders += len(samples)
            kept.as_planned += sum(
                s.kind == _planned(k) for s, k in zip(samples, planned, strict=True)
            )
            kept.completed += done
            kept.expected_cents += done * PRICE
            kept.expected_pizzas += done * PIZZAS
            kept.charged_cents += money_after - money
            kept.pizzas_taken += shelf - shelf_after
            return samples

        # Warm up (imports, caches, the first workflows), then idle latency: completed
        # orders one at a time.
        idle_samples = range(min(IDLE_SAMPLES, bench.orders))
        for who in RUNNERS:
            await phase(who, "warm-up", range(WARM_UP), 5, "completed")
        idle = {who: await phase(who, "idle", idle_samples, 1, "completed") for who in RUNNERS}
        for who, indexes in load_blocks(bench.orders, bench.rounds, runners=list(RUNNERS)):
            await phase(who, "load", indexes, bench.concurrency, measured=True)

    runners = {
        who: _runner_results(bench, loaded[who], idle[who], books[who], INVOLVED[who])
        for who in RUNNERS
    }
    for who, figures in runners.items():
        # What the machine spent besides the bench's processes (the server measured): the
        # machine's other work, in cores, while this runner ran.
        ours = sum(seconds or 0.0 for seconds in loaded[who].cpu_seconds.values())
        others = max(0.0, machine[who] - ours) / loaded[who].wall_seconds
        figures["other_load_cores"] = round(others, 2)
    dbos_rate = runners["dbos"]["orders_per_s"]
    for figures in runners.values():
        figures["ratio_to_dbos"] = _ratio(figures["orders_per_s"], dbos_rate)
    local_ratio = runners["local orders"]["ratio_to_dbos"]
    return {
        "runners": runners,
        "target": {
            "what": "local orders' throughput / DBOS's",
            "value": local_ratio,
            "op": ">=",
            "target": THROUGHPUT_TARGET,
            "met": None if local_ratio is None else local_ratio >= THROUGHPUT_TARGET,
        },
        "books_ok": all(figures["books"]["ok"] for figures in runners.values()),
        "block_rates_per_s": block_rates,
        "measured": {
            "began_at": began_at.isoformat(timespec="seconds"),
            "seconds": round((datetime.now(UTC) - began_at).total_seconds()),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {
            **asdict(bench),
            "runners": list(RUNNERS),
            "blocks": "every runner in turn, then in reverse; once per round",
            "warm_up": WARM_UP,
            "idle_samples": len(idle_samples),
            "server": "embedded dev server (SQLite, WAL)" if own_server else "TEMPORAL_ADDRESS",
            "stores": "SQLite: one file for the Temporal runners, one for DBOS (WAL)",
            "dbos": {
                "version": importlib.metadata.version("dbos"),
                "system_database": "SQLite, a file of its own: "
                + (
                    "WAL, synchronous=normal, as the stores and the Temporal server"
                    if bench.dbos_sqlite == "wal"
                    else "DBOS's defaults (rollback journal, synchronous=full)"
                ),
            },
            "cpu_processes": {
                process: PROCESSES[process] if read is not None else "not measured (outside)"
                for process, read in readers.items()
            },
            "simulated_waits": 0,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def _runner_results(
    bench: PeersSettings,
    measured: Measured,
    idle: list[Sample],
    books: Books,
    involved: tuple[str, ...],
) -> dict[str, Any]:
    """One runner's figures: throughput, latencies, CPU per order, the books."""
    per_order = {
        process: None if seconds is None else round(seconds * 1000 / bench.orders, 1)
        for process, seconds in measured.cpu_seconds.items()
    }
    mine = {process: per_order[process] for process in involved}
    known = [ms for ms in mine.values() if ms is not None]
    return {
        "orders_per_s": round(bench.orders / measured.wall_seconds, 1),
        "idle_latency_ms": percentiles([s.latency_ms for s in idle])["p50"],
        "latency_ms": {
            kind: percentiles([s.latency_ms for s in measured.samples if s.kind == kind])
            for kind in ("completed", "rolled_back")
        },
        "cpu_ms_per_order": {
            **mine,
            "total": round(sum(known), 1) if len(known) == len(mine) else None,
        },
        "idle_processes_cpu_ms_per_order": {
            process: ms for process, ms in per_order.items() if process not in involved
        },
        "books": {**asdict(books), "ok": books.ok},
    }


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return round(ours / theirs, 3)


class DbosProcess:
    """The DBOS process (``python -m pizza_saga.bench.peers``): it places the orders it is
    sent, a phase per JSON line on its stdin, and answers each with the samples on stdout."""

    def __init__(self, env: dict[str, str], log: Path, system_database: str, sqlite: str) -> None:
        with log.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "pizza_saga.bench.peers", system_database, sqlite],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
            )
        self._log = log

    @property
    def pid(self) -> int:
        return self._process.pid

    async def _answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.to_thread(self._process.stdout.readline)
        if not line:
            tail = self._log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the DBOS process exited ({self._process.poll()}): {tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the DBOS process failed: {answer['error']}")
        return answer

    async def ready(self) -> None:
        """Wait until DBOS has launched; RuntimeError if it exits or takes too long."""
        async with asyncio.timeout(DBOS_READY_SECONDS):
            await self._answer()

    async def run(
        self, tag: str, indexes: range, concurrency: int, kinds: list[str]
    ) -> tuple[list[Sample], float]:
        """One phase: the orders ``indexes`` of ``kinds``, ``concurrency`` at a time."""
        assert self._process.stdin is not None
        request = {
            "tag": tag,
            "start": indexes.start,
            "stop": indexes.stop,
            "concurrency": concurrency,
            "kinds": kinds,
        }
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        self._process.stdin.flush()
        answer = await self._answer()
        samples = [Sample(*sample) for sample in answer["samples"]]
        return samples, float(answer["wall_seconds"])

    def stop(self) -> None:
        """Close its input (it destroys DBOS and exits); stop it if it has not in 15 s."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(self._process)
        if self._process.stdout is not None:
            self._process.stdout.close()


# The DBOS side: the order saga on DBOS Transact, in its own process.


class StepError(Exception):
    """A DBOS step's failure, named as the product's activity names it; ``final`` ones are
    not retried (the activity's non-retryable ApplicationError)."""

    def __init__(self, error_type: str, message: str, final: bool = True) -> None:
        super().__init__(error_type, message, final)
        self.error_type, self.message, self.final = error_type, message, final

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


def _retryable(error: BaseException) -> bool:
    return not (isinstance(error, StepError) and error.final)


OrderSaga = Callable[[PlacedOrder, SimulatedWaits], Awaitable[OrderConfirmation]]


def dbos_order_saga(stores: Stores, settings: Settings) -> OrderSaga:
    """The order saga as a DBOS workflow over ``stores``: each step a DBOS step doing what the
    product's activity of the same name does, with the same retries and compensations.

    The steps that write are synchronous functions run with DBOS.run_step_async: DBOS runs
    such a step, its checkpoint included, on a thread of its own (the product's activities
    hand the same store calls to a thread).
    """
    from dbos import DBOS, StepOptions

    def forward(name: str) -> StepOptions:
        return StepOptions(
            name=name,
            retries_allowed=True,
            max_attempts=STEP_RETRY.maximum_attempts or 1,
            interval_seconds=STEP_RETRY.initial_interval.total_seconds(),
            backoff_rate=STEP_RETRY.backoff_coefficient,
            should_retry=_retryable,
        )

    def compensating(name: str) -> StepOptions:
        return StepOptions(
            name=name,
            retries_allowed=True,
            max_attempts=settings.compensation_attempts,
            interval_seconds=settings.compensation_backoff_seconds,
            backoff_rate=2.0,
            should_retry=_retryable,
        )

    def attempt() -> int:
        """The step's attempt, from 1 (as Temporal's activity.info().attempt counts)."""
        status = DBOS.step_status
        if status is None or status.current_attempt is None:
            return 1
        return status.current_attempt + 1

    def destroyer(order_number: str) -> Callable[[Connection], None]:
        return lambda conn: stores.vault.destroy(order_number=order_number, conn=conn)

    def update_inventory(request: StockRequest) -> None:
        effect = EffectKey(key=request.order_number, step=INVENTORY_STEP, owner=request.execution)
        try:
            stores.inventory.reserve(effect, request.items)
        except OutOfStock as err:
            raise StepError("OutOfStockError", str(err)) from None
        except EffectRefused as err:
            raise StepError(err.error_type, str(err)) from None

    def revert_inventory(request: StockRequest, outcome: StepOutcome) -> StockReleased:
        effect = EffectKey(key=request.order_number, step=INVENTORY_STEP, owner=request.execution)
        released = stores.inventory.release(effect)
        if released is None and outcome is StepOutcome.SUCCEEDED:
            raise StepError(
                "CompensationInconsistencyError",
                f"update_inventory succeeded for order {request.order_number} "
                "but no reservation is recorded",
            )
        if released:
            summary = f"Reverted changes to inventory: {sum(released.values())} pizzas back"
        else:
            summary = "Nothing to revert: no pizzas had been taken"
        return StockReleased(items=released or {}, summary=summary)

    def process_credit_card(request: ChargeRequest) -> ChargeReceipt:
        effect = EffectKey(key=request.order_number, step=CHARGE_STEP, owner=request.execution)
        try:
            number = stores.vault.detokenize(request.card.token, order_number=request.order_number)
        except CardTokenError as err:
            # The number goes in the charge's own transaction: gone, it may have been charged.
            earlier = stores.payments.charged(effect)
            if earlier is None:
                raise StepError("CardTokenError", str(err)) from None
            return ChargeReceipt(amount=earlier.amount, card_last4=earlier.card_last4)
        try:
            cards.authorize(number, attempt())
        except cards.InvalidCard as err:
            raise StepError("CreditCardProcessingError", str(err)) from None
        except cards.CardDeclined as err:
            raise StepError("CardDeclinedError", str(err)) from None
        except cards.ProcessorUnavailable as err:
            raise StepError("ProcessorUnavailableError", str(err), False) from None
        card_last4 = cards.last4(number)
        del number
        try:
            charged = stores.payments.charge(
                effect, request.amount, card_last4, along=destroyer(request.order_number)
            )
        except EffectRefused as err:
            raise StepError(err.error_type, str(err)) from None
        return ChargeReceipt(amount=charged.amount, card_last4=charged.card_last4)

    def refund_customer(request: RefundRequest, outcome: StepOutcome) -> RefundReceipt:
        tries = attempt()

        def authorize(charged: Charged) -> None:
            try:
                cards.authorize_refund(charged.card_last4, tries)
            except cards.ProcessorUnavailable as err:
                raise StepError("RefundFailedError", str(err), False) from None

        effect = EffectKey(key=request.order_number, step=CHARGE_STEP, owner=request.execution)
        # Rolled back: the card number, if still kept, is no longer needed by anyone.
        refunded = stores.payments.refund(
            effect, authorize=authorize, along=destroyer(request.order_number)
        )
        if refunded is None and outcome is StepOutcome.SUCCEEDED:
            raise StepError(
                "CompensationInconsistencyError",
                f"process_credit_card succeeded for order {request.order_number} "
                "but no charge is recorded",
            )
        amount = refunded.amount if refunded else 0
        card_last4 = refunded.card_last4 if refunded else None
        if amount:
            summary = f"Customer Refunded: {amount} cents to card ending {card_last4}"
        else:
            summary = "Nothing to refund: no charge had been made"
        return RefundReceipt(amount=amount, card_last4=card_last4, summary=summary)

    def send_bill(bill: Bill) -> BillReceipt:
        if bill.customer_email.startswith(BOUNCING_EMAIL_PREFIX):
            raise StepError(
                "BillDeliveryError",
                f"bill for order {bill.order_number} bounced: mailbox unavailable",
            )
        record = stores.payments.bill(
            EffectKey(key=bill.order_number, step=BILL_STEP, owner=bill.execution),
            customer_id=bill.customer_id,
            amount=bill.amount,
            description=bill.description,
        )
        return BillReceipt(
            confirmation_number=record.confirmation_number,
            billing_timestamp=int(record.created_at.timestamp()),
            amount=record.amount,
        )

    def discard_card(card: CardToken) -> None:
        stores.vault.discard(card)

    async def notify_delivery_driver(request: DeliveryRequest) -> DriverAnswer:
        waited = 0.0
        while waited < request.wait_seconds:
            step = min(HEARTBEAT_EVERY_SECONDS, request.wait_seconds - waited)
            await asyncio.sleep(step)
            waited += step
        if request.address.postal_code == NO_DRIVER_POSTAL_CODE:
            return DriverAnswer(accepted=False)
        return DriverAnswer(accepted=True, driver="Driver #7")

    driver = StepOptions(
        name="notify_delivery_driver",
        retries_allowed=True,
        max_attempts=DRIVER_ATTEMPTS,
        interval_seconds=1.0,
        backoff_rate=2.0,
    )

    @DBOS.workflow(name="PizzaOrderSaga")
    async def order_saga(order: PlacedOrder, waits: SimulatedWaits) -> OrderConfirmation:
        execution = DBOS.workflow_id
        assert execution is not None
        undo: list[Callable[[], Awaitable[object]]] = []
        charging = False

        async def saga_step(
            call: Awaitable[T],
            compensation: Callable[[StepOutcome], Awaitable[object]] | None = None,
        ) -> T:
            """Await a step, its compensation registered first (told what the step did)."""
            outcome = StepOutcome.UNKNOWN
            if compensation is not None:
                undo.append(lambda: compensation(outcome))
            try:
                result = await call
            except StepError:
                outcome = StepOutcome.FAILED
                raise
            outcome = StepOutcome.SUCCEEDED
            return result

        try:
            if order.is_delivery:
                distance = await DBOS.run_step_async(
                    forward("get_distance"), get_distance, order.address
                )
                if distance.kilometers > MAX_DELIVERY_KM:
                    raise StepError(
                        "OutsideServiceAreaError",
                        f"customer lives outside the service area: {distance.kilometers} km "
                        f"away, we deliver up to {MAX_DELIVERY_KM} km",
                    )
            stock = StockRequest(
                order_number=order.order_number,
                items=dict(Counter(pizza.description for pizza in order.items)),
                execution=execution,
            )
            await saga_step(
                DBOS.run_step_async(forward("update_inventory"), update_inventory, stock),
                lambda outcome: DBOS.run_step_async(
                    compensating("revert_inventory"), revert_inventory, stock, outcome
                ),
            )
            price = price_order(pizza.price for pizza in order.items)
            charge_request = ChargeRequest(
                order_number=order.order_number,
                holder_name=order.card.holder_name,
                card=order.card.token,
                amount=price.total,
                execution=execution,
            )
            refund_request = RefundRequest(order_number=order.order_number, execution=execution)
            charging = True
            charge = await saga_step(
                DBOS.run_step_async(
                    forward("process_credit_card"), process_credit_card, charge_request
                ),
                lambda outcome: DBOS.run_step_async(
                    compensating("refund_customer"), refund_customer, refund_request, outcome
                ),
            )
            # The kitchen works on reserved, paid pizzas, as in PizzaOrderWorkflow.
            if waits.prep_seconds > 0:
                await DBOS.sleep_async(waits.prep_seconds)
            # No compensation of its own, but inside the saga: a bill that cannot be sent
            # refunds the charge and puts the pizzas back.
            bill_request = Bill(
                customer_id=order.customer.customer_id,
                customer_email=order.customer.email,
                order_number=order.order_number,
                description="Pizza",
                amount=charge.amount,
                execution=execution,
            )
            bill = await saga_step(
                DBOS.run_step_async(forward("send_bill"), send_bill, bill_request)
            )
        except Exception:
            for compensation in reversed(undo):
                await compensation()
            if not charging:  # the charge, or its refund, destroys the card number otherwise
                await DBOS.run_step_async(forward("discard_card"), discard_card, order.card.token)
            raise
        status = "SUCCESS"
        if order.is_delivery:
            delivery = DeliveryRequest(
                order_number=order.order_number,
                address=order.address,
                wait_seconds=waits.driver_seconds,
            )
            try:
                answer = await DBOS.run_step_async(driver, notify_delivery_driver, delivery)
            except Exception:  # no driver reached: paid, not rolled back (DELIVERY FAILURE)
                answer = DriverAnswer(accepted=False)
            if not answer.accepted:
                status = "DELIVERY FAILURE"
        return OrderConfirmation(
            order_number=order.order_number,
            status=status,
            confirmation_number=bill.confirmation_number,
            billing_timestamp=bill.billing_timestamp,
            amount=bill.amount,
            card_last4=charge.card_last4,
        )

    return order_saga


def _wal_system_engine(url: str) -> Engine:
    """DBOS's system database engine as DBOS makes one for SQLite (its pool, IMMEDIATE
    transactions, busy timeout, foreign keys), on the SQLite settings of the product's stores
    and of the Temporal dev server: WAL, synchronous=normal (DBOS's own default is a rollback
    journal, synchronous=full: a sync of the disk at every commit)."""
    engine = create_engine(url, pool_size=20, max_overflow=0, pool_timeout=30, pool_pre_ping=True)

    def pragmas(connection: Any, _record: object) -> None:
        connection.isolation_level = "IMMEDIATE"
        for pragma in ("busy_timeout=30000", "foreign_keys=ON", *SQLITE_PRAGMAS):
            connection.execute(f"PRAGMA {pragma}")

    event.listen(engine, "connect", pragmas)
    return engine


def serve_dbos() -> None:
    """The DBOS process's main: phases in on stdin, answers out on the original stdout."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything else printed: the log
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve_dbos(answers))


async def _serve_dbos(answers: IO[str]) -> None:
    from dbos import DBOS, DBOSConfig, SetWorkflowID

    settings = Settings.from_env()
    stores = open_stores(settings)
    system_url, sqlite = sys.argv[1:3]
    config: DBOSConfig = {
        "name": DBOS_APP,
        "system_database_url": system_url,
        "log_level": "WARNING",
    }
    engine = None
    if sqlite == "wal":
        engine = config["system_database_engine"] = _wal_system_engine(system_url)
    DBOS(config=config)
    saga = dbos_order_saga(stores, settings)
    DBOS.launch()
    waits = SimulatedWaits(
        prep_seconds=settings.prep_seconds, driver_seconds=settings.driver_seconds
    )
    # As the order service gives a placed order's card token: until its deadline at least.
    token_life = timedelta(
        seconds=max(settings.card_token_ttl_seconds, settings.order_deadline_seconds)
    )

    async def run_order(kind: str, tag: str, index: int) -> Sample:
        """One order placed as the order service places it: its card tokenized, then the
        saga started; timed from the call."""
        number = f"{tag}{index:05d}"
        order = order_for(kind, number)
        started = time.perf_counter()
        card = await asyncio.to_thread(
            functools.partial(
                stores.vault.tokenize,
                order.credit_card_info.number,
                order_number=number,
                ttl=token_life,
            )
        )
        workflow_id = DBOS_WORKFLOW_PREFIX + number
        try:
            with SetWorkflowID(workflow_id):
                await saga(order.placed(card), waits)
            outcome = "completed"
        except StepError:
            outcome = "rolled_back"
        return Sample(workflow_id, outcome, started, time.perf_counter())

    def answer(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")

    async def phase(request: dict[str, Any]) -> dict[str, Any]:
        start, kinds, tag = request["start"], request["kinds"], request["tag"]
        samples, wall = await drive(
            range(start, request["stop"]),
            request["concurrency"],
            lambda i: run_order(kinds[i - start], tag, i),
            lambda: None,
        )
        return {
            "samples": [[s.workflow_id, s.kind, s.started, s.finished] for s in samples],
            "wall_seconds": wall,
        }

    try:
        answer({"ready": True})
        while line := await asyncio.to_thread(sys.stdin.readline):
            try:
                answer(await phase(json.loads(line)))
            except Exception as err:
                answer({"error": f"{type(err).__name__}: {err}"})
    finally:
        DBOS.destroy()
        if engine is not None:
            engine.dispose()
        stores.engine.dispose()


# The terminal's view of the results.


def peers_view(results: dict[str, Any]) -> Group:
    """Each runner's figures, a column each, and the target."""
    settings, runners = results["settings"], results["runners"]
    table = Table(
        title=f"pizza bench --peers: {settings['orders']} orders per runner, concurrency "
        f"{settings['concurrency']}, SQLite, DBOS Transact {settings['dbos']['version']}",
        title_justify="left",
        caption="CPU per order: each process's CPU time during its runner's loaded blocks, "
        "per order (client: the bench's driver; DBOS: one process, driver and steps); the "
        "machine's other work: its busy CPU less the bench's processes'; money and stock: "
        "what each runner's stores show against what its completed orders cost and took",
        caption_justify="left",
    )
    table.add_column("measure")
    for who in runners:
        table.add_column(who, justify="right")

    def row(name: str, figure: Callable[[dict[str, Any]], object]) -> None:
        table.add_row(
            name, *("" if (v := figure(side)) is None else str(v) for side in runners.values())
        )

    row("throughput (orders/s)", lambda side: side["orders_per_s"])
    row("ratio to DBOS", lambda side: side["ratio_to_dbos"])
    row("idle latency p50 (ms)", lambda side: side["idle_latency_ms"])
    for kind, label in (("completed", "completed"), ("rolled_back", "rolled back")):
        row(f"{label} under load p50/p99 (ms)", _latency(kind))
    for process, name in SHOWN.items():
        row(f"CPU per order, {name} (ms)", _cpu(process))
    row("CPU per order, all (ms)", lambda side: side["cpu_ms_per_order"]["total"])
    row("the machine's other work (cores)", lambda side: side["other_load_cores"])
    row(
        "net charged / price of completed (cents)",
        lambda side: f"{side['books']['charged_cents']} / {side['books']['expected_cents']}",
    )
    row(
        "pizzas taken / of completed",
        lambda side: f"{side['books']['pizzas_taken']} / {side['books']['expected_pizzas']}",
    )
    row(
        "orders ended as planned",
        lambda side: f"{side['books']['as_planned']} / {side['books']['orders']}",
    )
    row(
        "books add up",
        lambda side: "[green]yes[/]" if side["books"]["ok"] else "[red]NO[/]",
    )
    target = results["target"]
    met = {True: "[green]met[/]", False: "[red]not met[/]", None: "not measured"}[target["met"]]
    verdict = Table(title="target", title_justify="left")
    for column in ("target", "value", "bound", "met"):
        verdict.add_column(column)
    verdict.add_row(target["what"], str(target["value"]), f"{target['op']} {target['target']}", met)
    return Group(table, verdict)


def _latency(kind: str) -> Callable[[dict[str, Any]], str]:
    def figure(side: dict[str, Any]) -> str:
        cuts = side["latency_ms"][kind]
        return f"{cuts['p50']}/{cuts['p99']}"

    return figure


def _cpu(process: str) -> Callable[[dict[str, Any]], str | None]:
    def figure(side: dict[str, Any]) -> str | None:
        cpu = side["cpu_ms_per_order"]
        if process not in cpu:
            return None  # not one of this runner's processes
        return "not measured" if cpu[process] is None else str(cpu[process])

    return figure


if __name__ == "__main__":
    serve_dbos()
