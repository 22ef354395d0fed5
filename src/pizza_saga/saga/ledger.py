"""The saga's data: the ledger of steps, and what compensations and operators are told.

No ``from __future__ import annotations`` here: these classes cross the data converter,
and inside the workflow sandbox pydantic must not have to resolve string annotations.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class StepState(StrEnum):
    """Where a forward step stands."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    """Interrupted by the run's cancellation or deadline; whether it took effect is unknown."""


class StepOutcome(StrEnum):
    """What the saga knows about a step's effect; its compensation is told."""

    SUCCEEDED = "SUCCEEDED"
    """The step returned: its effect happened."""
    FAILED = "FAILED"
    """The step reported a failure: if it is atomic, nothing happened."""
    UNKNOWN = "UNKNOWN"
    """Timed out or interrupted: it may or may not have happened."""


class CompensationState(StrEnum):
    """Where a step's compensation stands."""

    NONE = "NONE"
    """The step registered no compensation."""
    REGISTERED = "REGISTERED"
    """Registered; runs only if the saga rolls back."""
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    """An attempt failed; the next one waits out its backoff."""
    COMPENSATED = "COMPENSATED"
    NEEDS_OPERATOR = "NEEDS_OPERATOR"
    """Failed every attempt; waits for a person to retry it or to skip it."""
    SKIPPED = "SKIPPED"
    """A person decided it will not run (and said why)."""


@dataclass
class StepRecord:
    """One saga step as the ledger shows it."""

    step: str
    """Step name; also the forward activity's id, so activities can key on it."""
    activity: str
    """Activity type of the forward action."""
    compensation: str | None
    """Activity type of the compensation, if one was registered."""
    state: StepState = StepState.RUNNING
    outcome: StepOutcome | None = None
    compensation_state: CompensationState = CompensationState.NONE
    compensation_attempts: int = 0
    error: str | None = None
    """Why the forward action failed (type: message), if it did."""
    compensation_error: str | None = None
    """The last compensation attempt's error, if one failed."""
    operator_note: str | None = None
    """What an operator decided about this compensation, and why."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    compensation_started_at: datetime | None = None
    compensated_at: datetime | None = None


@dataclass(frozen=True)
class CompensationContext:
    """What a compensation activity is told besides its own argument."""

    step: str
    outcome: StepOutcome
    """Whether the step surely took effect, surely did not, or may have."""
    attempt: int
    """1 for the first attempt; counts on across operator retries."""


class OperatorAction(StrEnum):
    """What an operator can decide about a compensation that keeps failing."""

    RETRY = "RETRY"
    SKIP = "SKIP"


@dataclass(frozen=True)
class OperatorDecision:
    """A person's decision about a compensation that needs one."""

    action: OperatorAction
    step: str | None = None
    """The step whose compensation is meant; may be left out when only one waits."""
    reason: str | None = None
    """Why; required to skip (it is recorded in the ledger and the run's error)."""
