"""What an order costs, and the sandbox card processor's rules."""

from __future__ import annotations

import pytest

from pizza_saga.billing.cards import (
    DECLINED_CARD,
    FLAKY_CARD,
    FLAKY_FAILURES,
    CardDeclined,
    InvalidCard,
    ProcessorUnavailable,
    authorize,
    last4,
    luhn_valid,
)
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.order.menu import DISCOUNT, DISCOUNT_THRESHOLD, MENU, OrderPrice, price_order

# --- Pricing ----------------------------------------------------------------------------


def test_seed_order_costs_4000_less_500_discount() -> None:
    price = price_order(pizza.price for pizza in example_order().items)
    assert price == OrderPrice(subtotal=4000, discount=500, total=3500)


@pytest.mark.parametrize(
    "prices",
    [
        [MENU["Large, with mushrooms and onions"]] * 2,  # exactly 3000
        [MENU["Large, with mushrooms and onions"], MENU["Small, with pepperoni"]],  # 2700
        [MENU["Small, with pepperoni"]],
    ],
)
def test_order_at_or_under_threshold_has_no_discount(prices: list[int]) -> None:
    price = price_order(prices)
    assert price.subtotal == sum(prices) <= DISCOUNT_THRESHOLD
    assert price.discount == 0
    assert price.total == price.subtotal


def test_one_cent_over_threshold_gets_the_discount() -> None:
    price = price_order([DISCOUNT_THRESHOLD + 1])
    assert price.discount == DISCOUNT
    assert price.total == DISCOUNT_THRESHOLD + 1 - DISCOUNT


# --- Luhn and last4 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [GOOD_CARD, DECLINED_CARD, FLAKY_CARD, "4111111111111111", "5555555555554444", "79927398713"],
)
def test_luhn_accepts_real_test_card_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "number", ["4242424242424241", "4111111111111112", "79927398710", "1234567812345678"]
)
def test_luhn_rejects_numbers_with_a_wrong_check_digit(number: str) -> None:
    assert not luhn_valid(number)


def test_last4_keeps_only_the_last_four_digits() -> None:
    assert last4(GOOD_CARD) == "4242"
    assert last4(DECLINED_CARD) == "0002"
    assert last4(FLAKY_CARD) == "0119"


# --- authorize --------------------------------------------------------------------------


def test_good_card_is_approved_on_first_attempt() -> None:
    authorize(GOOD_CARD, attempt=1)  # raises if not approved


def test_seeds_broken_card_is_invalid_for_its_length() -> None:
    assert len(BROKEN_CARD) == 15
    with pytest.raises(InvalidCard, match="15 digits, not 16") as caught:
        authorize(BROKEN_CARD, attempt=1)
    assert BROKEN_CARD not in str(caught.value), "the error must not reveal the card number"


def test_sixteen_digits_failing_luhn_is_invalid() -> None:
    with pytest.raises(InvalidCard, match="Luhn") as caught:
        authorize("4242424242424241", attempt=1)
    assert "4242424242424241" not in str(caught.value)


@pytest.mark.parametrize("number", ["", "4242 4242 4242 4242", "424242424242424x"])
def test_non_digit_numbers_are_invalid(number: str) -> None:
    with pytest.raises(InvalidCard):
        authorize(number, attempt=1)


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_declined_card_is_declined_on_every_attempt(attempt: int) -> None:
    with pytest.raises(CardDeclined, match="declined"):
        authorize(DECLINED_CARD, attempt=attempt)


def test_flaky_card_is_unavailable_twice_then_approved() -> None:
    assert FLAKY_FAILURES == 2
    for attempt in (1, 2):
        with pytest.raises(ProcessorUnavailable):
            authorize(FLAKY_CARD, attempt=attempt)
    authorize(FLAKY_CARD, attempt=3)
