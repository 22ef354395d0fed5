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
    from pizza_saga.billing.models import (
        Bill,
        ChargeRequest,
        DifferenceCharge,
        PartialRefund,
        RefundRequest,
    )
    from pizza_saga.common.arguments import argument_error
    from pizza_saga.inventory.activities import STEP as RESERVE_STEP
    from pizza_saga.inventory.activities import InventoryActivities
    from pizza_saga.inventory.models import StockReduction, StockRequest
    from pizza_saga.order.activities import (
        get_distance,
        notify_delivery_driver,
        simulated_distance,
    )
    from pizza_saga.order.amend import (
        AMENDMENT_ERROR,
        CHARGE_DIFFERENCE,
        REFUND_DIFFERENCE,
        RELEASE_REMOVED,
        RESERVE_ADDED,
        Amendment,
        AmendmentError,
        AmendmentRecord,
        OrderNow,
        Repriced,
        amendment_step,
        reprice,
    )
    from pizza_saga.order.menu import price_order
    from pizza_saga.order.metrics import order_ended
    from pizza_saga.order.models import (
        Address,
        DeliveryRequest,
        OrderConfirmation,
        OrderRequest,
        Pizza,
        PlacedOrder,
    )

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
PAY_FIRST_PATCH = "reserve-and-charge-before-the-kitchen"
"""Orders reserve their pizzas and charge the card before the kitchen starts (so that an
amendment meanwhile moves stock and money), and are billed once the kitchen is done."""
MAX_AMENDMENTS = 20
"""Amendments an order takes (each adds a few steps to its history)."""


class OrderStage:
    """Where an order is, for its amendments."""

    STARTING = "starting"
    """Before the kitchen: an amendment waits for it."""
    KITCHEN = "kitchen"
    """Pizzas reserved and paid, the kitchen at work: amendments are taken."""
    CLOSED = "closed"
    """The kitchen is done (the cut-off), or the order is ending: nothing changes any more."""


def _take_newest_first(
    held: dict[str, dict[str, int]], wanted: dict[str, int]
) -> dict[str, dict[str, int]]:
    """Which reservations (step -> items) the removed ``wanted`` pizzas come from: the newest
    first, so that an amendment's added pizzas are the first to go back."""
    left = dict(wanted)
    taken: dict[str, dict[str, int]] = {}
    for step in reversed(list(held)):
        for item, count in held[step].items():
            part = min(count, left.get(item, 0))
            if part:
                taken.setdefault(step, {})[item] = part
                left[item] -= part
    return taken


def _cents_newest_first(charges: dict[str, int], cents: int) -> dict[str, int]:
    """Which charges (step -> cents) a refund of ``cents`` comes from, the newest first."""
    taken: dict[str, int] = {}
    for step in reversed(list(charges)):
        part = min(charges[step], cents)
        if part:
            taken[step] = part
            cents -= part
    return taken


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


