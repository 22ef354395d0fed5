"""Charges, refunds and bills, made once per order (see temporal_saga.effects); and the
refunds a person made outside the product, as an operator records them.

No card number is ever stored: a charge keeps the card's last four digits.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    Connection,
    Engine,
    String,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column
from temporal_saga.effects import Detail, EffectKey, claimed, insert_if_absent

from pizza_saga.common.db import Base, as_utc, utcnow
from pizza_saga.common.effects import effect_log

CHARGE = "charge"
REFUND = "refund"
MANUAL_REFUND = "manual_refund"
"""A refund a person made outside the product (a bank transfer), as an operator recorded it."""


FIRST_CHARGE_STEP = "process_credit_card"


class Payment(Base):
    """A money movement: a charge or a refund of an order, at most one of each per saga step
    (the order's charge, an amendment's)."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("order_number", "kind", "step", name="uq_payments_order_kind_step"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_number: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    step: Mapped[str] = mapped_column(String(100), default=FIRST_CHARGE_STEP)
    amount: Mapped[int]
    card_last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ManualRefund(Base):
    """A refund made outside the product, once per (order, reference); any number of them
    per order, together at most what the order was charged, net."""

    __tablename__ = "manual_refunds"
    __table_args__ = (UniqueConstraint("order_number", "reference"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_number: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int]
    reference: Mapped[str] = mapped_column(String(100))
    """The bank's (or processor's) reference of the transfer."""
    operator: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class PaymentEntry:
    """A money movement as `pizza payments` lists it."""

    order_number: str
    kind: str
    """``charge``, ``refund`` (by the product) or ``manual_refund`` (by a person)."""
    amount: int
    card_last4: str
    """The card's last four digits; empty for a manual refund (it went by transfer)."""
    created_at: datetime
    reference: str | None = None
    """A manual refund's transfer reference."""
    operator: str | None = None
    """Who recorded a manual refund."""


def net_charged(entries: list[PaymentEntry]) -> int:
    """Cents an order's customer has paid, all told: charges less every refund."""
    return sum(p.amount if p.kind == CHARGE else -p.amount for p in entries)


class OverRefunded(ValueError):
    """A manual refund would give back more than the order was charged, net."""

    def __init__(self, net: int) -> None:
        super().__init__(f"the order's net charge is {net} cents")
        self.net = net


class ReferenceReused(ValueError):
    """The reference was recorded for this order before, with another amount."""

    def __init__(self, earlier: PaymentEntry) -> None:
        super().__init__(f"recorded before with {earlier.amount} cents")
        self.earlier = earlier


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
_MANUAL_REFUNDS = select(
    ManualRefund.order_number,
    ManualRefund.amount,
    ManualRefund.reference,
    ManualRefund.operator,
    ManualRefund.created_at,
).order_by(ManualRefund.id)
_LOCK_CHARGE = (
    select(Payment.id)
    .where(Payment.order_number == bindparam("n"), Payment.kind == CHARGE)
    .with_for_update()
)
_MOVED = (
    select(Payment.kind, func.sum(Payment.amount))
    .where(Payment.order_number == bindparam("n"))
    .group_by(Payment.kind)
)
_MANUALLY_REFUNDED = select(func.coalesce(func.sum(ManualRefund.amount), 0)).where(
    ManualRefund.order_number == bindparam("n")
)


class PaymentStore:
    """Charge, refund and bill, each at most once per order."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._effects = effect_log(engine)
        self._add_manual = insert_if_absent(
            engine, ManualRefund, "order_number", "reference"
        ).returning(ManualRefund.id)

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
                conn.execute(
                    _ADD_PAYMENT,
                    {"order_number": effect.key, "kind": CHARGE, "step": effect.step, **detail},
                )
            along(conn)
        if earlier is not None:
            return Charged(amount=int(earlier["amount"]), card_last4=earlier["card_last4"])
        return Charged(amount=amount, card_last4=card_last4, now=True)

    def charges(
        self, order_number: str, owner: str, *, steps: Callable[[str], bool]
    ) -> dict[str, Charged]:
        """This execution's charges of the order that stand, among the effect steps
        ``steps`` accepts: step -> what it holds, oldest first."""
        with self._engine.connect() as conn:
            standing = self._effects.standing(conn, order_number, owner)
        return {
            step: Charged(amount=d["amount"], card_last4=d["card_last4"])
            for step, d in standing.items()
            if steps(step)
        }

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
            if not charged.amount:  # amendments refunded all of it already
                return
            authorize(charged)
            conn.execute(
                _ADD_PAYMENT,
                {"order_number": effect.key, "kind": REFUND, "step": effect.step, **detail},
            )
            moved = True

        with self._engine.begin() as conn:
            undone = self._effects.undo(conn, effect, give_back)
            along(conn)
        if undone is None:
            return None
        return Charged(amount=undone["amount"], card_last4=undone["card_last4"], now=moved)

    def charge_more(
        self,
        effect: EffectKey,
        amount: int,
        *,
        first: EffectKey,
        authorize: Callable[[str], None] = lambda _: None,
    ) -> Charged:
        """Charge ``amount`` more for this order once, on the card of its standing charge
        ``first``; returns the charge (the first call's on a retry).

        ``authorize(card_last4)`` asks the card processor first; if it raises, nothing is
        recorded. LookupError if ``first`` is not a standing charge of this execution.
        """
        with self._engine.begin() as conn:
            base = self._effects.done(conn, first)
            if base is None:
                raise LookupError(f"order {first.key} has no standing charge to add to")
            detail = {"amount": amount, "card_last4": base["card_last4"]}
            earlier = self._effects.do(conn, effect, detail)
            if earlier is not None:
                return Charged(amount=int(earlier["amount"]), card_last4=earlier["card_last4"])
            authorize(base["card_last4"])
            conn.execute(
                _ADD_PAYMENT,
                {"order_number": effect.key, "kind": CHARGE, "step": effect.step, **detail},
            )
        return Charged(amount=amount, card_last4=base["card_last4"], now=True)

    def refund_part(
        self,
        effect: EffectKey,
        take_from: Mapping[str, int],
        *,
        authorize: Callable[[str], None] = lambda _: None,
    ) -> Charged:
        """Refund part of this order's charges once: ``take_from`` (charge step -> cents),
        which then hold that much less, so that rolling them back later refunds only what
        is left. Returns the refund (the first call's on a retry).

        Raises EffectRefused if a charge named was refunded already, ValueError if one
        holds less than asked; nothing is recorded then.
        """
        amount = sum(take_from.values())
        with self._engine.begin() as conn:
            held = {
                step: EffectKey(key=effect.key, step=step, owner=effect.owner)
                for step in sorted(take_from)
            }
            first = next((self._effects.done(conn, key) for key in held.values()), None)
            card_last4 = first["card_last4"] if first else ""
            detail = {"amount": amount, "card_last4": card_last4, "take_from": dict(take_from)}
            earlier = self._effects.do(conn, effect, detail)
            if earlier is not None:  # a retry: the charges were reduced the first time
                return Charged(amount=int(earlier["amount"]), card_last4=earlier["card_last4"])
            for step, key in held.items():
                self._effects.revise(conn, key, functools.partial(_less, cents=take_from[step]))
            authorize(card_last4)
            conn.execute(
                _ADD_PAYMENT,
                {
                    "order_number": effect.key,
                    "kind": REFUND,
                    "step": effect.step,
                    "amount": amount,
                    "card_last4": card_last4,
                },
            )
        return Charged(amount=amount, card_last4=card_last4, now=True)

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

    def record_manual_refund(
        self, order_number: str, *, amount: int, reference: str, operator: str
    ) -> tuple[PaymentEntry, bool]:
        """Record a refund made outside the product, once per (order, reference); the entry
        and whether this call recorded it (False: the same one was recorded before).

        Raises OverRefunded if it would give back more than the order's net charge, and
        ReferenceReused if ``reference`` was recorded for the order with another amount;
        either way nothing is recorded. Records of one order serialize on its charge's row
        (``SELECT ... FOR UPDATE``; SQLite's write lock, taken by the insert, on SQLite).
        """
        created_at = utcnow()
        with self._engine.begin() as conn:
            conn.execute(_LOCK_CHARGE, {"n": order_number})
            row = {
                "order_number": order_number,
                "amount": amount,
                "reference": reference,
                "operator": operator,
                "created_at": created_at,
            }
            if not claimed(conn.execute(self._add_manual, row)):
                [earlier] = [
                    entry
                    for entry in self._manual(conn, order_number)
                    if entry.reference == reference
                ]
                if earlier.amount != amount:
                    raise ReferenceReused(earlier)
                return earlier, False
            moved = {kind: total for kind, total in conn.execute(_MOVED, {"n": order_number})}
            manual = int(conn.execute(_MANUALLY_REFUNDED, {"n": order_number}).scalar_one())
            net = int(moved.get(CHARGE, 0)) - int(moved.get(REFUND, 0)) - manual
            if net < 0:  # the insert rolls back with the transaction
                raise OverRefunded(net + amount)
        return PaymentEntry(
            order_number, MANUAL_REFUND, amount, "", created_at, reference, operator
        ), True

    def payments(self, *, order_number: str | None = None) -> list[PaymentEntry]:
        """Every money movement (charges, refunds that returned money, manual refunds),
        oldest first; only one order's with ``order_number``."""
        query = (
            _PAYMENTS
            if order_number is None
            else _PAYMENTS.where(Payment.order_number == order_number)
        )
        with self._engine.connect() as conn:
            entries = [PaymentEntry(*row) for row in conn.execute(query)]
            entries += self._manual(conn, order_number)
        # Stable: a charge and its refund keep their order when their times are equal.
        return sorted(entries, key=lambda p: as_utc(p.created_at))

    @staticmethod
    def _manual(conn: Connection, order_number: str | None) -> list[PaymentEntry]:
        query = (
            _MANUAL_REFUNDS
            if order_number is None
            else _MANUAL_REFUNDS.where(ManualRefund.order_number == order_number)
        )
        return [
            PaymentEntry(number, MANUAL_REFUND, amount, "", as_utc(created_at), reference, operator)
            for number, amount, reference, operator, created_at in conn.execute(query)
        ]


def _less(detail: Detail, *, cents: int) -> Detail:
    """A charge's record with ``cents`` refunded of it; ValueError if it holds less."""
    if detail["amount"] < cents:
        raise ValueError(f"the charge holds {detail['amount']} cents, not {cents}")
    return {**detail, "amount": detail["amount"] - cents}
