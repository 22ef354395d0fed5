"""Many workers on one PostgreSQL and one Temporal, killed and restarted while orders run.

Three real `pizza worker` processes share a task queue, a dev server and a PostgreSQL store
with scarce stock. Over a hundred mixed orders (good, declined, transiently failing cards,
bouncing bills, and more good orders than pizzas) run while workers are SIGKILLed and
replaced. Whatever worker ran whichever attempt, each order ends terminal, money moved is
the price of each completed order and nothing for the others, and the stock that left the
shelf is exactly the completed orders' pizzas.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from pizza_saga.app import Stores, open_stores
from pizza_saga.billing import cards
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.pgcluster import PostgresCluster
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import OrderStatus, order_outcome, order_request, place_order
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import PizzaOrder
from tests.orders import new_order, placed
from tests.processes import Deployment, Process, deployment

pytestmark = pytest.mark.devserver

WORKERS = 3
STOCK_EACH = 50
OUTCOME_TIMEOUT = 180.0
KILL_AFTER_FINISHED = (15, 45, 75)
"""Kill a worker (SIGKILL) each time this many orders have finished, and start another."""


def start_worker(shop: Deployment) -> Process:
    """One more `pizza worker` of the shop (worker-N.log)."""
    return shop.spawn(f"worker-{len(shop.processes)}", "worker")


@pytest.fixture
def shop_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    with postgres_cluster.database() as url:
        yield url


@pytest.fixture
async def shop(tmp_path: Path, shop_database: str) -> AsyncIterator[Deployment]:
    """A dev server, a PostgreSQL store, and the environment its workers share."""
    async with deployment(
        tmp_path,
        pizza_home=tmp_path / "home",
        queue="scale",
        PIZZA_DATABASE_URL=shop_database,
        PIZZA_COMPENSATION_BACKOFF_SECONDS="0.1",
        PIZZA_WORKER_ACTIVITY_SLOTS="10",
        # A shared store: every process is given the same card vault key.
        PIZZA_VAULT_KEYS=KeyRing.generate("vault-test").to_json(),
    ) as shop:
        upgrade = await asyncio.to_thread(shop.run, "db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stderr
        yield shop


def mixed_orders() -> list[PizzaOrder]:
    """More good orders than the stock can serve, and each kind of failure, interleaved."""
    kinds: list[dict[str, object]] = [
        {},
        {"credit_card_info__number": cards.FLAKY_CARD},
        {},
        {"credit_card_info__number": cards.DECLINED_CARD},
        {},
        {"customer__email": "bounce@example.com"},
    ]
    return [new_order(**kinds[i % len(kinds)]) for i in range(120)]


async def finished(client: Client, task_queue: str) -> int:
    """How many of the queue's orders have closed, as Temporal's visibility counts them."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus != 'Running'"
    return (await client.count_workflows(query)).count


def net_money(stores: Stores) -> Counter[str]:
    money: Counter[str] = Counter()
    for payment in stores.payments.payments():
        money[payment.order_number] += (
            payment.amount if payment.kind == "charge" else -payment.amount
        )
    return money


async def test_orders_stay_exactly_once_across_workers_killed_and_restarted(
    shop: Deployment,
) -> None:
    settings = shop.settings
    stores = open_stores(settings)
    stores.inventory.stock_up(dict.fromkeys(MENU, STOCK_EACH), overwrite=True)
    for _ in range(WORKERS):
        start_worker(shop)
    client = await connect(settings, shop.address)
    orders = mixed_orders()

    await asyncio.gather(
        *(
            place_order(
                client,
                order_request(placed(order, stores.vault), settings),
                task_queue=settings.task_queue,
            )
            for order in orders
        )
    )
    # Kill a worker outright each time the work has moved on a little, and replace it.
    killed = 0
    async with asyncio.timeout(OUTCOME_TIMEOUT):
        for threshold in KILL_AFTER_FINISHED:
            while await finished(client, settings.task_queue) < threshold:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            running = [p for p in shop.processes if p.poll() is None]
            running[killed % len(running)].send_signal(signal.SIGKILL)
            killed += 1
            start_worker(shop)
        outcomes = await asyncio.gather(
            *(order_outcome(client, order.order_number) for order in orders)
        )

    statuses = Counter(outcome.status for outcome in outcomes)
    assert set(statuses) <= {OrderStatus.COMPLETED, OrderStatus.FAILED}, statuses
    completed = {o.order_number for o in outcomes if o.status is OrderStatus.COMPLETED}
    errors = Counter(o.error.type for o in outcomes if o.error is not None)
    # Every kind of order happened: stock ran out, cards were declined, bills bounced.
    assert {"OutOfStockError", "CardDeclinedError", "BillDeliveryError"} <= set(errors), errors
    assert 0 < len(completed) <= STOCK_EACH

    money = net_money(stores)
    for order in orders:
        expected = 3500 if order.order_number in completed else 0
        assert money[order.order_number] == expected, (order.order_number, errors)
    on_hand = stores.inventory.on_hand()
    assert on_hand == dict.fromkeys(MENU, STOCK_EACH - len(completed))
    assert killed == len(KILL_AFTER_FINISHED)
