"""Billing activities: charge the card, refund it on rollback, and send the bill."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from sqlalchemy import Connection
from temporal_saga import CompensationContext, StepOutcome
from temporal_saga.effects import EffectKey, EffectRefused
from temporalio import activity
from temporalio.exceptions import ApplicationError

from pizza_saga.billing import cards
from pizza_saga.billing.models import (
    Bill,
    BillReceipt,
    CardToken,
    ChargeReceipt,
    ChargeRequest,
    DifferenceCharge,
    PartialRefund,
    RefundReceipt,
    RefundRequest,
)
from pizza_saga.billing.store import Charged, PaymentStore
from pizza_saga.billing.vault import CardTokenError, CardVault

BOUNCING_EMAIL_PREFIX = "bounce@"
"""Sandbox rule: bills to addresses starting with this cannot be delivered."""

CHARGED_CENTS = "pizza_money_charged_cents"
"""Counter of cents charged to cards (each charge once, when the store records it)."""
REFUNDED_CENTS = "pizza_money_refunded_cents"
"""Counter of cents refunded to cards (each refund once, when the store records it)."""

CHARGE_STEP = "process_credit_card"
BILL_STEP = "send_bill"
"""The saga steps whose effects (per order) the charge and the bill are."""


class BillingActivities:
    """Activities over one PaymentStore and the card vault; idempotent per order."""

    def __init__(self, store: PaymentStore, vault: CardVault) -> None:
        self._store = store
        self._vault = vault

    @activity.defn
    async def process_credit_card(self, request: ChargeRequest) -> ChargeReceipt:
        """Authorize the card and record the charge, once per order.

        The only activity that sees a card number: it takes it from the vault for this
        order's token, and destroys it once the charge is recorded.
        """
        charged = await asyncio.to_thread(self._charge, request, activity.info().attempt)
        if charged.now:  # a retry that finds the charge recorded moved no money
            _count(CHARGED_CENTS, "Cents charged to cards.", charged.amount)
        activity.logger.info(
            "Charged %d cents to card ending %s for order %s",
            charged.amount,
            charged.card_last4,
            request.order_number,
        )
        return ChargeReceipt(amount=charged.amount, card_last4=charged.card_last4)

    def _charge(self, request: ChargeRequest, attempt: int) -> Charged:
        """The charge's blocking part, on one worker thread: the vault and the store."""
        effect = EffectKey(key=request.order_number, step=CHARGE_STEP, owner=request.execution)
        try:
            number = self._vault.detokenize(request.card.token, order_number=request.order_number)
        except CardTokenError as err:
            # The number goes in the charge's own transaction: gone, it may have been charged
            # (a retry, or a reset run of this execution). Then that charge is the answer.
            earlier = self._store.charged(effect)
            if earlier is not None:
                return earlier
            raise ApplicationError(str(err), type="CardTokenError", non_retryable=True) from None
        try:
            cards.authorize(number, attempt)
        except cards.InvalidCard as err:
            raise ApplicationError(
                str(err), type="CreditCardProcessingError", non_retryable=True
            ) from None
        except cards.CardDeclined as err:
            raise ApplicationError(str(err), type="CardDeclinedError", non_retryable=True) from None
        except cards.ProcessorUnavailable as err:
            raise ApplicationError(str(err), type="ProcessorUnavailableError") from None
        card_last4 = cards.last4(number)
        del number
        try:
            return self._store.charge(
                effect, request.amount, card_last4, along=self._destroyer(request.order_number)
            )
        except EffectRefused as err:
            raise ApplicationError(str(err), type=err.error_type, non_retryable=True) from None

    @activity.defn
    async def refund_customer(
        self, request: RefundRequest, context: CompensationContext
    ) -> RefundReceipt:
        """Compensation of process_credit_card: refund what this order was charged, if any.

        Whatever the step's outcome, the store decides from its record of this order:
        an "unknown" charge is refunded if and only if it happened.
        """

        def authorize(charged: Charged) -> None:
            try:
                cards.authorize_refund(charged.card_last4, context.attempt)
            except cards.ProcessorUnavailable as err:
                raise ApplicationError(str(err), type="RefundFailedError") from None

        effect = EffectKey(key=request.order_number, step=request.step, owner=request.execution)
        # Rolled back: the card number, if still kept, is no longer needed by anyone.
        refunded = await asyncio.to_thread(
            functools.partial(
                self._store.refund,
                effect,
                authorize=authorize,
                along=self._destroyer(request.order_number),
            )
        )
        if refunded is None and context.outcome is StepOutcome.SUCCEEDED:
            raise ApplicationError(
                f"process_credit_card succeeded for order {request.order_number} "
                "but no charge is recorded",
                type="CompensationInconsistencyError",
                non_retryable=True,
            )
        amount = refunded.amount if refunded else 0
        card_last4 = refunded.card_last4 if refunded else None
        if refunded and refunded.now:
            _count(REFUNDED_CENTS, "Cents refunded to cards.", amount)
        if amount:
            summary = f"Customer Refunded: {amount} cents to card ending {card_last4}"
        else:
            summary = "Nothing to refund: no charge had been made"
        activity.logger.info("%s (order %s)", summary, request.order_number)
        return RefundReceipt(amount=amount, card_last4=card_last4, summary=summary)

    @activity.defn
    async def charge_difference(self, request: DifferenceCharge) -> ChargeReceipt:
        """Charge what an amendment added, once, on the card of the order's first charge."""

        def authorize(card_last4: str) -> None:
            try:
                cards.authorize_increment(card_last4, activity.info().attempt)
            except cards.ProcessorUnavailable as err:
                raise ApplicationError(str(err), type="ProcessorUnavailableError") from None

        effect = EffectKey(key=request.order_number, step=request.step, owner=request.execution)
        first = EffectKey(key=request.order_number, step=CHARGE_STEP, owner=request.execution)
        try:
            charged = await asyncio.to_thread(
                functools.partial(
                    self._store.charge_more,
                    effect,
                    request.amount,
                    first=first,
                    authorize=authorize,
                )
            )
        except EffectRefused as err:
            raise ApplicationError(str(err), type=err.error_type, non_retryable=True) from None
        except LookupError as err:
            raise ApplicationError(str(err), type="NotChargedError", non_retryable=True) from None
        if charged.now:
            _count(CHARGED_CENTS, "Cents charged to cards.", charged.amount)
        activity.logger.info(
            "Charged %d cents more to card ending %s for order %s",
            charged.amount,
            charged.card_last4,
            request.order_number,
        )
        return ChargeReceipt(amount=charged.amount, card_last4=charged.card_last4)

    @activity.defn
    async def refund_difference(self, request: PartialRefund) -> RefundReceipt:
        """Refund what an amendment took off the price, once, from the charges named; they
        hold that much less, so their rollback refunds only the rest."""

        def authorize(card_last4: str) -> None:
            try:
                cards.authorize_refund(card_last4, activity.info().attempt)
            except cards.ProcessorUnavailable as err:
                raise ApplicationError(str(err), type="RefundFailedError") from None

        effect = EffectKey(key=request.order_number, step=request.step, owner=request.execution)
        try:
            refunded = await asyncio.to_thread(
                functools.partial(
                    self._store.refund_part, effect, request.take_from, authorize=authorize
                )
            )
        except EffectRefused as err:
            raise ApplicationError(str(err), type=err.error_type, non_retryable=True) from None
        except (LookupError, ValueError) as err:
            raise ApplicationError(
                str(err), type="CompensationInconsistencyError", non_retryable=True
            ) from None
        if refunded.now:
            _count(REFUNDED_CENTS, "Cents refunded to cards.", refunded.amount)
        summary = f"Refunded {refunded.amount} cents to card ending {refunded.card_last4}"
        activity.logger.info("%s (order %s)", summary, request.order_number)
        return RefundReceipt(
            amount=refunded.amount, card_last4=refunded.card_last4, summary=summary
        )

    @activity.defn
    async def discard_card(self, card: CardToken) -> None:
        """Destroy the card number behind ``card``: its order ended before the charge needed
        it (out of stock, out of range, cancelled early). Idempotent."""
        await asyncio.to_thread(self._vault.discard, card)
        activity.logger.info("Card number of token %s... destroyed", card.token[:10])

    def _destroyer(self, order_number: str) -> Callable[[Connection], None]:
        """Destroys the order's card number inside the store transaction it is given."""
        return lambda conn: self._vault.destroy(order_number=order_number, conn=conn)

    @activity.defn
    async def send_bill(self, bill: Bill) -> BillReceipt:
        """Send the customer the bill for what was charged, once per order."""
        if bill.customer_email.startswith(BOUNCING_EMAIL_PREFIX):
            raise ApplicationError(
                f"bill for order {bill.order_number} bounced: mailbox unavailable",
                type="BillDeliveryError",
                non_retryable=True,
            )
        record = await asyncio.to_thread(
            functools.partial(
                self._store.bill,
                EffectKey(key=bill.order_number, step=BILL_STEP, owner=bill.execution),
                customer_id=bill.customer_id,
                amount=bill.amount,
                description=bill.description,
            )
        )
        activity.logger.info(
            "Bill %s sent for order %s", record.confirmation_number, bill.order_number
        )
        return BillReceipt(
            confirmation_number=record.confirmation_number,
            billing_timestamp=int(record.created_at.timestamp()),
            amount=record.amount,
        )


def _count(name: str, description: str, cents: int) -> None:
    activity.metric_meter().create_counter(name, description, "cents").add(cents)
