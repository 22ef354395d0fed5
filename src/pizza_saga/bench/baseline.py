"""The engine-limit workflow: the same number of activities as an order, doing nothing.

What the platform allows on this machine with these worker settings; every order figure
is also reported as a ratio to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

BASELINE_TASK_QUEUE = "bench-baseline"


@activity.defn
async def noop(step: int) -> int:
    """Does nothing, as fast as an activity can."""
    return step


@dataclass(frozen=True)
class BaselinePlan:
    """How many no-op activities, and whether local ones (to compare with local mode)."""

    activities: int
    local: bool = False


@workflow.defn
class BaselineWorkflow:
    """No-op activities, one after another, like the order's steps."""

    @workflow.run
    async def run(self, plan: BaselinePlan) -> int:
        timeout = timedelta(seconds=5)
        for step in range(plan.activities):
            if plan.local:
                await workflow.execute_local_activity(noop, step, start_to_close_timeout=timeout)
            else:
                await workflow.execute_activity(noop, step, start_to_close_timeout=timeout)
        return plan.activities
