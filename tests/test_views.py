"""How an order page draws an order: the outcome in words, the saga on a time axis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporal_saga import CompensationState, StepRecord, StepState

from pizza_saga.api import views
from pizza_saga.order.client import OrderError, OrderOutcome, OrderStatus
from pizza_saga.order.models import OrderConfirmation

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
            finished_at=at(1),
        ),
        StepRecord(
            "update_inventory",
            "update_inventory",
            "revert_inventory",
            StepState.SUCCEEDED,
            compensation_state=CompensationState.COMPENSATED,
            started_at=at(2),
            finished_at=at(3),
            compensation_started_at=at(8),
            compensated_at=at(10),
        ),
    )

    drawn = views.timeline(rolled_back)

    assert drawn.seconds == 10
    distance, inventory = drawn.rows
    assert distance.forward == views.Bar(left=0, width=10, open=False)
    assert distance.compensation is None
    assert inventory.forward == views.Bar(left=20, width=10, open=False)
    assert inventory.compensation == views.Bar(left=80, width=20, open=False)
    assert [text for _, text in drawn.ticks] == ["0.0 s", "2.5 s", "5.0 s", "7.5 s", "10.0 s"]


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
        StepRecord("notify_delivery_driver", "notify_delivery_driver", None, started_at=at(5)),
    )

    distance, driver = views.timeline(running, now=at(20)).rows

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
