"""Crash tests on the real dev server: kill -9 the worker mid-order, start a new one.

A `pizza worker` started as `python -m tests.faults activity:before|after` SIGKILLs itself at
that point of that activity (before its effect, or after the effect is committed but before
Temporal hears of it). A second, healthy worker then takes over. Each order must end as if
nothing happened: one charge (or a net zero), stock consistent, one bill.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporal_saga.effects import EffectState

from pizza_saga.app import open_stores
from pizza_saga.common.effects import EffectRow
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import OrderStatus, order_outcome, order_request, place_order
from tests.orders import new_order, placed
from tests.processes import Deployment, deployment

pytestmark = pytest.mark.devserver

OUTCOME_TIMEOUT = 120.0


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """A dev server for the module; its processes' PIZZA_HOME (their stores) is shared."""
    home = tmp_path_factory.mktemp("crash-home")
    async with deployment(home, queue="crash", PIZZA_COMPENSATION_BACKOFF_SECONDS="0.1") as live:
        yield live


@pytest.fixture
def workers(cluster: Deployment, tmp_path: Path, task_queue: str) -> Iterator[Deployment]:
    """The test's workers: on the module's server, on its own task queue, stopped after it."""
    with cluster.share(tmp_path, PIZZA_TASK_QUEUE=task_queue) as mine:
        yield mine


def bills_of(settings: Settings, order_number: str) -> int:
    with open_stores(settings).engine.connect() as conn:
        count = conn.scalar(
            select(func.count()).where(
                EffectRow.key == order_number,
                EffectRow.step == "send_bill",
                EffectRow.state == EffectState.DONE,
            )
        )
        return int(count or 0)


@pytest.mark.parametrize(
    ("crash_at", "changes", "expected"),
    [
        # The charge is committed, its result never reaches Temporal: the retry must not
        # charge again.
        ("process_credit_card:after", {}, OrderStatus.COMPLETED),
        # Stock taken, result lost: taken once.
        ("update_inventory:after", {}, OrderStatus.COMPLETED),
        # During the bill, before and after it is recorded: billed once, charged once.
        ("send_bill:before", {}, OrderStatus.COMPLETED),
        ("send_bill:after", {}, OrderStatus.COMPLETED),
        # In the middle of the compensations: refund done, stock not yet back.
        (
            "refund_customer:after",
            {"customer__email": "bounce@example.com"},
            OrderStatus.FAILED,
        ),
    ],
)
async def test_order_survives_a_worker_killed_mid_step(
    cluster: Deployment,
    workers: Deployment,
    task_queue: str,
    crash_at: str,
    changes: dict[str, object],
    expected: OrderStatus,
) -> None:
    settings = cluster.settings
    stores = open_stores(settings)
    before = stores.inventory.on_hand()
    order = new_order(**changes)
    client = await connect(settings, cluster.address)

    # `pizza worker` that kills itself at ``crash_at`` (tests/faults.py).
    crashing = workers.spawn("crashing", crash_at, module="tests.faults")
    await place_order(
        client, order_request(placed(order, stores.vault), settings), task_queue=task_queue
    )
    code = await asyncio.to_thread(crashing.wait, OUTCOME_TIMEOUT)
    assert code == -signal.SIGKILL, crashing.output()

    workers.spawn("healthy", "worker")
    outcome = await asyncio.wait_for(order_outcome(client, order.order_number), OUTCOME_TIMEOUT)

    assert outcome.status is expected, outcome
    charges = [p for p in stores.payments.payments() if p.order_number == order.order_number]
    after = stores.inventory.on_hand()
    if expected is OrderStatus.COMPLETED:
        assert [(p.kind, p.amount) for p in charges] == [("charge", 3500)]
        assert {item: before[item] - after[item] for item in before} == dict.fromkeys(before, 1)
        assert bills_of(settings, order.order_number) == 1
    else:
        assert [(p.kind, p.amount) for p in charges] == [("charge", 3500), ("refund", 3500)]
        assert after == before
