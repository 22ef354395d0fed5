"""The generic saga engine, on its own: a toy workflow with no pizza in it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from pizza_saga.saga import CompensationState, Saga, SagaOptions, StepRecord, StepState

TASK_QUEUE = "saga-engine-tests"

calls: list[str] = []
"""What the toy activities did, in order (activities run outside the sandbox)."""


@activity.defn
async def do(name: str) -> str:
    calls.append(f"do {name}")
    if name.startswith("fail"):
        raise ApplicationError(f"{name} cannot be done", type="StepError", non_retryable=True)
    return f"{name} done"


@activity.defn
async def undo(name: str) -> None:
    calls.append(f"undo {name}")
    if name.startswith("broken"):
        raise ApplicationError(f"{name} cannot be undone", type="UndoError")


@workflow.defn
class ToySaga:
    def __init__(self) -> None:
        self.saga = Saga(
            SagaOptions(
                compensation_retry=RetryPolicy(
                    maximum_attempts=2, initial_interval=timedelta(milliseconds=1)
                )
            )
        )

    @workflow.query
    def ledger(self) -> list[StepRecord]:
        return self.saga.ledger

    @workflow.run
    async def run(self, steps: list[str]) -> list[str]:
        results = []
        async with self.saga:
            for name in steps:
                results.append(
                    await self.saga.step(name, do, name, compensation=undo, compensation_arg=name)
                )
        return results


@pytest.fixture
async def client(time_skipping_env: WorkflowEnvironment) -> Client:
    calls.clear()
    return time_skipping_env.client


async def run_toy(client: Client, steps: list[str]) -> tuple[list[str] | None, list[StepRecord]]:
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[ToySaga], activities=[do, undo]):
        handle = await client.start_workflow(
            ToySaga.run, steps, id=f"toy-{uuid.uuid4()}", task_queue=TASK_QUEUE
        )
        try:
            result: list[str] | None = await asyncio.wait_for(handle.result(), 60)
        except WorkflowFailureError:
            result = None
        return result, await handle.query(ToySaga.ledger)


async def test_all_steps_succeed_and_nothing_is_undone(client: Client) -> None:
    result, ledger = await run_toy(client, ["a", "b"])

    assert result == ["a done", "b done"]
    assert calls == ["do a", "do b"]
    assert [r.compensation_state for r in ledger] == [CompensationState.REGISTERED] * 2


async def test_failure_undoes_every_registered_step_newest_first(client: Client) -> None:
    result, ledger = await run_toy(client, ["a", "b", "fail-c", "d"])

    assert result is None
    # fail-c's own compensation runs too: it was registered before the step, and the
    # activity, not the engine, knows whether the step took effect.
    assert calls == ["do a", "do b", "do fail-c", "undo fail-c", "undo b", "undo a"]
    assert [(r.step, r.state, r.compensation_state) for r in ledger] == [
        ("a", StepState.SUCCEEDED, CompensationState.COMPENSATED),
        ("b", StepState.SUCCEEDED, CompensationState.COMPENSATED),
        ("fail-c", StepState.FAILED, CompensationState.COMPENSATED),
    ]
    assert ledger[2].error == "StepError: fail-c cannot be done"


async def test_a_broken_compensation_does_not_stop_the_others(client: Client) -> None:
    result, ledger = await run_toy(client, ["a", "broken-b", "fail-c"])

    assert result is None
    assert calls == [
        "do a",
        "do broken-b",
        "do fail-c",
        "undo fail-c",
        "undo broken-b",
        "undo broken-b",
        "undo a",
    ]
    states = {r.step: r.compensation_state for r in ledger}
    assert states == {
        "a": CompensationState.COMPENSATED,
        "broken-b": CompensationState.FAILED,
        "fail-c": CompensationState.COMPENSATED,
    }
    assert ledger[1].compensation_error == "UndoError: broken-b cannot be undone"
