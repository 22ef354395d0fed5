"""Amending a running order (PizzaOrderWorkflow.amend) on the time-skipping test server, with
the real activities and stores: re-priced, the added pizzas reserved and charged, the removed
ones put back and refunded, each once; a rollback undoes all of it; a refused amendment
changes nothing and leaves nothing in the history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker
from pizza_saga.order.amend import AMENDMENT_ERROR, Amendment
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import Pizza
from pizza_saga.order.workflow import PizzaOrderWorkflow
from tests.orders import OrderHandle, net_money, new_order, result_of, start
from tests.pausing import PausePoint
from tests.timeskipping import started_time_skipping

LARGE, SMALL, MEDIUM = MENU
WAIT = 60.0
KITCHEN = {"prep_seconds": 600}
"""Long enough that the order is in the kitchen while the test amends it (time skips only
while a test waits for a result)."""


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own time-skipping server: its orders wait on 10-minute kitchens that
    only a clock no other module's leftovers hold can skip (see conftest)."""
    async with started_time_skipping() as env:
        yield env


@pytest.fixture
def pause() -> PausePoint:
    return PausePoint()


@pytest.fixture
async def client(
    time_skipping_env: WorkflowEnvironment, stores: Stores, task_queue: str, pause: PausePoint
) -> AsyncIterator[Client]:
    async with build_worker(
        time_skipping_env.client, stores, task_queue=task_queue, interceptors=[pause]
    ):
        yield time_skipping_env.client


def pizza(description: str) -> Pizza:
    return Pizza(description=description, price=MENU[description])


def amendment(key: str, **change: Any) -> Amendment:
    return Amendment.model_validate({"amendment_id": key, **change})


async def in_kitchen(
    client: Client, stores: Stores, task_queue: str, **changes: object
) -> tuple[str, OrderHandle]:
    """An order of the seed's pizzas (``changes`` applied), placed and in the kitchen (ten
    minutes of it): its pizzas reserved, its card charged."""
    order = new_order(**changes)
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault, waits=KITCHEN)
    await until_in_history(handle, lambda e: e.HasField("timer_started_event_attributes"))
    return order.order_number, handle


async def until_in_history(handle: OrderHandle, found: Callable[[HistoryEvent], bool]) -> None:
    """Poll the order's history (the server's record, no worker involved) until an event
    ``found`` is in it."""
    async with asyncio.timeout(WAIT):
        while not any(found(e) for e in (await handle.fetch_history()).events):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def stock_drop(stores: Stores, before: dict[str, int]) -> dict[str, int]:
    after = stores.inventory.on_hand()
    return {item: before[item] - after[item] for item in before if before[item] != after[item]}


def update_events(history: Any) -> list[str]:
    return [
        name
        for e in history.events
        for name in ("workflow_execution_update_accepted_event_attributes",)
        if e.HasField(name)
    ]


async def test_an_added_pizza_is_reserved_and_its_price_charged_on_top(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)

    record = await handle.execute_update(
        PizzaOrderWorkflow.amend, amendment("a1", add=[pizza(SMALL).model_dump()])
    )
    confirmation = await result_of(handle)

    assert (record.total, record.charged, record.refunded) == (4700, 1200, 0)
    assert confirmation.amount == 4700
    assert net_money(stores, number) == 4700
    assert stock_drop(stores, before) == {LARGE: 1, SMALL: 2, MEDIUM: 1}
    ledger = [r.step for r in await handle.query(PizzaOrderWorkflow.ledger)]
    assert ledger[-4:] == [
        "reserve_added_pizzas:a1",
        "charge_difference:a1",
        "send_bill",
        "notify_delivery_driver",
    ]
    assert [a.amendment_id for a in await handle.query(PizzaOrderWorkflow.amendments)] == ["a1"]


