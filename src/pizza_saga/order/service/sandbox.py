"""The sandbox a face offers to try: its cards and what each does, the values that make an
order fail on purpose, and the seed's order to start from."""

from __future__ import annotations

from dataclasses import dataclass

from pizza_saga.billing import cards
from pizza_saga.billing.activities import BOUNCING_EMAIL_PREFIX
from pizza_saga.order.activities import NO_DRIVER_POSTAL_CODE
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.order.models import PizzaOrder


@dataclass(frozen=True)
class SandboxCard:
    """A card of the sandbox processor, what it does, and the key a form names it by."""

    key: str
    number: str
    label: str
    effect: str

    @property
    def last4(self) -> str:
        return self.number[-4:]


@dataclass(frozen=True)
class SandboxHints:
    """The sandbox values a face offers to try, and the seed's order to start from."""

    example: PizzaOrder
    cards: tuple[SandboxCard, ...]
    bounce_email: str
    """Any email starting with ``bounce@``: the bill bounces (the order rolls back)."""
    no_driver_postal_code: str
    """No driver takes a delivery there: DELIVERY FAILURE, paid, not rolled back."""

    def card(self, key: str) -> SandboxCard | None:
        return next((c for c in self.cards if c.key == key), None)


def sandbox_hints() -> SandboxHints:
    """The sandbox cards (what each does), special values, and the seed's order."""
    card = SandboxCard
    return SandboxHints(
        example=example_order(),
        cards=(
            card("approved", GOOD_CARD, "The seed's card", "approved: the order completes"),
            card(
                "fifteen",
                BROKEN_CARD,
                "The seed's card, its last digit deleted (15 digits)",
                "CreditCardProcessingError at the charge: the stock is reverted, nothing is "
                "charged, the order fails",
            ),
            card(
                "declined",
                cards.DECLINED_CARD,
                "A declined card",
                "CardDeclinedError, not retried: the stock is reverted, the order fails",
            ),
            card(
                "transient",
                cards.FLAKY_CARD,
                "A card whose processor is down for a moment",
                f"ProcessorUnavailableError {cards.FLAKY_FAILURES} times, then approved: the "
                "retries show on the charge step, the card is charged once",
            ),
            card(
                "operator",
                cards.REFUND_FAILING_CARD,
                "A card that refuses refunds for a while",
                f"charged normally, but its refunds fail {cards.REFUND_FAILURES} times: with "
                "a bounce@ email the rollback waits for an operator, who retries it from the "
                "order's page",
            ),
        ),
        bounce_email=f"{BOUNCING_EMAIL_PREFIX}example.com",
        no_driver_postal_code=NO_DRIVER_POSTAL_CODE,
    )
