"""The saga engine on the time-skipping test server, with the SDK's default converter.

The toy saga (toy.py) names its steps after what their activities do.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from toy import (
    WAIT,
    Plan,
    ToyHandle,
    Toys,
    ToySaga,
    calls,
    contexts,
    error_type,
    hanging,
    outcome,
    toy_worker,
    until,
)

from temporal_saga import (
    COMPENSATION_ERROR,
    DEADLINE_ERROR,
    MAX_REASON_LENGTH,
    NEEDS_OPERATOR_ATTRIBUTE,
    STEP_SKIPPED_ERROR,
    CompensationState,
    OnExhausted,
    OperatorAction,
    OperatorDecision,
    StepKind,
    StepOutcome,
    StepRecord,
    StepState,
)


@pytest.fixture
async def toys(time_skipping_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Toys]:
    async for toys in toy_worker(time_skipping_env.client, task_queue):
        yield toys


def states(ledger: list[StepRecord]) -> dict[str, CompensationState]:
    return {r.step: r.compensation_state for r in ledger}


async def needs_operator_flag(handle: ToyHandle) -> bool | None:
    return (await handle.describe()).typed_search_attributes.get(NEEDS_OPERATOR_ATTRIBUTE)


async def test_all_steps_succeed_and_nothing_is_undone(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "b"]))

    assert await outcome(handle) == ["a done", "b done"]
    assert calls == ["do a", "do b"]
    ledger = await handle.query(ToySaga.ledger)
    assert [r.compensation_state for r in ledger] == [CompensationState.REGISTERED] * 2


async def test_failure_undoes_every_registered_step_newest_first(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "b", "fail-c", "d"]))

    assert error_type(await outcome(handle)) == "StepError"
    # fail-c's own compensation runs too: it was registered before the step, and the
    # activity, not the engine, knows whether the step took effect. It is told it failed.
    assert calls == ["do a", "do b", "do fail-c", "undo fail-c", "undo b", "undo a"]
    assert [c.outcome for c in contexts["fail-c"]] == [StepOutcome.FAILED]
    assert [c.outcome for c in contexts["a"]] == [StepOutcome.SUCCEEDED]
    ledger = await handle.query(ToySaga.ledger)
    assert [(r.step, r.state, r.compensation_state) for r in ledger] == [
        ("a", StepState.SUCCEEDED, CompensationState.COMPENSATED),
        ("b", StepState.SUCCEEDED, CompensationState.COMPENSATED),
        ("fail-c", StepState.FAILED, CompensationState.COMPENSATED),
    ]
    assert ledger[2].error == "StepError: fail-c cannot be done"


async def test_compensation_failing_twice_then_succeeding_is_retried_with_backoff(
    toys: Toys, time_skipping_env: WorkflowEnvironment
) -> None:
    backoff = 20.0
    handle = await toys.start(Plan(["flaky2-a", "fail-b"], attempts=3, backoff_seconds=backoff))

    retrying = CompensationState.RETRYING
    ledger = await until(
        handle,
        lambda lg: (lg[0].compensation_state, lg[0].compensation_attempts) == (retrying, 1),
    )
    assert ledger[0].compensation_error == "UndoError: flaky2-a not yet (attempt 1)"
    await time_skipping_env.sleep(backoff)  # the first backoff
    await until(
        handle,
        lambda lg: (lg[0].compensation_state, lg[0].compensation_attempts) == (retrying, 2),
    )
    await time_skipping_env.sleep(2 * backoff)  # the second, doubled

    assert error_type(await outcome(handle)) == "StepError"
    ledger = await handle.query(ToySaga.ledger)
    assert ledger[0].compensation_state is CompensationState.COMPENSATED
    assert ledger[0].compensation_attempts == 3
    assert [c.attempt for c in contexts["flaky2-a"]] == [1, 2, 3]


async def test_compensation_that_never_succeeds_waits_for_an_operator(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "broken-b", "fail-c"], attempts=2))

    ledger = await until(
        handle,
        lambda lg: (
            lg[1].compensation_state is CompensationState.NEEDS_OPERATOR
            and lg[0].compensation_state is CompensationState.COMPENSATED
        ),
    )
    # Continue-with-error: the older compensation ran without waiting for the operator.
    assert states(ledger) == {
        "a": CompensationState.COMPENSATED,
        "broken-b": CompensationState.NEEDS_OPERATOR,
        "fail-c": CompensationState.COMPENSATED,
    }
    assert calls[-4:] == ["undo fail-c", "undo broken-b", "undo broken-b", "undo a"]
    assert ledger[1].compensation_attempts == 2
    assert await needs_operator_flag(handle) is True

    retried = await handle.execute_update(
        ToySaga.resolve, OperatorDecision(action=OperatorAction.RETRY)
    )
    assert retried.compensation_state is CompensationState.NEEDS_OPERATOR
    assert retried.compensation_attempts == 3

    skipped = await handle.execute_update(
        ToySaga.resolve,
        OperatorDecision(action=OperatorAction.SKIP, step="broken-b", reason="undone by hand"),
    )
    assert skipped.compensation_state is CompensationState.SKIPPED
    assert skipped.operator_note == "skipped by operator: undone by hand"

    error = await outcome(handle)
    assert error_type(error) == COMPENSATION_ERROR
    assert isinstance(error, ApplicationError)
    assert "StepError: fail-c cannot be done" in error.message
    assert "broken-b" in error.message and "undone by hand" in error.message
    [details] = error.details
    assert details["original"] == "StepError: fail-c cannot be done"
    assert [f["step"] for f in details["compensation_failures"]] == ["broken-b"]
    assert await needs_operator_flag(handle) is False


async def test_operator_retry_that_succeeds_ends_with_the_original_error(toys: Toys) -> None:
    handle = await toys.start(Plan(["flaky3-a", "fail-b"], attempts=2))
    await until(handle, lambda lg: lg[0].compensation_state is CompensationState.NEEDS_OPERATOR)

    first = await handle.execute_update(ToySaga.resolve, OperatorDecision(OperatorAction.RETRY))
    second = await handle.execute_update(ToySaga.resolve, OperatorDecision(OperatorAction.RETRY))

    assert (first.compensation_state, first.compensation_attempts) == (
        CompensationState.NEEDS_OPERATOR,
        3,
    )
    assert (second.compensation_state, second.compensation_attempts) == (
        CompensationState.COMPENSATED,
        4,
    )
    assert second.operator_note == "retried by operator"
    assert error_type(await outcome(handle)) == "StepError"


async def test_operator_decisions_that_cannot_apply_are_rejected(toys: Toys) -> None:
    handle = await toys.start(Plan(["broken-a", "fail-b"], attempts=1))
    await until(handle, lambda lg: lg[0].compensation_state is CompensationState.NEEDS_OPERATOR)

    for bad in (
        OperatorDecision(OperatorAction.SKIP),  # no reason
        OperatorDecision(OperatorAction.RETRY, step="fail-b"),  # not waiting
        OperatorDecision(OperatorAction.SKIP, reason="x" * (MAX_REASON_LENGTH + 1)),  # too long
    ):
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(ToySaga.resolve, bad)
        assert re.search(
            r"reason is required|no compensation of step|at most \d+ characters",
            str(rejected.value.cause),
        )

    await handle.execute_update(ToySaga.resolve, OperatorDecision(OperatorAction.SKIP, reason="x"))
    assert error_type(await outcome(handle)) == COMPENSATION_ERROR


async def test_parallel_compensation_starts_every_undo_at_once(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "b", "c", "fail-d"], parallel=True))

    assert error_type(await outcome(handle)) == "StepError"
    history = await handle.fetch_history()
    undo_scheduled = [
        i
        for i, e in enumerate(history.events)
        if e.activity_task_scheduled_event_attributes.activity_type.name == "undo"
    ]
    first_undo_done = min(
        i
        for i, e in enumerate(history.events)
        if e.HasField("activity_task_completed_event_attributes") and i > undo_scheduled[0]
    )
    assert len(undo_scheduled) == 4
    assert max(undo_scheduled) < first_undo_done
    assert set(states(await handle.query(ToySaga.ledger)).values()) == {
        CompensationState.COMPENSATED
    }


async def test_cancellation_during_a_step_undoes_it_and_ends_cancelled(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "hang-b", "c"]))
    await asyncio.wait_for(hanging.wait(), WAIT)

    await handle.cancel()

    result = await outcome(handle)
    assert isinstance(result, CancelledError)
    assert calls == ["do a", "do hang-b", "undo hang-b", "undo a"]
    assert [c.outcome for c in contexts["hang-b"]] == [StepOutcome.UNKNOWN]
    ledger = await handle.query(ToySaga.ledger)
    assert ledger[1].state is StepState.CANCELLED
    assert set(states(ledger).values()) == {CompensationState.COMPENSATED}


async def test_cancellation_during_compensation_does_not_skip_the_rest(
    toys: Toys, time_skipping_env: WorkflowEnvironment
) -> None:
    minute = 60.0  # the longest backoff the engine waits
    handle = await toys.start(Plan(["a", "flaky1-b", "fail-c"], backoff_seconds=minute))
    await until(handle, lambda lg: lg[1].compensation_state is CompensationState.RETRYING)

    await handle.cancel()
    await time_skipping_env.sleep(minute)

    # The failure came first: the run ends with it, every compensation done.
    assert error_type(await outcome(handle)) == "StepError"
    assert calls[-4:] == ["undo fail-c", "undo flaky1-b", "undo flaky1-b", "undo a"]
    assert set(states(await handle.query(ToySaga.ledger)).values()) == {
        CompensationState.COMPENSATED
    }


async def test_deadline_during_a_step_rolls_back_with_a_deadline_error(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "hang-b"], deadline_seconds=2))

    assert error_type(await outcome(handle)) == DEADLINE_ERROR
    assert calls == ["do a", "do hang-b", "undo hang-b", "undo a"]
    assert [c.outcome for c in contexts["hang-b"]] == [StepOutcome.UNKNOWN]


async def test_deadline_cuts_a_saga_sleep_short(toys: Toys) -> None:
    handle = await toys.start(Plan(["a"], deadline_seconds=60, sleep_seconds=3600))

    assert error_type(await outcome(handle)) == DEADLINE_ERROR
    assert calls == []
    history = await handle.fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    assert timers and max(timers) <= timedelta(seconds=60)


async def test_local_activities_fail_and_wait_for_an_operator_like_regular_ones(
    toys: Toys,
) -> None:
    # A local activity's failure reaches the workflow unwrapped (no ActivityError): the
    # step is still FAILED and the compensation still retried, then left to an operator.
    handle = await toys.start(Plan(["a", "broken-b", "fail-c"], attempts=2, local=True))

    ledger = await until(
        handle,
        lambda lg: (
            lg[1].compensation_state is CompensationState.NEEDS_OPERATOR
            and lg[0].compensation_state is CompensationState.COMPENSATED
        ),
    )
    assert [(r.state, r.outcome) for r in ledger] == [
        (StepState.SUCCEEDED, StepOutcome.SUCCEEDED),
        (StepState.SUCCEEDED, StepOutcome.SUCCEEDED),
        (StepState.FAILED, StepOutcome.FAILED),
    ]
    assert ledger[2].error == "StepError: fail-c cannot be done"
    assert ledger[1].compensation_attempts == 2
    assert ledger[1].compensation_error == "UndoError: broken-b cannot be undone"
    history = await handle.fetch_history()
    assert not any(e.HasField("activity_task_scheduled_event_attributes") for e in history.events)

    await handle.execute_update(ToySaga.resolve, OperatorDecision(OperatorAction.SKIP, reason="x"))
    assert error_type(await outcome(handle)) == COMPENSATION_ERROR


async def test_compensation_gets_the_steps_argument_with_or_without_a_context(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "plain-b", "fail-c"]))

    assert error_type(await outcome(handle)) == "StepError"
    assert calls[-3:] == ["undo fail-c", "undo plain-b (no context)", "undo a"]


async def test_compensation_that_fails_every_attempt_raises_when_told_to(toys: Toys) -> None:
    plan = Plan(["a", "broken-b", "fail-c"], attempts=2, on_exhausted=OnExhausted.RAISE)
    handle = await toys.start(plan)

    error = await outcome(handle)
    assert error_type(error) == COMPENSATION_ERROR
    assert isinstance(error, ApplicationError)
    assert "StepError: fail-c cannot be done" in error.message
    ledger = await handle.query(ToySaga.ledger)
    assert states(ledger) == {
        "a": CompensationState.COMPENSATED,
        "broken-b": CompensationState.FAILED,
        "fail-c": CompensationState.COMPENSATED,
    }
    assert ledger[1].compensation_attempts == 2
    assert await needs_operator_flag(handle) is not True


async def test_explicit_compensate_undoes_once_and_the_run_completes(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "b"], explicit_compensate=True))

    assert await outcome(handle) == ["a done", "b done"]
    assert calls == ["do a", "do b", "undo b", "undo a"]
    assert set(states(await handle.query(ToySaga.ledger)).values()) == {
        CompensationState.COMPENSATED
    }


async def test_added_compensation_runs_as_a_child_workflow_in_reverse_order(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "fail-b"], added=["refund-x"]))

    assert error_type(await outcome(handle)) == "StepError"
    assert calls == ["do a", "do fail-b", "undo fail-b", "undo a", "child undo refund-x"]
    ledger = await handle.query(ToySaga.ledger)
    assert (ledger[0].step, ledger[0].activity, ledger[0].compensation_state) == (
        "refund-x",
        None,
        CompensationState.COMPENSATED,
    )
    assert ledger[0].compensation == "execute_child_workflow(UndoWorkflow.run)"


async def test_failure_after_the_pivot_is_retried_forward_never_compensated(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "pivot-b", "must-fail-c"]))

    ledger = await until(handle, lambda lg: lg[2].state is StepState.NEEDS_OPERATOR)
    assert [r.kind for r in ledger] == [StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE]
    assert await needs_operator_flag(handle) is True
    retried = await handle.execute_update(ToySaga.resolve, OperatorDecision(OperatorAction.RETRY))
    assert retried.state is StepState.NEEDS_OPERATOR
    await handle.cancel()  # past the pivot: noted, not acted on
    skipped = await handle.execute_update(
        ToySaga.resolve, OperatorDecision(OperatorAction.SKIP, reason="sent by hand")
    )
    assert skipped.state is StepState.SKIPPED

    assert error_type(await outcome(handle)) == STEP_SKIPPED_ERROR
    assert calls == ["do a", "do pivot-b", "do must-fail-c", "do must-fail-c"]
    ledger = await handle.query(ToySaga.ledger)
    assert ledger[0].compensation_state is CompensationState.REGISTERED
    assert ledger[2].operator_note == "skipped by operator: sent by hand"


async def test_a_failing_pivot_rolls_back_what_came_before(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "fail-pivot", "b"]))

    assert error_type(await outcome(handle)) == "StepError"
    assert calls == ["do a", "do fail-pivot", "undo a"]


async def test_skipping_a_step_that_must_succeed_before_the_pivot_rolls_back(toys: Toys) -> None:
    handle = await toys.start(Plan(["a", "must-fail-b"]))
    await until(handle, lambda lg: lg[1].state is StepState.NEEDS_OPERATOR)

    await handle.execute_update(
        ToySaga.resolve, OperatorDecision(OperatorAction.SKIP, step="must-fail-b", reason="no")
    )

    assert error_type(await outcome(handle)) == STEP_SKIPPED_ERROR
    assert calls == ["do a", "do must-fail-b", "undo a"]
    assert await needs_operator_flag(handle) is False