async def test_a_removed_pizza_goes_back_and_the_difference_is_refunded(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)

    record = await handle.execute_update(PizzaOrderWorkflow.amend, amendment("r1", remove=[LARGE]))
    confirmation = await result_of(handle)

    # 1200 + 1300 = 2500, under the discount's threshold: 3500 charged, 1000 back.
    assert (record.total, record.charged, record.refunded) == (2500, 0, 1000)
    assert confirmation.amount == 2500
    assert net_money(stores, number) == 2500
    assert stock_drop(stores, before) == {SMALL: 1, MEDIUM: 1}
    kinds = [(p.kind, p.amount) for p in stores.payments.payments(order_number=number)]
    assert kinds == [("charge", 3500), ("refund", 1000)]


async def test_a_retried_amendment_is_done_once(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)
    change = amendment("same", add=[pizza(MEDIUM).model_dump()])

    first = await handle.execute_update(PizzaOrderWorkflow.amend, change)
    again = await handle.execute_update(PizzaOrderWorkflow.amend, change)
    await result_of(handle)

    assert again == first
    assert net_money(stores, number) == 3500 + 1300
    assert stock_drop(stores, before) == {LARGE: 1, SMALL: 1, MEDIUM: 2}


async def test_cancelling_an_amended_order_undoes_the_amendments_too(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)
    await handle.execute_update(
        PizzaOrderWorkflow.amend, amendment("a", add=[pizza(SMALL).model_dump()] * 2)
    )
    await handle.execute_update(PizzaOrderWorkflow.amend, amendment("b", remove=[LARGE, SMALL]))

    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await result_of(handle)

    assert net_money(stores, number) == 0
    assert stores.inventory.on_hand() == before


async def test_a_failure_after_an_amendment_rolls_back_everything_once(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    # The bill cannot be sent.
    number, handle = await in_kitchen(
        client, stores, task_queue, customer__email="bounce@example.com"
    )
    await handle.execute_update(
        PizzaOrderWorkflow.amend,
        amendment("x", add=[pizza(MEDIUM).model_dump()], remove=[SMALL]),
    )

    with pytest.raises(WorkflowFailureError):
        await result_of(handle)

    assert net_money(stores, number) == 0
    assert stores.inventory.on_hand() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"remove": [LARGE, LARGE]}, "remove"),
        ({"remove": [LARGE, SMALL, MEDIUM]}, "remove"),
        ({}, "amendment"),
        ({"add": [{"description": LARGE, "price": MENU[LARGE]}] * 18}, "add"),
        (
            {
                "address": {
                    "line1": "A very long street name, far out of town",
                    "city": "Far",
                    "state": "CA",
                    "postal_code": "99999",
                }
            },
            "address",
        ),
    ],
)
async def test_a_refused_amendment_names_its_field_and_changes_nothing(
    client: Client, task_queue: str, stores: Stores, change: dict[str, Any], field: str
) -> None:
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(PizzaOrderWorkflow.amend, amendment("no", **change))

    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == AMENDMENT_ERROR
    assert cause.message.startswith(f"{field}:") and cause.details == (field,)
    assert update_events(await handle.fetch_history()) == []
    await result_of(handle)
    assert net_money(stores, number) == 3500
    assert stock_drop(stores, before) == {LARGE: 1, SMALL: 1, MEDIUM: 1}


async def test_past_the_kitchen_an_amendment_is_refused(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    handle = await start(
        client, order, task_queue=task_queue, vault=stores.vault, waits={"driver_seconds": 600}
    )
    # The driver step waits 600 s: the kitchen (no wait) is done, the order still runs.
    await until_in_history(
        handle,
        lambda e: (
            e.activity_task_scheduled_event_attributes.activity_type.name
            == "notify_delivery_driver"
        ),
    )

    with pytest.raises((WorkflowUpdateFailedError, RPCError)) as refused:
        await handle.execute_update(
            PizzaOrderWorkflow.amend, amendment("late", add=[pizza(SMALL).model_dump()])
        )

    assert "kitchen" in str(getattr(refused.value, "cause", refused.value))
    # Ended here: a run left waiting on its driver would hold the test server's clock.
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await result_of(handle)


async def test_another_clients_amendment_off_the_menu_is_refused_before_history(
    client: Client, task_queue: str, stores: Stores
) -> None:
    number, handle = await in_kitchen(client, stores, task_queue)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            "amend", {"amendment_id": "raw", "add": [{"description": "Calzone", "price": 900}]}
        )

    assert "Calzone" in str(refused.value.cause) and "not on the menu" in str(refused.value.cause)
    assert update_events(await handle.fetch_history()) == []
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await result_of(handle)
    assert net_money(stores, number) == 0


