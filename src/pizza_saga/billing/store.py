"""Charges, refunds and bills, in the store database. No card number is ever stored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, String, UniqueConstraint, select
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


class AlreadyRefunded(Exception):
    """The order was rolled back before its charge arrived; charging now would keep money."""


class PaymentStore:
    """Charge, refund and bill, each at most once per workflow."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def charge(self, workflow_id: str, order_number: str, amount: int, card_last4: str) -> int:
        """Record this workflow's charge once; returns the amount charged (first call's)."""
        if not (len(card_last4) == 4 and card_last4.isascii() and card_last4.isdigit()):
            raise ValueError("only a card's last four digits may be stored")
        try:
            with Session(self._engine) as session, session.begin():
                session.add(
                    Payment(
                        workflow_id=workflow_id,
                        kind=CHARGE,
                        order_number=order_number,
                        amount=amount,
                        card_last4=card_last4,
                    )
                )
                session.flush()
                if self._payment(session, workflow_id, REFUND) is not None:
                    raise AlreadyRefunded(
                        f"order of workflow {workflow_id} was already rolled back"
                    )
                return amount
        except IntegrityError:
            with Session(self._engine) as session:
                earlier = self._payment(session, workflow_id, CHARGE)
                assert earlier is not None
                return earlier.amount

    def charge_of(self, workflow_id: str) -> PaymentEntry | None:
        """This workflow's charge, if one was recorded."""
        with Session(self._engine) as session:
            row = self._payment(session, workflow_id, CHARGE)
            if row is None:
                return None
            return PaymentEntry(
                row.order_number, row.kind, row.amount, row.card_last4, row.created_at
            )

    def refund(self, workflow_id: str, order_number: str) -> tuple[int, str | None]:
        """Refund this workflow's charge once; (amount, card_last4), (0, None) if none."""
        try:
            with Session(self._engine) as session, session.begin():
                refund = Payment(
                    workflow_id=workflow_id, kind=REFUND, order_number=order_number, amount=0
                )
                session.add(refund)
                session.flush()
                charged = self._payment(session, workflow_id, CHARGE)
                if charged is not None:
                    refund.amount, refund.card_last4 = charged.amount, charged.card_last4
                return refund.amount, refund.card_last4
        except IntegrityError:
            with Session(self._engine) as session:
                done = self._payment(session, workflow_id, REFUND)
                assert done is not None
                return done.amount, done.card_last4

    def bill(
        self,
        workflow_id: str,
        order_number: str,
        customer_id: int,
        amount: int,
        description: str,
    ) -> BillRecord:
        """Record this workflow's bill once; returns it (the first call's on a retry)."""
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                record = BillRecord(
                    workflow_id=workflow_id,
                    order_number=order_number,
                    customer_id=customer_id,
                    amount=amount,
                    description=description,
                    confirmation_number=f"BILL-{uuid.uuid4().hex[:12].upper()}",
                )
                session.add(record)
                session.flush()
                return record
        except IntegrityError:
            with Session(self._engine, expire_on_commit=False) as session:
                earlier = session.get(BillRecord, workflow_id)
                assert earlier is not None
                return earlier

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
    def _payment(session: Session, workflow_id: str, kind: str) -> Payment | None:
        return session.scalars(
            select(Payment).where(Payment.workflow_id == workflow_id, Payment.kind == kind)
        ).first()
