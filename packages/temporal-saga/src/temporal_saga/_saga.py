"""The saga: steps as activities, each with a compensation registered first.

Workflow code only: it reads time through `workflow.now()`, sleeps through the workflow,
and keeps no module state, so it runs the same in the SDK's sandbox and outside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)
from temporalio.workflow import ActivityCancellationType, VersioningIntent

from temporal_saga import metrics
from temporal_saga._names import activity_name, compensation_name, positional_arity
from temporal_saga.ledger import (
    CompensationContext,
    CompensationState,
    OperatorAction,
    OperatorDecision,
    StepKind,
    StepOutcome,
    StepRecord,
    StepState,
)
from temporal_saga.metrics import CompensationResult, RollbackReason

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")

NEEDS_OPERATOR_ATTRIBUTE = SearchAttributeKey.for_bool("SagaNeedsOperator")
"""Search attribute set while a step or compensation waits for an operator; register it."""

DEADLINE_ERROR = "SagaDeadlineExceeded"
"""Error type a saga that ran past its deadline ends with, after its rollback."""
COMPENSATION_ERROR = "SagaCompensationError"
"""Error type a saga ends with when a compensation was skipped or failed for good."""
STEP_SKIPPED_ERROR = "SagaStepSkipped"
"""Error type a step that must succeed raises when an operator skipped it."""
MAX_REASON_LENGTH = 500
"""The longest reason an operator's decision may carry (it is kept in the ledger, in every
query's answer): a longer one is refused by the update's validator."""


class OnExhausted(StrEnum):
    """What a saga does with a compensation that failed every attempt."""

    RAISE = "raise"
    """Mark it FAILED, go on with the others, end with SagaCompensationError."""
    WAIT_FOR_OPERATOR = "wait_for_operator"
    """Mark it NEEDS_OPERATOR, go on with the others, then wait for `Saga.decide`."""


@dataclass(frozen=True, kw_only=True)
class SagaOptions:
    """How a saga schedules its steps and compensations unless a step says otherwise."""

    step_timeout: timedelta = timedelta(seconds=30)
    """start_to_close timeout of each step that gives none."""
    step_retry: RetryPolicy | None = None
    """Retry policy of steps that give none; None is Temporal's default (retry until timeout)."""
    deadline: timedelta | None = None
    """Roll back, with a SagaDeadlineExceeded error, if the saga has not passed its pivot (or
    finished) by then."""
    compensation_timeout: timedelta = timedelta(seconds=30)
    """start_to_close timeout of each compensation attempt."""
    compensation_attempts: int = 5
    """Attempts of a compensation (and of a retriable step's operator gate) before giving up."""
    compensation_backoff: timedelta = timedelta(seconds=1)
    """Wait after the first failed attempt; doubles after each, up to 1 minute."""
    parallel_compensation: bool = False
    """Run all compensations at once instead of newest first."""
    on_exhausted: OnExhausted = OnExhausted.RAISE
    """What to do with a compensation that failed every attempt."""
    needs_operator_attribute: SearchAttributeKey[bool] | None = None
    """Bool search attribute to keep set while an operator is needed (NEEDS_OPERATOR_ATTRIBUTE)."""
    local_activities: bool = False
    """Run steps and compensations as local activities (a step that heartbeats, or names a task
    queue, stays regular). Semantics and the ledger are the same."""

    def __post_init__(self) -> None:
        if self.compensation_attempts < 1:
            raise ValueError("compensation_attempts must be at least 1")


class _Same:
    """Marker: the compensation takes the step's own arguments."""

    def __repr__(self) -> str:
        return "SAME_AS_STEP"


_SAME_AS_STEP: Any = _Same()
_NO_ARG: Any = object()


@dataclass
class _Compensation:
    record: StepRecord
    call: Callable[[CompensationContext], Awaitable[Any]]
    decision: OperatorDecision | None = None


