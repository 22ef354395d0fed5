"""Operating the shop: cancelling, an operator's decisions, stock, payments (manual refunds
included), readiness. Each change is in the audit trail, with who made it."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temporal_saga import (
    MAX_REASON_LENGTH,
    CompensationState,
    OperatorAction,
    OperatorDecision,
    StepRecord,
)
from temporalio.service import RPCError

from pizza_saga.access.service import Actor
from pizza_saga.billing.activities import CHARGE_STEP
from pizza_saga.billing.store import OverRefunded, PaymentEntry, ReferenceReused
from pizza_saga.common.formatting import cents
from pizza_saga.common.logmask import mask_card_numbers
from pizza_saga.order import client as orders
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.menu import MENU
from pizza_saga.order.service._core import ServiceCore, _local_operator

if TYPE_CHECKING:
    from pizza_saga.order.reconcile import AbandonedOrder, Reconciled
from pizza_saga.order.service.errors import (
    AlreadyFinished,
    InvalidInput,
    NotAllowed,
    NothingToResolve,
    OrderNotFound,
    RefundNotSkipped,
    TemporalUnavailable,
)

MAX_REASON = MAX_REASON_LENGTH
"""Longest operator reason kept in the ledger (the saga's own validator refuses longer)."""


MAX_STOCK = 1_000_000

MAX_REFERENCE = 100
"""Longest transfer reference a manual refund keeps."""
REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/#-]*")
"""A transfer reference: letters, digits, and `` ._:/#-`` after the first."""
MAX_REFUND_CENTS = 100_000_000


@dataclass(frozen=True)
class ManualRefundRecorded:
    """A manual refund as recorded, and whether this request recorded it (False: the same
    order and reference were recorded before, with the same amount)."""

    entry: PaymentEntry
    now: bool


@dataclass(frozen=True)
class Readiness:
    """What a deployment needs to take orders, and what is missing."""

    temporal: bool
    worker: bool
    store: bool

    @property
    def missing(self) -> list[str]:
        return [name for name in ("temporal", "worker", "store") if not getattr(self, name)]


class Operating(ServiceCore):
    """Operating the shop."""

    async def cancel(self, order_number: str, *, by: Actor | None = None) -> None:
        """Ask a running order to cancel: its compensations run, then it ends CANCELLED.

        ``by``: who asks (the face has checked they may: an operator, or the order's
        customer); recorded in the audit trail. None: the operator on this machine (CLI).
        """
        by = by or _local_operator()
        status = await self._status(order_number)
        if status is not OrderStatus.RUNNING:
            raise AlreadyFinished(order_number, status, "nothing cancelled")
        try:
            await orders.cancel_order(self._temporal, order_number)
        except orders.NoSuchOrder:
            raise OrderNotFound(order_number) from None
        await self.access.record(by, "cancel", order_number=order_number)

    async def resolve(
        self,
        order_number: str,
        *,
        action: OperatorAction,
        step: str | None = None,
        reason: str | None = None,
        by: Actor | None = None,
    ) -> StepRecord:
        """An operator's decision about a compensation that waits for one, recorded in the
        audit trail with who made it (``by``; None: the operator on this machine)."""
        by = by or _local_operator()
        if not by.is_operator:
            raise NotAllowed("only an operator resolves a compensation")
        reason = reason.strip() if reason else None
        if action is OperatorAction.SKIP and not reason:
            raise InvalidInput(
                "say why the compensation is skipped (it is kept in the ledger)", field="reason"
            )
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidInput(f"at most {MAX_REASON} characters", field="reason")
        decision = OperatorDecision(action=action, step=step, reason=reason)
        status = await self._status(order_number)
        if status is not OrderStatus.RUNNING:
            raise AlreadyFinished(order_number, status, "nothing waits for an operator")
        try:
            step_now = await orders.resolve_order(self._temporal, order_number, decision)
        except orders.NoSuchOrder:
            raise OrderNotFound(order_number) from None
        except ValueError as err:
            raise NothingToResolve(f"order {order_number}: {err}") from None
        await self.access.record(
            by,
            action.value.lower(),
            order_number=order_number,
            reason=reason or "",
            detail=f"step {step_now.step}",
        )
        return step_now

    def stock(self) -> dict[str, int]:
        """Pizzas on hand: menu item -> quantity."""
        return self._inventory.on_hand()

    def set_stock(
        self, quantities: Mapping[str, int], *, by: Actor | None = None
    ) -> dict[str, int]:
        """Set items' quantities (items must be on the menu); the stock after. Operators only
        (``by``; None: the operator on this machine), recorded in the audit trail."""
        by = by or _local_operator()
        if not by.is_operator:
            raise NotAllowed("only an operator restocks")
        for item, quantity in quantities.items():
            if item not in MENU:
                raise InvalidInput(f"{item!r} is not on the menu ({', '.join(MENU)})", field="item")
            if isinstance(quantity, bool) or not 0 <= quantity <= MAX_STOCK:
                raise InvalidInput(
                    f"must be a whole number from 0 to {MAX_STOCK}", field="quantity"
                )
        self._inventory.stock_up(quantities, overwrite=True)
        self.access.record_now(by, "restock", detail=json.dumps(dict(quantities), sort_keys=True))
        return self.stock()

    def payments(self, *, order_number: str | None = None) -> list[PaymentEntry]:
        """Every charge and refund (manual refunds too), oldest first; one order's with
        ``order_number``."""
        return self._payments.payments(order_number=order_number)

    async def abandoned(self) -> list[AbandonedOrder]:
        """Orders whose run ended (terminated, timed out) with their effects still in place."""
        from pizza_saga.order.reconcile import abandoned_orders

        try:
            return await abandoned_orders(
                self._temporal,
                task_queue=self.task_queue,
                inventory=self._inventory,
                payments=self._payments,
                vault=self._vault,
            )
        except RPCError as err:
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None

    async def reconcile(self) -> list[Reconciled]:
        """Roll back every abandoned order now, through its compensations (a worker runs
        them); what each got back. The workers' schedule does it every minute anyway."""
        from pizza_saga.order.reconcile import reconcile_now

        if not await self.worker_polling():
            raise TemporalUnavailable("no worker polls: start `pizza worker` to reconcile")
        try:
            return await reconcile_now(self._temporal, task_queue=self.task_queue)
        except RPCError as err:
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None

    async def record_manual_refund(
        self, order_number: str, *, amount: int, reference: str, by: Actor | None = None
    ) -> ManualRefundRecorded:
        """Record money a person gave back outside the product (a bank transfer), after an
        operator skipped the order's refund; in the payments and the audit trail, by ``by``
        (None: the operator on this machine).

        Allowed only for an order whose refund (the compensation of its charge) was skipped
        by an operator, per its ledger; for ``amount`` cents above 0 and, with the manual
        refunds recorded before, at most what the order was charged, net. Once per order
        and ``reference``: the same again is answered with the first record. Anything else
        raises (InvalidInput naming the field, RefundNotSkipped, OrderNotFound) and records
        nothing.
        """
        by = by or _local_operator()
        if not by.is_operator:
            raise NotAllowed("only an operator records a manual refund")
        if isinstance(amount, bool) or not 0 < amount <= MAX_REFUND_CENTS:
            raise InvalidInput(
                f"must be a whole number of cents from 1 to {MAX_REFUND_CENTS}", field="amount"
            )
        reference = reference.strip()
        if not reference or len(reference) > MAX_REFERENCE:
            raise InvalidInput(
                f"give the transfer's reference (1 to {MAX_REFERENCE} characters)",
                field="reference",
            )
        if not REFERENCE.fullmatch(reference):
            raise InvalidInput(
                "letters, digits, spaces and ._:/#- only, starting with a letter or digit",
                field="reference",
            )
        if mask_card_numbers(reference) != reference:
            raise InvalidInput(
                "looks like a card number, which is never stored: give the transfer's reference",
                field="reference",
            )
        await self._check_refund_skipped(order_number)
        record = functools.partial(
            self._payments.record_manual_refund,
            order_number,
            amount=amount,
            reference=reference,
            operator=by.name,
        )
        try:
            entry, now = await asyncio.to_thread(record)
        except OverRefunded as err:
            raise InvalidInput(
                f"at most {cents(max(err.net, 0))}: what order {order_number} was charged, "
                "net of every refund",
                field="amount",
            ) from None
        except ReferenceReused as err:
            raise InvalidInput(
                f"{reference!r} was recorded for order {order_number} with "
                f"{cents(err.earlier.amount)}; another transfer needs its own reference",
                field="reference",
            ) from None
        if now:
            await self.access.record(
                by,
                "manual_refund",
                order_number=order_number,
                detail=f"{cents(amount)} reference {reference}",
            )
        return ManualRefundRecorded(entry=entry, now=now)

    async def _check_refund_skipped(self, order_number: str) -> None:
        """RefundNotSkipped unless an operator skipped the refund of the order's charge."""
        outcome = await self._outcome(order_number, wait=False)
        if outcome.ledger is None:
            raise TemporalUnavailable(
                f"cannot read order {order_number}'s ledger ({outcome.ledger_unavailable}), "
                "which says whether its refund was skipped: try again with a worker running"
            )
        states = [r.compensation_state for r in outcome.ledger if r.step == CHARGE_STEP]
        if CompensationState.SKIPPED not in states:
            state = f"refund {states[0]}" if states else "never charged"
            raise RefundNotSkipped(order_number, state)

    async def readiness(self) -> Readiness:
        """Temporal reachable, a worker polling, the store database answering."""
        try:
            worker = await self.worker_polling()
            temporal = True
        except (TemporalUnavailable, RuntimeError):
            temporal = worker = False
        try:
            self._inventory.on_hand()
            store = True
        except Exception:  # any database error means "not ready", said by name
            store = False
        return Readiness(temporal=temporal, worker=worker, store=store)
