"""The payloads earlier versions wrote, read with today's models.

tests/histories/*.json were recorded by earlier versions of the code. A worker of this
version reads what they hold again: the workflow's input when it replays a running order,
an activity's input when it retries it, an activity's result, an update's arguments, a
failure. Each of them must decode with the current types: the workflow's input as
OrderRequest, each activity's input and result as the parameter and return types of the
activity registered under that name by `build_worker` (looked up from the worker it builds,
the types from the functions' hints). A renamed field, an argument type changed
incompatibly, a renamed or removed activity fails here, naming it and the event; such a
change goes behind `workflow.patched` or a new field with a default (docs/operations.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import build_worker, code_types, open_stores
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import data_converter
from pizza_saga.order.compat import CodeTypes, PayloadKind, Read, WorkflowTypes, read_history
from pizza_saga.order.models import Address, OrderRequest, PlacedOrder
from pizza_saga.order.reconcile import RECONCILER_WORKFLOW
from pizza_saga.order.reconciler import ReconcileOrdersWorkflow
from pizza_saga.order.workflow import WORKFLOW_TYPE, PizzaOrderWorkflow
from tests.test_replay import HISTORIES, TEST_KEYS

STRICT = data_converter(TEST_KEYS, strict=True)
"""A worker's converter, with the key ring the histories were recorded under."""


@pytest.fixture(scope="module")
async def registered(
    time_skipping_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Any]]:
    """What `build_worker` registers: its worker's configuration (workflows, activities)."""
    stores = open_stores(Settings.model_validate({"PIZZA_HOME": tmp_path_factory.mktemp("home")}))
    worker = build_worker(time_skipping_env.client, stores, task_queue="payload-compat")
    yield dict(worker.config())
    stores.engine.dispose()


@pytest.fixture(scope="module")
def todays(registered: dict[str, Any]) -> CodeTypes:
    """Today's types: the workflows', and those of the activities the worker registers."""
    return CodeTypes(
        workflows=code_types().workflows,
        activities=CodeTypes.activities_of(registered["activities"]),
    )