@dataclass
class _Waiting:
    """A step that must succeed, failed for good, waiting for an operator's decision."""

    record: StepRecord
    decision: OperatorDecision | None = None


@dataclass
class _Failure:
    error: BaseException
    cancelled: bool = False

    @property
    def reason(self) -> RollbackReason:
        if self.cancelled:
            return RollbackReason.CANCELLATION
        if isinstance(self.error, ApplicationError) and self.error.type == DEADLINE_ERROR:
            return RollbackReason.DEADLINE
        return RollbackReason.FAILURE


@dataclass
class _Options:
    """One activity call's options, as `workflow.start_activity` takes them."""

    regular: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] | None = None
    """The same for `workflow.start_local_activity`; None when the call must stay regular."""


def describe_failure(err: BaseException) -> str:
    """'Type: message' of the innermost cause: the error a person wants to see."""
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, ApplicationError) and root.type:
        return f"{root.type}: {root.message}"
    if isinstance(root, asyncio.CancelledError) or is_cancelled_exception(root):
        return "cancelled"
    return f"{type(root).__name__}: {root}"


class Saga:
    """A saga inside one workflow run: steps, their compensations, and the rollback.

    Use it as ``async with saga:`` around the steps. On an error, a cancellation or the
    deadline inside the block, every registered compensation runs (newest first, or all at
    once), shielded from cancellation, and the original error is re-raised. Workflow code
    only; one instance per run.
    """

    def __init__(self, options: SagaOptions | None = None) -> None:
        self._options = options or SagaOptions()
        self._records: list[StepRecord] = []
        self._compensations: list[_Compensation] = []
        self._waiting: list[_Waiting] = []
        self._deadline_at: datetime | None = None
        self._entered = False
        self._pivot: str | None = None
        self._cancel_requested = False
        self._operator_flag = False

    # --- what the saga shows -------------------------------------------------------------

    @property
    def execution(self) -> str:
        """This saga's execution: the workflow id and the first run id of its chain.

        Stable across activity retries, worker crashes, resets and continue-as-new; new for
        every new start, even of the same workflow id. Record it with each effect, so that
        another execution of the same business key cannot reuse or undo it.
        """
        info = workflow.info()
        return f"{info.workflow_id}/{info.first_execution_run_id}"

    @property
    def ledger(self) -> list[StepRecord]:
        """Every step so far, in the order it started (expose it with a query)."""
        return list(self._records)

    @property
    def needs_operator(self) -> list[str]:
        """Steps whose compensation, or which themselves, wait for an operator's decision."""
        return [
            r.step
            for r in self._records
            if r.state is StepState.NEEDS_OPERATOR
            or r.compensation_state is CompensationState.NEEDS_OPERATOR
        ]

    @property
    def committed(self) -> bool:
        """Whether a pivot step succeeded: from then on the saga only goes forward."""
        return self._pivot is not None

    @property
    def cancel_requested(self) -> bool:
        """Whether a cancellation arrived after the pivot (and so was not acted on)."""
        return self._cancel_requested

    # --- the block -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Saga is entered once per workflow run")
        self._entered = True
        if self._options.deadline is not None:
            self._deadline_at = workflow.now() + self._options.deadline
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        # Only errors and cancellation roll back: GeneratorExit (a run evicted from the
        # worker's cache) and the like must pass through without awaiting anything.
        if exc is None or not isinstance(exc, Exception | asyncio.CancelledError):
            return False
        cancelled = isinstance(exc, asyncio.CancelledError) or is_cancelled_exception(exc)
        if self.committed:
            workflow.logger.warning(
                "saga past its pivot %s ended with %s: nothing is compensated",
                self._pivot,
                describe_failure(exc),
            )
            return False
        failure = _Failure(exc, cancelled=cancelled)
        await self._roll_back(failure)
        final = self._final_error(failure)
        if final is exc:
            return False
        raise final from exc

    async def compensate(self) -> None:
        """Run every registered compensation now (newest first, or all at once); idempotent.

        For a saga that decides to roll back without an error. Raises ApplicationError
        SagaCompensationError if a compensation was skipped or failed for good.
        """
        if self.committed:
            raise RuntimeError(f"the saga passed its pivot {self._pivot!r}: it cannot roll back")
        failure = _Failure(ApplicationError("compensate() was called", type="SagaCompensate"))
        await self._roll_back(failure)
        final = self._final_error(failure)
        if final is not failure.error:
            raise final

    async def _roll_back(self, failure: _Failure) -> None:
        failed_at = workflow.now()
        metrics.rollback_started(failure.reason)
        await self._shielded(self._compensate())
        metrics.rollback_finished(failure.reason, (workflow.now() - failed_at).total_seconds())

    # --- steps ---------------------------------------------------------------------------

    @overload
    async def execute_activity(
        self,
        activity: Callable[[], Awaitable[ResultT]],
        *,
        step: str | None = None,
        kind: StepKind = StepKind.COMPENSATABLE,
        compensate_with: Callable[..., Awaitable[Any]] | str | None = None,
        compensation_arg: Any = _SAME_AS_STEP,
        compensation_args: Sequence[Any] | None = None,
        task_queue: str | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        cancellation_type: ActivityCancellationType = (
            ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        ),
        versioning_intent: VersioningIntent | None = None,
        summary: str | None = None,
        priority: Priority = Priority.default,
    ) -> ResultT: ...

    @overload
    async def execute_activity(
        self,
        activity: Callable[[ArgT], Awaitable[ResultT]] | Callable[[Any, ArgT], Awaitable[ResultT]],
        arg: ArgT,
        *,
        step: str | None = None,
        kind: StepKind = StepKind.COMPENSATABLE,
        compensate_with: Callable[..., Awaitable[Any]] | str | None = None,
        compensation_arg: Any = _SAME_AS_STEP,
        compensation_args: Sequence[Any] | None = None,
        task_queue: str | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        cancellation_type: ActivityCancellationType = (
            ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        ),
        versioning_intent: VersioningIntent | None = None,
        summary: str | None = None,
        priority: Priority = Priority.default,
    ) -> ResultT: ...

    @overload
    async def execute_activity(
        self,
        activity: Callable[..., Awaitable[Any]] | str,
        *,
        args: Sequence[Any],
        step: str | None = None,
        kind: StepKind = StepKind.COMPENSATABLE,
        compensate_with: Callable[..., Awaitable[Any]] | str | None = None,
        compensation_arg: Any = _SAME_AS_STEP,
        compensation_args: Sequence[Any] | None = None,
        task_queue: str | None = None,
        result_type: type | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        cancellation_type: ActivityCancellationType = (
            ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        ),
        versioning_intent: VersioningIntent | None = None,
        summary: str | None = None,
        priority: Priority = Priority.default,
    ) -> Any: ...

    async def execute_activity(
        self,
        activity: Callable[..., Awaitable[Any]] | str,
        arg: Any = _NO_ARG,
        *,
        args: Sequence[Any] = (),
        step: str | None = None,
        kind: StepKind = StepKind.COMPENSATABLE,
        compensate_with: Callable[..., Awaitable[Any]] | str | None = None,
        compensation_arg: Any = _SAME_AS_STEP,
        compensation_args: Sequence[Any] | None = None,
        task_queue: str | None = None,
        result_type: type | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        cancellation_type: ActivityCancellationType = (
            ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        ),
        versioning_intent: VersioningIntent | None = None,
        summary: str | None = None,
        priority: Priority = Priority.default,
    ) -> Any:
        """Run ``activity`` as a saga step, as `workflow.execute_activity` would.

        ``step`` names the step (default: the activity type) and is the activity's id.
        ``compensate_with`` is registered before the step runs and is called, on rollback,
        with the step's own arguments (or ``compensation_arg``/``compensation_args``), plus
        a `CompensationContext` if it takes one parameter more. ``kind`` makes it a pivot
        (no compensation; once it succeeds the saga goes only forward) or a step that must
        succeed (retriable: after its attempts, it waits for an operator). Every other
        keyword is the SDK's activity option of the same name.

        Raises the step's error (an ActivityError), asyncio.CancelledError if the run is
        cancelled meanwhile, or ApplicationError SagaDeadlineExceeded past the deadline.
        """
        if not self._entered:
            raise RuntimeError("run saga steps inside `async with saga:`")
        step_args = self._step_args(arg, args)
        name = step or activity_name(activity)
        if any(r.step == name for r in self._records):
            raise ValueError(f"saga step {name!r} already ran in this saga: give it another step=")
        if self.committed:
            if compensate_with is not None:
                raise ValueError(
                    f"step {name!r} comes after the pivot {self._pivot!r}: it cannot be "
                    "compensated, only retried"
                )
            kind = StepKind.RETRIABLE
        if kind is StepKind.PIVOT and compensate_with is not None:
            raise ValueError(f"pivot step {name!r} takes no compensation: it is never undone")
        if compensation_args is not None and compensation_arg is not _SAME_AS_STEP:
            raise ValueError("give compensation_arg or compensation_args, not both")
        remaining = None if self.committed else self._remaining()

        record = StepRecord(
            step=name,
            activity=activity_name(activity),
            compensation=activity_name(compensate_with) if compensate_with else None,
            compensation_state=(
                CompensationState.REGISTERED if compensate_with else CompensationState.NONE
            ),
            started_at=workflow.now(),
            kind=kind,
        )
        self._records.append(record)
        if compensate_with is not None:
            if compensation_args is not None:
                comp_args = list(compensation_args)
            elif compensation_arg is not _SAME_AS_STEP:
                comp_args = [compensation_arg]
            else:
                comp_args = list(step_args)
            self._compensations.append(
                _Compensation(record, self._activity_compensation(compensate_with, comp_args))
            )
        common: dict[str, Any] = {
            "activity_id": name,
            "start_to_close_timeout": start_to_close_timeout
            or (None if schedule_to_close_timeout else self._options.step_timeout),
            "schedule_to_close_timeout": _earliest(schedule_to_close_timeout, remaining),
            "schedule_to_start_timeout": schedule_to_start_timeout,
            "retry_policy": retry_policy or self._options.step_retry,
            "cancellation_type": cancellation_type,
            "summary": summary,
        }
        if result_type is not None:
            common["result_type"] = result_type
        options = _Options(
            regular={
                **common,
                "task_queue": task_queue,
                "heartbeat_timeout": heartbeat_timeout,
                "versioning_intent": versioning_intent,
                "priority": priority,
            },
            local=(
                dict(common)
                if self._options.local_activities
                and heartbeat_timeout is None
                and task_queue is None
                else None
            ),
        )
        while True:
            try:
                result = await self._run_step(record, activity, step_args, options)
            except (ActivityError, FailureError) as err:
                if kind is not StepKind.RETRIABLE or is_cancelled_exception(err):
                    raise
                if self._past_deadline() and not self.committed:
                    raise
                await self._operator_gate(record, err)
                continue
            if kind is StepKind.PIVOT:
                self._pivot = name
            return result

    async def _run_step(
        self,
        record: StepRecord,
        activity: Callable[..., Awaitable[Any]] | str,
        step_args: list[Any],
        options: _Options,
    ) -> Any:
        record.state, record.outcome, record.error = StepState.RUNNING, None, None
        if options.local is not None:
            handle = workflow.start_local_activity(activity, args=step_args, **options.local)
        else:
            handle = workflow.start_activity(activity, args=step_args, **options.regular)
        try:
            # Shielded: a step that completes despite a cancellation request would otherwise
            # swallow the cancellation, and the saga would carry on as if none came.
            result = await asyncio.shield(handle)
        except asyncio.CancelledError:
            if self.committed:
                # Past the pivot the saga only goes forward: note the request, finish the step.
                self._cancel_requested = True
                workflow.logger.info("cancellation after the pivot: finishing step %s", record.step)
                return await self._finish_committed(record, handle)
            handle.cancel()
            record.outcome = await self._outcome_after_cancel(handle)
            self._end_step(record, StepState.CANCELLED, error="cancelled")
            raise
        except (ActivityError, FailureError) as err:
            # A local activity's failure arrives as its own error, not in an ActivityError.
            if is_cancelled_exception(err):
                record.outcome = StepOutcome.UNKNOWN
                self._end_step(record, StepState.CANCELLED, error="cancelled")
                raise asyncio.CancelledError() from err
            cause = err.__cause__ if isinstance(err, ActivityError) else err
            timed_out = isinstance(cause, TemporalTimeoutError)
            record.outcome = StepOutcome.UNKNOWN if timed_out else StepOutcome.FAILED
            self._end_step(record, StepState.FAILED, error=describe_failure(err))
            if timed_out and self._past_deadline() and not self.committed:
                raise self._deadline_error() from err
            raise
        record.outcome = StepOutcome.SUCCEEDED
        self._end_step(record, StepState.SUCCEEDED)
        return result

    async def _finish_committed(
        self, record: StepRecord, handle: workflow.ActivityHandle[Any]
    ) -> Any:
        while True:
            try:
                result = await asyncio.shield(handle)
            except asyncio.CancelledError:
                continue
            record.outcome = StepOutcome.SUCCEEDED
            self._end_step(record, StepState.SUCCEEDED)
            return result

    def _end_step(self, record: StepRecord, state: StepState, *, error: str | None = None) -> None:
        record.state, record.error, record.finished_at = state, error, workflow.now()
        metrics.step_ended(record.step, state)

    @staticmethod
    async def _outcome_after_cancel(handle: workflow.ActivityHandle[Any]) -> StepOutcome:
        """How a step asked to stop actually ended: done, failed, or stopped midway."""
        try:
            await handle
        except (ActivityError, FailureError) as err:
            return StepOutcome.UNKNOWN if is_cancelled_exception(err) else StepOutcome.FAILED
        except asyncio.CancelledError:
            return StepOutcome.UNKNOWN
        return StepOutcome.SUCCEEDED

    @staticmethod
    def _step_args(arg: Any, args: Sequence[Any]) -> list[Any]:
        if arg is not _NO_ARG and args:
            raise ValueError("give arg or args=, not both")
        return [arg] if arg is not _NO_ARG else list(args)

    def _activity_compensation(
        self, compensation: Callable[..., Awaitable[Any]] | str, comp_args: list[Any]
    ) -> Callable[[CompensationContext], Awaitable[Any]]:
        """How each attempt of an activity compensation is scheduled.

        One given by name is always passed the context (its parameters cannot be read).
        """
        arity = None if isinstance(compensation, str) else positional_arity(compensation)
        with_context = arity is None or arity == len(comp_args) + 1

        async def attempt(context: CompensationContext) -> Any:
            options: dict[str, Any] = {
                "args": [*comp_args, context] if with_context else comp_args,
                "activity_id": f"{context.step}:compensation:{context.attempt}",
                "start_to_close_timeout": self._options.compensation_timeout,
                # The saga counts and spaces the attempts itself, for the ledger.
                "retry_policy": RetryPolicy(maximum_attempts=1),
            }
            if self._options.local_activities:
                return await workflow.execute_local_activity(compensation, **options)
            return await workflow.execute_activity(compensation, **options)

        return attempt

    def add_compensation(
        self, compensation: Callable[..., Awaitable[Any]], /, *args: Any, step: str | None = None
    ) -> None:
        """Register ``compensation(*args)``, any workflow coroutine, to run on rollback.

        For undoing what is not one activity: a child workflow, a signal to another workflow,
        a local activity (give options with ``functools.partial``). It is also passed a
        `CompensationContext` if it takes one parameter more than ``args``. Each attempt
        calls it again. It is recorded in the ledger as a step of its own, done when added,
        named ``step`` (default: the coroutine's name).
        """
        if not self._entered:
            raise RuntimeError("add compensations inside `async with saga:`")
        if self.committed:
            raise ValueError(f"the saga passed its pivot {self._pivot!r}: nothing is undone now")
        label = compensation_name(compensation, args)
        taken = {r.step for r in self._records}
        if step is not None and step in taken:
            raise ValueError(f"saga step {step!r} already exists in this saga")
        name = step or next(
            candidate
            for n in range(1, len(taken) + 2)
            if (candidate := label if n == 1 else f"{label}#{n}") not in taken
        )
        now = workflow.now()
        record = StepRecord(
            step=name,
            activity=None,
            compensation=label,
            state=StepState.SUCCEEDED,
            outcome=StepOutcome.SUCCEEDED,
            compensation_state=CompensationState.REGISTERED,
            started_at=now,
            finished_at=now,
        )
        self._records.append(record)
        with_context = positional_arity(compensation) == len(args) + 1

        async def attempt(context: CompensationContext) -> Any:
            return await (compensation(*args, context) if with_context else compensation(*args))

        self._compensations.append(_Compensation(record, attempt))

    async def sleep(self, duration: timedelta) -> None:
        """A durable timer that the saga's deadline cuts short (with its error)."""
        remaining = None if self.committed else self._remaining()
        if remaining is not None and remaining <= duration:
            await workflow.sleep(remaining)
            raise self._deadline_error()
        await workflow.sleep(duration)

    # --- operators -----------------------------------------------------------------------

    def validate_decision(self, decision: OperatorDecision) -> None:
        """Raise ValueError if ``decision`` cannot apply now (call it from an update validator)."""
        self._waiting_for(decision)

    async def decide(self, decision: OperatorDecision) -> StepRecord:
        """Carry out an operator's decision (from an update); returns the step once it settles."""
        waiting = self._waiting_for(decision)
        waiting.decision = decision
        record = waiting.record
        await workflow.wait_condition(
            lambda: (
                waiting.decision is None
                and record.compensation_state is not CompensationState.RUNNING
                and record.state is not StepState.RUNNING
            )
        )
        return record

    def _waiting_for(self, decision: OperatorDecision) -> _Compensation | _Waiting:
        if decision.action is OperatorAction.SKIP and not (decision.reason or "").strip():
            raise ValueError("a reason is required to skip")
        if len(decision.reason or "") > MAX_REASON_LENGTH:
            raise ValueError(
                f"the reason is {len(decision.reason or '')} characters; at most "
                f"{MAX_REASON_LENGTH} characters"
            )
        waiting: list[_Compensation | _Waiting] = [
            c
            for c in self._compensations
            if c.record.compensation_state is CompensationState.NEEDS_OPERATOR
            and c.decision is None
        ]
        waiting += [
            w
            for w in self._waiting
            if w.record.state is StepState.NEEDS_OPERATOR and w.decision is None
        ]
        if decision.step is not None:
            waiting = [w for w in waiting if w.record.step == decision.step]
        if not waiting:
            what = f"step {decision.step!r}" if decision.step else "any step"
            raise ValueError(f"no compensation of {what} is waiting for an operator")
        if len(waiting) > 1:
            steps = ", ".join(w.record.step for w in waiting)
            raise ValueError(f"several steps wait ({steps}): say which step")
        return waiting[0]

    async def _operator_gate(self, record: StepRecord, err: BaseException) -> None:
        """A step that must succeed failed for good: wait for a person to retry or skip it."""
        record.state = StepState.NEEDS_OPERATOR
        waiting = _Waiting(record)
        self._waiting.append(waiting)
        workflow.logger.error(
            "step %s must succeed and failed: it needs an operator (%s)",
            record.step,
            describe_failure(err),
            extra={"saga_step": record.step},
        )
        self._flag_operator()
        while waiting.decision is None:
            remaining = None if self.committed else self._remaining()
            try:
                await workflow.wait_condition(
                    lambda: waiting.decision is not None, timeout=remaining
                )
            except (asyncio.CancelledError, TimeoutError) as stop:
                if self.committed:  # past the pivot: note it, keep waiting for a person
                    self._cancel_requested = True
                    continue
                self._waiting.remove(waiting)
                record.state = StepState.FAILED
                self._flag_operator()
                if isinstance(stop, TimeoutError):
                    raise self._deadline_error() from err
                raise
        self._waiting.remove(waiting)
        decision = waiting.decision
        assert decision is not None
        if decision.action is OperatorAction.SKIP:
            record.state = StepState.SKIPPED
            record.operator_note = f"skipped by operator: {decision.reason}"
            record.finished_at = workflow.now()
        else:
            record.operator_note = "retried by operator"
        waiting.decision = None
        self._flag_operator()
        if decision.action is OperatorAction.SKIP:
            raise ApplicationError(
                f"step {record.step} was skipped by an operator: {decision.reason}",
                {"step": record.step, "error": record.error, "reason": decision.reason},
                type=STEP_SKIPPED_ERROR,
                non_retryable=True,
            ) from err

    # --- compensation --------------------------------------------------------------------

    async def _compensate(self) -> None:
        pending = [
            c
            for c in reversed(self._compensations)
            if c.record.compensation_state is CompensationState.REGISTERED
        ]
        attempts = self._options.compensation_attempts
        if self._options.parallel_compensation:
            await asyncio.gather(*(self._attempt(c, attempts) for c in pending))
        else:
            for comp in pending:
                await self._attempt(comp, attempts)
        # Compensations that need a person wait for one only once the others have run.
        stuck = [
            c for c in pending if c.record.compensation_state is CompensationState.NEEDS_OPERATOR
        ]
        if stuck:
            await asyncio.gather(*(self._await_operator(c) for c in stuck))

    async def _attempt(self, comp: _Compensation, attempts: int) -> None:
        record = comp.record
        record.compensation_started_at = record.compensation_started_at or workflow.now()
        for remaining_attempts in range(attempts - 1, -1, -1):
            record.compensation_state = CompensationState.RUNNING
            record.compensation_attempts += 1
            metrics.compensation_attempted(record.step)
            context = CompensationContext(
                step=record.step,
                outcome=record.outcome or StepOutcome.UNKNOWN,
                attempt=record.compensation_attempts,
            )
            try:
                await comp.call(context)
            except FailureError as err:  # a local activity's comes unwrapped
                record.compensation_error = describe_failure(err)
                workflow.logger.warning(
                    "compensation %s of step %s failed (attempt %d): %s",
                    record.compensation,
                    record.step,
                    context.attempt,
                    record.compensation_error,
                    extra={"saga_step": record.step, "saga_attempt": context.attempt},
                )
                if remaining_attempts:
                    record.compensation_state = CompensationState.RETRYING
                    metrics.compensation_result(record.step, CompensationResult.RETRIED)
                    await workflow.sleep(self._backoff(attempts - remaining_attempts))
                continue
            record.compensation_state = CompensationState.COMPENSATED
            record.compensated_at = workflow.now()
            metrics.compensation_result(record.step, CompensationResult.COMPENSATED)
            return
        if self._options.on_exhausted is OnExhausted.RAISE:
            record.compensation_state = CompensationState.FAILED
            record.compensated_at = workflow.now()
            metrics.compensation_result(record.step, CompensationResult.FAILED)
            return
        record.compensation_state = CompensationState.NEEDS_OPERATOR
        metrics.compensation_result(record.step, CompensationResult.NEEDS_OPERATOR)
        workflow.logger.error(
            "compensation %s of step %s needs an operator after %d attempts",
            record.compensation,
            record.step,
            record.compensation_attempts,
            extra={"saga_step": record.step, "saga_attempt": record.compensation_attempts},
        )
        self._flag_operator()

    async def _await_operator(self, comp: _Compensation) -> None:
        record = comp.record
        while record.compensation_state is CompensationState.NEEDS_OPERATOR:
            await workflow.wait_condition(lambda: comp.decision is not None)
            decision = comp.decision
            assert decision is not None
            if decision.action is OperatorAction.SKIP:
                record.compensation_state = CompensationState.SKIPPED
                record.operator_note = f"skipped by operator: {decision.reason}"
                record.compensated_at = workflow.now()
                metrics.compensation_result(record.step, CompensationResult.SKIPPED)
            else:
                record.operator_note = "retried by operator"
                await self._attempt(comp, 1)
            comp.decision = None
            self._flag_operator()

    def _flag_operator(self) -> None:
        key = self._options.needs_operator_attribute
        needed = bool(self.needs_operator)
        if key is not None and needed != self._operator_flag:
            workflow.upsert_search_attributes([key.value_set(needed)])
        self._operator_flag = needed

    def _backoff(self, failed_attempts: int) -> timedelta:
        backoff: timedelta = self._options.compensation_backoff * 2 ** (failed_attempts - 1)
        return min(backoff, timedelta(minutes=1))

    async def _shielded(self, work: Awaitable[None]) -> None:
        # Compensations must finish even if a cancellation arrives while they run.
        task = asyncio.ensure_future(work)
        while True:
            try:
                await asyncio.shield(task)
                return
            except asyncio.CancelledError:
                if task.done():
                    raise
                workflow.logger.info("cancellation requested during compensation; finishing it")

    # --- endings -------------------------------------------------------------------------

    def _final_error(self, failure: _Failure) -> BaseException:
        not_undone = [
            r
            for r in self._records
            if r.compensation_state in (CompensationState.SKIPPED, CompensationState.FAILED)
        ]
        if not_undone:
            original = "cancelled" if failure.cancelled else describe_failure(failure.error)
            undone = "; ".join(
                f"{r.step}: {r.compensation_error} ({r.operator_note or 'failed for good'})"
                for r in not_undone
            )
            return ApplicationError(
                f"rolled back after '{original}', but not every compensation ran: {undone}",
                {
                    "original": original,
                    "compensation_failures": [
                        {
                            "step": r.step,
                            "compensation": r.compensation,
                            "error": r.compensation_error,
                            "attempts": r.compensation_attempts,
                            "operator_note": r.operator_note,
                        }
                        for r in not_undone
                    ],
                },
                type=COMPENSATION_ERROR,
                non_retryable=True,
            )
        if failure.cancelled and not isinstance(failure.error, asyncio.CancelledError):
            return asyncio.CancelledError()
        return failure.error

    def _remaining(self) -> timedelta | None:
        if self._deadline_at is None:
            return None
        remaining = self._deadline_at - workflow.now()
        if remaining <= timedelta(0):
            raise self._deadline_error()
        return remaining

    def _past_deadline(self) -> bool:
        return self._deadline_at is not None and workflow.now() >= self._deadline_at

    def _deadline_error(self) -> ApplicationError:
        return ApplicationError(
            f"saga not finished within its deadline of {self._options.deadline}",
            type=DEADLINE_ERROR,
            non_retryable=True,
        )


def _earliest(*timeouts: timedelta | None) -> timedelta | None:
    given = [t for t in timeouts if t is not None]
    return min(given) if given else None


__all__ = [
    "COMPENSATION_ERROR",
    "DEADLINE_ERROR",
    "NEEDS_OPERATOR_ATTRIBUTE",
    "STEP_SKIPPED_ERROR",
    "OnExhausted",
    "Saga",
    "SagaOptions",
    "describe_failure",
]
