"""What the JSON API takes and answers, as its OpenAPI document describes it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field
from temporal_saga import OperatorAction

from pizza_saga.order.client import OrderOutcome
from pizza_saga.order.service import MAX_REASON, MAX_REFERENCE, MAX_STOCK

ORDER_NUMBER_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"

OrderNumber = Annotated[
    str,
    Path(
        pattern=ORDER_NUMBER_PATTERN,
        description="The order's number: 1-40 letters, digits, '-' or '_'.",
        examples=["XD001"],
    ),
]
"""An order number in a path, checked as orders check theirs."""


class OrderResource(OrderOutcome):
    """An order: its outcome so far, its saga ledger, and its run in the Temporal Web UI."""

    web_ui_url: str
    """The order's workflow run in the Temporal Web UI."""
    access_token: str | None = None
    """When placed: the customer's token to this order (send it as ``Authorization: Bearer``;
    its page is ``page_url``). It opens this order and no other."""
    page_url: str | None = None
    """When placed: the order's page, its token in the link."""


class Action(StrEnum):
    """``retry`` runs the compensation again; ``skip`` records that a person handled it."""

    RETRY = "retry"
    SKIP = "skip"

    @property
    def operator_action(self) -> OperatorAction:
        """The saga's name for it."""
        return OperatorAction(self.value.upper())


class Resolution(BaseModel):
    """An operator's decision about a compensation that waits for one."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    step: Annotated[str | None, Field(max_length=100)] = None
    """The step whose compensation is meant; may be left out when only one waits."""
    reason: Annotated[str | None, Field(max_length=MAX_REASON)] = None
    """Why; required to skip (it is kept in the ledger)."""


class AddressChange(BaseModel):
    """A new delivery address, in part: the fields given replace the order's."""

    model_config = ConfigDict(extra="forbid")

    line1: Annotated[str | None, Field(max_length=200)] = None
    line2: Annotated[str | None, Field(max_length=200)] = None
    city: Annotated[str | None, Field(max_length=200)] = None
    state: Annotated[str | None, Field(max_length=200)] = None
    postal_code: Annotated[str | None, Field(max_length=10)] = None


class OrderChange(BaseModel):
    """A customer's change to a running order, until the kitchen is done."""

    model_config = ConfigDict(extra="forbid")

    add: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=20)] = []
    """Pizzas to add, by their menu name, one entry per pizza."""
    remove: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=20)] = []
    """Pizzas to remove, by their menu name, one entry per pizza."""
    address: AddressChange | None = None


class StockChange(BaseModel):
    """A new quantity on hand for one menu item."""

    model_config = ConfigDict(extra="forbid", strict=True)

    quantity: Annotated[int, Field(description=f"Whole pizzas, 0 to {MAX_STOCK}.")]


class StockLevel(BaseModel):
    """How many of one menu item are on hand."""

    item: str
    quantity: int


class PaymentRecord(BaseModel):
    """A charge or a refund; of the card, only its last four digits."""

    order_number: str
    kind: str
    """``charge``, ``refund`` (by the product) or ``manual_refund`` (by a person, outside the
    product, recorded by an operator)."""
    amount: int
    """Cents."""
    card_last4: str
    """Empty for a manual refund (it went by transfer)."""
    created_at: datetime
    reference: str | None = None
    """A manual refund's transfer reference."""
    operator: str | None = None
    """Who recorded a manual refund."""


class ManualRefundRequest(BaseModel):
    """Money a person gave back outside the product, after an operator skipped the refund."""

    model_config = ConfigDict(extra="forbid", strict=True)

    amount: Annotated[int, Field(description="Cents given back, above 0.")]
    reference: Annotated[
        str,
        Field(
            max_length=MAX_REFERENCE,
            description="The transfer's reference (the bank's id); the same reference again "
            "is the same refund.",
        ),
    ]


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error as RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "errors": {
            "type": "array",
            "description": "Invalid input: which field (a JSON pointer into the body, or a "
            "parameter's name) and why.",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}
WHAT = {
    400: "The body cannot be read (bytes that are not UTF-8 text)",
    401: "No credentials, or an operator key that is unknown or revoked",
    403: "These credentials do not open it (operators only, or another order's token)",
    404: "No such order",
    409: "The order's state does not allow it",
    422: "Invalid input: `errors` names each field and why",
    429: "Too many failed credential attempts from this address (see Retry-After)",
    503: "Temporal, a worker or the store database is missing",
}


def problems(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of these error statuses, as problem documents."""
    return {
        code: {
            "description": descriptions.get(f"on_{code}", WHAT[code]),
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        for code in codes
    }
