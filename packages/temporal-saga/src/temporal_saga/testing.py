"""Test a saga the way it will break: failing at each step, cancelled at each step, and a
worker crashing around each activity, with the caller's invariant checked after each.

`check_saga` runs the workflow once as it is, to learn its activities, then once per fault:

- ``FAIL``: the activity's first attempt fails for good (non-retryable) before its effect;
- ``CANCEL``: the run is cancelled while the activity's first attempt runs, which then goes on;
- ``CRASH_BEFORE``: the worker dies as the attempt starts: no effect, and Temporal hears
  nothing until the attempt's timeout;
- ``CRASH_AFTER``: the worker dies after the activity's effect, before its answer reaches
  Temporal (the retry, or the compensation told UNKNOWN, must cope);

and crashes around each compensation of the run that rolled back the most. Faults are
injected by a worker interceptor, on real workers of the caller's own making, against a real
Temporal server (the SDK's test servers do). Scenario workers cache no workflow, so every
workflow task replays the run's history first, as after a real crash. A crash costs the
activity's own timeout in real time (the test server does not skip time while an activity is
in flight): keep the timeouts short in tests, or run scenarios side by side (``concurrency``).
Run it against the dev server (``WorkflowEnvironment.start_local``): on the time-skipping
test server a cancellation while a non-heartbeating activity runs was seen to stall the run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

INJECTED_FAILURE = "InjectedFailure"
"""Error type of the failure a FAIL fault raises from the activity."""


class FaultKind(StrEnum):
    """What goes wrong at an activity's first attempt."""

    FAIL = "fail"
    CANCEL = "cancel"
    CRASH_BEFORE = "crash_before"
    CRASH_AFTER = "crash_after"


@dataclass(frozen=True)
class Fault:
    """One fault, at the first attempt of the activity with this id (a saga step's name)."""

    kind: FaultKind
    activity_id: str

    def __str__(self) -> str:
        return f"{self.kind.value} at {self.activity_id}"


@dataclass(frozen=True)
class WorkerSpec:
    """What a scenario's worker must be built with: pass each to `Worker`."""

    task_queue: str
    interceptors: Sequence[Interceptor]
    max_cached_workflows: int = 0


@dataclass
class Scenario:
    """One run of the saga under some faults, and how it ended."""

    faults: tuple[Fault, ...]
    handle: WorkflowHandle[Any, Any]
    result: Any = None
    error: BaseException | None = None
    """The run's failure (a WorkflowFailureError), or TimeoutError if it did not end."""
    activities: list[str] = field(default_factory=list)
    """Ids of the activity attempts its worker started, in order."""

    @property
    def completed(self) -> bool:
        """Whether the run returned a result."""
        return self.error is None

    @property
    def cancelled(self) -> bool:
        """Whether the run ended cancelled."""
        return isinstance(self.error, WorkflowFailureError) and isinstance(
            self.error.cause, CancelledError
        )

    def __str__(self) -> str:
        what = ", ".join(str(f) for f in self.faults) or "no fault"
        how = "completed" if self.completed else "cancelled" if self.cancelled else "failed"
        return f"{what}: {how}"


class SagaCheckFailed(AssertionError):
    """The invariant did not hold (or a run did not end) in one or more scenarios."""

    def __init__(self, failures: list[tuple[Scenario, BaseException]]) -> None:
        self.failures = failures
        lines = [f"- {s}: {type(e).__name__}: {e}" for s, e in failures]
        super().__init__(f"{len(failures)} scenario(s) broke the saga:\n" + "\n".join(lines))


@dataclass
class _Plan:
    faults: tuple[Fault, ...]
    seen: list[str] = field(default_factory=list)

    def fault_at(self, activity_id: str, attempt: int) -> Fault | None:
        if attempt != 1:
            return None
        return next((f for f in self.faults if f.activity_id == activity_id), None)


async def _lost() -> None:
    """A crashed worker's attempt: it never answers (until its worker shuts down)."""
    await asyncio.Event().wait()


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, plan: _Plan) -> None:
        super().__init__(next)
        self._plan = plan

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        self._plan.seen.append(info.activity_id)
        fault = self._plan.fault_at(info.activity_id, info.attempt)
        if fault is None:
            return await self.next.execute_activity(input)
        if fault.kind is FaultKind.FAIL:
            raise ApplicationError(
                f"injected failure ({fault})", type=INJECTED_FAILURE, non_retryable=True
            )
        if fault.kind is FaultKind.CANCEL:
            assert info.workflow_id is not None, "faults are injected into workflow activities"
            await activity.client().get_workflow_handle(info.workflow_id).cancel()
            return await self.next.execute_activity(input)
        if fault.kind is FaultKind.CRASH_AFTER:
            await self.next.execute_activity(input)
        await _lost()