async def test_an_amendment_during_a_rollback_is_refused_and_changes_nothing(
    client: Client, task_queue: str, stores: Stores, pause: PausePoint
) -> None:
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)
    await handle.execute_update(
        PizzaOrderWorkflow.amend, amendment("early", add=[pizza(SMALL).model_dump()])
    )
    pause.arm("refund_customer", "before")  # the rollback's first compensation, held
    await handle.cancel()
    await asyncio.wait_for(pause.reached.wait(), WAIT)
    accepted = update_events(await handle.fetch_history())

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            PizzaOrderWorkflow.amend, amendment("late", add=[pizza(SMALL).model_dump()])
        )
    pause.release.set()

    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.message == "order: is cancelled"
    assert update_events(await handle.fetch_history()) == accepted
    with pytest.raises(WorkflowFailureError):
        await result_of(handle)
    assert [a.amendment_id for a in await handle.query(PizzaOrderWorkflow.amendments)] == ["early"]
    assert net_money(stores, number) == 0
    assert stores.inventory.on_hand() == before


async def test_an_amendment_that_failed_is_not_tried_again_under_its_id(
    client: Client, task_queue: str, stores: Stores
) -> None:
    number, handle = await in_kitchen(client, stores, task_queue)
    stores.inventory.stock_up({SMALL: 0}, overwrite=True)  # the reservation will find none
    change = amendment("short", add=[pizza(SMALL).model_dump()])

    with pytest.raises(WorkflowUpdateFailedError) as first:
        await handle.execute_update(PizzaOrderWorkflow.amend, change)
    with pytest.raises(WorkflowUpdateFailedError) as again:
        await handle.execute_update(PizzaOrderWorkflow.amend, change)

    assert isinstance(first.value.cause, ApplicationError)
    assert first.value.cause.message.startswith("add: not enough")
    assert isinstance(again.value.cause, ApplicationError)
    assert again.value.cause.message == "amendment_id: failed before: use a new one"
    stores.inventory.stock_up({SMALL: 100}, overwrite=True)
    confirmation = await result_of(handle)  # the order went on, unchanged
    assert confirmation.amount == 3500 and net_money(stores, number) == 3500


async def test_a_pizza_added_then_removed_is_rolled_back_without_an_operator(
    client: Client, task_queue: str, stores: Stores
) -> None:
    # The removal empties the added reservation and charge; their compensations then find
    # nothing left to undo, which is not an inconsistency.
    before = stores.inventory.on_hand()
    number, handle = await in_kitchen(client, stores, task_queue)
    await handle.execute_update(
        PizzaOrderWorkflow.amend, amendment("in", add=[pizza(LARGE).model_dump()])
    )
    await handle.execute_update(PizzaOrderWorkflow.amend, amendment("out", remove=[LARGE, LARGE]))

    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await result_of(handle)

    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    assert {r.step: r.compensation_state.value for r in ledger if r.compensation} == {
        "update_inventory": "COMPENSATED",
        "process_credit_card": "COMPENSATED",
        "reserve_added_pizzas:in": "COMPENSATED",
        "charge_difference:in": "COMPENSATED",
    }
    assert net_money(stores, number) == 0
    assert stores.inventory.on_hand() == before
