"""Billing activities: charge the card, refund it on rollback, and send the bill."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from pizza_saga.billing import cards
from pizza_saga.billing.models import (
    Bill,
    BillReceipt,
    ChargeReceipt,
    ChargeRequest,
    RefundReceipt,
    RefundRequest,
)
from pizza_saga.billing.store import AlreadyRefunded, PaymentStore
from pizza_saga.common.activity_keys import workflow_key
from pizza_saga.common.db import as_utc
from pizza_saga.saga import CompensationContext, StepOutcome

BOUNCING_EMAIL_PREFIX = "bounce@"
"""Sandbox rule: bills to addresses starting with this cannot be delivered."""


class BillingActivities:
    """Activities over one PaymentStore; idempotent per workflow id."""

    def __init__(self, store: PaymentStore) -> None:
        self._store = store

    @activity.defn
    async def process_credit_card(self, request: ChargeRequest) -> ChargeReceipt:
        """Authorize the card and record the charge, once per order."""
        info = activity.info()
        try:
            cards.authorize(request.card_number, info.attempt)
        except cards.InvalidCard as err:
            raise ApplicationError(
                str(err), type="CreditCardProcessingError", non_retryable=True
            ) from None
        except cards.CardDeclined as err:
            raise ApplicationError(str(err), type="CardDeclinedError", non_retryable=True) from None
        except cards.ProcessorUnavailable as err:
            raise ApplicationError(str(err), type="ProcessorUnavailableError") from None
        card_last4 = cards.last4(request.card_number)
        try:
            amount = await asyncio.to_thread(
                self._store.charge,
                workflow_key(),
                request.order_number,
                request.amount,
                card_last4,
            )
        except AlreadyRefunded as err:
            raise ApplicationError(
                str(err), type="AlreadyRolledBackError", non_retryable=True
            ) from None
        activity.logger.info(
            "Charged %d cents to card ending %s for order %s",
            amount,
            card_last4,
            request.order_number,
        )
        return ChargeReceipt(amount=amount, card_last4=card_last4)

    @activity.defn
    async def refund_customer(
        self, request: RefundRequest, context: CompensationContext
    ) -> RefundReceipt:
        """Compensation of process_credit_card: refund what this order was charged, if any.

        Whatever the step's outcome, the store decides from its record of this workflow:
        an "unknown" charge is refunded if and only if it happened.
        """
        workflow_id = workflow_key()
        charged = await asyncio.to_thread(self._store.charge_of, workflow_id)
        if charged is not None:
            try:
                cards.authorize_refund(charged.card_last4 or "", context.attempt)
            except cards.ProcessorUnavailable as err:
                raise ApplicationError(str(err), type="RefundFailedError") from None
        elif context.outcome is StepOutcome.SUCCEEDED:
            raise ApplicationError(
                f"process_credit_card succeeded for order {request.order_number} "
                "but no charge is recorded",
                type="CompensationInconsistencyError",
                non_retryable=True,
            )
        amount, card_last4 = await asyncio.to_thread(
            self._store.refund, workflow_id, request.order_number
        )
        if amount:
            summary = f"Customer Refunded: {amount} cents to card ending {card_last4}"
        else:
            summary = "Nothing to refund: no charge had been made"
        activity.logger.info("%s (order %s)", summary, request.order_number)
        return RefundReceipt(amount=amount, card_last4=card_last4, summary=summary)

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
            self._store.bill,
            workflow_key(),
            bill.order_number,
            bill.customer_id,
            bill.amount,
            bill.description,
        )
        activity.logger.info(
            "Bill %s sent for order %s", record.confirmation_number, bill.order_number
        )
        return BillReceipt(
            confirmation_number=record.confirmation_number,
            billing_timestamp=int(as_utc(record.created_at).timestamp()),
            amount=record.amount,
        )
