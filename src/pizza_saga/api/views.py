"""What the pages show of an order: its outcome in words, its saga on a time axis, and what
was ordered (the customer masked, of the card only its last four digits).

`static/app.js` draws the same from each event's JSON; keep the two in step (labels, CSS
classes, how bars and breaks are placed).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from temporal_saga import CompensationState, StepRecord

from pizza_saga.common.formatting import cents
from pizza_saga.order.amend import AmendmentRecord, as_amended
from pizza_saga.order.client import OrderOutcome, OrderStatus
from pizza_saga.order.menu import MENU, OrderPrice, price_order
from pizza_saga.order.models import PlacedOrder

MIN_BAR_PERCENT = 0.6
"""A step that took no measurable time still gets a visible sliver."""
MIN_AXIS_SECONDS = 0.1
"""The shortest time the to-scale part of the axis covers: a saga that took 3 ms (an order
cancelled in the kitchen has one step) is a short bar near the start, not one across it."""
LONG_WAIT_SECONDS = 0.5
"""A stretch longer than this in which no step starts or ends is drawn as a break."""
BREAK_PERCENT = 10.0
"""Each break's width to begin with (less when there are many, see BREAKS_MAX_PERCENT); the
room the to-scale part does not need (less work than MIN_AXIS_SECONDS) widens the breaks."""
BREAKS_MAX_PERCENT = 40.0
"""What the breaks together begin with, at most."""
TICK_SPACING_PERCENT = 8.0
"""Axis labels closer than this to the one before are left out (they would overlap)."""
MASK = "•"
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
class Tick:
    """An axis label: where (percent) and what (time since the first step started)."""

    left: float
    text: str


@dataclass(frozen=True)
class Break:
    """A long wait drawn shortened (hatched, across every row), labelled with its length."""

    left: float
    width: float
    seconds: float

    @property
    def label(self) -> str:
        return duration(self.seconds)


@dataclass(frozen=True)
class Timeline:
    """The saga's steps on one time axis from the first step's start.

    Why breaks rather than one linear axis: the steps take milliseconds, the waits between
    them (the kitchen's 3 s, a driver, a compensation's backoff) seconds. On one linear axis
    the waits take all of it, and the rollback's bars become slivers in which nobody can see
    that the refund ran before the revert. Scaling each phase on its own would make bars of
    different phases look alike that are not; a break keeps one scale for all the work and
    says how long each wait really was.
    """

    rows: list[Row]
    seconds: float
    """Real time from the first step's start to the last moment drawn (now, while running)."""
    ticks: list[Tick]
    breaks: list[Break]


@dataclass(frozen=True)
class Outcome:
    """The order's state in words: a badge and a line of detail."""

    key: str
    """CSS class and stable name: running, rolling-back, needs-operator, completed, ..."""
    label: str
    detail: str


def duration(seconds: float, *, unit: float | None = None) -> str:
    """A length of time, in the unit that ``unit`` (else ``seconds`` itself) reads best in:
    0.025 -> '25 ms', 3.04 -> '3.0 s', 95 -> '1 min 35 s'."""
    scale = seconds if unit is None else unit
    if scale < 1:
        return f"{seconds * 1000:.0f} ms"
    if scale < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if scale < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@dataclass(frozen=True)
class Notice:
    """What the page says after one of its buttons did something."""

    text: str
    while_running: bool
    """Says what is under way: shown only while the order runs (`app.js` hides it after)."""


NOTICES = {
    "cancel": Notice("Cancellation requested: what the order did is being undone.", True),
    "retry": Notice("Retry requested.", True),
    "skip": Notice("Skipped, with your reason kept in the ledger.", False),
    "amend": Notice("Order changed: the new total is charged or refunded.", False),
}
"""By the ``done`` a button's redirect names."""


def counts(details: Details | None) -> dict[str, int]:
    """How many of each menu item the order has now (0 for those it has none of)."""
    had = {line.description: line.quantity for line in details.lines} if details else {}
    return {item: had.get(item, 0) for item in MENU}


