"""How an order page draws an order: the outcome in words, the saga on a time axis, what was
ordered (the customer masked), its charges and refunds, and the notices of its buttons."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from temporal_saga import CompensationState, StepRecord, StepState

from pizza_saga.api import views
from pizza_saga.billing.models import CardToken
from pizza_saga.billing.store import PaymentEntry
from pizza_saga.order.client import OrderError, OrderOutcome, OrderStatus
from pizza_saga.order.models import OrderConfirmation, PlacedOrder
from pizza_saga.order.service import OrderService

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``seconds`` after the first step started."""
    return T0 + timedelta(seconds=seconds)


def outcome(status: OrderStatus, *ledger: StepRecord, **fields: object) -> OrderOutcome:
    """An order's outcome with this status and ledger, as the service reports it."""
    return OrderOutcome.model_validate(
        {
            "order_number": "V1",
            "workflow_id": "pizza-workflow-order-V1",
            "run_id": "r",
            "status": status,
            "ledger": list(ledger),
            **fields,
        }
    )


def test_bars_sit_on_the_axis_by_their_timestamps() -> None:
    rolled_back = outcome(
        OrderStatus.FAILED,
        StepRecord(
            "get_distance",
            "get_distance",
            None,
            StepState.SUCCEEDED,
            started_at=at(0),
            finished_at=at(0.1),
        ),
        StepRecord(
            "update_inventory",
            "update_inventory",
            "revert_inventory",
            StepState.SUCCEEDED,
            compensation_state=CompensationState.COMPENSATED,
            started_at=at(0.2),
            finished_at=at(0.3),
            compensation_started_at=at(0.8),
            compensated_at=at(1.0),
        ),
    )

    drawn = views.timeline(rolled_back)

    assert drawn.seconds == 1
    assert drawn.breaks == [], "no wait is longer than LONG_WAIT_SECONDS: all to scale"
    distance, inventory = drawn.rows
    assert distance.forward == views.Bar(left=0, width=10, open=False)
    assert distance.compensation is None
    assert inventory.forward == views.Bar(left=20, width=10, open=False)
    assert inventory.compensation == views.Bar(left=80, width=20, open=False)
    assert [t.text for t in drawn.ticks] == ["0.0 s", "0.2 s", "0.5 s", "0.8 s", "1.0 s"]


def test_a_running_step_reaches_now_and_an_instant_one_stays_visible() -> None:
    running = outcome(
        OrderStatus.RUNNING,
        StepRecord(
            "get_distance",
            "get_distance",
            None,
            StepState.SUCCEEDED,
            started_at=at(0),
            finished_at=at(0),
        ),
        StepRecord("notify_delivery_driver", "notify_delivery_driver", None, started_at=at(0.05)),
    )

    distance, driver = views.timeline(running, now=at(0.2)).rows

    assert distance.forward == views.Bar(left=0, width=views.MIN_BAR_PERCENT, open=False)
    assert driver.forward == views.Bar(left=25, width=75, open=True)


def test_no_step_yet_draws_no_bars() -> None:
    assert views.timeline(outcome(OrderStatus.RUNNING)).rows == []
    assert views.timeline(outcome(OrderStatus.RUNNING, ledger=None)).rows == []


def test_the_outcome_in_words() -> None:
    waiting = StepRecord(
        "process_credit_card",
        "process_credit_card",
        "refund_customer",
        StepState.SUCCEEDED,
        compensation_state=CompensationState.NEEDS_OPERATOR,
    )
    undoing = StepRecord(
        "update_inventory",
        "update_inventory",
        "revert_inventory",
        StepState.SUCCEEDED,
        compensation_state=CompensationState.RUNNING,
    )
    receipt = OrderConfirmation(
        order_number="V1",
        status="SUCCESS",
        confirmation_number="B-1",
        billing_timestamp=0,
        amount=3500,
        card_last4="4242",
    )

    assert views.describe(outcome(OrderStatus.RUNNING)).label == "Running"
    assert views.describe(outcome(OrderStatus.RUNNING, undoing)).label == "Rolling back"
    needs = views.describe(outcome(OrderStatus.RUNNING, undoing, waiting))
    assert (needs.key, needs.label) == ("needs-operator", "Needs operator")
    assert "process_credit_card" in needs.detail
    done = views.describe(outcome(OrderStatus.COMPLETED, confirmation=receipt))
    assert (done.label, done.detail) == (
        "Completed",
        "SUCCESS: charged $35.00 to card ending 4242, bill B-1",
    )
    failed = views.describe(
        outcome(OrderStatus.FAILED, error=OrderError(type="CardDeclinedError", message="no"))
    )
    assert (failed.key, failed.label, failed.detail) == (
        "failed",
        "Failed",
        "CardDeclinedError: no",
    )
    assert views.describe(outcome(OrderStatus.TIMED_OUT)).key == "timed-out"
    assert views.can_cancel(outcome(OrderStatus.RUNNING))
    assert not views.can_cancel(outcome(OrderStatus.RUNNING, undoing))
    assert not views.can_cancel(outcome(OrderStatus.FAILED))


