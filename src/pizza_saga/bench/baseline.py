"""The engine-limit workflow: the same number of activities as an order, doing nothing.

What the platform allows on this machine with these worker settings; every order figure
is also reported as a ratio to it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

BASELINE_TASK_QUEUE = "bench-baseline"


@activity.defn
async def noop(step: int) -> int:
    """Does nothing, as fast as an activity can."""
    return step


@workflow.defn
class BaselineWorkflow:
    """``activities`` no-op activities, one after another, like the order's steps."""

    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
            await workflow.execute_activity(noop, step, start_to_close_timeout=timedelta(seconds=5))
        return activities
