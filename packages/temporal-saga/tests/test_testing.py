"""temporal_saga.testing on a small transfer saga: it passes where the activities are
idempotent, and names the scenarios that break where one is not."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from temporal_saga import CompensationContext, Saga, SagaOptions
    from temporal_saga.testing import FaultKind, SagaCheckFailed, Scenario, check_saga

applied: list[tuple[str, str, int]] = []
"""Every change of money: (transfer id, account, amount), by the activities below."""
done: dict[tuple[str, str], int] = {}
"""What each (transfer, step) did: the activities' effect log."""


@dataclass
class Transfer:
    id: str
    amount: int
    sloppy: bool = False
    """Apply without looking at the effect log: a retry after a crash moves money twice."""


def _apply(transfer: Transfer, step: str, account: str, delta: int) -> None:
    key = (transfer.id, step)
    if key in done and not transfer.sloppy:
        return
    done[key] = delta
    applied.append((transfer.id, account, delta))


def _revert(transfer: Transfer, step: str, account: str) -> None:
    delta = done.pop((transfer.id, step), None)
    done[(transfer.id, f"{step}:undone")] = 0  # a marker: a late forward attempt is refused
    if delta is not None:
        applied.append((transfer.id, account, -delta))


@activity.defn
async def debit(transfer: Transfer) -> None:
    if (transfer.id, "debit:undone") in done:
        return
    _apply(transfer, "debit", "alice", -transfer.amount)


@activity.defn
async def undo_debit(transfer: Transfer, context: CompensationContext) -> None:
    _revert(transfer, "debit", "alice")


@activity.defn
async def credit(transfer: Transfer) -> None:
    if (transfer.id, "credit:undone") in done:
        return
    _apply(transfer, "credit", "bob", transfer.amount)


@activity.defn
async def undo_credit(transfer: Transfer, context: CompensationContext) -> None:
    _revert(transfer, "credit", "bob")


@activity.defn
async def notify(transfer: Transfer) -> None:
    pass


@workflow.defn
class TransferWorkflow:
    @workflow.run
    async def run(self, transfer: Transfer) -> None:
        saga = Saga(
            SagaOptions(
                step_timeout=timedelta(seconds=1),
                step_retry=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
                compensation_timeout=timedelta(seconds=1),
                compensation_backoff=timedelta(milliseconds=100),
            )
        )
        async with saga:
            await saga.execute_activity(debit, transfer, compensate_with=undo_debit)
            await saga.execute_activity(credit, transfer, compensate_with=undo_credit)
            await saga.execute_activity(notify, transfer)


Start = Callable[[Client, str], Awaitable[WorkflowHandle[TransferWorkflow, None]]]


def starter(*, sloppy: bool) -> tuple[None, Start]:
    async def start(client: Client, task_queue: str) -> WorkflowHandle[TransferWorkflow, None]:
        transfer = Transfer(id=f"transfer-{task_queue}", amount=10, sloppy=sloppy)
        return await client.start_workflow(
            TransferWorkflow.run, transfer, id=transfer.id, task_queue=task_queue
        )

    return None, start


async def money_is_exact(scenario: Scenario) -> None:
    """Alice paid Bob once if the transfer completed; nobody paid anything otherwise."""
    net: Counter[str] = Counter()
    for transfer_id, account, delta in applied:
        if transfer_id == scenario.handle.id:
            net[account] += delta
    expected = {"alice": -10, "bob": 10} if scenario.completed else {"alice": 0, "bob": 0}
    assert {a: net[a] for a in ("alice", "bob")} == expected


async def test_an_idempotent_saga_holds_under_every_fault(
    dev_server_env: WorkflowEnvironment,
) -> None:
    _, start = starter(sloppy=False)

    scenarios = await check_saga(
        dev_server_env.client,
        start=start,
        invariant=money_is_exact,
        workflows=[TransferWorkflow],
        activities=[debit, undo_debit, credit, undo_credit, notify],
        concurrency=8,
    )

    names = {str(s) for s in scenarios}
    # The baseline, 4 faults at each of 3 steps, 2 crashes around each of the 2 compensations
    # of the run that rolled back the most (fail at notify undoes credit and debit).
    assert len(scenarios) == 1 + 4 * 3 + 2 * 2
    assert "no fault: completed" in names
    assert "fail at credit: failed" in names
    assert "cancel at debit: cancelled" in names
    assert "crash_after at debit: completed" in names
    assert "fail at notify, crash_after at credit:compensation:1: failed" in names


async def test_a_retry_that_repeats_its_effect_is_named(
    dev_server_env: WorkflowEnvironment,
) -> None:
    _, start = starter(sloppy=True)

    with pytest.raises(SagaCheckFailed) as broke:
        await check_saga(
            dev_server_env.client,
            start=start,
            invariant=money_is_exact,
            workflows=[TransferWorkflow],
            activities=[debit, undo_debit, credit, undo_credit, notify],
            kinds=[FaultKind.CRASH_AFTER],
            compensation_crashes=False,
            concurrency=4,
        )

    broken = {str(s) for s, _ in broke.value.failures}
    assert broken == {"crash_after at debit: completed", "crash_after at credit: completed"}
