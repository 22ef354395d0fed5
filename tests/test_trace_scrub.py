"""No credential in a trace: a customer's `?token=` link is redacted from the request span."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pizza_saga.app import Stores, build_api, build_service, traced
from pizza_saga.common.settings import Settings


async def test_an_order_token_in_a_link_is_not_in_the_trace(
    stores: Stores, settings: Settings
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = build_service(None, stores, settings)
    web = build_api(
        service, ui_url="http://ui", namespace="default", telemetry=traced(None, provider)
    )
    token = service.access.order_token("T100")

    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.get("/api/orders/T100/payments", params={"token": token, "x": "1"})

    assert answer.status_code == 200  # the token opened the order's payments
    spans = exporter.get_finished_spans()
    assert spans
    recorded = repr([dict(span.attributes or {}) for span in spans])
    assert token not in recorded
    assert "token=REDACTED" in recorded
