"""Data the billing activities take and return. Amounts are integer cents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import Field


@dataclass(frozen=True)
class CardToken:
    """A card number exchanged at the edge for an opaque token (billing/vault.py).

    Only the charging activity turns it back into the number, for this order alone,
    until it expires or the order is charged or rolled back.
    """

    token: str
    """``tok_`` and 32 random characters: says nothing about the card."""
    brand: str
    last4: str
    expires_at: Annotated[datetime, Field(strict=False)]
    """When the charge can no longer use it (read from JSON text, even in strict models)."""


@dataclass(frozen=True)
class ChargeRequest:
    """Charge ``amount`` to a tokenized card for an order."""

    order_number: str
    holder_name: str
    card: CardToken
    amount: int
    execution: str
    """The order's execution (Saga.execution): whose charge this is."""


@dataclass(frozen=True)
class ChargeReceipt:
    """A charge that went through."""

    amount: int
    card_last4: str


@dataclass(frozen=True)
class RefundRequest:
    """Undo this order's charge, whatever it was."""

    order_number: str
    execution: str
    """The order's execution (Saga.execution): only its own charge is refunded."""
    step: str = "process_credit_card"
    """Which of the order's charges: its first, or an amendment's."""


@dataclass(frozen=True)
class DifferenceCharge:
    """Charge what an amendment added to the price, on the card of the order's first charge
    (by the processor's reference to it: the card number is gone by then)."""

    order_number: str
    execution: str
    step: str
    """The amendment's step: keys the charge, so it is made once."""
    amount: int


@dataclass(frozen=True)
class PartialRefund:
    """Refund what an amendment took off the price, from the order's charges that hold it."""

    order_number: str
    execution: str
    step: str
    """The amendment's step: keys the refund, so it is made once."""
    take_from: dict[str, int]
    """Charge step -> cents to refund of it."""


@dataclass(frozen=True)
class RefundReceipt:
    """What was refunded; amount 0 when nothing had been charged."""

    amount: int
    card_last4: str | None
    summary: str
    """What happened, in words, for the Web UI's history view."""


@dataclass(frozen=True)
class Bill:
    """The bill sent to the customer; its amount is what was charged."""

    customer_id: int
    customer_email: str
    order_number: str
    description: str
    amount: int
    execution: str
    """The order's execution (Saga.execution): whose bill this is."""


@dataclass(frozen=True)
class BillReceipt:
    """A bill that was sent."""

    confirmation_number: str
    billing_timestamp: int
    amount: int
