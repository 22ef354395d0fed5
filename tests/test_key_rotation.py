"""Key rotation: an order started under key 1 finishes after key 2 becomes primary.

Real workflow and activities on the real dev server (in memory); the two workers, one
before and one after the rotation, differ only in their key rings.
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker
from pizza_saga.common.crypto import KEY_ID, KeyRing, KeyRingError
from pizza_saga.common.temporal import data_converter
from pizza_saga.order.models import OrderConfirmation
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from tests.orders import RESULT_TIMEOUT, net_money, new_order, start
from tests.postgres import SQLITE_ONLY

pytestmark = [pytest.mark.devserver, SQLITE_ONLY]


def client_with(env: WorkflowEnvironment, ring: KeyRing) -> Client:
    """A client of the same server whose payloads use ``ring``."""
    config = env.client.config()
    config["data_converter"] = data_converter(ring)
    return Client(**config)


async def test_order_started_under_the_old_key_finishes_under_the_new_one(
    dev_env: WorkflowEnvironment, stores: Stores, task_queue: str
) -> None:
    old = KeyRing.generate("key-1")
    new = old.with_new_primary("key-2")
    order = new_order()
    before_rotation = client_with(dev_env, old)

    async with build_worker(before_rotation, stores, task_queue=task_queue):
        handle = await start(
            before_rotation,
            order,
            task_queue=task_queue,
            vault=stores.vault,
            waits={"prep_seconds": 1},
        )
        async with asyncio.timeout(RESULT_TIMEOUT):
            while not any(  # noqa: ASYNC110
                e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
                for e in (await handle.fetch_history()).events
            ):
                await asyncio.sleep(0.02)

    # Key 2 becomes primary; key 1 stays in the ring to read what was written under it.
    after_rotation = client_with(dev_env, new)
    async with build_worker(after_rotation, stores, task_queue=task_queue):
        rotated: WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]
        rotated = after_rotation.get_workflow_handle_for(
            PizzaOrderWorkflow.run, workflow_id_for(order.order_number)
        )
        confirmation = await asyncio.wait_for(rotated.result(), RESULT_TIMEOUT)

    assert confirmation.amount == 3500
    assert net_money(stores, order.order_number) == 3500
    history = await rotated.fetch_history()
    key_ids = {
        payload.metadata[KEY_ID]
        for event in history.events
        for payload in (
            list(event.workflow_execution_started_event_attributes.input.payloads)
            + list(event.activity_task_scheduled_event_attributes.input.payloads)
        )
    }
    assert key_ids == {b"key-1", b"key-2"}
    # The whole history still decodes with the rotated ring...
    for event in history.events:
        payloads = event.activity_task_scheduled_event_attributes.input.payloads
        await after_rotation.data_converter.decode(payloads)
    # ...and not without the old key.
    without_old = KeyRing(primary="key-2", keys={"key-2": new.keys["key-2"]})
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads
    with pytest.raises(KeyRingError, match="key 'key-1', which is not configured"):
        await data_converter(without_old).decode(started)
