"""Telemetry plumbing on its own: OTLP export only when configured, and JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pizza_saga.common.logmask import CardNumberFilter
from pizza_saga.common.logs import JsonFormatter
from pizza_saga.common.ports import free_port
from pizza_saga.common.telemetry import otlp_configured, tracer_provider_from_env


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A stand-in OTLP/HTTP collector on a loopback port: keeps what it is sent."""
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


def test_no_otlp_variable_means_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracer_provider_from_env("pizza-worker") is None
    assert otlp_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not otlp_configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )


async def test_spans_go_to_the_configured_otlp_endpoint(
    collector: tuple[str, list[ExportTraceServiceRequest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    provider = tracer_provider_from_env("pizza-worker")
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("RunActivity:send_bill"):
        pass
    # The exporter posts from its own thread, synchronously: let the server answer meanwhile.
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    provider.shutdown()

    spans = [
        (span.name, resource.resource)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [name for name, _ in spans] == ["RunActivity:send_bill"]
    service = {a.key: a.value.string_value for a in spans[0][1].attributes}["service.name"]
    assert service == "pizza-worker"


def test_json_log_lines_carry_order_step_attempt_and_mask_card_numbers() -> None:
    def order_of(workflow_id: str) -> str | None:
        return workflow_id.removeprefix("order-") if workflow_id.startswith("order-") else None

    formatter = JsonFormatter(business_key=order_of, key_name="order_number")
    record = logging.LogRecord(
        "temporalio.activity",
        logging.INFO,
        __file__,
        1,
        "card %s refunded",
        ("4000000000000341",),
        None,
    )
    record.temporal_activity = {
        "activity_id": "process_credit_card:compensation:6",
        "activity_type": "refund_customer",
        "attempt": 1,
        "workflow_id": "order-XD1",
        "workflow_run_id": "r1",
        "workflow_type": "PizzaOrderWorkflow",
        "task_queue": "q",
    }
    CardNumberFilter().filter(record)

    line = json.loads(formatter.format(record))

    assert line["message"] == "card 400000******0341 refunded"
    assert {k: line[k] for k in ("order_number", "step", "activity_id", "workflow_id")} == {
        "order_number": "XD1",
        "step": "process_credit_card",
        "activity_id": "process_credit_card:compensation:6",
        "workflow_id": "order-XD1",
    }
    workflow_record = logging.LogRecord(
        "temporalio.workflow", logging.WARNING, __file__, 1, "failed", None, None
    )
    workflow_record.temporal_workflow = {"workflow_id": "other", "run_id": "r2"}
    workflow_record.saga_step, workflow_record.saga_attempt = "update_inventory", 3
    line = json.loads(formatter.format(workflow_record))
    assert (line["step"], line["attempt"], line["run_id"]) == ("update_inventory", 3, "r2")
    assert "order_number" not in line
