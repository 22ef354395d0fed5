"""The stores' at-most-once guarantees, on a real SQLite file and a real PostgreSQL database.

Every activity may run more than once (retries) and compensations may race the steps they
undo; the stores must still move stock and money exactly once per workflow.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from pizza_saga.billing.cards import last4
from pizza_saga.billing.store import CHARGE, REFUND, AlreadyRefunded, PaymentStore
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.store import AlreadyReleased, OutOfStock
from pizza_saga.order.example import GOOD_CARD
from pizza_saga.order.menu import MENU
from pizza_saga.worker import INITIAL_STOCK, Stores, open_stores
from tests.postgres import SQLITE_ONLY

LARGE, SMALL, MEDIUM = MENU
WORKFLOW = "pizza-order-XD001"
ORDER = "XD001"
SEED_ITEMS = {LARGE: 1, SMALL: 1, MEDIUM: 1}
FULL_STOCK = dict.fromkeys(MENU, INITIAL_STOCK)
THREADS = 8

T = TypeVar("T")


def all_at_once(call: Callable[[int], T]) -> list[T]:
    """Run ``call(i)`` for i in range(THREADS) on THREADS threads released together."""
    start = threading.Barrier(THREADS)

    def run(i: int) -> T:
        start.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


# --- Inventory --------------------------------------------------------------------------


def test_processes_opening_a_new_store_together_each_get_it_stocked_once(
    settings: Settings,
) -> None:
    # A worker and `pizza inventory` may be the first to open the store at the same moment.
    opened = all_at_once(lambda _: open_stores(settings))
    assert all(store.inventory.on_hand() == FULL_STOCK for store in opened)


def test_fresh_store_holds_the_initial_stock_of_every_menu_item(stores: Stores) -> None:
    assert stores.inventory.on_hand() == FULL_STOCK


def test_reserve_twice_takes_stock_once(stores: Stores) -> None:
    stores.inventory.reserve(WORKFLOW, ORDER, SEED_ITEMS)
    stores.inventory.reserve(WORKFLOW, ORDER, SEED_ITEMS)
    assert stores.inventory.on_hand() == {item: INITIAL_STOCK - 1 for item in MENU}


def test_reserves_of_different_workflows_each_take_stock(stores: Stores) -> None:
    stores.inventory.reserve("wf-a", "A", {LARGE: 2})
    stores.inventory.reserve("wf-b", "B", {LARGE: 3})
    assert stores.inventory.on_hand()[LARGE] == INITIAL_STOCK - 5


def test_out_of_stock_reserve_takes_nothing(stores: Stores) -> None:
    # The first item is available; only the second is short: nothing may be taken.
    with pytest.raises(OutOfStock) as caught:
        stores.inventory.reserve(WORKFLOW, ORDER, {LARGE: 1, SMALL: INITIAL_STOCK + 1})
    assert (caught.value.item, caught.value.wanted, caught.value.on_hand) == (
        SMALL,
        INITIAL_STOCK + 1,
        INITIAL_STOCK,
    )
    assert stores.inventory.on_hand() == FULL_STOCK
    # Nothing was recorded either: rolling back returns nothing.
    assert stores.inventory.release(WORKFLOW, ORDER) == {}
    assert stores.inventory.on_hand() == FULL_STOCK


def test_reserve_of_an_unknown_item_is_out_of_stock(stores: Stores) -> None:
    with pytest.raises(OutOfStock) as caught:
        stores.inventory.reserve(WORKFLOW, ORDER, {LARGE: 1, "Calzone": 1})
    assert caught.value.on_hand == 0
    assert stores.inventory.on_hand() == FULL_STOCK


def test_retry_after_out_of_stock_can_reserve_once_restocked(stores: Stores) -> None:
    with pytest.raises(OutOfStock):
        stores.inventory.reserve(WORKFLOW, ORDER, {SMALL: INITIAL_STOCK + 1})
    stores.inventory.stock_up({SMALL: INITIAL_STOCK + 1}, overwrite=True)
    stores.inventory.reserve(WORKFLOW, ORDER, {SMALL: INITIAL_STOCK + 1})
    assert stores.inventory.on_hand()[SMALL] == 0


def test_release_puts_back_exactly_what_was_reserved_once(stores: Stores) -> None:
    stores.inventory.reserve("other", "OTHER", {LARGE: 4})
    stores.inventory.reserve(WORKFLOW, ORDER, {LARGE: 2, MEDIUM: 1})
    first = stores.inventory.release(WORKFLOW, ORDER)
    second = stores.inventory.release(WORKFLOW, ORDER)
    assert first == second == {LARGE: 2, MEDIUM: 1}
    # Only the other workflow's reservation is still off the shelf.
    assert stores.inventory.on_hand() == {**FULL_STOCK, LARGE: INITIAL_STOCK - 4}


def test_release_before_reserve_refuses_the_late_reserve(stores: Stores) -> None:
    assert stores.inventory.release(WORKFLOW, ORDER) == {}
    with pytest.raises(AlreadyReleased):
        stores.inventory.reserve(WORKFLOW, ORDER, SEED_ITEMS)
    assert stores.inventory.on_hand() == FULL_STOCK
    # And a second rollback still has nothing to put back.
    assert stores.inventory.release(WORKFLOW, ORDER) == {}
    assert stores.inventory.on_hand() == FULL_STOCK


def test_concurrent_reserves_of_one_workflow_take_stock_once(stores: Stores) -> None:
    all_at_once(lambda _: stores.inventory.reserve(WORKFLOW, ORDER, SEED_ITEMS))
    assert stores.inventory.on_hand() == {item: INITIAL_STOCK - 1 for item in MENU}


def test_concurrent_releases_of_one_workflow_put_stock_back_once(stores: Stores) -> None:
    stores.inventory.reserve(WORKFLOW, ORDER, {LARGE: 3})
    returned = all_at_once(lambda _: stores.inventory.release(WORKFLOW, ORDER))
    assert returned == [{LARGE: 3}] * THREADS
    assert stores.inventory.on_hand() == FULL_STOCK


# --- Payments ---------------------------------------------------------------------------


def test_charge_twice_records_one_charge_at_the_first_amount(stores: Stores) -> None:
    assert stores.payments.charge(WORKFLOW, ORDER, 3500, "4242") == 3500
    assert stores.payments.charge(WORKFLOW, ORDER, 9999, "4242") == 3500
    entries = stores.payments.payments()
    assert [(e.order_number, e.kind, e.amount, e.card_last4) for e in entries] == [
        (ORDER, CHARGE, 3500, "4242")
    ]


def test_refund_twice_refunds_once(stores: Stores) -> None:
    stores.payments.charge(WORKFLOW, ORDER, 3500, "4242")
    assert stores.payments.refund(WORKFLOW, ORDER) == (3500, "4242")
    assert stores.payments.refund(WORKFLOW, ORDER) == (3500, "4242")
    entries = stores.payments.payments()
    assert [(e.kind, e.amount, e.card_last4) for e in entries] == [
        (CHARGE, 3500, "4242"),
        (REFUND, 3500, "4242"),
    ]


def test_refund_without_charge_refuses_the_late_charge(stores: Stores) -> None:
    assert stores.payments.refund(WORKFLOW, ORDER) == (0, None)
    assert stores.payments.payments() == [], "a refund of nothing is not a money movement"
    with pytest.raises(AlreadyRefunded):
        stores.payments.charge(WORKFLOW, ORDER, 3500, "4242")
    assert stores.payments.payments() == []
    assert stores.payments.refund(WORKFLOW, ORDER) == (0, None)


def test_bill_twice_returns_the_same_bill(stores: Stores) -> None:
    first = stores.payments.bill(WORKFLOW, ORDER, 12983, 3500, "3 pizzas")
    second = stores.payments.bill(WORKFLOW, ORDER, 12983, 9999, "retry")
    assert first.confirmation_number.startswith("BILL-")
    assert second.confirmation_number == first.confirmation_number
    assert (second.amount, second.description) == (3500, "3 pizzas")


def test_bills_of_different_workflows_get_different_confirmation_numbers(
    stores: Stores,
) -> None:
    a = stores.payments.bill("wf-a", "A", 1, 1500, "1 pizza")
    b = stores.payments.bill("wf-b", "B", 1, 1500, "1 pizza")
    assert a.confirmation_number != b.confirmation_number


def test_concurrent_charges_of_one_workflow_record_one_charge(stores: Stores) -> None:
    amounts = all_at_once(lambda i: stores.payments.charge(WORKFLOW, ORDER, 3500 + i, "4242"))
    entries = stores.payments.payments()
    assert len(entries) == 1
    assert entries[0].kind == CHARGE
    # Every caller is told the one amount actually charged.
    assert amounts == [entries[0].amount] * THREADS


def test_charge_api_takes_only_the_last_four_digits() -> None:
    parameters = inspect.signature(PaymentStore.charge).parameters
    assert "card_last4" in parameters
    card_parameters = [name for name in parameters if "card" in name or "number" in name]
    assert card_parameters == ["order_number", "card_last4"]
    for method in (PaymentStore.refund, PaymentStore.bill):
        assert not [name for name in inspect.signature(method).parameters if "card" in name]


@SQLITE_ONLY  # reads the SQLite file and its WAL byte by byte
def test_no_full_card_number_is_stored_anywhere(stores: Stores, settings: Settings) -> None:
    stores.inventory.reserve(WORKFLOW, ORDER, SEED_ITEMS)
    stores.payments.charge(WORKFLOW, ORDER, 3500, last4(GOOD_CARD))
    stores.payments.bill(WORKFLOW, ORDER, 12983, 3500, "3 pizzas")
    stores.payments.refund(WORKFLOW, ORDER)
    stores.inventory.release(WORKFLOW, ORDER)

    database = settings.home / "pizza.db"
    with sqlite3.connect(database) as connection:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        assert {"payments", "bills", "stock", "stock_movements"} <= set(tables)
        rows = [row for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')]
    connection.close()
    assert any("4242" in map(str, row) for row in rows), "the last four digits are kept"
    assert not [row for row in rows if any(GOOD_CARD in str(value) for value in row)]
    # Nor in the raw files (database, WAL), where a deleted row could linger.
    for path in settings.home.glob("pizza.db*"):
        assert GOOD_CARD.encode() not in path.read_bytes(), path
