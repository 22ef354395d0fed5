"""Charges, refunds and bills, made once per order (see temporal_saga.effects).

No card number is ever stored: a charge keeps the card's last four digits.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, String, UniqueConstraint, insert, select
from sqlalchemy.orm import Mapped, mapped_column
from temporal_saga.effects import Detail, EffectKey

from pizza_saga.common.db import Base, as_utc, utcnow
from pizza_saga.common.effects import effect_log

CHARGE = "charge"
REFUND = "refund"


class Payment(Base):
    """A money movement: an order's charge, or the refund of it (at most one of each)."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("order_number", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_number: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    amount: Mapped[int]
    card_last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class PaymentEntry:
    """A money movement as `pizza payments` lists it."""

    order_number: str
    kind: str
    amount: int
    card_last4: str
    created_at: datetime


@dataclass(frozen=True)
class Charged:
    """A charge as it was recorded: what a refund gives back."""

    amount: int
    card_last4: str
    now: bool = field(default=False, compare=False)
    """Whether this call moved the money (False: a repeat, told what was done before)."""


@dataclass(frozen=True)
class BillEntry:
    """A bill as it was recorded."""

    order_number: str
    customer_id: int
    amount: int
    description: str
    confirmation_number: str
    created_at: datetime


_ADD_PAYMENT = insert(Payment)
_PAYMENTS = (
    select(
        Payment.order_number, Payment.kind, Payment.amount, Payment.card_last4, Payment.created_at
    )
    .where(Payment.amount > 0)
    .order_by(Payment.id)
)


class PaymentStore:
    """Charge, refund and bill, each at most once per order."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._effects = effect_log(engine)

    def charge(
        self,
        effect: EffectKey,
        amount: int,
        card_last4: str,
        *,
        along: Callable[[Connection], None] = lambda _: None,
    ) -> Charged:
        """Record this order's charge once; returns the charge (the first call's).

        ``along`` runs in the same transaction (destroying the card number): done with the
        charge, or not at all. Raises EffectRefused when the order's charge was rolled back
        first or belongs to another execution.
        """
        if not (len(card_last4) == 4 and card_last4.isascii() and card_last4.isdigit()):
            raise ValueError("only a card's last four digits may be stored")
        with self._engine.begin() as conn:
            detail = {"amount": amount, "card_last4": card_last4}
            earlier = self._effects.do(conn, effect, detail)
            if earlier is None:
                conn.execute(_ADD_PAYMENT, {"order_number": effect.key, "kind": CHARGE, **detail})
            along(conn)
        if earlier is not None:
            return Charged(amount=int(earlier["amount"]), card_last4=earlier["card_last4"])
        return Charged(amount=amount, card_last4=card_last4, now=True)

    def charged(self, effect: EffectKey) -> Charged | None:
        """This execution's charge of the order, if it was recorded (and not refunded)."""
        with self._engine.connect() as conn:
            done = self._effects.done(conn, effect)
        return Charged(amount=done["amount"], card_last4=done["card_last4"]) if done else None

    def refund(
        self,
        effect: EffectKey,
        *,
        authorize: Callable[[Charged], None] = lambda _: None,
        along: Callable[[Connection], None] = lambda _: None,
    ) -> Charged | None:
        """Refund this order's charge once; what was refunded (``now`` if by this call), None
        if nothing was charged.

        ``authorize`` asks the card processor first; if it raises, nothing is recorded and
        the refund can be tried again. ``along`` runs in the same transaction.
        """

        moved = False

        def give_back(detail: Detail) -> None:
            nonlocal moved
            charged = Charged(amount=detail["amount"], card_last4=detail["card_last4"])
            authorize(charged)
            conn.execute(
                _ADD_PAYMENT,
                {"order_number": effect.key, "kind": REFUND, **detail},
            )
            moved = True

        with self._engine.begin() as conn:
            undone = self._effects.undo(conn, effect, give_back)
            along(conn)
        if undone is None:
            return None
        return Charged(amount=undone["amount"], card_last4=undone["card_last4"], now=moved)

    def bill(
        self, effect: EffectKey, *, customer_id: int, amount: int, description: str
    ) -> BillEntry:
        """Record this order's bill once; returns it (the first call's on a retry)."""
        entry: Detail = {
            "customer_id": customer_id,
            "amount": amount,
            "description": description,
            "confirmation_number": f"BILL-{uuid.uuid4().hex[:12].upper()}",
            "created_at": utcnow().isoformat(),
        }
        with self._engine.begin() as conn:
            recorded = self._effects.do(conn, effect, entry) or entry
        return BillEntry(
            order_number=effect.key,
            customer_id=recorded["customer_id"],
            amount=recorded["amount"],
            description=recorded["description"],
            confirmation_number=recorded["confirmation_number"],
            created_at=as_utc(datetime.fromisoformat(recorded["created_at"])),
        )

    def payments(self, *, order_number: str | None = None) -> list[PaymentEntry]:
        """Every money movement (charges, and refunds that returned money), oldest first;
        only one order's with ``order_number``."""
        query = (
            _PAYMENTS
            if order_number is None
            else _PAYMENTS.where(Payment.order_number == order_number)
        )
        with self._engine.connect() as conn:
            return [PaymentEntry(*row) for row in conn.execute(query)]
