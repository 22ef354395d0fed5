"""Runs that end without their saga: a flood of signals, and runs Temporal terminated.

The real workflow, activities and stores on the real dev server (the time-skipping server
has no schedules, and handles a step cancelled beside a new command differently). A flooded
order rolls itself back before Temporal would end it; a terminated one is rolled back by the
reconciler, through the order's own compensations, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from temporal_saga import CompensationState, StepState
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecutionStatus,
)
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_service, build_worker
from pizza_saga.billing.vault import CardVault
from pizza_saga.common.settings import Settings
from pizza_saga.doctor import Context, abandoned
from pizza_saga.order.amend import Amendment
from pizza_saga.order.models import Pizza
from pizza_saga.order.reconcile import (
    Reconciled,
    ensure_reconcile_schedule,
    reconcile_schedule_id,
)
from pizza_saga.order.service import OrderService
from pizza_saga.order.workflow import (
    MAX_UNEXPECTED_SIGNALS,
    OVERLOADED_ERROR,
    PizzaOrderWorkflow,
)
from tests.orders import (
    RESULT_TIMEOUT,
    OrderHandle,
    fail_of,
    net_money,
    new_order,
    start,
    terminate,
)
from tests.pausing import PausePoint


@pytest.fixture
def pause() -> PausePoint:
    return PausePoint()


@pytest.fixture
async def client(
    dev_env: WorkflowEnvironment, stores: Stores, pause: PausePoint, task_queue: str
) -> AsyncIterator[Client]:
    async with build_worker(dev_env.client, stores, task_queue=task_queue, interceptors=[pause]):
        yield dev_env.client


@pytest.fixture
def service(client: Client, stores: Stores, settings: Settings, task_queue: str) -> OrderService:
    return build_service(client, stores, settings.model_copy(update={"task_queue": task_queue}))


async def held_at(
    client: Client, stores: Stores, pause: PausePoint, task_queue: str, activity: str
) -> tuple[OrderHandle, str]:
    """An order started and held just before ``activity`` does its work."""
    order = new_order()
    pause.arm(activity, "before")
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)
    await asyncio.wait_for(pause.reached.wait(), RESULT_TIMEOUT)
    return handle, order.order_number


async def test_a_flood_of_signals_rolls_the_order_back_before_temporal_would_end_it(
    client: Client, task_queue: str, stores: Stores, pause: PausePoint
) -> None:
    before = stores.inventory.on_hand()
    handle, number = await held_at(client, stores, pause, task_queue, "notify_delivery_driver")

    for n in range(MAX_UNEXPECTED_SIGNALS + 1):
        await handle.signal("spam", n)
    pause.release.set()

    error = await fail_of(handle)
    assert error.type == OVERLOADED_ERROR
    assert f"{MAX_UNEXPECTED_SIGNALS + 1} signals" in error.message
    assert stores.inventory.on_hand() == before
    assert net_money(stores, number) == 0
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    assert (ledger[-1].step, ledger[-1].state) == ("notify_delivery_driver", StepState.CANCELLED)
    compensated = {r.step for r in ledger if r.compensation_state is CompensationState.COMPENSATED}
    assert compensated == {"update_inventory", "process_credit_card"}


async def test_a_few_stray_signals_change_nothing(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    handle = await start(
        client, order, task_queue=task_queue, vault=stores.vault, waits={"prep_seconds": 1}
    )
    for n in range(3):
        await handle.signal("spam", n)

    confirmation = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)

    assert confirmation.status == "SUCCESS"
    assert net_money(stores, order.order_number) == 3500


async def test_a_terminated_order_is_rolled_back_once_by_the_reconciler(
    client: Client,
    task_queue: str,
    stores: Stores,
    settings: Settings,
    pause: PausePoint,
    service: OrderService,
) -> None:
    before = stores.inventory.on_hand()
    handle, number = await held_at(client, stores, pause, task_queue, "notify_delivery_driver")
    assert net_money(stores, number) == 3500

    await terminate(client, handle.id, "an operator's mistake")
    pause.release.set()

    [found] = await service.abandoned()
    assert (found.order_number, found.status, found.charged) == (number, "TERMINATED", 3500)
    assert sum(found.reserved.values()) == 3
    check = await abandoned(
        Context(settings.model_copy(update={"task_queue": task_queue}), client=client)
    )
    assert not check.ok and number in check.detail

    [done] = await service.reconcile()

    assert (done.order_number, done.pizzas_back, done.refunded) == (number, 3, 3500)
    assert stores.inventory.on_hand() == before
    assert net_money(stores, number) == 0
    assert await service.abandoned() == []
    assert await service.reconcile() == []  # nothing is undone twice
    assert net_money(stores, number) == 0
    [entry] = [e for e in await service.access.audit(order_number=number)]
    assert (entry.actor, entry.action) == ("reconciler", "reconcile")


async def test_a_charge_arriving_after_its_run_was_terminated_and_reconciled_is_refused(
    client: Client, task_queue: str, stores: Stores, pause: PausePoint, service: OrderService
) -> None:
    before = stores.inventory.on_hand()
    handle, number = await held_at(client, stores, pause, task_queue, "process_credit_card")
    vault: CardVault = stores.vault
    assert vault.keeps(order_number=number)

    await terminate(client, handle.id, "history too large")
    [done] = await service.reconcile()
    pause.release.set()  # the terminated run's charge attempt goes on, too late
    await pause.finished.wait()

    assert (done.pizzas_back, done.refunded) == (3, 0)
    assert stores.inventory.on_hand() == before
    assert net_money(stores, number) == 0
    assert not vault.keeps(order_number=number)


async def test_the_workers_schedule_reconciles_without_anyone_asking(
    client: Client, task_queue: str, stores: Stores, pause: PausePoint, service: OrderService
) -> None:
    before = stores.inventory.on_hand()
    handle, number = await held_at(client, stores, pause, task_queue, "notify_delivery_driver")
    await terminate(client, handle.id, "an operator's mistake")
    pause.release.set()

    assert await ensure_reconcile_schedule(client, task_queue=task_queue)
    assert await ensure_reconcile_schedule(client, task_queue=task_queue)  # exists: kept
    schedule = client.get_schedule_handle(reconcile_schedule_id(task_queue))
    await schedule.trigger()  # the next minute's pass, now

    async with asyncio.timeout(RESULT_TIMEOUT):
        while (await schedule.describe()).info.num_actions < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        [action] = (await schedule.describe()).info.recent_actions
        started = action.action
        assert isinstance(started, ScheduleActionExecutionStartWorkflow)
        run = client.get_workflow_handle(started.workflow_id, result_type=list[Reconciled])
        passes: list[Reconciled] = await run.result()
        [done] = passes
    await schedule.delete()

    assert done.order_number == number
    assert stores.inventory.on_hand() == before
    assert net_money(stores, number) == 0
    assert (await handle.describe()).status is WorkflowExecutionStatus.TERMINATED
    assert any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED
        for e in (await handle.fetch_history()).events
    )


async def test_a_terminated_amended_order_has_its_amendments_rolled_back_too(
    client: Client, task_queue: str, stores: Stores, service: OrderService
) -> None:
    before = stores.inventory.on_hand()
    order = new_order()
    handle = await start(
        client, order, task_queue=task_queue, vault=stores.vault, waits={"prep_seconds": 600}
    )
    number = order.order_number
    small = Pizza(description="Small, with pepperoni", price=1200)
    async with asyncio.timeout(RESULT_TIMEOUT):
        while net_money(stores, number) != 3500:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    # Two more small ones (2400 more: 5900), then the medium one less (1300 back: 4600), taken
    # from the newest charge: what stands is 3500 and 1100, 4 pizzas in two reservations.
    more = Amendment(amendment_id="more", add=[small, small])
    await handle.execute_update(PizzaOrderWorkflow.amend, more)
    less = Amendment(amendment_id="less", remove=["Medium, with extra cheese"])
    await handle.execute_update(PizzaOrderWorkflow.amend, less)
    assert net_money(stores, number) == 4600

    await terminate(client, handle.id, "an operator's mistake")

    [found] = await service.abandoned()
    assert (found.order_number, found.charged) == (number, 4600)
    assert found.amendment_reservations == ["reserve_added_pizzas:more"]
    assert found.amendment_charges == ["charge_difference:more"]
    [done] = await service.reconcile()
    assert (done.pizzas_back, done.refunded) == (4, 4600)
    assert stores.inventory.on_hand() == before
    assert net_money(stores, number) == 0
    assert await service.reconcile() == []