class _Injector(Interceptor):
    def __init__(self, plan: _Plan) -> None:
        self._plan = plan

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self._plan)


def _is_compensation(activity_id: str) -> bool:
    return ":compensation:" in activity_id


async def check_saga(
    client: Client,
    *,
    start: Callable[[Client, str], Awaitable[WorkflowHandle[Any, Any]]],
    invariant: Callable[[Scenario], Awaitable[None]],
    worker: Callable[[WorkerSpec], Worker] | None = None,
    workflows: Sequence[type] = (),
    activities: Sequence[Callable[..., Any]] = (),
    kinds: Collection[FaultKind] = tuple(FaultKind),
    steps: Collection[str] | None = None,
    compensation_crashes: bool = True,
    concurrency: int = 1,
    run_timeout: timedelta = timedelta(minutes=2),
) -> list[Scenario]:
    """Run the saga under each fault and check ``invariant`` after each; returns the scenarios.

    ``start(client, task_queue)`` starts one run of the saga on that task queue and returns
    its handle. ``invariant(scenario)`` asserts what must hold once the run ended (for
    example: net money 0 unless it completed). Workers come from ``worker(spec)`` (give
    ``spec``'s task queue, interceptors and cache size to `Worker`), or are made from
    ``workflows`` and ``activities``. ``steps`` limits faults to those activity ids; a step
    that must succeed waits for an operator when failed for good, so leave it out of FAIL.
    A run that has not ended after ``run_timeout`` is terminated and counts as broken.
    Raises SagaCheckFailed listing every scenario that broke.
    """
    if worker is None and not workflows:
        raise ValueError("give worker= or workflows= (and activities=)")

    def build(spec: WorkerSpec) -> Worker:
        if worker is not None:
            return worker(spec)
        return Worker(
            client,
            task_queue=spec.task_queue,
            workflows=list(workflows),
            activities=list(activities),
            interceptors=list(spec.interceptors),
            max_cached_workflows=spec.max_cached_workflows,
        )

    async def run(faults: tuple[Fault, ...]) -> Scenario:
        plan = _Plan(faults)
        spec = WorkerSpec(f"saga-check-{uuid.uuid4().hex}", [_Injector(plan)])
        async with build(spec):
            handle = await start(client, spec.task_queue)
            scenario = Scenario(faults, handle, activities=plan.seen)
            try:
                wait = run_timeout.total_seconds()
                scenario.result = await asyncio.wait_for(handle.result(), wait)
            except WorkflowFailureError as err:
                scenario.error = err
            except TimeoutError as err:
                scenario.error = err
                await handle.terminate("saga check: the run did not end in time")
        return scenario

    failures: list[tuple[Scenario, BaseException]] = []

    async def checked(faults: tuple[Fault, ...], gate: asyncio.Semaphore) -> Scenario:
        async with gate:
            scenario = await run(faults)
            if isinstance(scenario.error, TimeoutError):
                failures.append((scenario, AssertionError(f"the run did not end in {run_timeout}")))
                return scenario
            try:
                await invariant(scenario)
            except AssertionError as err:
                failures.append((scenario, err))
            return scenario

    gate = asyncio.Semaphore(max(1, concurrency))
    baseline = await checked((), gate)
    forward = [
        a
        for a in dict.fromkeys(baseline.activities)
        if not _is_compensation(a) and (steps is None or a in steps)
    ]
    planned = [(Fault(kind, a),) for a in forward for kind in FaultKind if kind in kinds]
    scenarios = [baseline, *await asyncio.gather(*(checked(f, gate) for f in planned))]

    if compensation_crashes:
        rolled_back = [s for s in scenarios if s.faults and s.faults[0].kind is FaultKind.FAIL]
        if rolled_back:
            # The most compensations; of equals, the latest step (the most effects done).
            most = max(
                reversed(rolled_back), key=lambda s: sum(map(_is_compensation, s.activities))
            )
            undos = [a for a in dict.fromkeys(most.activities) if a.endswith(":compensation:1")]
            crashes = [
                (*most.faults, Fault(kind, a))
                for a in undos
                for kind in (FaultKind.CRASH_BEFORE, FaultKind.CRASH_AFTER)
                if kind in kinds
            ]
            scenarios += await asyncio.gather(*(checked(f, gate) for f in crashes))

    if failures:
        raise SagaCheckFailed(failures)
    return scenarios


__all__ = [
    "INJECTED_FAILURE",
    "Fault",
    "FaultKind",
    "SagaCheckFailed",
    "Scenario",
    "WorkerSpec",
    "check_saga",
]
