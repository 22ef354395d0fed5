"""The engine-limit workflow: the same activities as an order, doing nothing.

What the platform allows on this machine with these worker settings; every order figure
is also reported as a ratio to it. A plan mirrors one kind of order: as many activities,
the same one failing, and as many compensations after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError

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


@workflow.defn
class BaselineWorkflow:
    """No-op activities one after another, like the order's steps and its rollback."""

    @workflow.run
    async def run(self, plan: BaselinePlan) -> int:
        try:
            for step in range(plan.activities):
                local = plan.local and (plan.regular_from is None or step < plan.regular_from)
                await self._call(local, fail if step == plan.fail_at else noop, step)
        except ActivityError as err:
            for step in range(plan.compensations):
                await self._call(plan.local, noop, step)
            raise ApplicationError("rolled back", non_retryable=True) from err
        return plan.activities

    @staticmethod
    async def _call(local: bool, fn: Callable[[int], Awaitable[int]], step: int) -> None:
        timeout = timedelta(seconds=5)
        if local:
            await workflow.execute_local_activity(fn, step, start_to_close_timeout=timeout)
        else:
            await workflow.execute_activity(fn, step, start_to_close_timeout=timeout)
