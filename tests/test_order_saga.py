"""The order saga under cancellation, duplicate submits and a refund that needs an operator.

Real workflow, real activities, real stores (SQLite and PostgreSQL), on the time-skipping
test server. A pausing interceptor holds a chosen activity before or after its effect, so a
cancellation lands exactly there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from temporal_saga import (
    NEEDS_OPERATOR_ATTRIBUTE,
    CompensationState,
    OperatorAction,
    OperatorDecision,
    StepRecord,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker
from pizza_saga.billing import cards
from pizza_saga.order.client import (
    OrderAlreadyPlaced,
    OrderStatus,
    order_outcome,
    place_order,
    resolve_order,
)
from pizza_saga.order.models import OrderRequest
from pizza_saga.order.workflow import PizzaOrderWorkflow
from tests.orders import (
    RESULT_TIMEOUT,
    OrderHandle,
    activities_run,
    fail_of,
    history_has,
    net_money,
    new_order,
    placed,
    result_of,
    start,
)
from tests.pausing import PausePoint

FAST_ROLLBACK = {"compensation_backoff_seconds": 0.01}


@pytest.fixture
def pause() -> PausePoint:
    return PausePoint()


@pytest.fixture(params=[True, False], ids=["sandboxed", "unsandboxed"])
async def client(
    time_skipping_env: WorkflowEnvironment,
    stores: Stores,
    pause: PausePoint,
    task_queue: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Client]:
    """A worker for the orders: in the SDK's sandbox, and outside it as deployed workers run."""
    async with build_worker(
        time_skipping_env.client,
        stores,
        task_queue=task_queue,
        interceptors=[pause],
        sandboxed=request.param,
    ):
        yield time_skipping_env.client


async def ledger_until(handle: OrderHandle, step: str, state: CompensationState) -> StepRecord:
    async with asyncio.timeout(RESULT_TIMEOUT):
        while True:
            for record in await handle.query(PizzaOrderWorkflow.ledger):
                if record.step == step and record.compensation_state is state:
                    return record
            await asyncio.sleep(0.02)


async def assert_cancelled(handle: OrderHandle) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(handle)
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED


SIDE_EFFECTS = ["update_inventory", "process_credit_card", "send_bill"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("activity_type", ["get_distance", *SIDE_EFFECTS, "notify_delivery_driver"])
async def test_cancelling_at_any_step_puts_stock_and_money_back(
    client: Client,
    task_queue: str,
    stores: Stores,
    pause: PausePoint,
    activity_type: str,
    when: str,
) -> None:
    before = stores.inventory.on_hand()
    order = new_order()
    pause.arm(activity_type, when)
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)
    await asyncio.wait_for(pause.reached.wait(), RESULT_TIMEOUT)

    await handle.cancel()
    # The workflow has seen the cancellation (it asked the held activity to stop)...
    await history_has(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED)
    pause.release.set()  # ...and only then does the held activity go on and finish.

    await assert_cancelled(handle)
    assert stores.inventory.on_hand() == before
    assert net_money(stores, order.order_number) == 0
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    for record in ledger:
        if record.compensation:
            assert record.compensation_state is CompensationState.COMPENSATED, record


