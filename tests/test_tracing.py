"""Traces: one trace from placing an order through its workflow to every activity and
compensation, on the real dev server, with the product's own client, worker and API; and
no failure message or operator's reason in any span (Temporal keeps those encrypted).

The spans go to OpenTelemetry's in-memory exporter. The order is placed with
`POST /api/orders` on the API app (in process), so the trace starts at that request.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporal_saga import CompensationState, OperatorAction
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import (
    Stores,
    build_api,
    build_service,
    build_worker,
    connect_client,
    open_stores,
    traced,
)
from pizza_saga.billing import cards
from pizza_saga.common.settings import Settings
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.service import OrderService
from tests.orders import new_order

pytestmark = pytest.mark.devserver

WAIT = 60.0


@dataclass
class Traced:
    """An order service, its API and its client, all traced into ``exporter``."""

    exporter: InMemorySpanExporter
    provider: TracerProvider
    settings: Settings
    client: Client
    stores: Stores
    service: OrderService
    web: FastAPI


@pytest.fixture
async def traced_shop(dev_env: WorkflowEnvironment, tmp_path: Path) -> Traced:
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
            "PIZZA_COMPENSATION_BACKOFF_SECONDS": 0.01,
        }
    )
    target = dev_env.client.service_client.config.target_host
    client = await connect_client(settings, telemetry, target_host=target)
    stores = open_stores(settings)
    service = build_service(client, stores, settings)
    web = build_api(
        service, ui_url="http://localhost:8233", namespace="default", telemetry=telemetry
    )
    return Traced(exporter, provider, settings, client, stores, service, web)


def spans_named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[str]:
    return sorted(s.name for s in spans if s.name.startswith(prefix))


async def test_one_trace_runs_from_placing_an_order_to_each_activity_and_compensation(
    traced_shop: Traced,
) -> None:
    exporter, provider = traced_shop.exporter, traced_shop.provider
    settings, client = traced_shop.settings, traced_shop.client
    stores, service, web = traced_shop.stores, traced_shop.service, traced_shop.web
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


def events_of(span: ReadableSpan) -> list[tuple[str, dict[str, object]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]


async def needs_operator(service: OrderService, order_number: str) -> None:
    """Wait until the order's refund waits for an operator (its ledger says so)."""
    async with asyncio.timeout(WAIT):
        while True:
            ledger = (await service.outcome(order_number)).ledger or []
            if any(r.compensation_state is CompensationState.NEEDS_OPERATOR for r in ledger):
                return
            await asyncio.sleep(0.05)


async def test_spans_keep_failure_types_but_no_failure_message_nor_skip_reason(
    traced_shop: Traced,
) -> None:
    exporter, provider = traced_shop.exporter, traced_shop.provider
    settings, client = traced_shop.settings, traced_shop.client
    stores, service, web = traced_shop.stores, traced_shop.service, traced_shop.web
    reason = f"refunded by bank transfer {uuid.uuid4().hex}"
    # The bill bounces, then the refund keeps failing: an operator skips it, with a reason.
    order = new_order(
        customer__email="bounce@example.com", credit_card_info__number=cards.REFUND_FAILING_CARD
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
        placed = await http.post("/api/orders", json=order.model_dump(mode="json"))
        assert placed.status_code == 202, placed.text
        await needs_operator(service, order.order_number)
        await service.resolve(order.order_number, action=OperatorAction.SKIP, reason=reason)
        outcome = await service.wait(order.order_number, within=WAIT)
        assert outcome.status is OrderStatus.FAILED and outcome.error is not None
        assert outcome.error.type == "SagaCompensationError"
        assert reason in outcome.error.message  # what Temporal keeps, encrypted
        async with asyncio.timeout(WAIT):
            while not spans_named(exporter.get_finished_spans(), "RunWorkflow:"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    provider.force_flush()
    spans = exporter.get_finished_spans()

    recorded = repr(
        [(s.name, s.status.description, dict(s.attributes or {}), *events_of(s)) for s in spans]
    )
    secrets = [
        reason,
        "bounced: mailbox unavailable",  # the bill's failure
        "refused by the processor",  # the refund's failure
        outcome.error.message,
    ]
    assert [text for text in secrets if text in recorded] == []
    assert all(s.status.description is None for s in spans)
    # The traces stay useful: which spans failed, with what type of error, from where.
    [end] = [s for s in spans if s.name == "CompleteWorkflow:PizzaOrderWorkflow"]
    [failure] = [e for e in end.events if e.name == "exception"]
    attributes = dict(failure.attributes or {})
    assert attributes["exception.type"] == "temporalio.exceptions.ApplicationError"
    assert attributes["temporal.error.type"] == "SagaCompensationError"
    assert "exception.message" not in attributes
    failed = {s.name for s in spans if s.status.status_code is StatusCode.ERROR}
    assert {"RunActivity:send_bill", "RunActivity:refund_customer"} <= failed
    refunds = [s for s in spans if s.name == "RunActivity:refund_customer" and s.events]
    assert len(refunds) == cards.REFUND_FAILURES  # each failed attempt, with its stack
    stack = str(dict(refunds[0].events[0].attributes or {})["exception.stacktrace"])
    assert "Traceback (most recent call last)" in stack and "ApplicationError" in stack
