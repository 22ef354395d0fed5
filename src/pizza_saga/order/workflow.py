"""PizzaOrderWorkflow: the order saga.

Distance check, the kitchen's prep time, then the saga's side effects (reserve the pizzas,
charge the card, send the bill) and the driver. If a side effect fails, the order is
cancelled, or its deadline passes, what was done is undone in reverse order. A delivery
nobody takes is reported as "DELIVERY FAILURE", not rolled back: the pizzas are made and paid.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError
    from temporal_saga import (
        NEEDS_OPERATOR_ATTRIBUTE,
        OnExhausted,
        OperatorDecision,
        Saga,
        SagaOptions,
        StepRecord,
    )

    from pizza_saga.billing.activities import CHARGE_STEP, BillingActivities
    from pizza_saga.billing.models import Bill, ChargeRequest, RefundRequest
    from pizza_saga.common.arguments import argument_error
    from pizza_saga.inventory.activities import InventoryActivities
    from pizza_saga.inventory.models import StockRequest
    from pizza_saga.order.activities import get_distance, notify_delivery_driver
    from pizza_saga.order.menu import price_order
    from pizza_saga.order.metrics import order_ended
    from pizza_saga.order.models import DeliveryRequest, OrderConfirmation, OrderRequest

WORKFLOW_ID_PREFIX = "pizza-workflow-order-"
WORKFLOW_TYPE = "PizzaOrderWorkflow"
"""The workflow's type, as its @workflow.defn names it (visibility queries list it by it)."""
MAX_DELIVERY_KM = 25

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
"""Forward steps retry passing failures a few times; final errors are non-retryable."""

MAX_UNEXPECTED_SIGNALS = 100
"""Signals an order takes before it rolls itself back: it takes none, so each one is another
client's mistake or a flood that would push its history past Temporal's limit."""
MAX_HISTORY_EVENTS = 5_000
"""History events an order may reach (one runs in under 100; Temporal terminates a run at
51,200, with nothing compensated)."""
MAX_HISTORY_BYTES = 8 * 1024 * 1024
"""History size an order may reach (one is a few KiB; Temporal terminates a run at 50 MiB)."""
OVERLOADED_ERROR = "OrderOverloadedError"

DISCARD_CARD_PATCH = "discard-card-at-early-end"
"""Orders that end before their charge destroy their card number (a step added then)."""


def _error_type(err: BaseException) -> str:
    """The type of the outermost application error behind ``err`` (else its class name)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type:
            return cause.type
        cause = cause.__cause__
    return type(err).__name__


async def _stopped(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its step cancelled and recorded)."""
    task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await task


def workflow_id_for(order_number: str) -> str:
    """The workflow id of an order: one order number, one workflow."""
    return f"{WORKFLOW_ID_PREFIX}{order_number}"