def step(
    name: str,
    started: float,
    finished: float | None,
    *,
    undo: str | None = None,
    undone: tuple[float, float | None] | None = None,
    state: StepState = StepState.SUCCEEDED,
) -> StepRecord:
    """A ledger record with times in seconds after T0 (and its compensation's, if ``undone``)."""
    begin, end = undone or (None, None)
    return StepRecord(
        name,
        name,
        undo,
        state,
        compensation_state=(
            CompensationState.NONE
            if undone is None
            else CompensationState.COMPENSATED
            if end is not None
            else CompensationState.RUNNING
        ),
        started_at=at(started),
        finished_at=None if finished is None else at(finished),
        compensation_started_at=None if begin is None else at(begin),
        compensated_at=None if end is None else at(end),
    )


def test_an_order_cancelled_in_the_kitchen_reads_in_milliseconds() -> None:
    # Cancelled during the kitchen's wait: one step, 3 ms. The axis used to read "0.0 s"
    # five times under one bar across it all.
    cancelled = outcome(OrderStatus.CANCELLED, step("get_distance", 0, 0.003))

    drawn = views.timeline(cancelled)

    texts = [t.text for t in drawn.ticks]
    assert texts == ["0 ms", "25 ms", "50 ms", "75 ms", "100 ms"]
    assert len(set(texts)) == len(texts)
    [distance] = drawn.rows
    assert distance.forward == views.Bar(left=0, width=3, open=False)
    assert views.duration(drawn.seconds) == "3 ms"


def test_the_kitchens_wait_is_a_labelled_break_and_the_rollback_gets_room() -> None:
    # The seed's 15-digit card: distance, 3 s in the kitchen, then in 90 ms the stock taken,
    # the charge failed, the refund and the revert (the refund first: reverse order).
    rolled_back = outcome(
        OrderStatus.FAILED,
        step("get_distance", 0, 0.004),
        step("update_inventory", 3.010, 3.018, undo="revert_inventory", undone=(3.060, 3.095)),
        step(
            "process_credit_card",
            3.020,
            3.030,
            undo="refund_customer",
            undone=(3.035, 3.055),
            state=StepState.FAILED,
        ),
    )

    drawn = views.timeline(rolled_back)

    [kitchen] = drawn.breaks
    assert kitchen.label == "3.0 s"
    assert kitchen.left == pytest.approx(views.MIN_BAR_PERCENT, abs=5)
    assert views.BREAK_PERCENT <= kitchen.width <= 100 - views.BREAKS_MAX_PERCENT
    _, inventory, charge = drawn.rows
    assert inventory.forward and inventory.compensation and charge.compensation
    refund, revert = charge.compensation, inventory.compensation
    assert inventory.forward.left >= kitchen.left + kitchen.width - 0.01, "after the break"
    assert refund.left + refund.width <= revert.left, "the refund ran before the revert"
    assert min(refund.width, revert.width) >= 10, "bars, not slivers"
    assert revert.left + revert.width == 100
    assert [t.text for t in drawn.ticks] == ["0 s", "3.01 s", "3.10 s"]


def test_a_running_order_waits_in_a_break_that_reaches_now() -> None:
    in_the_kitchen = outcome(OrderStatus.RUNNING, step("get_distance", 0, 0.004))

    drawn = views.timeline(in_the_kitchen, now=at(1.5))

    [waiting] = drawn.breaks
    assert (waiting.label, waiting.left + waiting.width) == ("1.5 s", 100)
    [distance] = drawn.rows
    assert distance.forward and distance.forward.width < 10
    assert [t.text for t in drawn.ticks] == ["0 s", "1.5 s"]