def change_from_counts(
    before: Mapping[str, int], wanted: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """The pizzas to add and to remove (one entry each) to go from ``before`` to ``wanted``."""
    add = [item for item in MENU for _ in range(max(wanted.get(item, 0) - before.get(item, 0), 0))]
    remove = [
        item for item in MENU for _ in range(max(before.get(item, 0) - wanted.get(item, 0), 0))
    ]
    return add, remove


def notice(outcome: OrderOutcome, done: str | None) -> Notice | None:
    """The notice for the button that was pressed (``done``), if it still holds: that a
    cancellation or a retry is under way is not said once the order has finished."""
    found = NOTICES.get(done or "")
    if found is None or (found.while_running and outcome.status is not OrderStatus.RUNNING):
        return None
    return found


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


class _Axis:
    """Where each moment sits on the axis (percent): to scale, except the breaks."""

    def __init__(self, offsets: Sequence[float]) -> None:
        # ``offsets``: the distinct moments, in seconds from the first, ascending.
        self.offsets = list(offsets)
        spans = [b - a for a, b in zip(self.offsets, self.offsets[1:], strict=False)]
        waits = sum(d > LONG_WAIT_SECONDS for d in spans)
        busy = sum(d for d in spans if d <= LONG_WAIT_SECONDS)
        total = self.offsets[-1]
        if waits:
            # The work to scale in what the breaks leave; room it does not need widens them.
            break_width = min(BREAK_PERCENT, BREAKS_MAX_PERCENT / waits)
            budget = 100 - waits * break_width
            per_second = budget / max(busy, MIN_AXIS_SECONDS)
            break_width += (budget - busy * per_second) / waits
            self.length = total
        else:
            self.length = max(total, MIN_AXIS_SECONDS)
            per_second = 100 / self.length
            break_width = 0.0
        self.positions = [0.0]
        self.breaks: list[Break] = []
        self.resumes: list[int] = []
        """Indexes of the moments where the work resumes after a break."""
        for i, d in enumerate(spans):
            left = self.positions[-1]
            if d > LONG_WAIT_SECONDS:
                self.breaks.append(Break(round(left, 2), round(break_width, 2), d))
                self.resumes.append(i + 1)
                self.positions.append(left + break_width)
            else:
                self.positions.append(left + d * per_second)

    def at(self, offset: float) -> float:
        """The position of a moment (one of the offsets, or between two)."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        if i >= len(self.offsets) - 1:
            return self.positions[-1]
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.positions[i] + (offset - a) / (b - a) * (
            self.positions[i + 1] - self.positions[i]
        )

    def ticks(self) -> list[Tick]:
        """Without breaks, five labels from 0 to the end. With breaks: 0, where the work
        resumes after each break (the time since the first step started), and the end."""
        if not self.breaks:
            return [
                Tick(p, duration(self.length * p / 100, unit=self.length))
                for p in (0, 25, 50, 75, 100)
            ]
        last = len(self.offsets) - 1
        kept: list[int] = []
        for i in [0, *(i for i in self.resumes if i != last), last]:
            if kept and self.positions[i] - self.positions[kept[-1]] < TICK_SPACING_PERCENT:
                if i != last or len(kept) == 1:
                    continue
                kept.pop()  # the end's label wins over the one just before it
            kept.append(i)
        texts = _elapsed([self.offsets[i] for i in kept])
        return [
            Tick(round(self.positions[i], 2), text) for i, text in zip(kept, texts, strict=True)
        ]


def _elapsed(offsets: Sequence[float]) -> list[str]:
    """Times since the first step started, as precise as it takes to tell the closest two
    apart (the work between two breaks can last a few milliseconds): '0 s', '3.01 s', '3.10 s'."""

    def text(offset: float, decimals: int) -> str:
        if offset == 0:
            return "0 s"
        if offset < 60:
            return f"{offset:.{decimals}f} s"
        minutes, seconds = divmod(offset, 60)
        return f"{minutes:.0f} min {seconds:0{3 + decimals}.{decimals}f} s"

    closest = min((b - a for a, b in itertools.pairwise(offsets)), default=1.0)
    for decimals in (1, 2, 3):
        texts = [text(offset, decimals) for offset in offsets]
        if len(set(texts)) == len(texts) and 10**-decimals <= closest:
            break
    return texts


def timeline(outcome: OrderOutcome, now: datetime | None = None) -> Timeline:
    """The ledger on a time axis; spans still open end at ``now`` (running orders)."""
    records = outcome.ledger or []
    now = now or datetime.now(UTC)
    stamps = {
        t
        for r in records
        for t in (r.started_at, r.finished_at, r.compensation_started_at, r.compensated_at)
        if t is not None
    }
    if not stamps:
        return Timeline(
            rows=[Row(r, None, None) for r in records], seconds=0.0, ticks=[], breaks=[]
        )
    start = min(stamps)
    end = max(stamps)
    if outcome.status is OrderStatus.RUNNING and now > end:
        end = now
        stamps.add(now)
    axis = _Axis([(t - start).total_seconds() for t in sorted(stamps)])

    def bar(begin: datetime | None, finish: datetime | None) -> Bar | None:
        if begin is None:
            return None
        left = axis.at((begin - start).total_seconds())
        right = axis.at(((finish or end) - start).total_seconds())
        width = max(right - left, MIN_BAR_PERCENT)
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
    return Timeline(rows=rows, seconds=axis.offsets[-1], ticks=axis.ticks(), breaks=axis.breaks)


# --- What was ordered --------------------------------------------------------------------------


class Payment(Protocol):
    """A charge or refund as the service lists it (of the card, the last four digits)."""

    @property
    def kind(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def card_last4(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def reference(self) -> str | None: ...
    @property
    def operator(self) -> str | None: ...


@dataclass(frozen=True)
class Line:
    """Pizzas of one kind in the order."""

    description: str
    quantity: int
    price: int
    """Of one, in cents."""

    @property
    def amount(self) -> int:
        return self.quantity * self.price


@dataclass(frozen=True)
class Details:
    """What was ordered, its price, and by whom (masked)."""

    lines: list[Line]
    price: OrderPrice
    customer_id: int
    name: str
    email: str
    phone: str
    delivery: str | None
    """Where to (city, state and postal code; not the street), None for a pickup."""
    card: str
    """The card holder (masked) and the card's last four digits."""


@dataclass(frozen=True)
class Money:
    """A charge or refund as the order page lists it (`app.js` draws the same from the API)."""

    kind: str
    amount: int
    card: str
    """'•••• 4242': of a card, never more than its last four digits; for a manual refund
    its transfer reference and who recorded it."""
    at: datetime


def mask_name(name: str) -> str:
    """'María García' -> 'María G.': the first name and the others' initials."""
    first, *others = name.split()
    return " ".join([first, *(f"{word[0]}." for word in others)])


def mask_email(email: str) -> str:
    """'maria1985@example.com' -> 'm•••@example.com'."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}{MASK * 3}@{domain}"


def mask_phone(phone: str) -> str:
    """'415-555-7418' -> '•••-•••-7418': every digit but the last four masked."""
    digits = sum(c.isdigit() for c in phone)
    seen = 0

    def hide(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return match.group() if seen > digits - 4 else MASK

    return re.sub(r"\d", hide, phone)


def details(order: PlacedOrder, amendments: Sequence[AmendmentRecord] = ()) -> Details:
    """What the order page shows of ``order`` as ``amendments`` left it: its pizzas, price,
    customer (masked)."""
    items, address = as_amended(order.items, order.address, amendments)
    counts = Counter(p.description for p in items)
    prices = {p.description: p.price for p in items}
    return Details(
        lines=[Line(item, quantity, prices[item]) for item, quantity in counts.items()],
        price=price_order(p.price for p in items),
        customer_id=order.customer.customer_id,
        name=mask_name(order.customer.name),
        email=mask_email(order.customer.email),
        phone=mask_phone(order.customer.phone),
        delivery=(
            f"{address.city}, {address.state} {address.postal_code}" if order.is_delivery else None
        ),
        card=f"{mask_name(order.card.holder_name)}, card ending {order.card.token.last4}",
    )


def money(payments: Iterable[Payment]) -> list[Money]:
    """An order's charges and refunds (manual ones too), oldest first."""
    return [Money(p.kind, p.amount, _paid_with(p), p.created_at) for p in payments]


def _paid_with(p: Payment) -> str:
    if p.card_last4:
        return f"{MASK * 4} {p.card_last4[-4:]}"
    if p.reference:
        return f"transfer {p.reference} (by {p.operator})"
    return ""


def net(payments: Iterable[Money]) -> int:
    """Cents the order's customer has paid, all told: charges less every refund."""
    return sum(m.amount if m.kind == "charge" else -m.amount for m in payments)
