"""A toy saga for the package's tests: steps whose names say what their activities do.

``fail-*`` fails for good, ``hang-*`` runs until cancelled; a step whose name has ``pivot``
in it is the pivot, ``must`` a step that must succeed (retriable), ``plain`` one whose
compensation takes no CompensationContext; compensations of ``broken-*`` always fail, of
``flakyN-*`` fail N times. ``Plan.added`` names compensations run as child workflows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from temporal_saga import (
        NEEDS_OPERATOR_ATTRIBUTE,
        CompensationContext,
        OnExhausted,
        OperatorDecision,
        Saga,
        SagaOptions,
        StepKind,
        StepRecord,
    )

WAIT = 30.0  # seconds; a run or a ledger state not reached by then fails the test

calls: list[str] = []
"""What the toy activities did, in order (activities run outside the sandbox)."""
contexts: dict[str, list[CompensationContext]] = {}
hanging = asyncio.Event()


@dataclass
class Plan:
    """The toy saga's steps and options."""

    steps: list[str]
    parallel: bool = False
    attempts: int = 2
    backoff_seconds: float = 0.001
    deadline_seconds: float | None = None
    sleep_seconds: float = 0.0
    local: bool = False
    """Steps and compensations as local activities (hanging steps heartbeat: they stay regular)."""
    on_exhausted: OnExhausted = OnExhausted.WAIT_FOR_OPERATOR
    explicit_compensate: bool = False
    """Return after the steps with saga.compensate() instead of failing."""
    added: list[str] = field(default_factory=list)
    """Names to register with add_compensation (a child workflow each) before the steps."""


@activity.defn
async def do(name: str) -> str:
    calls.append(f"do {name}")
    if name.startswith(("fail", "must-fail")):
        raise ApplicationError(f"{name} cannot be done", type="StepError", non_retryable=True)
    if name.startswith("hang"):
        hanging.set()
        while True:  # until cancelled, which heartbeating lets it see
            activity.heartbeat()
            await asyncio.sleep(0.05)
    return f"{name} done"


@activity.defn
async def undo(name: str, context: CompensationContext) -> None:
    calls.append(f"undo {name}")
    contexts.setdefault(name, []).append(context)
    if name.startswith("broken"):
        raise ApplicationError(f"{name} cannot be undone", type="UndoError")
    if name.startswith("flaky") and context.attempt <= int(name[5]):
        raise ApplicationError(f"{name} not yet (attempt {context.attempt})", type="UndoError")


@activity.defn
async def undo_plain(name: str) -> None:
    calls.append(f"undo {name} (no context)")


@activity.defn
async def record_undo(name: str) -> None:
    calls.append(f"child undo {name}")


@workflow.defn
class UndoWorkflow:
    """A compensation that is a workflow of its own."""

    @workflow.run
    async def run(self, name: str) -> None:
        await workflow.execute_activity(
            record_undo, name, start_to_close_timeout=timedelta(seconds=5)
        )


@workflow.defn
class ToySaga:
    def __init__(self) -> None:
        self.saga = Saga()

    @workflow.query
    def ledger(self) -> list[StepRecord]:
        return self.saga.ledger

    @workflow.update
    async def resolve(self, decision: OperatorDecision) -> StepRecord:
        return await self.saga.decide(decision)

    @resolve.validator
    def _validate(self, decision: OperatorDecision) -> None:
        self.saga.validate_decision(decision)

    @workflow.run
    async def run(self, plan: Plan) -> list[str]:
        self.saga = saga = Saga(
            SagaOptions(
                step_retry=RetryPolicy(maximum_attempts=1),
                compensation_attempts=plan.attempts,
                compensation_backoff=timedelta(seconds=plan.backoff_seconds),
                parallel_compensation=plan.parallel,
                deadline=(
                    timedelta(seconds=plan.deadline_seconds) if plan.deadline_seconds else None
                ),
                on_exhausted=plan.on_exhausted,
                needs_operator_attribute=NEEDS_OPERATOR_ATTRIBUTE,
                local_activities=plan.local,
            )
        )
        try:
            async with saga:
                results = await self._steps(saga, plan)
                if plan.explicit_compensate:
                    await saga.compensate()
                    await saga.compensate()  # a second call finds nothing left to undo
        except (Exception, asyncio.CancelledError):
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return results

    async def _steps(self, saga: Saga, plan: Plan) -> list[str]:
        for name in plan.added:
            saga.add_compensation(
                workflow.execute_child_workflow,
                UndoWorkflow.run,
                name,
                step=name,
            )
        if plan.sleep_seconds:
            await saga.sleep(timedelta(seconds=plan.sleep_seconds))
        results = []
        for name in plan.steps:
            if "pivot" in name:
                results.append(
                    await saga.execute_activity(do, name, step=name, kind=StepKind.PIVOT)
                )
                continue
            if "must" in name:
                results.append(
                    await saga.execute_activity(do, name, step=name, kind=StepKind.RETRIABLE)
                )
                continue
            results.append(
                await saga.execute_activity(
                    do,
                    name,
                    step=name,
                    compensate_with=(
                        None if saga.committed else undo_plain if "plain" in name else undo
                    ),
                    # Only hanging steps heartbeat (and so stay regular activities).
                    heartbeat_timeout=timedelta(seconds=2) if name.startswith("hang") else None,
                )
            )
        return results


ToyHandle = WorkflowHandle[ToySaga, list[str]]


@dataclass(frozen=True)
class Toys:
    """Starts toy sagas on the task queue of this test's own worker."""

    client: Client
    task_queue: str

    async def start(self, plan: Plan) -> ToyHandle:
        """Start a toy saga that runs ``plan``."""
        return await self.client.start_workflow(
            ToySaga.run, plan, id=f"toy-{uuid.uuid4()}", task_queue=self.task_queue
        )


def reset() -> None:
    calls.clear()
    contexts.clear()
    hanging.clear()


async def toy_worker(client: Client, task_queue: str, **options: object) -> AsyncIterator[Toys]:
    """A worker for the toy saga on ``task_queue``, for as long as the iterator runs."""
    reset()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ToySaga, UndoWorkflow],
        activities=[do, undo, undo_plain, record_undo],
        **options,  # type: ignore[arg-type]
    ):
        yield Toys(client, task_queue)


async def outcome(handle: ToyHandle) -> list[str] | BaseException:
    """The run's result, or the outermost application error (or cancellation) it failed with."""
    try:
        return await asyncio.wait_for(handle.result(), WAIT)
    except WorkflowFailureError as err:
        error: BaseException | None = err.cause
        while error is not None and not isinstance(error, ApplicationError | CancelledError):
            error = error.__cause__
        assert error is not None, err
        return error


async def until(handle: ToyHandle, done: Callable[[list[StepRecord]], bool]) -> list[StepRecord]:
    """Poll the ledger query until ``done(ledger)``; fail the test after WAIT seconds."""

    def reached(ledger: list[StepRecord]) -> bool:
        try:
            return done(ledger)
        except IndexError:  # the step asked about has not started yet
            return False

    async with asyncio.timeout(WAIT):
        # The ledger is only observable by query: poll it (no fixed sleep guessing a state).
        while not reached(ledger := await handle.query(ToySaga.ledger)):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return ledger


def error_type(result: object) -> str | None:
    return result.type if isinstance(result, ApplicationError) else None
