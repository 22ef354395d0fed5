"""Charges and refunds, as the JSON API lists them (of a card, only its last four digits);
an operator's record of a manual refund."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import Path as PathParam

from pizza_saga.api.access import OperatorActor, StreamOrderActor
from pizza_saga.api.deps import Service
from pizza_saga.api.schemas import (
    ORDER_NUMBER_PATTERN,
    ManualRefundRequest,
    OrderNumber,
    PaymentRecord,
    problems,
)
from pizza_saga.billing.store import PaymentEntry
from pizza_saga.common.db import as_utc
from pizza_saga.order.service import InvalidInput

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
            reference=p.reference,
            operator=p.operator,
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


@orders_router.post(
    "/{order_number}/manual-refunds",
    response_model=PaymentRecord,
    status_code=201,
    responses={
        200: {"description": "Recorded before (the same reference and amount): that record"},
        **problems(
            400,
            401,
            403,
            404,
            409,
            422,
            429,
            503,
            on_409="The order's refund was not skipped by an operator",
            on_422="Invalid amount or reference (above 0, at most the order's net charge; "
            "a reference recorded before with another amount)",
        ),
    },
)
async def record_manual_refund(
    order_number: OrderNumber,
    refund: ManualRefundRequest,
    actor: OperatorActor,
    service: Service,
    response: Response,
) -> PaymentRecord:
    """Record money given back outside the product (a bank transfer) after an operator
    skipped the order's refund: 201, or 200 with the first record when this reference was
    recorded before. Operators only; in the audit trail with their name."""
    try:
        recorded = await service.record_manual_refund(
            order_number, amount=refund.amount, reference=refund.reference, by=actor
        )
    except InvalidInput as err:
        # The service names body fields by name; the API by JSON pointer.
        raise InvalidInput(err.reason, field=f"/{err.field}" if err.field else None) from None
    if not recorded.now:
        response.status_code = 200
    [record] = _records([recorded.entry])
    return record
