"""The saga: run steps as activities, each with a compensation registered first.

Usage inside a workflow::

    saga = Saga(SagaOptions(deadline=timedelta(minutes=30)))

    async def body() -> Receipt:
        await saga.step("reserve", Stock.reserve, request,
                        compensation=Stock.release, compensation_arg=request)
        return await saga.step("charge", Payments.charge, charge,
                               compensation=Payments.refund, compensation_arg=refund)

    receipt = await saga.run(body)  # on failure, cancellation or deadline: roll back

Each step's activity id is the step name, so activities can key their idempotency on
``(workflow id, step)``. A compensation is registered *before* its step runs: when the step's
outcome is unknown (a timeout, a crash, a cancellation) the compensation still runs, is told
the outcome, and finds out from that key whether there is anything to undo.

Compensations run newest first (or all at once), shielded from cancellation. One that fails
every attempt waits, visibly, for an operator's decision (`decide`) while the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    TimeoutError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType

from pizza_saga.saga import metrics
from pizza_saga.saga.ledger import (
    CompensationContext,
    CompensationState,
    OperatorAction,
    OperatorDecision,
    StepOutcome,
    StepRecord,
    StepState,
)
from pizza_saga.saga.metrics import CompensationResult, RollbackReason

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
CompArgT = TypeVar("CompArgT")
T = TypeVar("T")

# An activity reference: an @activity.defn function, or a method of an activity class.
Action = Callable[[ArgT], Awaitable[ResultT]] | Callable[[Any, ArgT], Awaitable[ResultT]]

NEEDS_OPERATOR_ATTRIBUTE = SearchAttributeKey.for_bool("SagaNeedsOperator")
"""Search attribute set while a compensation waits for an operator; register it (Bool)."""

DEADLINE_ERROR = "SagaDeadlineExceeded"
COMPENSATION_ERROR = "SagaCompensationError"


Compensation = (
    Callable[[CompArgT, CompensationContext], Awaitable[Any]]
    | Callable[[Any, CompArgT, CompensationContext], Awaitable[Any]]
)
"""A compensation activity: called with its argument and a CompensationContext."""


@dataclass(frozen=True)
class SagaOptions:
    """How steps and compensations are scheduled unless a step says otherwise."""

    step_timeout: timedelta = timedelta(seconds=30)
    """start_to_close timeout of each forward step."""
    step_retry: RetryPolicy | None = None
    """Retry policy of forward steps; None is Temporal's default (retry until timeout)."""
    deadline: timedelta | None = None
    """Roll back, with a SagaDeadlineExceeded error, if the saga has not finished by then."""
    compensation_timeout: timedelta = timedelta(seconds=30)
    compensation_attempts: int = 5
    """Attempts before a failing compensation waits for an operator."""
    compensation_backoff: timedelta = timedelta(seconds=1)
    """Wait after the first failed attempt; doubles after each, up to 1 minute."""
    parallel_compensation: bool = False
    """Run all compensations at once instead of newest first."""
    local_activities: bool = False
    """Run steps and compensations as local activities: fewer round trips to the server and
    fewer billable actions. Steps with a heartbeat timeout stay regular activities (local
    activities cannot heartbeat). Semantics and the ledger are the same."""
    needs_operator_attribute: SearchAttributeKey[bool] | None = None
    """Search attribute to set while an operator is needed (e.g. NEEDS_OPERATOR_ATTRIBUTE)."""


@dataclass
class _Compensation:
    record: StepRecord
    activity: Callable[..., Awaitable[Any]]
    arg: Any
    decision: OperatorDecision | None = None


@dataclass
class _Failure:
    """Why the saga rolled back."""

    error: BaseException
    cancelled: bool = False

    @property
    def reason(self) -> RollbackReason:
        """Why the saga rolls back, as its metrics say it."""
        if self.cancelled:
            return RollbackReason.CANCELLATION
        if isinstance(self.error, ApplicationError) and self.error.type == DEADLINE_ERROR:
            return RollbackReason.DEADLINE
        return RollbackReason.FAILURE


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
    if isinstance(root, asyncio.CancelledError) or is_cancelled_exception(root):
        return "cancelled"
    return f"{type(root).__name__}: {root}"