async def test_cancelling_in_the_kitchen_refunds_the_charge_and_restocks(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    order = new_order()
    handle = await start(
        client, order, task_queue=task_queue, vault=stores.vault, waits={"prep_seconds": 600}
    )
    await history_has(handle, EventType.EVENT_TYPE_TIMER_STARTED)

    await handle.cancel()

    await assert_cancelled(handle)
    assert stores.inventory.on_hand() == before
    assert net_money(stores, order.order_number) == 0
    ledger = await handle.query(PizzaOrderWorkflow.ledger)
    # The kitchen works on reserved, paid pizzas: both are undone.
    assert [(r.step, r.compensation_state) for r in ledger] == [
        ("get_distance", CompensationState.NONE),
        ("update_inventory", CompensationState.COMPENSATED),
        ("process_credit_card", CompensationState.COMPENSATED),
    ]


async def test_cancelling_during_a_rollback_finishes_the_rollback(
    client: Client, task_queue: str, stores: Stores, pause: PausePoint
) -> None:
    before = stores.inventory.on_hand()
    order = new_order(customer__email="bounce@example.com")
    pause.arm("refund_customer", "after")  # the refund is done, the revert not yet
    handle = await start(client, order, task_queue=task_queue, vault=stores.vault)
    await asyncio.wait_for(pause.reached.wait(), RESULT_TIMEOUT)

    await handle.cancel()
    pause.release.set()

    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(handle)
    root: BaseException = failure.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert isinstance(root, ApplicationError) and root.type == "BillDeliveryError"
    assert stores.inventory.on_hand() == before
    assert net_money(stores, order.order_number) == 0


async def test_ten_simultaneous_submits_make_one_order_and_one_charge(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    request = OrderRequest(order=placed(order, stores.vault))
    attempts = await asyncio.gather(
        *(place_order(client, request, task_queue=task_queue) for _ in range(10)),
        return_exceptions=True,
    )

    started = [a for a in attempts if not isinstance(a, BaseException)]
    refused = [a for a in attempts if isinstance(a, OrderAlreadyPlaced)]
    assert (len(started), len(refused)) == (1, 9)
    await result_of(started[0])
    with pytest.raises(OrderAlreadyPlaced):  # ...and again once it finished
        await place_order(client, request, task_queue=task_queue)
    charges = [p for p in stores.payments.payments() if p.order_number == order.order_number]
    assert [(p.kind, p.amount) for p in charges] == [("charge", 3500)]


@pytest.mark.parametrize("decision", ["retry", "skip"])
async def test_refund_that_keeps_failing_waits_for_an_operator(
    client: Client, task_queue: str, stores: Stores, decision: str
) -> None:
    before = stores.inventory.on_hand()
    order = new_order(
        customer__email="bounce@example.com",
        credit_card_info__number=cards.REFUND_FAILING_CARD,
    )
    handle = await start(
        client, order, task_queue=task_queue, vault=stores.vault, policy=FAST_ROLLBACK
    )

    stuck = await ledger_until(handle, "process_credit_card", CompensationState.NEEDS_OPERATOR)
    assert stuck.compensation_attempts == 5
    assert stuck.compensation_error is not None and "RefundFailedError" in stuck.compensation_error
    described = await handle.describe()
    assert described.typed_search_attributes.get(NEEDS_OPERATOR_ATTRIBUTE) is True
    # The other compensation did not wait for the operator.
    inventory = await ledger_until(handle, "update_inventory", CompensationState.COMPENSATED)
    assert inventory.compensation_attempts == 1
    assert stores.inventory.on_hand() == before

    if decision == "retry":
        record = await resolve_order(
            client, order.order_number, OperatorDecision(OperatorAction.RETRY)
        )
        assert record.compensation_state is CompensationState.COMPENSATED
        assert record.compensation_attempts == cards.REFUND_FAILURES + 1
        with pytest.raises(WorkflowFailureError):
            await result_of(handle)
        assert net_money(stores, order.order_number) == 0
    else:
        record = await resolve_order(
            client,
            order.order_number,
            OperatorDecision(OperatorAction.SKIP, reason="refunded by bank transfer"),
        )
        assert record.compensation_state is CompensationState.SKIPPED
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
        assert isinstance(failure.value.cause, ApplicationError)
        assert failure.value.cause.type == "SagaCompensationError"
        assert "refunded by bank transfer" in failure.value.cause.message
        # The operator refunded outside the product: the store still shows the charge.
        assert net_money(stores, order.order_number) == 3500
    described = await handle.describe()
    assert described.typed_search_attributes.get(NEEDS_OPERATOR_ATTRIBUTE) is False


async def test_resolving_an_order_that_needs_nothing_is_refused(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    await result_of(await start(client, order, task_queue=task_queue, vault=stores.vault))

    with pytest.raises(ValueError, match=r"the order has finished \(COMPLETED\)"):
        await resolve_order(client, order.order_number, OperatorDecision(OperatorAction.RETRY))


async def test_order_past_its_deadline_is_rolled_back_and_says_so(
    client: Client, task_queue: str, stores: Stores
) -> None:
    before = stores.inventory.on_hand()
    order = new_order()
    # The driver takes longer than the whole order may: the deadline cuts that step short.
    handle = await start(
        client,
        order,
        task_queue=task_queue,
        vault=stores.vault,
        waits={"driver_seconds": 30},
        policy={"deadline_seconds": 2},
    )
    with pytest.raises(WorkflowFailureError):
        await result_of(handle)

    outcome = await order_outcome(client, order.order_number, wait=False)

    assert outcome.status is OrderStatus.FAILED
    assert outcome.error is not None and outcome.error.type == "SagaDeadlineExceeded"
    assert stores.inventory.on_hand() == before
    assert net_money(stores, order.order_number) == 0


# --- The same order started again by another client -------------------------------------


async def test_a_rolled_back_order_started_again_under_its_id_is_refused_not_free(
    client: Client, task_queue: str, stores: Stores
) -> None:
    # The bill bounces after the charge: the order is refunded and its pizzas put back.
    order = new_order(customer__email="bounce@example.com")
    before = stores.inventory.on_hand()
    assert (
        await fail_of(await start(client, order, task_queue=task_queue, vault=stores.vault))
    ).type == "BillDeliveryError"

    # Another client starts the same workflow id again (the SDK's default reuse policy).
    again = await start(client, order, task_queue=task_queue, vault=stores.vault)

    error = await fail_of(again)
    assert error.type == "ProcessedByAnotherRunError", error
    assert await activities_run(again) == ["get_distance", "update_inventory", "revert_inventory"]
    assert net_money(stores, order.order_number) == 0
    assert stores.inventory.on_hand() == before


async def test_a_completed_order_started_again_is_refused_and_charged_once(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    before = stores.inventory.on_hand()
    await result_of(await start(client, order, task_queue=task_queue, vault=stores.vault))

    error = await fail_of(await start(client, order, task_queue=task_queue, vault=stores.vault))

    assert error.type == "ProcessedByAnotherRunError", error
    assert net_money(stores, order.order_number) == 3500
    assert sum(before.values()) - sum(stores.inventory.on_hand().values()) == 3


async def test_an_order_started_under_another_workflow_id_is_refused(
    client: Client, task_queue: str, stores: Stores
) -> None:
    order = new_order()
    before = stores.inventory.on_hand()
    await result_of(await start(client, order, task_queue=task_queue, vault=stores.vault))

    other = await client.start_workflow(
        PizzaOrderWorkflow.run,
        OrderRequest(order=placed(order, stores.vault)),
        id=f"other-client-{order.order_number}",
        task_queue=task_queue,
    )

    error = await fail_of(other)
    assert error.type == "WrongWorkflowIdError"
    assert order.order_number in error.message
    assert await activities_run(other) == []
    assert net_money(stores, order.order_number) == 3500
    assert sum(before.values()) - sum(stores.inventory.on_hand().values()) == 3
