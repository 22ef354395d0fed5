"""Amending a running order: what a customer's change does to its pizzas, price and money.

Pure rules, no I/O: the order workflow's `amend` update validates an amendment with
`reprice` and turns its answer into saga steps: reserve the added pizzas and charge the
difference, each with its compensation; release the removed ones and refund the difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import Field

from pizza_saga.order.menu import MENU, OrderPrice, price_order
from pizza_saga.order.models import MAX_PIZZAS, Address, Pizza, _matching, _Model


class Amendment(_Model):
    """A customer's change to a running order: pizzas added, pizzas removed (by
    description, one per entry), the delivery address."""

    amendment_id: Annotated[
        str, _matching(r"[A-Za-z0-9_-]{1,64}", "must be 1-64 letters, digits, '-' or '_'")
    ]
    """Keys the amendment's effects: a retried amendment does each of them once."""
    add: list[Pizza] = Field(default_factory=list, max_length=MAX_PIZZAS)
    remove: list[str] = Field(default_factory=list, max_length=MAX_PIZZAS)
    address: Address | None = None


class AmendmentRecord(_Model):
    """An amendment the order took, and what it did (the order's ledger has its steps)."""

    amendment_id: str
    added: list[str]
    """Descriptions of the pizzas added."""
    removed: list[str]
    address: Address | None
    total: int
    """The order's price after it, in cents."""
    charged: int
    """Cents charged for it (0 if none)."""
    refunded: int
    """Cents refunded for it (0 if none)."""
    steps: list[str]
    """Its saga steps, as the ledger names them."""
    at: datetime


class OrderNow(_Model):
    """A running order as its amendments left it, and whether it takes more."""

    items: list[Pizza]
    address: Address | None
    total: int
    """Its price now, in cents."""
    amendable: bool
    why_not: str = ""
    """Why it takes no amendment (when ``amendable`` is False)."""


RESERVE_ADDED = "reserve_added_pizzas"
RELEASE_REMOVED = "release_removed_pizzas"
CHARGE_DIFFERENCE = "charge_difference"
REFUND_DIFFERENCE = "refund_difference"
"""An amendment's saga steps, each named ``<kind>:<amendment_id>`` (also its effects' step)."""


def amendment_step(kind: str, amendment_id: str) -> str:
    """The saga step (and effect step) of one of an amendment's effects."""
    return f"{kind}:{amendment_id}"


def step_kind(step: str) -> str:
    """An effect step's kind: ``reserve_added_pizzas:a1`` -> ``reserve_added_pizzas``."""
    return step.split(":", 1)[0]


AMENDMENT_ERROR = "AmendmentError"
"""The error type of an amendment the order refuses (its message starts with the field)."""


class AmendmentError(ValueError):
    """An amendment the order cannot take; ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Repriced:
    """The order after an amendment, and what must happen for it."""

    items: tuple[Pizza, ...]
    price: OrderPrice
    reserve: dict[str, int]
    """Pizzas to take from stock, by description."""
    release: dict[str, int]
    """Pizzas to put back, by description."""
    charge: int
    """Cents to charge beyond what is charged now."""
    refund: int
    """Cents to refund of what is charged now."""


def reprice(items: Sequence[Pizza], charged: int, amendment: Amendment) -> Repriced:
    """Apply ``amendment`` to an order of ``items`` of which ``charged`` cents are charged
    (0 before its charge). AmendmentError naming the field if it cannot be taken: nothing to
    change, a pizza to remove that the order does not have, an order left empty or over
    MAX_PIZZAS."""
    if not amendment.add and not amendment.remove and amendment.address is None:
        raise AmendmentError("amendment", "changes nothing: add, remove or a new address")
    kept = list(items)
    for description in amendment.remove:
        found = next((i for i, pizza in enumerate(kept) if pizza.description == description), None)
        if found is None:
            raise AmendmentError("remove", f"the order has no (more) '{description}' to remove")
        del kept[found]
    after = [*kept, *amendment.add]
    if not after:
        raise AmendmentError("remove", "would leave the order without a pizza")
    if len(after) > MAX_PIZZAS:
        raise AmendmentError(
            "add", f"would make {len(after)} pizzas; an order has at most {MAX_PIZZAS}"
        )
    before_count = Counter(pizza.description for pizza in items)
    after_count = Counter(pizza.description for pizza in after)
    price = price_order(pizza.price for pizza in after)
    difference = price.total - charged if charged else 0
    return Repriced(
        items=tuple(after),
        price=price,
        reserve=dict(after_count - before_count),
        release=dict(before_count - after_count),
        charge=max(difference, 0),
        refund=max(-difference, 0),
    )


def as_amended(
    items: Sequence[Pizza], address: Address, amendments: Sequence[AmendmentRecord]
) -> tuple[list[Pizza], Address]:
    """An order's pizzas and address after ``amendments`` (oldest first), from what each
    record says it added and removed."""
    now, where = list(items), address
    for record in amendments:
        for description in record.removed:
            found = next((i for i, p in enumerate(now) if p.description == description), None)
            if found is not None:
                del now[found]
        now += [Pizza(description=d, price=MENU[d]) for d in record.added]
        where = record.address or where
    return now, where
