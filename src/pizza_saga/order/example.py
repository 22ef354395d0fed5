"""The seed's order: María García's three pizzas, delivered, paid by Lisa Anderson's card."""

from __future__ import annotations

from pizza_saga.order.models import (
    Address,
    CreditCardInfo,
    Customer,
    Pizza,
    PizzaOrder,
)

GOOD_CARD = "4242424242424242"
BROKEN_CARD = "424242424242424"
"""The seed's good card with its last digit deleted: 15 digits, so the processor refuses it."""


def example_order(order_number: str = "XD001", card_number: str = GOOD_CARD) -> PizzaOrder:
    """The order the seed's starter placed."""
    return PizzaOrder(
        order_number=order_number,
        customer=Customer(
            customer_id=12983,
            name="María García",
            email="maria1985@example.com",
            phone="415-555-7418",
        ),
        items=[
            Pizza(description="Large, with mushrooms and onions", price=1500),
            Pizza(description="Small, with pepperoni", price=1200),
            Pizza(description="Medium, with extra cheese", price=1300),
        ],
        is_delivery=True,
        address=Address(
            line1="701 Mission Street",
            line2="Apartment 9C",
            city="San Francisco",
            state="CA",
            postal_code="94103",
        ),
        credit_card_info=CreditCardInfo(holder_name="Lisa Anderson", number=card_number),
    )
