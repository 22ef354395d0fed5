"""The engine-limit workflow's input and activities, in a module of their own.

The workflow (baseline.py) imports them passed through the SDK's sandbox, as the order's
workflow imports its models and activities: a plan class made afresh for every run would
also cost every run a new payload converter type adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

BASELINE_TASK_QUEUE = "bench-baseline"


def unsandboxed_queue(task_queue: str) -> str:
    """The task queue of the bench's worker of the same workflows outside the SDK's sandbox."""
    return f"{task_queue}-unsandboxed"


@activity.defn
async def noop(step: int) -> int:
    """Does nothing, as fast as an activity can."""
    return step


@activity.defn
async def fail(step: int) -> int:
    """Fails for good, as a declined card or a bounced bill does."""
    raise ApplicationError(f"step {step} failed", non_retryable=True)


@dataclass(frozen=True)
class BaselinePlan:
    """Activities in order; the one at ``fail_at`` fails, then ``compensations`` run."""

    activities: int
    fail_at: int | None = None
    compensations: int = 0
    local: bool = False
    """Local activities, to compare with the order's local mode."""
    regular_from: int | None = None
    """In local mode, steps from this one on stay regular (the order's driver does)."""
