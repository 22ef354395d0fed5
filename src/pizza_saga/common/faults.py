"""Fault injection for crash tests: kill the worker process at a named point of an activity.

Set PIZZA_CRASH_AT=activity_type:before|after for `pizza worker`; the first run of that
activity then SIGKILLs the whole process, like a power cut: before its effect, or after the
effect is committed but before Temporal hears of it. Never set in production.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor


class CrashAt(Interceptor):
    """Kills this process when ``activity_type`` reaches ``when`` ("before" or "after")."""

    def __init__(self, point: str) -> None:
        self.activity_type, _, self.when = point.partition(":")

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Crash(next, self)


class _Crash(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, point: CrashAt) -> None:
        super().__init__(next)
        self._point = point

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        here = activity.info().activity_type == self._point.activity_type
        if here and self._point.when == "before":
            _die()
        result = await super().execute_activity(input)
        if here and self._point.when == "after":
            _die()
        return result


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