# A payload that does not decode into OrderRequest (another client's bad input) fails the
# run at once instead of retrying the workflow task forever. The saga is made in `run`, not
# in a `workflow.init` constructor: a constructor's arguments are used before any interceptor
# can check them, so a start with a wrong argument count would retry forever.
@workflow.defn(name="PizzaOrderWorkflow", failure_exception_types=[ValidationError])
class PizzaOrderWorkflow:
    """One pizza order, run as a saga."""

    def __init__(self) -> None:
        self._saga: Saga | None = None
        self._unexpected_signals = 0

    @workflow.query
    def ledger(self) -> list[StepRecord]:
        """Each saga step so far, with its compensation and their states."""
        return self._saga.ledger if self._saga is not None else []

    @workflow.update
    async def resolve(self, decision: OperatorDecision) -> StepRecord:
        """An operator's decision about a compensation that needs one (`pizza resolve`)."""
        return await self._started().decide(decision)

    @resolve.validator
    def _validate_resolve(self, decision: OperatorDecision) -> None:
        self._started().validate_decision(decision)

    @workflow.signal(dynamic=True)
    def _unexpected_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """The order takes no signals: each is counted and dropped, not kept in memory."""
        self._unexpected_signals += 1

    def _overloaded(self) -> str | None:
        """Why the run must stop taking more, if it must: too many signals, too much history."""
        info = workflow.info()
        if self._unexpected_signals > MAX_UNEXPECTED_SIGNALS:
            return f"{self._unexpected_signals} signals sent to an order that takes none"
        if info.get_current_history_length() > MAX_HISTORY_EVENTS:
            return f"its history passed {MAX_HISTORY_EVENTS} events"
        if info.get_current_history_size() > MAX_HISTORY_BYTES:
            return f"its history passed {MAX_HISTORY_BYTES // (1024 * 1024)} MiB"
        return None

    async def _bounded(self, order: Awaitable[OrderConfirmation]) -> OrderConfirmation:
        """``order``, unless the run is overloaded first: then its step is cancelled and the
        order fails with OrderOverloadedError, which rolls it back before Temporal would
        terminate the run with its effects in place."""
        task = asyncio.ensure_future(order)
        try:
            await workflow.wait_condition(lambda: task.done() or self._overloaded() is not None)
        except asyncio.CancelledError:  # the order was cancelled: its step stops, it rolls back
            await _stopped(task)
            raise
        if not task.done():
            reason = self._overloaded()
            await _stopped(task)
            raise ApplicationError(
                f"order stopped and rolled back: {reason}",
                type=OVERLOADED_ERROR,
                non_retryable=True,
            )
        return task.result()

    async def _discard_unused_card(self, saga: Saga, request: OrderRequest) -> None:
        """Destroy the card number of an order that ended before its charge (the charge, or
        its refund, destroys it otherwise)."""
        if any(record.step == CHARGE_STEP for record in saga.ledger):
            return
        if workflow.info().workflow_id != workflow_id_for(request.order.order_number):
            return  # not this order's run: its card is not this run's to destroy
        if not workflow.patched(DISCARD_CARD_PATCH):
            return
        try:
            # Local: one quick write, no round trip through Temporal's task queue.
            await workflow.execute_local_activity_method(
                BillingActivities.discard_card,
                request.order.card.token,
                start_to_close_timeout=timedelta(seconds=5),
                retry_policy=STEP_RETRY,
            )
        except ActivityError:  # the vault's hourly purge destroys it when its token expires
            workflow.logger.warning(
                "could not destroy the card number of order %s", request.order.order_number
            )

    def _started(self) -> Saga:
        if self._saga is None:
            raise ValueError("the order has not started: nothing waits for an operator")
        return self._saga

    @workflow.run
    async def run(self, request: OrderRequest) -> OrderConfirmation:
        # The pydantic converter reads a null payload as None whatever the type.
        if not isinstance(request, OrderRequest):
            given = "null" if request is None else type(request).__name__
            raise argument_error(f"PizzaOrderWorkflow needs an order request, not {given}")
        policy = request.policy
        self._saga = saga = Saga(
            SagaOptions(
                # Every activity here takes milliseconds; a lost one (a worker that died
                # mid-step) is retried after this long.
                step_timeout=timedelta(seconds=5),
                step_retry=STEP_RETRY,
                compensation_timeout=timedelta(seconds=5),
                deadline=timedelta(seconds=policy.deadline_seconds),
                compensation_attempts=policy.compensation_attempts,
                compensation_backoff=timedelta(seconds=policy.compensation_backoff_seconds),
                on_exhausted=OnExhausted.WAIT_FOR_OPERATOR,
                needs_operator_attribute=NEEDS_OPERATOR_ATTRIBUTE,
                local_activities=policy.local_activities,
            )
        )
        # An operator's `resolve` gets its answer before the run closes: each way out waits
        # for the handlers. Not in a `finally`: a run evicted from the worker's cache is
        # closed (GeneratorExit), and must not wait on anything then.
        try:
            async with saga:
                confirmation = await self._bounded(self._order(saga, request))
        except asyncio.CancelledError:
            await self._discard_unused_card(saga, request)
            order_ended("cancelled")
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        except Exception as err:
            await self._discard_unused_card(saga, request)
            order_ended("failed", _error_type(err))
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        delivered = confirmation.status == "SUCCESS"
        order_ended("completed" if delivered else "delivery_failed")
        return confirmation

    async def _order(self, saga: Saga, request: OrderRequest) -> OrderConfirmation:
        order = request.order
        price = price_order(pizza.price for pizza in order.items)
        expected_id = workflow_id_for(order.order_number)
        if workflow.info().workflow_id != expected_id:
            # The stores would refuse a second execution of the order anyway; this says why
            # before anything is attempted.
            raise ApplicationError(
                f"workflow id {workflow.info().workflow_id!r} does not belong to order "
                f"{order.order_number}: start it as {expected_id!r}",
                type="WrongWorkflowIdError",
                non_retryable=True,
            )
        execution = saga.execution

        if order.is_delivery:
            distance = await saga.execute_activity(get_distance, order.address)
            if distance.kilometers > MAX_DELIVERY_KM:
                raise ApplicationError(
                    f"customer lives outside the service area: {distance.kilometers} km away, "
                    f"we deliver up to {MAX_DELIVERY_KM} km",
                    type="OutsideServiceAreaError",
                    non_retryable=True,
                )
            workflow.logger.info("distance is %d km", distance.kilometers)

        if request.waits.prep_seconds > 0:
            await saga.sleep(timedelta(seconds=request.waits.prep_seconds))

        stock = StockRequest(
            order_number=order.order_number,
            items=dict(Counter(pizza.description for pizza in order.items)),
            execution=execution,
        )
        await saga.execute_activity(
            InventoryActivities.update_inventory,
            stock,
            compensate_with=InventoryActivities.revert_inventory,
        )
        charge = await saga.execute_activity(
            BillingActivities.process_credit_card,
            ChargeRequest(
                order_number=order.order_number,
                holder_name=order.card.holder_name,
                card=order.card.token,
                amount=price.total,
                execution=execution,
            ),
            compensate_with=BillingActivities.refund_customer,
            compensation_arg=RefundRequest(order_number=order.order_number, execution=execution),
        )
        # No compensation of its own, but inside the saga: a bill that cannot be sent
        # refunds the charge and puts the pizzas back.
        bill = await saga.execute_activity(
            BillingActivities.send_bill,
            Bill(
                customer_id=order.customer.customer_id,
                customer_email=order.customer.email,
                order_number=order.order_number,
                description="Pizza",
                amount=charge.amount,
                execution=execution,
            ),
        )

        status = "SUCCESS"
        if order.is_delivery and not await self._driver_accepted(saga, request):
            status = "DELIVERY FAILURE"
        return OrderConfirmation(
            order_number=order.order_number,
            status=status,
            confirmation_number=bill.confirmation_number,
            billing_timestamp=bill.billing_timestamp,
            amount=bill.amount,
            card_last4=charge.card_last4,
        )

    async def _driver_accepted(self, saga: Saga, request: OrderRequest) -> bool:
        try:
            answer = await saga.execute_activity(
                notify_delivery_driver,
                DeliveryRequest(
                    order_number=request.order.order_number,
                    address=request.order.address,
                    wait_seconds=request.waits.driver_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=request.waits.driver_seconds + 30),
                heartbeat_timeout=timedelta(seconds=5),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            # Cancellation and the deadline are not ActivityErrors here: they roll back.
            workflow.logger.warning(
                "could not reach a driver for order %s", request.order.order_number
            )
            return False
        return answer.accepted