class Saga:
    """Runs saga steps and, on failure, their compensations.

    Deterministic: use it only inside workflow code. One instance per workflow run.
    """

    def __init__(self, options: SagaOptions | None = None) -> None:
        self._options = options or SagaOptions()
        self._records: list[StepRecord] = []
        self._compensations: list[_Compensation] = []
        self._deadline_at: datetime | None = None
        self._operator_flag = False

    @property
    def execution(self) -> str:
        """This saga's execution: the workflow id and the first run id of its chain.

        Stable across activity retries, worker crashes, resets and continue-as-new; new for
        every new start, even of the same workflow id. Activities record their effects as
        this execution's, so another execution of the same business key cannot reuse them.
        """
        info = workflow.info()
        return f"{info.workflow_id}/{info.first_execution_run_id}"

    @property
    def ledger(self) -> list[StepRecord]:
        """Every step so far, in the order it started."""
        return list(self._records)

    @property
    def needs_operator(self) -> list[str]:
        """Steps whose compensation waits for an operator's decision."""
        return [
            c.record.step
            for c in self._compensations
            if c.record.compensation_state is CompensationState.NEEDS_OPERATOR
        ]

    async def run(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` (which calls `step`); if it fails, is cancelled or runs past the
        deadline, run the compensations, then end the same way (see docs/saga-engine.md)."""
        if self._options.deadline is not None:
            self._deadline_at = workflow.now() + self._options.deadline
        try:
            return await body()
        except asyncio.CancelledError as err:
            failure = _Failure(err, cancelled=True)
        except Exception as err:
            if is_cancelled_exception(err):
                failure = _Failure(err, cancelled=True)
            else:
                failure = _Failure(err)
        failed_at = workflow.now()
        metrics.rollback_started(failure.reason)
        await self._shielded(self._compensate())
        took = (workflow.now() - failed_at).total_seconds()
        metrics.rollback_finished(failure.reason, took)
        raise self._final_error(failure)

    async def step(
        self,
        name: str,
        action: Action[ArgT, ResultT],
        arg: ArgT,
        *,
        compensation: Compensation[CompArgT] | None = None,
        compensation_arg: CompArgT | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> ResultT:
        """Register ``compensation`` (if any), then run ``action(arg)`` as activity ``name``.

        The compensation is called as ``compensation(compensation_arg, CompensationContext)``.
        Raises the step's ActivityError; asyncio.CancelledError if the run is cancelled
        meanwhile; ApplicationError SagaDeadlineExceeded if the deadline passes.
        """
        if any(r.step == name for r in self._records):
            raise ValueError(f"saga step {name!r} already ran in this saga")
        remaining = self._remaining()
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
        common: dict[str, Any] = {
            "activity_id": name,
            "start_to_close_timeout": start_to_close_timeout or self._options.step_timeout,
            # The deadline bounds every step, so no extra timer is needed to enforce it.
            "schedule_to_close_timeout": remaining,
            "retry_policy": retry_policy or self._options.step_retry,
            # On cancellation, wait for the activity to finish or acknowledge: compensations
            # then never race a step still in flight.
            "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        }
        fn = cast(Callable[..., Awaitable[ResultT]], action)
        if self._options.local_activities and heartbeat_timeout is None:
            handle = workflow.start_local_activity(fn, arg, **common)
        else:
            handle = workflow.start_activity(fn, arg, heartbeat_timeout=heartbeat_timeout, **common)
        try:
            # Shielded: a step that completes despite a cancellation request would otherwise
            # swallow the cancellation, and the saga would carry on as if none came.
            result: ResultT = await asyncio.shield(handle)
        except asyncio.CancelledError:
            handle.cancel()
            record.outcome = await self._outcome_after_cancel(handle)
            record.state, record.error = StepState.CANCELLED, "cancelled"
            record.finished_at = workflow.now()
            metrics.step_ended(name, record.state)
            raise
        except (ActivityError, FailureError) as err:
            # A local activity's failure arrives as its own error, not in an ActivityError.
            record.finished_at = workflow.now()
            if is_cancelled_exception(err):
                record.state, record.outcome = StepState.CANCELLED, StepOutcome.UNKNOWN
                record.error = "cancelled"
                metrics.step_ended(name, record.state)
                raise asyncio.CancelledError() from err
            record.state = StepState.FAILED
            record.error = describe_failure(err)
            cause = err.__cause__ if isinstance(err, ActivityError) else err
            timed_out = isinstance(cause, TimeoutError)
            record.outcome = StepOutcome.UNKNOWN if timed_out else StepOutcome.FAILED
            metrics.step_ended(name, record.state)
            if timed_out and self._past_deadline():
                raise self._deadline_error() from err
            raise
        record.state, record.outcome = StepState.SUCCEEDED, StepOutcome.SUCCEEDED
        record.finished_at = workflow.now()
        metrics.step_ended(name, record.state)
        return result

    @staticmethod
    async def _outcome_after_cancel(handle: workflow.ActivityHandle[Any]) -> StepOutcome:
        """How a step asked to stop actually ended: done, failed, or stopped midway."""
        try:
            await handle
        except ActivityError as err:
            return StepOutcome.UNKNOWN if is_cancelled_exception(err) else StepOutcome.FAILED
        except asyncio.CancelledError:
            return StepOutcome.UNKNOWN
        return StepOutcome.SUCCEEDED

    async def sleep(self, duration: timedelta) -> None:
        """A durable timer that the saga's deadline cuts short (with its error)."""
        remaining = self._remaining()
        if remaining is not None and remaining <= duration:
            await workflow.sleep(remaining)
            raise self._deadline_error()
        await workflow.sleep(duration)

    def validate_decision(self, decision: OperatorDecision) -> None:
        """Raise ValueError if ``decision`` cannot apply now (for an update validator)."""
        self._waiting_for(decision)

    async def decide(self, decision: OperatorDecision) -> StepRecord:
        """Carry out an operator's decision; returns the step's record once it settles."""
        comp = self._waiting_for(decision)
        comp.decision = decision
        await workflow.wait_condition(
            lambda: (
                comp.decision is None
                and comp.record.compensation_state is not CompensationState.RUNNING
            )
        )
        return comp.record

    # --- compensation ------------------------------------------------------------------

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
        # Continue-with-error: the ones still failing wait for operators, all at once.
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
                options: dict[str, Any] = {
                    "args": [comp.arg, context],
                    "activity_id": f"{record.step}:compensation:{context.attempt}",
                    "start_to_close_timeout": self._options.compensation_timeout,
                    # The saga counts and spaces the attempts itself, for the ledger.
                    "retry_policy": RetryPolicy(maximum_attempts=1),
                }
                if self._options.local_activities:
                    await workflow.execute_local_activity(comp.activity, **options)
                else:
                    await workflow.execute_activity(comp.activity, **options)
            except (ActivityError, FailureError) as err:  # a local activity's comes unwrapped
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

    def _waiting_for(self, decision: OperatorDecision) -> _Compensation:
        waiting = [
            c
            for c in self._compensations
            if c.record.compensation_state is CompensationState.NEEDS_OPERATOR
            and c.decision is None
        ]
        if decision.action is OperatorAction.SKIP and not (decision.reason or "").strip():
            raise ValueError("a reason is required to skip a compensation")
        if decision.step is not None:
            waiting = [c for c in waiting if c.record.step == decision.step]
        if not waiting:
            what = f"step {decision.step!r}" if decision.step else "any step"
            raise ValueError(f"no compensation of {what} is waiting for an operator")
        if len(waiting) > 1:
            steps = ", ".join(c.record.step for c in waiting)
            raise ValueError(f"several compensations wait ({steps}): say which step")
        return waiting[0]

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

    # --- endings -----------------------------------------------------------------------

    def _final_error(self, failure: _Failure) -> BaseException:
        skipped = [r for r in self._records if r.compensation_state is CompensationState.SKIPPED]
        if skipped:
            original = "cancelled" if failure.cancelled else describe_failure(failure.error)
            undone = "; ".join(
                f"{r.step}: {r.compensation_error} ({r.operator_note})" for r in skipped
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
                        for r in skipped
                    ],
                },
                type=COMPENSATION_ERROR,
                non_retryable=True,
            )
        if failure.cancelled:
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