def history(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json("recorded", HISTORIES[name])


def problems(reads: list[Read]) -> list[str]:
    return [str(read) for read in reads if read.problem is not None]


def swapped(types: CodeTypes, *activities: Callable[..., Any]) -> CodeTypes:
    """``types`` with each of ``activities`` in place of the one of its name."""
    return CodeTypes(
        workflows=types.workflows,
        activities={**types.activities, **CodeTypes.activities_of(activities)},
    )


def test_the_code_types_are_those_of_what_build_worker_registers(
    registered: dict[str, Any],
) -> None:
    """`pizza replay-check` reads with code_types(): the same activities, the same types."""
    assert dict(code_types().activities) == CodeTypes.activities_of(registered["activities"])
    assert list(registered["workflows"]) == [PizzaOrderWorkflow, ReconcileOrdersWorkflow]
    assert set(code_types().workflows) == {WORKFLOW_TYPE, RECONCILER_WORKFLOW}
    order = code_types().workflows[WORKFLOW_TYPE]
    assert order.run.params == (OrderRequest,)
    assert set(order.updates) == {"resolve", "amend"}


@pytest.mark.parametrize("name", HISTORIES)
async def test_every_payload_an_earlier_version_wrote_reads_with_todays_types(
    name: str, todays: CodeTypes
) -> None:
    recorded = history(name)

    reads = await read_history(recorded, STRICT, todays)

    unreadable = problems(reads)
    assert not unreadable, "\n".join(unreadable)
    # Every payload of each kind was read, with its type: none left out.
    read = Counter((r.kind, r.name) for r in reads)
    scheduled = Counter(
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in recorded.events
        if e.HasField("activity_task_scheduled_event_attributes")
    )
    completed = [
        e.event_id
        for e in recorded.events
        if e.HasField("activity_task_completed_event_attributes")
    ]
    assert read[PayloadKind.WORKFLOW_INPUT, WORKFLOW_TYPE] == 1
    assert {n: read[PayloadKind.ACTIVITY_INPUT, n] for n in scheduled} == dict(scheduled)
    assert sorted(r.event_id for r in reads if r.kind is PayloadKind.ACTIVITY_RESULT) == completed
    if recorded.events[-1].HasField("workflow_execution_completed_event_attributes"):
        assert read[PayloadKind.WORKFLOW_RESULT, WORKFLOW_TYPE] == 1
    accepted = Counter(
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for e in recorded.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    )
    assert {n: read[PayloadKind.UPDATE_INPUT, n] for n in accepted} == dict(accepted)


def test_the_histories_hold_every_kind_of_payload_an_order_writes() -> None:
    """The recorded scenarios between them hold an update and failed activities too."""
    kinds = {e.WhichOneof("attributes") for name in HISTORIES for e in history(name).events}
    assert {
        "workflow_execution_update_accepted_event_attributes",
        "workflow_execution_update_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "workflow_execution_completed_event_attributes",
        "workflow_execution_failed_event_attributes",
    } <= kinds


# --- what the test refuses: each change below breaks orders written before it ------------


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RenamedDistance(_Model):
    """order.models.Distance with its field renamed (kilometers -> km)."""

    km: int


async def get_distance(address: Address) -> RenamedDistance:
    raise NotImplementedError


async def update_inventory(request: int) -> None:
    """update_inventory with its argument's type changed (StockRequest -> int)."""
    raise NotImplementedError


class RenamedOrderRequest(_Model):
    """OrderRequest with `order` renamed `placed` (and nothing else)."""

    placed: PlacedOrder


class RenamedInputWorkflow:
    async def run(self, request: RenamedOrderRequest) -> None:
        raise NotImplementedError


async def test_a_renamed_field_of_an_activity_result_is_refused_naming_it(
    todays: CodeTypes,
) -> None:
    reads = await read_history(history("happy"), STRICT, swapped(todays, get_distance))

    [problem] = problems(reads)
    assert problem.startswith("the result of activity get_distance (event 7): km: ")


async def test_an_activity_argument_of_another_type_is_refused_naming_it(
    todays: CodeTypes,
) -> None:
    reads = await read_history(history("happy"), STRICT, swapped(todays, update_inventory))

    [problem] = problems(reads)
    assert problem.startswith("the input of activity update_inventory (event 16): ")


async def test_a_removed_or_renamed_activity_is_refused_naming_it(todays: CodeTypes) -> None:
    without = {n: s for n, s in todays.activities.items() if n != "send_bill"}
    types = CodeTypes(workflows=todays.workflows, activities=without)

    reads = await read_history(history("bill_failure"), STRICT, types)

    assert problems(reads) == [
        "the input of activity send_bill (event 23): this version has no activity of that "
        "name (renamed or removed?)"
    ]


async def test_a_renamed_field_of_the_workflow_input_is_refused_naming_it(
    todays: CodeTypes,
) -> None:
    workflows = {**todays.workflows, WORKFLOW_TYPE: WorkflowTypes.of(RenamedInputWorkflow.run)}
    types = CodeTypes(workflows=workflows, activities=todays.activities)

    reads = await read_history(history("happy"), STRICT, types)

    [problem, *_] = problems(reads)
    assert problem.startswith("the input of workflow PizzaOrderWorkflow (event 1): placed: ")


async def test_a_payload_under_a_key_the_ring_lacks_is_refused_naming_the_key(
    todays: CodeTypes,
) -> None:
    from pizza_saga.common.crypto import KeyRing

    other = data_converter(KeyRing.generate("another-key"), strict=True)

    reads = await read_history(history("happy"), other, todays)

    assert problems(reads)[0] == (
        f"the input of workflow PizzaOrderWorkflow (event 1): payload encrypted with key "
        f"'{TEST_KEYS.primary}', which this worker does not have"
    )
