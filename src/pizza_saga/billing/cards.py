"""The sandbox card processor's rules, like a payment provider's test mode.

- 4242424242424242 approves.
- A number that is not 16 digits long, or fails the Luhn check, is invalid (the seed's
  broken card, 424242424242424, has 15 digits; it happens to pass the Luhn check).
- 4000000000000002 is declined.
- 4000000000000119 fails transiently on its first two attempts, then approves.
- 4000000000000341 is charged, but refunds to it fail on their first 5 attempts (with the
  default 5 attempts, a rollback then needs an operator; the operator's retry succeeds).
"""

from __future__ import annotations

CARD_DIGITS = 16
DECLINED_CARD = "4000000000000002"
FLAKY_CARD = "4000000000000119"
FLAKY_FAILURES = 2
REFUND_FAILING_CARD = "4000000000000341"
REFUND_FAILURES = 5


class InvalidCard(Exception):
    """The number cannot be a card number; no retry will change that."""


class CardDeclined(Exception):
    """The issuer said no."""


class ProcessorUnavailable(Exception):
    """A passing failure of the processor; a retry may succeed."""


def luhn_valid(number: str) -> bool:
    """Whether the digits pass the Luhn checksum every card number carries."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def last4(number: str) -> str:
    """The last four digits: all of a card number that may be kept."""
    return number[-4:]


def authorize(number: str, attempt: int) -> None:
    """Approve the card or raise why not; ``attempt`` counts from 1."""
    if not (number.isascii() and number.isdigit()) or len(number) != CARD_DIGITS:
        raise InvalidCard(
            f"card ending {last4(number)} has {len(number)} digits, not {CARD_DIGITS}"
        )
    if not luhn_valid(number):
        raise InvalidCard(f"card ending {last4(number)} fails the Luhn check")
    if number == DECLINED_CARD:
        raise CardDeclined(f"card ending {last4(number)} was declined by the issuer")
    if number == FLAKY_CARD and attempt <= FLAKY_FAILURES:
        raise ProcessorUnavailable(f"card processor unavailable (attempt {attempt})")


def authorize_increment(card_last4: str, attempt: int) -> None:
    """Let a further charge on an order's authorized card through (the processor knows the
    card by the first charge; the number is gone); ``attempt`` counts from 1. The sandbox
    approves every one: a card that could not pay never got its first charge."""


def authorize_refund(card_last4: str, attempt: int) -> None:
    """Let a refund through or raise ProcessorUnavailable; ``attempt`` counts from 1."""
    if card_last4 == last4(REFUND_FAILING_CARD) and attempt <= REFUND_FAILURES:
        raise ProcessorUnavailable(
            f"refund to card ending {card_last4} refused by the processor (attempt {attempt})"
        )
