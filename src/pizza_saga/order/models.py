"""The order as customers and other clients send it, validated at every boundary.

The same models validate the CLI's input and the workflow's input (the pydantic data
converter decodes into them), so a bad order from any client is rejected the same way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pizza_saga.billing.models import CardToken
from pizza_saga.order.menu import MENU

MAX_PIZZAS = 20
"""More pizzas than this in one order is treated as a mistake, not an order."""

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
OptionalText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]


def _matching(pattern: str, explanation: str) -> AfterValidator:
    """A validator whose error says in words what the pattern wants."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(explanation)
        return value

    return AfterValidator(check)


def _strip_card_separators(value: object) -> object:
    # People type "4242 4242 4242 4242" or with dashes; the digits are what count.
    return re.sub(r"[ -]", "", value) if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Address(_Model):
    """Where a delivery goes."""

    line1: Text
    line2: OptionalText = ""
    city: Text
    state: Text
    postal_code: Annotated[
        str, _matching(r"[0-9A-Za-z -]{3,10}", "must be 3-10 letters, digits, spaces or '-'")
    ]


class Customer(_Model):
    """Who ordered."""

    customer_id: Annotated[int, Field(gt=0, lt=2**53)]
    name: Text
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=254),
        _matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "is not an email address"),
    ]
    phone: Annotated[
        str,
        StringConstraints(strip_whitespace=True),
        _matching(r"[0-9+() .-]{3,30}", "must be 3-30 digits, spaces or + ( ) . -"),
    ]


class Pizza(_Model):
    """One pizza from the menu, at its menu price (cents)."""

    description: Text
    price: Annotated[int, Field(ge=0, le=100_000)]

    @field_validator("description")
    @classmethod
    def _on_menu(cls, description: str) -> str:
        if description not in MENU:
            choices = "; ".join(f"'{name}'" for name in MENU)
            raise ValueError(f"'{description}' is not on the menu (the menu has {choices})")
        return description

    @field_validator("price")
    @classmethod
    def _menu_price(cls, price: int, info: ValidationInfo) -> int:
        description = info.data.get("description")
        if description is None:  # already reported as not on the menu
            return price
        if price != MENU[description]:
            raise ValueError(
                f"{price} does not match the menu price {MENU[description]} of '{description}'"
            )
        return price


SECURITY_CODE_FIELDS = frozenset({"cvv", "cvc", "cvv2", "cvc2", "cid", "csc", "security_code"})


def _refuse_security_code(value: object) -> object:
    """No card's security code is ever accepted, stored or sent on (PCI DSS forbids keeping it)."""
    if isinstance(value, dict):
        sent = sorted(k for k in value if str(k).lower().replace("-", "_") in SECURITY_CODE_FIELDS)
        if sent:
            raise ValueError(
                f"do not send the card's security code ({', '.join(sent)}): "
                "pizza-saga never asks for it and never accepts it"
            )
    return value


class CreditCardInfo(_Model):
    """The card to charge, as a customer types it: only at the edge, never sent to Temporal.

    The number is digits only; the processor judges the rest. The edge exchanges it for a
    CardToken (billing/vault.py) before the order's workflow starts.
    """

    holder_name: Text
    number: Annotated[str, BeforeValidator(_strip_card_separators)]

    @model_validator(mode="before")
    @classmethod
    def _no_security_code(cls, data: object) -> object:
        return _refuse_security_code(data)

    @field_validator("number")
    @classmethod
    def _digits(cls, number: str) -> str:
        if not number.isascii() or not number.isdigit():
            raise ValueError("a card number has only digits (spaces and dashes are ignored)")
        if len(number) > 19:
            raise ValueError(f"{len(number)} digits is too long for a card number (at most 19)")
        return number


class _OrderFields(_Model):
    """What an order is, whoever holds it: the number, customer, pizzas and address."""

    order_number: str

    @field_validator("order_number")
    @classmethod
    def _order_number(cls, order_number: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", order_number):
            raise ValueError("must be 1-40 letters, digits, '-' or '_'")
        return order_number

    customer: Customer
    items: Annotated[list[Pizza], Field(min_length=1, max_length=MAX_PIZZAS)]
    is_delivery: bool
    address: Address


class PizzaOrder(_OrderFields):
    """A customer's order with the seed's fields, card number included: the edge's input."""

    credit_card_info: CreditCardInfo

    def placed(self, card: CardToken) -> PlacedOrder:
        """This order as the workflow gets it: the card number exchanged for ``card``."""
        fields = self.model_dump(exclude={"credit_card_info"})
        return PlacedOrder.model_validate(
            {**fields, "card": {"holder_name": self.credit_card_info.holder_name, "token": card}}
        )


class PaymentCard(_Model):
    """The card an order pays with, as it crosses Temporal: a vault token, never the number."""

    holder_name: Text
    token: CardToken


class PlacedOrder(_OrderFields):
    """An order as its workflow gets it: the card is a token (see PizzaOrder.placed)."""

    card: PaymentCard

    @model_validator(mode="before")
    @classmethod
    def _no_card_number(cls, data: object) -> object:
        if isinstance(data, dict) and "credit_card_info" in data:
            raise ValueError(
                "credit_card_info: a card number must never be sent to the order workflow; "
                "exchange it for a token first (pizza order, POST /api/orders and the order "
                "form do; other clients use pizza_saga.billing.vault.CardVault.tokenize)"
            )
        return data


class SimulatedWaits(_Model):
    """Stand-ins for the real world's waits: zero in tests, seed-like in the demo."""

    prep_seconds: Annotated[float, Field(ge=0, le=3600)] = 0.0
    """The kitchen's preparation time (the seed's 3 s timer)."""
    driver_seconds: Annotated[float, Field(ge=0, le=3600)] = 0.0
    """How long the delivery driver takes to answer."""


class SagaPolicy(_Model):
    """How patient the order saga is: its deadline, and its compensations' retries."""

    deadline_seconds: Annotated[float, Field(ge=1, le=7 * 24 * 3600)] = 1800.0
    """An order not finished by then is rolled back (SagaDeadlineExceeded)."""
    compensation_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    """Attempts of a failing compensation before it waits for an operator."""
    compensation_backoff_seconds: Annotated[float, Field(ge=0.01, le=3600)] = 1.0
    """Wait after a compensation's first failed attempt; doubles after each."""
    local_activities: bool = False
    """Run the short steps and the compensations as local activities (the driver, which
    heartbeats, stays a regular activity)."""


class OrderRequest(_Model):
    """The order workflow's input: the order, the simulated waits, the saga's policy."""

    order: PlacedOrder
    waits: SimulatedWaits = SimulatedWaits()
    policy: SagaPolicy = SagaPolicy()


class Distance(_Model):
    """How far the customer is from the shop."""

    kilometers: int


class DeliveryRequest(_Model):
    """What the delivery driver is told."""

    order_number: str
    address: Address
    wait_seconds: float = 0.0


class DriverAnswer(_Model):
    """Whether a driver took the delivery."""

    accepted: bool
    driver: str | None = None


class OrderConfirmation(_Model):
    """A completed order's receipt: the seed's fields plus what was charged."""

    order_number: str
    status: str
    """'SUCCESS', or 'DELIVERY FAILURE' when no driver took it (paid, not rolled back)."""
    confirmation_number: str
    billing_timestamp: int
    amount: int
    card_last4: str
