"""Helpers for tests that run orders through the real workflow."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from pizza_saga.app import Stores
from pizza_saga.billing.vault import CardVault
from pizza_saga.order.example import example_order
from pizza_saga.order.models import OrderConfirmation, OrderRequest, PizzaOrder, PlacedOrder
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for

RESULT_TIMEOUT = 60  # seconds; a stuck workflow fails the test instead of hanging it

T = TypeVar("T")
OrderHandle = WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]


def new_order(**changes: object) -> PizzaOrder:
    """The seed's order under a fresh number, with ``changes`` applied."""
    data = example_order(order_number=f"T{uuid.uuid4().hex[:10]}").model_dump()
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return PizzaOrder.model_validate(data)


def placed(order: PizzaOrder, vault: CardVault) -> PlacedOrder:
    """The order as the edge hands it to the workflow: its card number a vault token."""
    card = vault.tokenize(order.credit_card_info.number, order_number=order.order_number)
    return order.placed(card)


async def start(
    client: Client, order: PizzaOrder, *, task_queue: str, vault: CardVault, **request: Any
) -> OrderHandle:
    """Start the order's workflow on ``task_queue`` as the edge does (card tokenized in
    ``vault``); ``request`` sets OrderRequest fields."""
    return await client.start_workflow(
        PizzaOrderWorkflow.run,
        OrderRequest.model_validate({"order": placed(order, vault), **request}),
        id=workflow_id_for(order.order_number),
        task_queue=task_queue,
    )


async def result_of(handle: WorkflowHandle[Any, T]) -> T:
    """The run's result; a run still going after RESULT_TIMEOUT fails the test."""
    return await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)


async def fail_of(handle: OrderHandle) -> ApplicationError:
    """Wait for the run to fail; its root cause."""
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(handle)
    root: BaseException = failure.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert isinstance(root, ApplicationError)
    return root


async def activities_run(handle: OrderHandle) -> list[str]:
    """Activity types the run scheduled, in order (each retry is not a new schedule)."""
    history = await handle.fetch_history()
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]


async def activity_results(client: Client, handle: OrderHandle) -> dict[str, Any]:
    """Activity type -> its decoded result (as plain JSON data), for completed activities."""
    history = await handle.fetch_history()
    types = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    results: dict[str, Any] = {}
    for e in history.events:
        if e.HasField("activity_task_completed_event_attributes"):
            done = e.activity_task_completed_event_attributes
            [value] = await client.data_converter.decode(done.result.payloads)
            results[types[done.scheduled_event_id]] = value
    return results


async def terminate(client: Client, workflow_id: str, reason: str) -> None:
    """Terminate the order's run and wait until visibility lists it as terminated, where the
    reconciler looks for it (visibility is eventually consistent)."""
    await client.get_workflow_handle(workflow_id).terminate(reason)
    query = f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'Terminated'"
    async with asyncio.timeout(RESULT_TIMEOUT):
        while not (await client.count_workflows(query)).count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def net_money(stores: Stores, order_number: str) -> int:
    return sum(
        p.amount if p.kind == "charge" else -p.amount
        for p in stores.payments.payments()
        if p.order_number == order_number
    )


async def history_has(handle: OrderHandle, event_type: EventType.ValueType) -> None:
    """Wait until the run's history holds an event of ``event_type``."""
    async with asyncio.timeout(RESULT_TIMEOUT):
        # History is only observable by fetching it: poll (no fixed sleep guessing a state).
        while not any(  # noqa: ASYNC110
            e.event_type == event_type for e in (await handle.fetch_history()).events
        ):
            await asyncio.sleep(0.02)
