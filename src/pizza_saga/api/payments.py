"""Charges and refunds, as the JSON API lists them (of a card, only its last four digits)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from pizza_saga.api.access import OperatorActor, StreamOrderActor
from pizza_saga.api.deps import Service
from pizza_saga.api.schemas import ORDER_NUMBER_PATTERN, PaymentRecord, problems
from pizza_saga.billing.store import PaymentEntry
from pizza_saga.common.db import as_utc

router = APIRouter(prefix="/api/payments", tags=["payments"])
orders_router = APIRouter(prefix="/api/orders", tags=["payments"])


@router.get("", response_model=list[PaymentRecord], responses=problems(401, 403, 422, 429))
async def payments(
    service: Service,
    _: OperatorActor,
    order_number: Annotated[
        str | None, Query(pattern=ORDER_NUMBER_PATTERN, description="Only this order's.")
    ] = None,
) -> list[PaymentRecord]:
    """Every charge and refund, oldest first (amounts in cents). Operators only."""
    return _records(service.payments(order_number=order_number))


def _records(entries: list[PaymentEntry]) -> list[PaymentRecord]:
    return [
        PaymentRecord(
            order_number=p.order_number,
            kind=p.kind,
            amount=p.amount,
            card_last4=p.card_last4,
            created_at=as_utc(p.created_at),
        )
        for p in entries
    ]


@orders_router.get(
    "/{order_number}/payments",
    response_model=list[PaymentRecord],
    responses=problems(401, 403, 422, 429),
)
async def order_payments(
    order_number: Annotated[str, PathParam(pattern=ORDER_NUMBER_PATTERN)],
    _: StreamOrderActor,
    service: Service,
) -> list[PaymentRecord]:
    """The order's charge and refund, oldest first (its customer, with its token as a bearer
    or `?token=`, or an operator)."""
    return _records(service.payments(order_number=order_number))
