"""The menu and how an order is priced. Prices are integer cents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MENU: dict[str, int] = {
    "Large, with mushrooms and onions": 1500,
    "Small, with pepperoni": 1200,
    "Medium, with extra cheese": 1300,
}
"""Pizza description -> price in cents. The seed's three pizzas."""

DISCOUNT_THRESHOLD = 3000
DISCOUNT = 500
"""Orders over $30.00 get $5.00 off, as the seed's bill did."""


@dataclass(frozen=True)
class OrderPrice:
    """What an order costs; ``total`` is both what is charged and what is billed."""

    subtotal: int
    discount: int
    total: int


def price_order(prices: Iterable[int]) -> OrderPrice:
    """Price an order from its pizzas' (menu-checked) prices."""
    subtotal = sum(prices)
    discount = DISCOUNT if subtotal > DISCOUNT_THRESHOLD else 0
    return OrderPrice(subtotal=subtotal, discount=discount, total=subtotal - discount)