def test_several_waits_share_the_axis_and_each_says_how_long_it_was() -> None:
    # A completed order: the kitchen's 3 s, the driver's 2 s, a compensation retried after
    # a 1 s backoff (RUNNING, for the sake of the shape).
    slow = outcome(
        OrderStatus.RUNNING,
        step("get_distance", 0, 0.005),
        step("update_inventory", 3.005, 3.010),
        step("notify_delivery_driver", 3.012, 5.012, undo="x", undone=(5.020, None)),
    )

    drawn = views.timeline(slow, now=at(6.020))

    assert [b.label for b in drawn.breaks] == ["3.0 s", "2.0 s", "1.0 s"]
    assert sum(b.width for b in drawn.breaks) >= views.BREAKS_MAX_PERCENT
    texts = [t.text for t in drawn.ticks]
    assert len(set(texts)) == len(texts), texts
    lefts = [t.left for t in drawn.ticks]
    assert all(b - a >= views.TICK_SPACING_PERCENT for a, b in itertools.pairwise(lefts))


def test_durations_read_in_their_unit() -> None:
    assert views.duration(0.025) == "25 ms"
    assert views.duration(3.04) == "3.0 s"
    assert views.duration(95) == "1 min 35 s"
    assert views.duration(7300) == "2 h 01 min"
    assert views.duration(0.5, unit=2) == "0.5 s"


def test_cancel_and_retry_notices_only_while_the_order_runs() -> None:
    running, done = outcome(OrderStatus.RUNNING), outcome(OrderStatus.CANCELLED)

    cancel = views.notice(running, "cancel")
    assert cancel and cancel.text.startswith("Cancellation requested") and cancel.while_running
    assert views.notice(done, "cancel") is None
    assert views.notice(outcome(OrderStatus.FAILED), "retry") is None
    retry = views.notice(running, "retry")
    assert retry and retry.text == "Retry requested."
    skipped = views.notice(outcome(OrderStatus.FAILED), "skip")
    assert skipped and not skipped.while_running, "a skip stays true once the order ended"
    assert views.notice(running, None) is None
    assert views.notice(running, "<script>") is None


def placed_seed_order() -> PlacedOrder:
    """The seed's order as its workflow gets it (a vault token for the card)."""
    token = CardToken("tok_" + "x" * 32, "visa", "4242", T0)
    return OrderService.sandbox().example.placed(token)


def test_what_was_ordered_with_its_price_and_the_customer_masked() -> None:
    shown = views.details(placed_seed_order())

    assert [(line.description, line.quantity, line.amount) for line in shown.lines] == [
        ("Large, with mushrooms and onions", 1, 1500),
        ("Small, with pepperoni", 1, 1200),
        ("Medium, with extra cheese", 1, 1300),
    ]
    assert (shown.price.subtotal, shown.price.discount, shown.price.total) == (4000, 500, 3500)
    assert (shown.name, shown.email, shown.phone) == (
        "María G.",
        "m•••@example.com",
        "•••-•••-7418",
    )
    assert shown.customer_id == 12983
    assert shown.delivery == "San Francisco, CA 94103", "not the street"
    assert shown.card == "Lisa A., card ending 4242"
    text = repr(shown)
    for hidden in ("García", "maria1985", "415-555", "Mission", "Anderson", "tok_"):
        assert hidden not in text


def test_masks() -> None:
    assert views.mask_name("Cher") == "Cher"
    assert views.mask_name("Jean Luc Picard") == "Jean L. P."
    assert views.mask_email("a@b.example") == "a•••@b.example"
    assert views.mask_phone("+1 (415) 555 7418") == "+• (•••) ••• 7418"
    assert views.mask_phone("123") == "123"


def test_charges_and_refunds_show_the_last_four_digits_only() -> None:
    entries = [
        PaymentEntry("V1", "charge", 3500, "4242", T0),
        PaymentEntry("V1", "refund", 3500, "4242", at(1)),
    ]

    shown = views.money(entries)

    assert [(m.kind, m.amount, m.card, m.at) for m in shown] == [
        ("charge", 3500, "•••• 4242", T0),
        ("refund", 3500, "•••• 4242", at(1)),
    ]
