"""`pizza worker` that kills itself at a named point of an activity, for the crash tests.

`python -m tests.faults ACTIVITY_TYPE:before|after` runs `pizza worker` (same settings from
the environment) with an interceptor: the first run of that activity SIGKILLs the whole
process, like a power cut: before its effect, or after the effect is committed but before
Temporal hears of it. Production code knows nothing of it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
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


def main() -> None:
    """Run `pizza worker` with the crash point given as the only argument."""
    from pizza_saga.cli.services import serve_worker
    from pizza_saga.common.settings import Settings

    [point] = sys.argv[1:]
    if not re.fullmatch(r"[a-z_]+:(before|after)", point):
        raise SystemExit(f"usage: python -m tests.faults ACTIVITY_TYPE:before|after, not {point}")
    serve_worker(Settings.from_env(), interceptors=[CrashAt(point)])


if __name__ == "__main__":
    main()
