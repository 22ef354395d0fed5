"""The saga: run steps as activities, each with a compensation registered first.

Usage inside a workflow::

    saga = Saga()
    async with saga:  # on an exception, runs the registered compensations, then re-raises
        receipt = await saga.step(
            "reserve", Stock.reserve, request,
            compensation=Stock.release, compensation_arg=request,
        )
        await saga.step("charge", Payments.charge, charge, compensation=Payments.refund, ...)

Each step's activity id is the step name, so activities can key their idempotency on
``(workflow id, step)``. A compensation is registered *before* its step runs: when the step's
outcome is unknown (a timeout, a crash) the compensation still runs and must find out for
itself, from that key, whether there is anything to undo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from pizza_saga.saga.ledger import CompensationState, StepRecord, StepState

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
CompArgT = TypeVar("CompArgT")

# An activity reference: an @activity.defn function, or a method of an activity class.
Action = Callable[[ArgT], Awaitable[ResultT]] | Callable[[Any, ArgT], Awaitable[ResultT]]


@dataclass(frozen=True)
class SagaOptions:
    """How steps and compensations are scheduled unless a step says otherwise."""

    step_timeout: timedelta = timedelta(seconds=30)
    """start_to_close timeout of each forward step."""
    step_retry: RetryPolicy | None = None
    """Retry policy of forward steps; None is Temporal's default (retry until timeout)."""
    compensation_timeout: timedelta = timedelta(seconds=30)
    compensation_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=10,
        )
    )
    """Compensations retry with backoff; one that still fails is recorded and skipped."""


@dataclass
class _Compensation:
    record: StepRecord
    activity: Callable[..., Awaitable[Any]]
    arg: Any


def activity_name(fn: Callable[..., Any]) -> str:
    """The activity type name Temporal uses for an @activity.defn callable."""
    defn = activity._Definition.from_callable(fn)
    if defn is None or defn.name is None:
        raise TypeError(f"{fn!r} is not an @activity.defn activity")
    return defn.name


def describe_failure(err: BaseException) -> str:
    """'Type: message' of the innermost cause, the error a person wants to see."""
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, ApplicationError) and root.type:
        return f"{root.type}: {root.message}"
    return f"{type(root).__name__}: {root}"


class Saga:
    """Runs saga steps and, on failure, their compensations in reverse order.

    Deterministic: use it only inside workflow code. One instance per workflow run.
    """

    def __init__(self, options: SagaOptions | None = None) -> None:
        self._options = options or SagaOptions()
        self._records: list[StepRecord] = []
        self._compensations: list[_Compensation] = []

    @property
    def ledger(self) -> list[StepRecord]:
        """Every step so far, in the order it started."""
        return list(self._records)

    async def step(
        self,
        name: str,
        action: Action[ArgT, ResultT],
        arg: ArgT,
        *,
        compensation: Action[CompArgT, Any] | None = None,
        compensation_arg: CompArgT | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> ResultT:
        """Register ``compensation`` (if any), then run ``action(arg)`` as activity ``name``."""
        if any(r.step == name for r in self._records):
            raise ValueError(f"saga step {name!r} already ran in this saga")
        record = StepRecord(
            step=name,
            activity=activity_name(action),
            compensation=activity_name(compensation) if compensation else None,
            compensation_state=(
                CompensationState.REGISTERED if compensation else CompensationState.NONE
            ),
            started_at=workflow.now(),
        )
        self._records.append(record)
        if compensation is not None:
            self._compensations.append(_Compensation(record, compensation, compensation_arg))
        try:
            result: ResultT = await workflow.execute_activity(
                cast(Callable[..., Awaitable[ResultT]], action),
                arg,
                activity_id=name,
                summary=f"saga step {name}",
                start_to_close_timeout=start_to_close_timeout or self._options.step_timeout,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=retry_policy or self._options.step_retry,
            )
        except ActivityError as err:
            record.state = StepState.FAILED
            record.error = describe_failure(err)
            record.finished_at = workflow.now()
            raise
        record.state = StepState.SUCCEEDED
        record.finished_at = workflow.now()
        return result

    async def compensate(self) -> None:
        """Run every registered compensation once, newest first.

        A compensation that fails after its retries is recorded in the ledger and the
        rollback goes on: one stuck undo must not leave the others undone.
        """
        for comp in reversed(self._compensations):
            if comp.record.compensation_state is not CompensationState.REGISTERED:
                continue
            comp.record.compensation_state = CompensationState.RUNNING
            try:
                await workflow.execute_activity(
                    comp.activity,
                    comp.arg,
                    activity_id=f"{comp.record.step}:compensation",
                    summary=f"compensation of saga step {comp.record.step}",
                    start_to_close_timeout=self._options.compensation_timeout,
                    retry_policy=self._options.compensation_retry,
                )
            except ActivityError as err:
                comp.record.compensation_state = CompensationState.FAILED
                comp.record.compensation_error = describe_failure(err)
                workflow.logger.error(
                    "compensation %s of step %s failed: %s",
                    comp.record.compensation,
                    comp.record.step,
                    comp.record.compensation_error,
                )
            else:
                comp.record.compensation_state = CompensationState.COMPENSATED
            comp.record.compensated_at = workflow.now()

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        # Only errors roll back; a cancelled workflow is not rolled back here (yet).
        if exc_type is not None and issubclass(exc_type, Exception):
            await self.compensate()
