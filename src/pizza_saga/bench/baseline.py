"""The engine-limit workflow: the same activities as an order, doing nothing.

What the platform allows on this machine with these worker settings; every order figure
is also reported as a ratio to it. A plan mirrors one kind of order: as many activities,
the same one failing, and as many compensations after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pizza_saga.bench.baseline_steps import BaselinePlan, fail, noop


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
