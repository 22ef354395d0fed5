"""The amendment rules (order/amend.py): any sequence of amendments keeps stock and money
in step with the order's final pizzas and price."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pizza_saga.order.amend import Amendment, AmendmentError, reprice
from pizza_saga.order.menu import MENU, price_order
from pizza_saga.order.models import MAX_PIZZAS, Pizza

PIZZAS = [Pizza(description=name, price=price) for name, price in MENU.items()]
pizzas = st.lists(st.sampled_from(PIZZAS), max_size=4)
changes = st.tuples(pizzas, st.lists(st.sampled_from(sorted(MENU)), max_size=4))


def amendment(n: int, add: list[Pizza], remove: list[str]) -> Amendment:
    return Amendment(amendment_id=f"a{n}", add=add, remove=remove)


@given(
    start=st.lists(st.sampled_from(PIZZAS), min_size=1, max_size=6),
    charged_first=st.booleans(),
    steps=st.lists(changes, max_size=8),
)
def test_any_sequence_keeps_stock_and_money_equal_to_the_final_order(
    start: list[Pizza], charged_first: bool, steps: list[tuple[list[Pizza], list[str]]]
) -> None:
    items: tuple[Pizza, ...] = tuple(start)
    charged = price_order(p.price for p in start).total if charged_first else 0
    taken = Counter(p.description for p in start)
    for n, (add, remove) in enumerate(steps):
        try:
            after = reprice(items, charged, amendment(n, add, remove))
        except AmendmentError:
            continue  # refused: nothing changes
        taken.update(after.reserve)
        taken.subtract(after.release)
        if charged:
            charged += after.charge - after.refund
        else:
            assert after.charge == after.refund == 0  # nothing charged yet: nothing to settle
        items = after.items
        assert all(count >= 0 for count in taken.values())
        assert not (after.charge and after.refund)
    assert +taken == Counter(p.description for p in items)
    assert 1 <= len(items) <= MAX_PIZZAS
    if charged_first:
        assert charged == price_order(p.price for p in items).total


def test_removing_a_pizza_the_order_lacks_names_the_field() -> None:
    with pytest.raises(AmendmentError) as refused:
        reprice(PIZZAS[:1], 0, amendment(1, [], [PIZZAS[1].description]))
    assert refused.value.field == "remove"


def test_an_amendment_leaving_no_pizza_or_changing_nothing_is_refused() -> None:
    with pytest.raises(AmendmentError, match="without a pizza"):
        reprice(PIZZAS[:1], 1500, amendment(1, [], [PIZZAS[0].description]))
    with pytest.raises(AmendmentError, match="changes nothing"):
        reprice(PIZZAS[:1], 1500, amendment(1, [], []))


def test_losing_the_discount_is_charged_and_winning_it_is_refunded() -> None:
    large, small = PIZZAS[0], PIZZAS[1]  # 1500, 1200
    three = [large, large, small]  # 4200 - 500 = 3700
    after = reprice(three, 3700, amendment(1, [], [large.description]))  # 2700, no discount
    assert (after.refund, after.charge, after.release) == (1000, 0, {large.description: 1})
    after = reprice([large, small], 2700, amendment(2, [small], []))  # 3900 - 500 = 3400
    assert (after.charge, after.refund, after.reserve) == (700, 0, {small.description: 1})
