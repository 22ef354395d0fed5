"""The order saga on the time-skipping test server, with the real activities and stores.

For each step that can fail, exactly the compensations registered so far run, once each,
newest first; afterwards stock and money are as before the order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporal_saga import CompensationState, StepState
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker
from pizza_saga.bench.run import billable_actions
from pizza_saga.billing import cards
from pizza_saga.order.example import BROKEN_CARD, example_order
from pizza_saga.order.models import OrderRequest
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from tests.orders import (
    activities_run,
    activity_results,
    fail_of,
    net_money,
    new_order,
    placed,
    result_of,
    start,
)


@pytest.fixture
async def client(
    time_skipping_env: WorkflowEnvironment, stores: Stores, task_queue: str
) -> AsyncIterator[Client]:
    """A client whose orders on ``task_queue`` a real worker (real activities, stores) serves."""
    async with build_worker(time_skipping_env.client, stores, task_queue=task_queue):
        yield time_skipping_env.client


async def test_seed_order_completes_charging_what_it_bills(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    order = new_order()
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)

    confirmation = await result_of(handle)

    assert confirmation.status == "SUCCESS"
    assert confirmation.amount == 3500  # 1500 + 1200 + 1300, less the $5 discount over $30
    assert confirmation.card_last4 == "4242"
    payments = [p for p in stores.payments.payments() if p.order_number == order.order_number]
    assert [(p.kind, p.amount) for p in payments] == [("charge", 3500)]
    after = stores.inventory.on_hand()
    assert {item: before[item] - after[item] for item in before} == dict.fromkeys(before, 1)
    assert await activities_run(handle) == [
        "get_distance",
        "update_inventory",
        "process_credit_card",
        "send_bill",
        "notify_delivery_driver",
    ]
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    assert [(r.step, r.state, r.compensation_state) for r in ledger] == [
        ("get_distance", StepState.SUCCEEDED, CompensationState.NONE),
        ("update_inventory", StepState.SUCCEEDED, CompensationState.REGISTERED),
        ("process_credit_card", StepState.SUCCEEDED, CompensationState.REGISTERED),
        ("send_bill", StepState.SUCCEEDED, CompensationState.NONE),
        ("notify_delivery_driver", StepState.SUCCEEDED, CompensationState.NONE),
    ]


@pytest.mark.parametrize(
    ("case", "changes", "error_type", "expected_activities"),
    [
        (
            "distance",
            {"address__line1": "1 Very Long Boulevard of the Outer Suburbs"},
            "OutsideServiceAreaError",
            ["get_distance"],
        ),
        (
            "inventory",
            {"items": [{"description": "Small, with pepperoni", "price": 1200}] * 4},
            "OutOfStockError",
            ["get_distance", "update_inventory", "revert_inventory"],
        ),
        (
            "card (seed's broken card)",
            {"credit_card_info__number": BROKEN_CARD},
            "CreditCardProcessingError",
            [
                "get_distance",
                "update_inventory",
                "process_credit_card",
                "refund_customer",
                "revert_inventory",
            ],
        ),
        (
            "card (declined)",
            {"credit_card_info__number": cards.DECLINED_CARD},
            "CardDeclinedError",
            [
                "get_distance",
                "update_inventory",
                "process_credit_card",
                "refund_customer",
                "revert_inventory",
            ],
        ),
        (
            "bill",
            {"customer__email": "bounce@example.com"},
            "BillDeliveryError",
            [
                "get_distance",
                "update_inventory",
                "process_credit_card",
                "send_bill",
                "refund_customer",
                "revert_inventory",
            ],
        ),
    ],
)
async def test_failing_step_runs_exactly_the_registered_compensations_in_reverse(
    client: Client,
    task_queue: str,
    stores: Stores,
    case: str,
    changes: dict[str, object],
    error_type: str,
    expected_activities: list[str],
) -> None:
    stores.inventory.stock_up({"Small, with pepperoni": 3}, overwrite=True)
    before = stores.inventory.on_hand()
    order = new_order(**changes)
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)

    error = await fail_of(handle)

    assert error.type == error_type
    assert error.non_retryable
    assert await activities_run(handle) == expected_activities
    assert stores.inventory.on_hand() == before
    assert net_money(stores, order.order_number) == 0
    # The failing step's own compensation found nothing to undo; earlier ones undid it all.
    results = await activity_results(client, handle)
    if "revert_inventory" in results:
        pizzas_back = sum(results["revert_inventory"]["items"].values())
        assert pizzas_back == (0 if case == "inventory" else 3)
    if "refund_customer" in results:
        assert results["refund_customer"]["amount"] == (3500 if case == "bill" else 0)
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    if case != "distance":  # the others fail in a step; distance fails the check after it
        assert ledger[-1].state is StepState.FAILED
        assert ledger[-1].error is not None and ledger[-1].error.startswith(error_type)
    for record in ledger:
        expected = CompensationState.COMPENSATED if record.compensation else CompensationState.NONE
        assert record.compensation_state is expected, record


async def test_bill_failure_refunds_the_charge_it_made(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order(customer__email="bounce@example.com")
    await fail_of(await start(client, order, task_queue=task_queue, vault=stores.vault))

    payments = [p for p in stores.payments.payments() if p.order_number == order.order_number]
    assert [(p.kind, p.amount, p.card_last4) for p in payments] == [
        ("charge", 3500, "4242"),
        ("refund", 3500, "4242"),
    ]


async def test_card_failing_transiently_is_retried_and_charged_once(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order(credit_card_info__number=cards.FLAKY_CARD)
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)

    confirmation = await result_of(handle)

    assert confirmation.card_last4 == "0119"
    payments = [p for p in stores.payments.payments() if p.order_number == order.order_number]
    assert [(p.kind, p.amount) for p in payments] == [("charge", 3500)]
    history = await handle.fetch_history()
    charge_attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert cards.FLAKY_FAILURES + 1 in charge_attempts


async def test_no_driver_is_a_delivery_failure_not_a_rollback(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order(address__postal_code="00000")
    confirmation = await result_of(
        await start(client, order, task_queue=task_queue, vault=stores.vault)
    )

    assert confirmation.status == "DELIVERY FAILURE"
    assert net_money(stores, order.order_number) == 3500


async def test_pickup_skips_distance_and_driver(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order(
        is_delivery=False, address__line1="1 Very Long Boulevard of the Outer Suburbs"
    )
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)

    assert (await result_of(handle)).status == "SUCCESS"
    assert await activities_run(handle) == ["update_inventory", "process_credit_card", "send_bill"]


async def test_invalid_input_from_another_client_fails_the_run_at_once(
    client: Client, task_queue: str, stores: Stores
) -> None:
    # Another client, without our models, sends a negative price (its card a vault token).
    order = placed(example_order(order_number=f"T{uuid.uuid4().hex[:10]}"), stores.vault)
    raw = {"order": order.model_dump(mode="json")}
    raw["order"]["items"][0]["price"] = -1500
    before = stores.inventory.on_hand()
    handle: WorkflowHandle[Any, Any] = await client.start_workflow(
        "PizzaOrderWorkflow",
        raw,
        id=workflow_id_for(raw["order"]["order_number"]),
        task_queue=task_queue,
    )

    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(handle)

    assert "items" in str(failure.value.cause) and "price" in str(failure.value.cause)
    history = await handle.fetch_history()
    assert not any(e.HasField("activity_task_scheduled_event_attributes") for e in history.events)
    assert stores.inventory.on_hand() == before


async def test_prep_time_is_a_durable_timer(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    handle = await client.start_workflow(
        PizzaOrderWorkflow.run,
        OrderRequest.model_validate(
            {"order": placed(order, stores.vault), "waits": {"prep_seconds": 3}}
        ),
        id=workflow_id_for(order.order_number),
        task_queue=task_queue,
    )
    await result_of(handle)

    history = await handle.fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    assert timers == [timedelta(seconds=3)]


LOCAL = {"local_activities": True}


async def test_local_mode_completes_the_same_order_with_fewer_actions(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault, policy=LOCAL)

    confirmation = await result_of(handle)

    assert (confirmation.status, confirmation.amount) == ("SUCCESS", 3500)
    assert net_money(stores, order.order_number) == 3500
    # Only the driver, which heartbeats, is still a regular activity.
    assert await activities_run(handle) == ["notify_delivery_driver"]
    # The start, one task of local activity markers, the driver, and the upsert of
    # TemporalChangeVersion that the SDK makes for the pay-first patch.
    assert billable_actions(await handle.fetch_history()) == 4
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    assert [r.state for r in ledger] == [StepState.SUCCEEDED] * 5


async def test_local_mode_rolls_back_the_same_way(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    order = new_order(customer__email="bounce@example.com")
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault, policy=LOCAL)

    error = await fail_of(handle)

    assert error.type == "BillDeliveryError"
    assert stores.inventory.on_hand() == before
    assert net_money(stores, order.order_number) == 0
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    assert [(r.step, r.compensation_state) for r in ledger if r.compensation] == [
        ("update_inventory", CompensationState.COMPENSATED),
        ("process_credit_card", CompensationState.COMPENSATED),
    ]
    assert billable_actions(await handle.fetch_history()) == 3  # with the patch's upsert
