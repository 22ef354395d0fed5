"""Charges, refunds and bills, in the store database. No card number is ever stored."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    Engine,
    String,
    UniqueConstraint,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from pizza_saga.common.db import Base, utcnow

CHARGE = "charge"
REFUND = "refund"


class Payment(Base):
    """A charge or a refund of one order; at most one of each per workflow.

    A refund row with amount 0 marks a rollback that found nothing to refund; it stays so
    that a charge arriving late for the same workflow is refused instead of kept.
    """

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("workflow_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    order_number: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int]
    card_last4: Mapped[str | None] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BillRecord(Base):
    """A bill sent to a customer; at most one per workflow."""

    __tablename__ = "bills"

    workflow_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    order_number: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[int]
    amount: Mapped[int]
    description: Mapped[str] = mapped_column(String(200))
    confirmation_number: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class PaymentEntry:
    """A money movement as `pizza payments` lists it."""

    order_number: str
    kind: str
    amount: int
    card_last4: str | None
    created_at: datetime


PAYMENT_COLUMNS = (
    Payment.order_number,
    Payment.kind,
    Payment.amount,
    Payment.card_last4,
    Payment.created_at,
)


@dataclass(frozen=True)
class BillEntry:
    """A bill as it was recorded."""

    workflow_id: str
    order_number: str
    customer_id: int
    amount: int
    description: str
    confirmation_number: str
    created_at: datetime


BILL_COLUMNS = (
    BillRecord.workflow_id,
    BillRecord.order_number,
    BillRecord.customer_id,
    BillRecord.amount,
    BillRecord.description,
    BillRecord.confirmation_number,
    BillRecord.created_at,
)


_ADD_PAYMENT = insert(Payment)
_PAYMENT = select(*PAYMENT_COLUMNS).where(
    Payment.workflow_id == bindparam("wf"), Payment.kind == bindparam("kind")
)
_RECORD_REFUNDED = (
    update(Payment)
    .where(Payment.workflow_id == bindparam("wf"), Payment.kind == REFUND)
    .values(amount=bindparam("refunded"), card_last4=bindparam("last4"))
)
_ADD_BILL = insert(BillRecord)
_BILL = select(*BILL_COLUMNS).where(BillRecord.workflow_id == bindparam("wf"))


class AlreadyRefunded(Exception):
    """The order was rolled back before its charge arrived; charging now would keep money."""


class PaymentStore:
    """Charge, refund and bill, each at most once per workflow."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # The writes below run prebuilt Core statements on a connection: they run in every
    # order's activities, where building statements (or the ORM's unit of work) cost several
    # times the CPU SQLite takes to run them.

    def charge(self, workflow_id: str, order_number: str, amount: int, card_last4: str) -> int:
        """Record this workflow's charge once; returns the amount charged (first call's)."""
        if not (len(card_last4) == 4 and card_last4.isascii() and card_last4.isdigit()):
            raise ValueError("only a card's last four digits may be stored")
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    _ADD_PAYMENT,
                    {
                        "workflow_id": workflow_id,
                        "kind": CHARGE,
                        "order_number": order_number,
                        "amount": amount,
                        "card_last4": card_last4,
                    },
                )
                if self._payment(conn, workflow_id, REFUND) is not None:
                    raise AlreadyRefunded(
                        f"order of workflow {workflow_id} was already rolled back"
                    )
                return amount
        except IntegrityError:
            with self._engine.connect() as conn:
                earlier = self._payment(conn, workflow_id, CHARGE)
                assert earlier is not None
                return earlier.amount

    def charge_of(self, workflow_id: str) -> PaymentEntry | None:
        """This workflow's charge, if one was recorded."""
        with self._engine.connect() as conn:
            return self._payment(conn, workflow_id, CHARGE)

    def refund(self, workflow_id: str, order_number: str) -> tuple[int, str | None]:
        """Refund this workflow's charge once; (amount, card_last4), (0, None) if none."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    _ADD_PAYMENT,
                    {
                        "workflow_id": workflow_id,
                        "kind": REFUND,
                        "order_number": order_number,
                        "amount": 0,
                        "card_last4": None,
                    },
                )
                charged = self._payment(conn, workflow_id, CHARGE)
                if charged is None:
                    return 0, None
                conn.execute(
                    _RECORD_REFUNDED,
                    {"wf": workflow_id, "refunded": charged.amount, "last4": charged.card_last4},
                )
                return charged.amount, charged.card_last4
        except IntegrityError:
            with self._engine.connect() as conn:
                done = self._payment(conn, workflow_id, REFUND)
                assert done is not None
                return done.amount, done.card_last4

    def bill(
        self,
        workflow_id: str,
        order_number: str,
        customer_id: int,
        amount: int,
        description: str,
    ) -> BillEntry:
        """Record this workflow's bill once; returns it (the first call's on a retry)."""
        try:
            with self._engine.begin() as conn:
                entry = BillEntry(
                    workflow_id=workflow_id,
                    order_number=order_number,
                    customer_id=customer_id,
                    amount=amount,
                    description=description,
                    confirmation_number=f"BILL-{uuid.uuid4().hex[:12].upper()}",
                    created_at=utcnow(),
                )
                conn.execute(_ADD_BILL, asdict(entry))
                return entry
        except IntegrityError:
            with self._engine.connect() as conn:
                row = conn.execute(_BILL, {"wf": workflow_id}).one()
                return BillEntry(*row)

    def payments(self) -> list[PaymentEntry]:
        """Every money movement (charges, and refunds that returned money), oldest first."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(Payment).where(Payment.amount > 0).order_by(Payment.id)
            ).all()
            return [
                PaymentEntry(r.order_number, r.kind, r.amount, r.card_last4, r.created_at)
                for r in rows
            ]

    @staticmethod
    def _payment(conn: Connection, workflow_id: str, kind: str) -> PaymentEntry | None:
        row = conn.execute(
            select(*PAYMENT_COLUMNS).where(Payment.workflow_id == workflow_id, Payment.kind == kind)
        ).first()
        return PaymentEntry(*row) if row else None
