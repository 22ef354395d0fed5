"""Charges and refunds, as the JSON API lists them (of a card, only its last four digits)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from pizza_saga.api.deps import Service
from pizza_saga.api.schemas import ORDER_NUMBER_PATTERN, PaymentRecord, problems
from pizza_saga.common.db import as_utc

router = APIRouter(prefix="/api/payments", tags=["payments"])


@router.get("", response_model=list[PaymentRecord], responses=problems(422))
async def payments(
    service: Service,
    order_number: Annotated[
        str | None, Query(pattern=ORDER_NUMBER_PATTERN, description="Only this order's.")
    ] = None,
) -> list[PaymentRecord]:
    """Every charge and refund, oldest first (amounts in cents)."""
    return [
        PaymentRecord(
            order_number=p.order_number,
            kind=p.kind,
            amount=p.amount,
            card_last4=p.card_last4,
            created_at=as_utc(p.created_at),
        )
        for p in service.payments(order_number=order_number)
    ]
