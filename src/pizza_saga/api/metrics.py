"""The HTTP API's request metrics: requests and their latency by route template and status.

Recorded with the process's SDK runtime meter, so `pizza api` serves them on the same
Prometheus endpoint as the SDK's own metrics (PIZZA_METRICS_ADDRESS). A plain ASGI
middleware: importing it does not import the web framework.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from temporalio.common import MetricMeter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = "pizza_http_requests"
"""Counter of HTTP requests answered, by ``method``, ``route`` (template) and ``status``."""
REQUEST_DURATION = "pizza_http_request_duration"
"""Histogram (seconds) of the time to answer, by ``method``, ``route`` and ``status``."""
REQUEST_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HISTOGRAM_BUCKETS = {REQUEST_DURATION: REQUEST_DURATION_BUCKETS}
UNMATCHED = "unmatched"
"""The route label of a request no route matched (never the raw path: it is unbounded)."""


class RequestMetrics:
    """ASGI middleware counting each HTTP request and timing it, by route template."""

    def __init__(self, app: ASGIApp, *, meter: MetricMeter) -> None:
        self._app = app
        self._requests = meter.create_counter(REQUESTS, "HTTP requests answered.")
        self._duration = meter.create_histogram_float(
            REQUEST_DURATION, "Time to answer an HTTP request.", "seconds"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            labels = {"method": str(scope.get("method", "")), "route": route, "status": str(status)}
            self._requests.add(1, labels)
            self._duration.record(time.perf_counter() - started, labels)
