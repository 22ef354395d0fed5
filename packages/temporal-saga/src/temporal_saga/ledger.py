"""The saga's data: the ledger of steps, and what compensations and operators are told.

Plain dataclasses and string enums, so that Temporal's default data converter (and the
pydantic one) carries them in queries and updates. No ``from __future__ import
annotations`` here: inside the workflow sandbox a converter must not have to resolve string
annotations.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class StepKind(StrEnum):
    """What kind of step a saga step is (Richardson's compensatable, pivot and retriable)."""

    COMPENSATABLE = "COMPENSATABLE"
    """Undone by its compensation if the saga rolls back."""
    PIVOT = "PIVOT"
    """The point of no return: once it succeeds, the saga only goes forward."""
    RETRIABLE = "RETRIABLE"
    """Must succeed: retried until it does, then left to an operator."""


class StepState(StrEnum):
    """Where a forward step stands."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    """Interrupted by the run's cancellation or deadline; whether it took effect is unknown."""
    NEEDS_OPERATOR = "NEEDS_OPERATOR"
    """A step that must succeed failed every attempt; waits for a person to retry or skip it."""
    SKIPPED = "SKIPPED"
    """A person decided a step that must succeed will not run (and said why)."""


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
    FAILED = "FAILED"
    """Failed every attempt, and the saga was told to raise rather than wait."""


@dataclass
class StepRecord:
    """One saga step as the ledger shows it."""

    step: str
    """Step name; also the forward activity's id, so activities can key on it."""
    activity: str | None
    """Activity type of the forward action; None for a compensation added on its own."""
    compensation: str | None
    """Name of the compensation (an activity type or a coroutine), if one was registered."""
    state: StepState = StepState.RUNNING
    outcome: StepOutcome | None = None
    compensation_state: CompensationState = CompensationState.NONE
    compensation_attempts: int = 0
    error: str | None = None
    """Why the forward action failed (type: message), if it did."""
    compensation_error: str | None = None
    """The last compensation attempt's error, if one failed."""
    operator_note: str | None = None
    """What an operator decided about this step or its compensation, and why."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    compensation_started_at: datetime | None = None
    compensated_at: datetime | None = None
    kind: StepKind = StepKind.COMPENSATABLE


@dataclass(frozen=True)
class CompensationContext:
    """What a compensation activity is told besides its own argument."""

    step: str
    outcome: StepOutcome
    """Whether the step surely took effect, surely did not, or may have."""
    attempt: int
    """1 for the first attempt; counts on across operator retries."""


class OperatorAction(StrEnum):
    """What an operator can decide about a step or compensation that keeps failing."""

    RETRY = "RETRY"
    SKIP = "SKIP"


@dataclass(frozen=True)
class OperatorDecision:
    """A person's decision about a step or compensation that needs one."""

    action: OperatorAction
    step: str | None = None
    """The step meant; may be left out when only one waits."""
    reason: str | None = None
    """Why; required to skip (it is recorded in the ledger and the run's error)."""
