"""Traces: one trace from placing an order through its workflow to every activity and
compensation, on the real dev server, with the product's own client, worker and API.

The spans go to OpenTelemetry's in-memory exporter. The order is placed with
`POST /api/orders` on the API app (in process), so the trace starts at that request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import (
    SEARCH_ATTRIBUTES,
    build_api,
    build_service,
    build_worker,
    connect_client,
    open_stores,
    traced,
)
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import binary
from pizza_saga.order.client import OrderStatus
from tests.orders import new_order

pytestmark = pytest.mark.devserver

WAIT = 60.0


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")), search_attributes=SEARCH_ATTRIBUTES
    )
    async with env:
        yield env


def spans_named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[str]:
    return sorted(s.name for s in spans if s.name.startswith(prefix))


async def test_one_trace_runs_from_placing_an_order_to_each_activity_and_compensation(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = traced(None, provider)
    settings = Settings.model_validate(
        {
            "PIZZA_HOME": tmp_path,
            "PIZZA_TASK_QUEUE": f"trace-{uuid.uuid4().hex}",
            "PIZZA_PREP_SECONDS": 0,
            "PIZZA_DRIVER_SECONDS": 0,
        }
    )
    target = dev_server.client.service_client.config.target_host
    client = await connect_client(settings, telemetry, target_host=target)
    stores = open_stores(settings)
    service = build_service(client, stores, settings)

    web = build_api(
        service, ui_url="http://localhost:8233", namespace="default", telemetry=telemetry
    )
    async with (
        build_worker(client, stores, task_queue=settings.task_queue),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web), base_url="http://127.0.0.1"
        ) as http,
    ):
        async with asyncio.timeout(WAIT):
            while not await service.worker_polling():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        exporter.clear()  # what polling for the worker traced is no part of the order
        order = new_order(customer__email="bounce@example.com")
        placed = await http.post("/api/orders", json=order.model_dump(mode="json"))
        assert placed.status_code == 202, placed.text
        outcome = await service.wait(order.order_number, within=WAIT)
        assert outcome.status is OrderStatus.FAILED

        # The last span (the workflow's run) ends when the worker reports it: wait for it.
        async with asyncio.timeout(WAIT):
            while not spans_named(exporter.get_finished_spans(), "RunWorkflow:"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    provider.force_flush()
    spans = exporter.get_finished_spans()

    [request] = [s for s in spans if s.parent is None and s.name == "POST /api/orders"]
    trace_id = request.context.trace_id
    [start] = [s for s in spans if s.name == "StartWorkflow:PizzaOrderWorkflow"]
    assert start.context.trace_id == trace_id, "the API request starts the order's trace"
    others = {s.name for s in spans if s.context.trace_id != trace_id}
    # Following the order (its ledger, by query) is traced on its own, not as the order.
    assert others <= {"QueryWorkflow:ledger", "HandleQuery:ledger"}, others
    ran = spans_named(spans, "RunActivity:")
    assert ran == sorted(
        [
            "RunActivity:get_distance",
            "RunActivity:update_inventory",
            "RunActivity:process_credit_card",
            "RunActivity:send_bill",
            # the rollback: the bill bounced, so the charge is refunded and the stock returned
            "RunActivity:refund_customer",
            "RunActivity:revert_inventory",
        ]
    )
    assert spans_named(spans, "StartActivity:") == [name.replace("Run", "Start") for name in ran]
    assert spans_named(spans, "RunWorkflow:") == ["RunWorkflow:PizzaOrderWorkflow"]

    # The API's requests are spans of their own, named by route template.
    exporter.clear()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web), base_url="http://127.0.0.1"
    ) as http:
        assert (await http.get("/healthz")).status_code == 200
    provider.force_flush()
    servers = [s for s in exporter.get_finished_spans() if s.parent is None]
    assert [(s.name, (s.attributes or {}).get("http.route")) for s in servers] == [
        ("GET /healthz", "/healthz")
    ]