def _cause(err: BaseException) -> str:
    """The message of the innermost error behind ``err`` (an activity's own words)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err.message if isinstance(err, ApplicationError) else str(err)


def _amendment_refused(field: str, reason: str) -> ApplicationError:
    """An amendment the order does not take: the message starts with the field, which is
    also the error's one detail."""
    return ApplicationError(f"{field}: {reason}", field, type=AMENDMENT_ERROR, non_retryable=True)


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
        self._request: OrderRequest | None = None
        self._unexpected_signals = 0
        self._stage = OrderStage.STARTING
        self._closed_because = ""
        self._items: list[Pizza] = []
        self._address: Address | None = None
        self._held: dict[str, dict[str, int]] = {}
        """Reservation step -> what it holds now (an amendment's removals take from it)."""
        self._charges: dict[str, int] = {}
        """Charge step -> cents it holds now (an amendment's refunds take from it)."""
        self._amendments: list[AmendmentRecord] = []
        self._asked: dict[str, Amendment] = {}
        self._amend_lock = asyncio.Lock()
        self._amending = False
        self._card_last4 = ""
        self._broken: BaseException | None = None
        """An amendment's failure after it had changed something: the order rolls back."""

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

    @workflow.query
    def amendments(self) -> list[AmendmentRecord]:
        """The amendments the order took, oldest first."""
        return list(self._amendments)

    @workflow.query
    def now(self) -> OrderNow:
        """The order's pizzas, address and price as its amendments left them."""
        return OrderNow(
            items=list(self._items),
            address=self._address,
            total=price_order(pizza.price for pizza in self._items).total,
            amendable=self._stage != OrderStage.CLOSED,
            why_not=f"the order {self._closed_because}" if self._closed_because else "",
        )

    @workflow.update
    async def amend(self, amendment: Amendment) -> AmendmentRecord:
        """A customer's change (pizzas added or removed, a new address) until the kitchen is
        done: re-priced, the added pizzas reserved and charged, the removed ones put back
        and refunded, each a saga step of its own. A retry (same amendment_id) gets the
        first answer."""
        async with self._amend_lock:
            if (done := self._amendment(amendment.amendment_id)) is not None:
                return done
            if amendment.amendment_id in self._asked:  # it failed: its steps keep its id
                raise _amendment_refused("amendment_id", "failed before: use a new one")
            await workflow.wait_condition(lambda: self._stage != OrderStage.STARTING)
            self._check_open()
            repriced = self._repriced(amendment)
            self._asked[amendment.amendment_id] = amendment
            self._amending = True
            try:
                return await self._apply(amendment, repriced)
            finally:
                self._amending = False

    @amend.validator
    def _validate_amend(self, amendment: Amendment) -> None:
        earlier = self._asked.get(amendment.amendment_id)
        if earlier is not None:
            if earlier != amendment:
                raise _amendment_refused(
                    "amendment_id", "was used before for another change: use a new one"
                )
            return  # a retry: the handler answers what the first did
        self._check_open()
        if len(self._asked) >= MAX_AMENDMENTS:
            raise _amendment_refused("amendment", f"an order takes at most {MAX_AMENDMENTS}")
        if self._request is not None:  # else it came with the start: the handler checks it
            self._repriced(amendment)

    def _amendment(self, amendment_id: str) -> AmendmentRecord | None:
        return next((a for a in self._amendments if a.amendment_id == amendment_id), None)

    def _check_open(self) -> None:
        if self._stage == OrderStage.CLOSED:
            raise _amendment_refused("order", self._closed_because)

    def _repriced(self, amendment: Amendment) -> Repriced:
        assert self._request is not None
        order = self._request.order
        if amendment.address is not None:
            if not order.is_delivery:
                raise _amendment_refused("address", "a pickup order has no delivery address")
            km = simulated_distance(amendment.address).kilometers
            if km > MAX_DELIVERY_KM:
                raise _amendment_refused(
                    "address", f"is {km} km away; we deliver up to {MAX_DELIVERY_KM} km"
                )
        try:
            return reprice(self._items, sum(self._charges.values()), amendment)
        except AmendmentError as err:
            raise _amendment_refused(err.field, err.reason) from None

    async def _apply(self, amendment: Amendment, repriced: Repriced) -> AmendmentRecord:
        saga, order = self._started(), self._order_fields()
        execution, key = saga.execution, amendment.amendment_id
        steps: list[str] = []
        if repriced.reserve:
            step = amendment_step(RESERVE_ADDED, key)
            steps.append(step)
            try:
                await saga.execute_activity(
                    InventoryActivities.update_inventory,
                    StockRequest(order.order_number, dict(repriced.reserve), execution, step),
                    step=step,
                    compensate_with=InventoryActivities.revert_inventory,
                )
            except ActivityError as err:  # nothing was taken: the order stays as it was
                raise _amendment_refused("add", _cause(err)) from None
            self._held[step] = dict(repriced.reserve)
        try:
            charged, refunded = await self._move(saga, order.order_number, key, repriced, steps)
        except (ActivityError, ApplicationError) as err:
            self._broken = err
            raise ApplicationError(
                f"amendment {key} failed half-way ({_cause(err)}): the order is rolled back",
                type=AMENDMENT_ERROR,
                non_retryable=True,
            ) from None
        self._items = list(repriced.items)
        if amendment.address is not None:
            self._address = amendment.address
        record = AmendmentRecord(
            amendment_id=key,
            added=[pizza.description for pizza in amendment.add],
            removed=list(amendment.remove),
            address=amendment.address,
            total=repriced.price.total,
            charged=charged,
            refunded=refunded,
            steps=steps,
            at=workflow.now(),
        )
        self._amendments.append(record)
        return record

    async def _move(
        self, saga: Saga, number: str, key: str, repriced: Repriced, steps: list[str]
    ) -> tuple[int, int]:
        """An amendment's steps after its reservation: put back, charge, refund."""
        execution = saga.execution
        if repriced.release:
            step = amendment_step(RELEASE_REMOVED, key)
            steps.append(step)
            take_from = _take_newest_first(self._held, dict(repriced.release))
            await saga.execute_activity(
                InventoryActivities.release_removed_pizzas,
                StockReduction(number, execution, step, take_from),
                step=step,
            )
            for held_step, items in take_from.items():
                for item, count in items.items():
                    self._held[held_step][item] -= count
        if repriced.charge:
            step = amendment_step(CHARGE_DIFFERENCE, key)
            steps.append(step)
            await saga.execute_activity(
                BillingActivities.charge_difference,
                DifferenceCharge(number, execution, step, repriced.charge),
                step=step,
                compensate_with=BillingActivities.refund_customer,
                compensation_arg=RefundRequest(number, execution, step),
            )
            self._charges[step] = repriced.charge
        if repriced.refund:
            step = amendment_step(REFUND_DIFFERENCE, key)
            steps.append(step)
            cents = _cents_newest_first(self._charges, repriced.refund)
            await saga.execute_activity(
                BillingActivities.refund_difference,
                PartialRefund(number, execution, step, cents),
                step=step,
            )
            for charge_step, part in cents.items():
                self._charges[charge_step] -= part
        return repriced.charge, repriced.refund

    def _close(self, because: str) -> None:
        if self._stage != OrderStage.CLOSED:
            self._stage, self._closed_because = OrderStage.CLOSED, because

    async def _amendments_settled(self) -> None:
        """Wait for an amendment under way to finish: its steps are then in the saga, and
        a rollback undoes them with the rest."""
        await workflow.wait_condition(lambda: not self._amending)

    def _order_fields(self) -> PlacedOrder:
        assert self._request is not None
        return self._request.order

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
        """``order``, unless the run is overloaded first, or an amendment failed half-way:
        then its step is cancelled and the order fails, which rolls it back (before Temporal
        would terminate an overloaded run with its effects in place). However it ends, an
        amendment under way finishes first, so that the rollback sees all its steps."""
        task = asyncio.ensure_future(order)
        try:
            await workflow.wait_condition(
                lambda: task.done() or self._overloaded() is not None or self._broken is not None
            )
        except asyncio.CancelledError:  # the order was cancelled: its step stops, it rolls back
            self._close("is cancelled")
            await self._amendments_settled()
            await _stopped(task)
            raise
        if task.done() and task.exception() is None:
            return task.result()
        self._close("is being rolled back")
        await self._amendments_settled()
        if not task.done():
            reason = self._overloaded()
            await _stopped(task)
            if reason is None and self._broken is not None:
                raise self._broken
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
        self._request = request
        self._items = list(request.order.items)
        self._address = request.order.address
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

        if workflow.patched(PAY_FIRST_PATCH):
            await self._reserve_and_charge(saga, request)
            self._stage = OrderStage.KITCHEN
            if request.waits.prep_seconds > 0:
                await saga.sleep(timedelta(seconds=request.waits.prep_seconds))
            self._close("left the kitchen: it can no longer change")
            await self._amendments_settled()
        else:  # orders started before: the kitchen first, then the stock and the card
            self._close("was started by an earlier version, which takes no amendments")
            if request.waits.prep_seconds > 0:
                await saga.sleep(timedelta(seconds=request.waits.prep_seconds))
            await self._reserve_and_charge(saga, request)
        charged = sum(self._charges.values())
        # No compensation of its own, but inside the saga: a bill that cannot be sent
        # refunds the charges and puts the pizzas back.
        bill = await saga.execute_activity(
            BillingActivities.send_bill,
            Bill(
                customer_id=order.customer.customer_id,
                customer_email=order.customer.email,
                order_number=order.order_number,
                description="Pizza",
                amount=charged,
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
            card_last4=self._card_last4,
        )

    async def _reserve_and_charge(self, saga: Saga, request: OrderRequest) -> None:
        order, execution = request.order, saga.execution
        price = price_order(pizza.price for pizza in order.items)
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
        self._held[RESERVE_STEP] = dict(stock.items)
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
        self._charges[CHARGE_STEP] = charge.amount
        self._card_last4 = charge.card_last4

    async def _driver_accepted(self, saga: Saga, request: OrderRequest) -> bool:
        try:
            answer = await saga.execute_activity(
                notify_delivery_driver,
                DeliveryRequest(
                    order_number=request.order.order_number,
                    address=self._address or request.order.address,
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
