"""What the pages show of an order: its outcome in words and its saga on a time axis.

`static/app.js` draws the same from each event's JSON; keep the two in step (labels, CSS
classes, how bars are placed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from temporal_saga import CompensationState, StepRecord

from pizza_saga.common.formatting import cents
from pizza_saga.order.client import OrderOutcome, OrderStatus

MIN_BAR_PERCENT = 0.6
"""A step that took no measurable time still gets a visible sliver."""
ROLLING_BACK = {
    CompensationState.RUNNING,
    CompensationState.RETRYING,
    CompensationState.COMPENSATED,
    CompensationState.NEEDS_OPERATOR,
    CompensationState.SKIPPED,
}
"""Compensation states that mean the saga has started to roll back."""
STATUS_LABEL = {
    OrderStatus.COMPLETED: "Completed",
    OrderStatus.FAILED: "Failed",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.TERMINATED: "Terminated",
    OrderStatus.TIMED_OUT: "Timed out",
}


@dataclass(frozen=True)
class Bar:
    """One span on the time axis, in percent of the axis."""

    left: float
    width: float
    open: bool
    """Still going: it ends at the axis's end for now."""


@dataclass(frozen=True)
class Row:
    """A saga step: its forward bar and its compensation's bar."""

    record: StepRecord
    forward: Bar | None
    compensation: Bar | None


@dataclass(frozen=True)
class Timeline:
    """The saga's steps on one time axis from the first step's start."""

    rows: list[Row]
    seconds: float
    """Length of the axis."""

    @property
    def ticks(self) -> list[tuple[float, str]]:
        """Axis labels: (percent, text)."""
        return [(p, f"{self.seconds * p / 100:.1f} s") for p in (0, 25, 50, 75, 100)]


@dataclass(frozen=True)
class Outcome:
    """The order's state in words: a badge and a line of detail."""

    key: str
    """CSS class and stable name: running, rolling-back, needs-operator, completed, ..."""
    label: str
    detail: str


def needs_operator(outcome: OrderOutcome) -> list[str]:
    """Steps whose compensation waits for an operator."""
    return [
        r.step
        for r in outcome.ledger or []
        if r.compensation_state is CompensationState.NEEDS_OPERATOR
    ]


def rolling_back(outcome: OrderOutcome) -> bool:
    """Whether any compensation has started."""
    return any(r.compensation_state in ROLLING_BACK for r in outcome.ledger or [])


def can_cancel(outcome: OrderOutcome) -> bool:
    """A running order that has not started to roll back can be cancelled."""
    return outcome.status is OrderStatus.RUNNING and not rolling_back(outcome)


def describe(outcome: OrderOutcome) -> Outcome:
    """The outcome's badge and detail line."""
    if outcome.status is OrderStatus.RUNNING:
        waiting = needs_operator(outcome)
        if waiting:
            return Outcome(
                "needs-operator",
                "Needs operator",
                f"the compensation of {', '.join(waiting)} keeps failing: retry it, or skip it "
                "and say why",
            )
        if rolling_back(outcome):
            return Outcome("rolling-back", "Rolling back", "undoing what the order did")
        return Outcome("running", "Running", "")
    label = STATUS_LABEL[outcome.status]
    if outcome.status is OrderStatus.COMPLETED and outcome.confirmation is not None:
        c = outcome.confirmation
        detail = (
            f"{c.status}: charged {cents(c.amount)} to card ending {c.card_last4}, "
            f"bill {c.confirmation_number}"
        )
    elif outcome.error is not None:
        detail = f"{outcome.error.type}: {outcome.error.message}"
    else:
        detail = ""
    return Outcome(outcome.status.lower().replace("_", "-"), label, detail)


def timeline(outcome: OrderOutcome, now: datetime | None = None) -> Timeline:
    """The ledger on a time axis; spans still open end at ``now`` (running orders)."""
    records = outcome.ledger or []
    now = now or datetime.now(UTC)
    stamps = [
        t
        for r in records
        for t in (r.started_at, r.finished_at, r.compensation_started_at, r.compensated_at)
        if t is not None
    ]
    if not stamps:
        return Timeline(rows=[Row(r, None, None) for r in records], seconds=0.0)
    start = min(stamps)
    end = max(stamps)
    if outcome.status is OrderStatus.RUNNING:
        end = max(end, now)
    total = max((end - start).total_seconds(), 0.001)

    def bar(begin: datetime | None, finish: datetime | None) -> Bar | None:
        if begin is None:
            return None
        stop = finish or end
        left = (begin - start).total_seconds() / total * 100
        width = max((stop - begin).total_seconds() / total * 100, MIN_BAR_PERCENT)
        left = min(left, 100 - MIN_BAR_PERCENT)
        return Bar(left=round(left, 2), width=round(min(width, 100 - left), 2), open=finish is None)

    rows = [
        Row(
            r,
            bar(r.started_at, r.finished_at),
            bar(r.compensation_started_at, r.compensated_at),
        )
        for r in records
    ]
    return Timeline(rows=rows, seconds=total)
