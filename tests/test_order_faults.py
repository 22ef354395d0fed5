"""The order saga under temporal_saga.testing: failing at each step, cancelled at each step,
and its worker crashing before and after each activity and each compensation.

The real workflow and activities on the real dev server, on SQLite and PostgreSQL stores;
after each scenario, the order's money must be exact, and once all have run, the stock.
"""

from __future__ import annotations

from collections import Counter

import pytest
from temporal_saga.testing import Scenario, WorkerSpec, check_saga
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from pizza_saga.app import Stores, build_worker
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX
from tests.orders import OrderHandle, net_money, new_order, start

pytestmark = pytest.mark.devserver

FAST = {"policy": {"compensation_backoff_seconds": 0.05}, "waits": {"driver_seconds": 0}}


async def test_money_and_stock_are_exact_whatever_fails_or_crashes(
    dev_env: WorkflowEnvironment, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    orders: dict[str, PizzaOrder] = {}

    async def place(client: Client, task_queue: str) -> OrderHandle:
        order = new_order()
        orders[order.order_number] = order
        return await start(client, order, task_queue=task_queue, vault=stores.vault, **FAST)

    async def money_is_exact(scenario: Scenario) -> None:
        number = scenario.handle.id.removeprefix(WORKFLOW_ID_PREFIX)
        charged = 3500 if scenario.completed else 0
        assert net_money(stores, number) == charged

    def worker(spec: WorkerSpec) -> Worker:
        return build_worker(
            dev_env.client,
            stores,
            task_queue=spec.task_queue,
            interceptors=spec.interceptors,
            max_cached_workflows=spec.max_cached_workflows,
        )

    scenarios = await check_saga(
        dev_env.client,
        start=place,
        invariant=money_is_exact,
        worker=worker,
        concurrency=12,
    )

    faults = {str(s) for s in scenarios}
    assert "fail at process_credit_card: failed" in faults
    assert "crash_after at process_credit_card: completed" in faults
    assert "cancel at send_bill: cancelled" in faults
    assert any("crash_after at process_credit_card:compensation:1" in f for f in faults)
    # A driver nobody reaches keeps the order (made and paid): only the rollback returns stock.
    taken: Counter[str] = Counter()
    for scenario in scenarios:
        if scenario.completed:
            order = orders[scenario.handle.id.removeprefix(WORKFLOW_ID_PREFIX)]
            taken.update(pizza.description for pizza in order.items)
    after = stores.inventory.on_hand()
    assert {item: before[item] - after[item] for item in before} == {
        item: taken[item] for item in before
    }
