"""Following orders does not load the workers: a stream costs a worker one ledger query per
workflow task of its order, however long the order is followed.

A real dev server, a worker in this process (its interceptor counts the queries it answers
and fails the first attempts of `get_distance`, so that the orders sit retrying for a few
seconds, as a flaky service makes them), and the API on uvicorn, its streams read over a
real socket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    HandleQueryInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from pizza_saga.access.service import Actor
from pizza_saga.api.events import order_hub
from pizza_saga.api.server import ApiServer
from pizza_saga.app import SEARCH_ATTRIBUTES, build_api, build_service, build_worker, open_stores
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import binary, connect
from pizza_saga.order.workflow import STEP_RETRY, workflow_id_for
from tests.orders import new_order
from tests.processes import until
from tests.site import STREAM_SECONDS, Event, Stream, finish

pytestmark = pytest.mark.devserver

ORDERS = 4
FLAKY_ATTEMPTS = 4
"""Attempts of `get_distance` that fail: with the steps' retry policy the orders retry for
0.5 + 1 + 2 + 4 = 7.5 s, about 30 looks at each order at the old four a second."""
FLAKY = "the distance service is unavailable (test)"


class Counting(Interceptor):
    """Counts the ledger queries the worker answers, per workflow; fails the first
    FLAKY_ATTEMPTS attempts of every `get_distance`."""

    def __init__(self) -> None:
        self.queries: Counter[str] = Counter()

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        queries = self.queries

        class Inbound(WorkflowInboundInterceptor):
            async def handle_query(self, input: HandleQueryInput) -> Any:
                queries[workflow.info().workflow_id] += 1
                return await super().handle_query(input)

        return Inbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Flaky(next)


class _Flaky(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == "get_distance" and info.attempt <= FLAKY_ATTEMPTS:
            raise ApplicationError(FLAKY)
        return await super().execute_activity(input)


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")), search_attributes=SEARCH_ATTRIBUTES
    )
    async with env:
        yield env


def retrying(event: Event) -> bool:
    """The order shows its distance being tried again, after a failure."""
    return any(
        p["activity_type"] == "get_distance" and p["attempt"] > 1 and p["last_failure"]
        for p in event.json()["pending_activities"]
    )


def driver_waiting(event: Event) -> bool:
    """The order waits for its driver (30 s): nothing changes for a while."""
    data = event.json()
    return any(
        r["step"] == "notify_delivery_driver" and r["state"] == "RUNNING"
        for r in data["ledger"] or []
    ) and any(p["activity_type"] == "notify_delivery_driver" for p in data["pending_activities"])


async def test_streams_cost_the_worker_one_query_per_workflow_task_not_per_second(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    assert STEP_RETRY.maximum_attempts is not None
    assert STEP_RETRY.maximum_attempts > FLAKY_ATTEMPTS, "the orders get past their distance"
    settings = Settings.model_validate(
        {
            "PIZZA_HOME": tmp_path,
            "PIZZA_TASK_QUEUE": f"streams-{uuid.uuid4().hex}",
            "PIZZA_PREP_SECONDS": 0,
            "PIZZA_DRIVER_SECONDS": 30,
        }
    )
    target = dev_server.client.service_client.config.target_host
    client = await connect(settings, target)
    stores = open_stores(settings)
    service = build_service(client, stores, settings)
    app = build_api(service, ui_url="http://localhost:8233", namespace=client.namespace)
    _, key = await service.access.add_operator("tests", by=Actor.operator("tests", source="tests"))
    counting = Counting()
    orders = [new_order() for _ in range(ORDERS)]
    sse = {"Accept": "text/event-stream", "Authorization": f"Bearer {key}"}
    worker = build_worker(
        client, stores, task_queue=settings.task_queue, interceptors=[counting], sandboxed=False
    )
    async with (
        worker,
        ApiServer(app, port=0) as server,
        httpx.AsyncClient(base_url=server.url, timeout=STREAM_SECONDS) as http,
    ):
        try:
            await until("the worker to poll", service.worker_polling)
            for order in orders:
                await service.place(order)
            # One stream per order, and a second on the first order (it shares the watcher).
            paths = [f"/api/orders/{o.order_number}/events" for o in orders]
            async with asyncio.TaskGroup() as streams:
                followed = [
                    streams.create_task(follow(http, path, sse)) for path in [*paths, paths[0]]
                ]
            await until("the watchers to stop", lambda: order_hub(app).watchers == 0)
            queries = dict(counting.queries)
            histories = [
                await client.get_workflow_handle(workflow_id_for(o.order_number)).fetch_history()
                for o in orders
            ]
        finally:
            for order in orders:
                await finish(service, order.order_number)

    for task in followed:
        # Every attempt after the first (the server's describe has them; no history event).
        attempts = {
            p["attempt"]
            for e in task.result()
            if retrying(e)
            for p in e.json()["pending_activities"]
        }
        assert attempts >= {FLAKY_ATTEMPTS + 1}, attempts
    for order, history in zip(orders, histories, strict=True):
        tasks = sum(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events
        )
        # The first snapshot's query, then at most one per workflow task; never one per look
        # at an order retrying its distance.
        asked = queries.get(workflow_id_for(order.order_number), 0)
        assert 0 < asked <= tasks + 1, (order.order_number, asked, tasks)


async def follow(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[Event]:
    """Read the order's stream as a browser does, until its driver's wait."""
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        stream = Stream(response)
        await stream.until("the driver's wait", driver_waiting)
        return stream.events
