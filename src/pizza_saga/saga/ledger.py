"""The saga ledger: what each step and its compensation did, for people and queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class StepState(StrEnum):
    """Where a forward step stands."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class CompensationState(StrEnum):
    """Where a step's compensation stands."""

    NONE = "NONE"
    """The step registered no compensation."""
    REGISTERED = "REGISTERED"
    """Registered; runs only if the saga rolls back."""
    RUNNING = "RUNNING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    """Gave up after its retries; the rollback went on with the other steps."""


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
    compensation_state: CompensationState = CompensationState.NONE
    error: str | None = None
    """Why the forward action failed (type: message), if it did."""
    compensation_error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    compensated_at: datetime | None = None
