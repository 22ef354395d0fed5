"""The stores' exactly-once guarantees, on a real SQLite file and a real PostgreSQL database.

Every activity may run more than once (retries), compensations may overlap the steps they
undo (a step that timed out is still running somewhere), and another execution of the same
order may arrive from any client: stock and money must still move exactly once per order.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest
from temporal_saga.effects import AlreadyUndone, EffectKey, OwnedByAnotherExecution

from pizza_saga.app import INITIAL_STOCK, Stores, open_stores
from pizza_saga.billing.cards import last4
from pizza_saga.billing.store import (
    CHARGE,
    MANUAL_REFUND,
    REFUND,
    Charged,
    OverRefunded,
    PaymentStore,
    ReferenceReused,
    net_charged,
)
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.store import OutOfStock
from pizza_saga.order.example import GOOD_CARD
from pizza_saga.order.menu import MENU
from tests.holding import StatementHold, wait_until_blocked
from tests.postgres import SQLITE_ONLY

LARGE, SMALL, MEDIUM = MENU
ORDER = "XD001"
RUN = "pizza-workflow-order-XD001/run-1"
OTHER_RUN = "other-client-XD001/run-2"
SEED_ITEMS = {LARGE: 1, SMALL: 1, MEDIUM: 1}
FULL_STOCK = dict.fromkeys(MENU, INITIAL_STOCK)
THREADS = 8

STOCK = EffectKey(key=ORDER, step="update_inventory", owner=RUN)
CHARGED = EffectKey(key=ORDER, step="process_credit_card", owner=RUN)
BILL = EffectKey(key=ORDER, step="send_bill", owner=RUN)

T = TypeVar("T")


def of(effect: EffectKey, *, key: str | None = None, owner: str | None = None) -> EffectKey:
    """The same effect for another order or another execution."""
    return EffectKey(key=key or effect.key, step=effect.step, owner=owner or effect.owner)


def all_at_once(call: Callable[[int], T]) -> list[T]:
    """Run ``call(i)`` for i in range(THREADS) on THREADS threads released together."""
    start = threading.Barrier(THREADS)

    def run(i: int) -> T:
        start.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def net_money(stores: Stores) -> int:
    return sum(p.amount if p.kind == CHARGE else -p.amount for p in stores.payments.payments())


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
    stores.inventory.reserve(STOCK, SEED_ITEMS)
    stores.inventory.reserve(STOCK, SEED_ITEMS)
    assert stores.inventory.on_hand() == {item: INITIAL_STOCK - 1 for item in MENU}


def test_reserves_of_different_orders_each_take_stock(stores: Stores) -> None:
    stores.inventory.reserve(of(STOCK, key="A"), {LARGE: 2})
    stores.inventory.reserve(of(STOCK, key="B"), {LARGE: 3})
    assert stores.inventory.on_hand()[LARGE] == INITIAL_STOCK - 5


def test_out_of_stock_reserve_takes_nothing(stores: Stores) -> None:
    # The first item is available; only the second is short: nothing may be taken.
    with pytest.raises(OutOfStock) as caught:
        stores.inventory.reserve(STOCK, {LARGE: 1, SMALL: INITIAL_STOCK + 1})
    assert (caught.value.item, caught.value.wanted, caught.value.on_hand) == (
        SMALL,
        INITIAL_STOCK + 1,
        INITIAL_STOCK,
    )
    assert stores.inventory.on_hand() == FULL_STOCK
    # Nothing was recorded either: rolling back returns nothing.
    assert stores.inventory.release(STOCK) is None
    assert stores.inventory.on_hand() == FULL_STOCK


def test_reserve_of_an_unknown_item_is_out_of_stock(stores: Stores) -> None:
    with pytest.raises(OutOfStock) as caught:
        stores.inventory.reserve(STOCK, {LARGE: 1, "Calzone": 1})
    assert caught.value.on_hand == 0
    assert stores.inventory.on_hand() == FULL_STOCK


def test_retry_after_out_of_stock_can_reserve_once_restocked(stores: Stores) -> None:
    with pytest.raises(OutOfStock):
        stores.inventory.reserve(STOCK, {SMALL: INITIAL_STOCK + 1})
    stores.inventory.stock_up({SMALL: INITIAL_STOCK + 1}, overwrite=True)
    stores.inventory.reserve(STOCK, {SMALL: INITIAL_STOCK + 1})
    assert stores.inventory.on_hand()[SMALL] == 0


def test_release_puts_back_exactly_what_was_reserved_once(stores: Stores) -> None:
    stores.inventory.reserve(of(STOCK, key="OTHER"), {LARGE: 4})
    stores.inventory.reserve(STOCK, {LARGE: 2, MEDIUM: 1})
    first = stores.inventory.release(STOCK)
    second = stores.inventory.release(STOCK)
    assert first == second == {LARGE: 2, MEDIUM: 1}
    # Only the other order's reservation is still off the shelf.
    assert stores.inventory.on_hand() == {**FULL_STOCK, LARGE: INITIAL_STOCK - 4}


def test_release_before_reserve_refuses_the_late_reserve(stores: Stores) -> None:
    assert stores.inventory.release(STOCK) is None
    with pytest.raises(AlreadyUndone):
        stores.inventory.reserve(STOCK, SEED_ITEMS)
    assert stores.inventory.on_hand() == FULL_STOCK
    # And a second rollback still has nothing to put back.
    assert stores.inventory.release(STOCK) is None
    assert stores.inventory.on_hand() == FULL_STOCK


def test_concurrent_reserves_of_one_order_take_stock_once(stores: Stores) -> None:
    all_at_once(lambda _: stores.inventory.reserve(STOCK, SEED_ITEMS))
    assert stores.inventory.on_hand() == {item: INITIAL_STOCK - 1 for item in MENU}


def test_concurrent_releases_of_one_order_put_stock_back_once(stores: Stores) -> None:
    stores.inventory.reserve(STOCK, {LARGE: 3})
    returned = all_at_once(lambda _: stores.inventory.release(STOCK))
    assert returned == [{LARGE: 3}] * THREADS
    assert stores.inventory.on_hand() == FULL_STOCK


# --- Payments ---------------------------------------------------------------------------


def test_charge_twice_records_one_charge_at_the_first_amount(stores: Stores) -> None:
    first = stores.payments.charge(CHARGED, 3500, "4242")
    again = stores.payments.charge(CHARGED, 9999, "4242")
    assert (first.amount, first.now) == (3500, True)
    assert (again.amount, again.now) == (3500, False)
    entries = stores.payments.payments()
    assert [(e.order_number, e.kind, e.amount, e.card_last4) for e in entries] == [
        (ORDER, CHARGE, 3500, "4242")
    ]


def test_refund_twice_refunds_once(stores: Stores) -> None:
    stores.payments.charge(CHARGED, 3500, "4242")
    first, again = stores.payments.refund(CHARGED), stores.payments.refund(CHARGED)
    assert first == again == Charged(3500, "4242")
    assert first is not None and again is not None
    assert (first.now, again.now) == (True, False)
    entries = stores.payments.payments()
    assert [(e.kind, e.amount, e.card_last4) for e in entries] == [
        (CHARGE, 3500, "4242"),
        (REFUND, 3500, "4242"),
    ]


def test_refund_without_charge_refuses_the_late_charge(stores: Stores) -> None:
    assert stores.payments.refund(CHARGED) is None
    assert stores.payments.payments() == [], "a refund of nothing is not a money movement"
    with pytest.raises(AlreadyUndone):
        stores.payments.charge(CHARGED, 3500, "4242")
    assert stores.payments.payments() == []
    assert stores.payments.refund(CHARGED) is None


def test_bill_twice_returns_the_same_bill(stores: Stores) -> None:
    first = stores.payments.bill(BILL, customer_id=12983, amount=3500, description="3 pizzas")
    second = stores.payments.bill(BILL, customer_id=12983, amount=9999, description="retry")
    assert first.confirmation_number.startswith("BILL-")
    assert second.confirmation_number == first.confirmation_number
    assert (second.amount, second.description) == (3500, "3 pizzas")


def test_bills_of_different_orders_get_different_confirmation_numbers(
    stores: Stores,
) -> None:
    a = stores.payments.bill(of(BILL, key="A"), customer_id=1, amount=1500, description="1 pizza")
    b = stores.payments.bill(of(BILL, key="B"), customer_id=1, amount=1500, description="1 pizza")
    assert a.confirmation_number != b.confirmation_number


def test_concurrent_charges_of_one_order_record_one_charge(stores: Stores) -> None:
    charges = all_at_once(lambda i: stores.payments.charge(CHARGED, 3500 + i, "4242"))
    entries = stores.payments.payments()
    assert len(entries) == 1
    assert entries[0].kind == CHARGE
    # Every caller is told the one amount actually charged; one of them charged it.
    assert [c.amount for c in charges] == [entries[0].amount] * THREADS
    assert [c.now for c in charges].count(True) == 1


def test_charge_api_takes_only_the_last_four_digits() -> None:
    parameters = inspect.signature(PaymentStore.charge).parameters
    assert "card_last4" in parameters
    card_parameters = [name for name in parameters if "card" in name or "number" in name]
    assert card_parameters == ["card_last4"]
    for method in (PaymentStore.refund, PaymentStore.bill):
        assert not [name for name in inspect.signature(method).parameters if "card" in name]


@SQLITE_ONLY  # reads the SQLite file and its WAL byte by byte
def test_no_full_card_number_is_stored_anywhere(stores: Stores, settings: Settings) -> None:
    stores.inventory.reserve(STOCK, SEED_ITEMS)
    stores.payments.charge(CHARGED, 3500, last4(GOOD_CARD))
    stores.payments.bill(BILL, customer_id=12983, amount=3500, description="3 pizzas")
    stores.payments.refund(CHARGED)
    stores.inventory.release(STOCK)

    database = settings.home / "pizza.db"
    with sqlite3.connect(database) as connection:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        assert {"payments", "effects", "stock"} <= set(tables)
        rows = [row for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')]
    connection.close()
    assert any("4242" in map(str, row) for row in rows), "the last four digits are kept"
    assert not [row for row in rows if any(GOOD_CARD in str(value) for value in row)]
    # Nor in the raw files (database, WAL), where a deleted row could linger.
    for path in settings.home.glob("pizza.db*"):
        assert GOOD_CARD.encode() not in path.read_bytes(), path


# --- Manual refunds: money a person gave back, as an operator records it ------------------


def test_manual_refunds_count_in_the_net_up_to_the_charge_each_reference_once(
    stores: Stores,
) -> None:
    stores.payments.charge(CHARGED, 3500, "4242")
    first, now = stores.payments.record_manual_refund(
        ORDER, amount=2000, reference="BANK-1", operator="ana"
    )
    again, again_now = stores.payments.record_manual_refund(
        ORDER, amount=2000, reference="BANK-1", operator="bo"
    )
    stores.payments.record_manual_refund(ORDER, amount=1500, reference="BANK-2", operator="ana")

    assert (now, again_now) == (True, False)
    assert again == first  # the same transfer, recorded once (by its first operator)
    entries = stores.payments.payments(order_number=ORDER)
    assert [(p.kind, p.amount, p.reference, p.operator) for p in entries] == [
        (CHARGE, 3500, None, None),
        (MANUAL_REFUND, 2000, "BANK-1", "ana"),
        (MANUAL_REFUND, 1500, "BANK-2", "ana"),
    ]
    assert [p.card_last4 for p in entries] == ["4242", "", ""]
    assert net_charged(entries) == 0 == net_money(stores)


def test_a_manual_refund_over_the_net_charge_or_reusing_a_reference_changes_nothing(
    stores: Stores,
) -> None:
    stores.payments.charge(CHARGED, 3500, "4242")
    stores.payments.record_manual_refund(ORDER, amount=3000, reference="BANK-1", operator="ana")

    with pytest.raises(OverRefunded) as over:
        stores.payments.record_manual_refund(ORDER, amount=501, reference="BANK-2", operator="a")
    with pytest.raises(ReferenceReused) as reused:
        stores.payments.record_manual_refund(ORDER, amount=500, reference="BANK-1", operator="a")
    with pytest.raises(OverRefunded) as nothing_charged:
        stores.payments.record_manual_refund("XD999", amount=1, reference="BANK-3", operator="a")

    assert over.value.net == 500
    assert reused.value.earlier.amount == 3000
    assert nothing_charged.value.net == 0
    assert [p.reference for p in stores.payments.payments()] == [None, "BANK-1"]
    assert net_money(stores) == 500


def test_manual_refunds_recorded_at_once_never_give_back_more_than_the_charge(
    stores: Stores,
) -> None:
    stores.payments.charge(CHARGED, 3500, "4242")

    def record(i: int) -> bool:
        try:
            stores.payments.record_manual_refund(
                ORDER, amount=1000, reference=f"BANK-{i}", operator="ana"
            )
        except OverRefunded:
            return False
        return True

    recorded = all_at_once(record)

    assert recorded.count(True) == 3  # 3 x $10.00 of $35.00; the others were refused
    assert net_money(stores) == 500


def test_a_product_refund_counts_against_what_may_be_refunded_by_hand(stores: Stores) -> None:
    stores.payments.charge(CHARGED, 3500, "4242")
    stores.payments.refund(CHARGED)

    with pytest.raises(OverRefunded) as over:
        stores.payments.record_manual_refund(ORDER, amount=100, reference="B", operator="ana")

    assert over.value.net == 0
    assert net_money(stores) == 0


# --- Another execution of the same order (another run, another workflow id) --------------


def test_a_finished_order_cannot_be_reserved_or_charged_again_by_another_execution(
    stores: Stores,
) -> None:
    stores.inventory.reserve(STOCK, SEED_ITEMS)
    stores.payments.charge(CHARGED, 3500, "4242")
    for owner in (OTHER_RUN, "pizza-workflow-order-XD001/run-3"):
        with pytest.raises(OwnedByAnotherExecution):
            stores.inventory.reserve(of(STOCK, owner=owner), SEED_ITEMS)
        with pytest.raises(OwnedByAnotherExecution):
            stores.payments.charge(of(CHARGED, owner=owner), 3500, "4242")
        # Its rollback must not undo what the first execution did.
        assert stores.inventory.release(of(STOCK, owner=owner)) is None
        assert stores.payments.refund(of(CHARGED, owner=owner)) is None
    assert stores.inventory.on_hand() == {item: INITIAL_STOCK - 1 for item in MENU}
    assert net_money(stores) == 3500


def test_a_rolled_back_order_cannot_be_completed_for_free_by_a_new_run(stores: Stores) -> None:
    stores.inventory.reserve(STOCK, SEED_ITEMS)
    stores.payments.charge(CHARGED, 3500, "4242")
    stores.payments.refund(CHARGED)
    stores.inventory.release(STOCK)
    again = of(STOCK, owner="pizza-workflow-order-XD001/run-2")
    with pytest.raises(OwnedByAnotherExecution):
        stores.inventory.reserve(again, SEED_ITEMS)
    with pytest.raises(OwnedByAnotherExecution):
        stores.payments.charge(of(CHARGED, owner=again.owner), 3500, "4242")
    assert stores.inventory.on_hand() == FULL_STOCK
    assert net_money(stores) == 0


def test_the_same_execution_is_a_retry_whatever_its_run(stores: Stores) -> None:
    # A reset keeps the execution (the first run id of the chain): the retried step
    # must find its own effect, not another order's.
    stores.payments.charge(CHARGED, 3500, "4242")
    assert stores.payments.charge(CHARGED, 3500, "4242") == Charged(3500, "4242")
    assert stores.payments.refund(CHARGED) == Charged(3500, "4242")
    assert net_money(stores) == 0


# --- A step and its compensation overlapping --------------------------------------------
# The forward call is held at an exact statement inside its transaction while the
# compensation runs on another connection. Whichever commits first, the net effect is zero.


def overlap(
    stores: Stores, forward: Callable[[], object], compensate: Callable[[], T], *, hold_at: str
) -> tuple[Future[object], T]:
    """Run ``forward`` until ``hold_at``, then ``compensate`` beside it, then let both finish."""
    with (
        StatementHold(stores.engine, hold_at).installed() as hold,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        step = pool.submit(forward)
        assert hold.reached.wait(30), "the forward call never reached the held statement"
        undo = pool.submit(compensate)
        if not hold_at.startswith("INSERT INTO effects"):
            # The forward call holds its claim: the compensation must wait for it.
            wait_until_blocked(stores.engine)
            assert not undo.done()
        else:
            # The forward call has claimed nothing yet: the compensation goes first.
            undo.result(timeout=30)
        hold.release.set()
        return step, undo.result(timeout=30)


def test_reserve_committing_first_is_released_by_the_overlapping_rollback(
    stores: Stores,
) -> None:
    step, released = overlap(
        stores,
        lambda: stores.inventory.reserve(STOCK, SEED_ITEMS),
        lambda: stores.inventory.release(STOCK),
        hold_at="UPDATE stock",
    )
    step.result(timeout=30)
    assert released == SEED_ITEMS
    assert stores.inventory.on_hand() == FULL_STOCK


def test_rollback_committing_first_refuses_the_overlapping_reserve(stores: Stores) -> None:
    step, released = overlap(
        stores,
        lambda: stores.inventory.reserve(STOCK, SEED_ITEMS),
        lambda: stores.inventory.release(STOCK),
        hold_at="INSERT INTO effects",
    )
    with pytest.raises(AlreadyUndone):
        step.result(timeout=30)
    assert released is None
    assert stores.inventory.on_hand() == FULL_STOCK


def test_charge_committing_first_is_refunded_by_the_overlapping_rollback(stores: Stores) -> None:
    step, refunded = overlap(
        stores,
        lambda: stores.payments.charge(CHARGED, 3500, "4242"),
        lambda: stores.payments.refund(CHARGED),
        hold_at="INSERT INTO payments",
    )
    assert step.result(timeout=30) == Charged(3500, "4242")
    assert refunded == Charged(3500, "4242")
    assert net_money(stores) == 0


def test_rollback_committing_first_refuses_the_overlapping_charge(stores: Stores) -> None:
    step, refunded = overlap(
        stores,
        lambda: stores.payments.charge(CHARGED, 3500, "4242"),
        lambda: stores.payments.refund(CHARGED),
        hold_at="INSERT INTO effects",
    )
    with pytest.raises(AlreadyUndone):
        step.result(timeout=30)
    assert refunded is None
    assert stores.payments.payments() == []


def test_a_refund_the_processor_refuses_changes_nothing_and_can_be_retried(
    stores: Stores,
) -> None:
    stores.payments.charge(CHARGED, 3500, "4242")

    def unavailable(_: Charged) -> None:
        raise ConnectionError("processor unavailable")

    with pytest.raises(ConnectionError):
        stores.payments.refund(CHARGED, authorize=unavailable)
    assert net_money(stores) == 3500
    assert stores.payments.refund(CHARGED) == Charged(3500, "4242")
    assert net_money(stores) == 0
