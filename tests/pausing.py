"""A worker interceptor that holds one activity before or after it runs, until released.

It lets a test act (cancel, say) at an exact point of a real run, without sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class PausePoint(Interceptor):
    """Holds the first run of ``activity_type`` at ``when`` ("before" or "after")."""

    def __init__(self) -> None:
        self.activity_type: str | None = None
        self.when = "before"
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        """Set once the held run has ended (done, or refused), after its release."""

    def arm(self, activity_type: str, when: str) -> None:
        self.activity_type, self.when = activity_type, when
        self.reached.clear()
        self.release.clear()
        self.finished.clear()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Hold(next, self)


class _Hold(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, point: PausePoint) -> None:
        super().__init__(next)
        self._point = point

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        point = self._point
        armed = activity.info().activity_type == point.activity_type
        try:
            if armed and point.when == "before":
                await self._hold()
            result = await super().execute_activity(input)
            if armed and point.when == "after":
                await self._hold()
            return result
        finally:
            if armed:
                point.finished.set()

    async def _hold(self) -> None:
        point = self._point
        point.activity_type = None  # only the first run is held
        point.reached.set()
        await point.release.wait()
