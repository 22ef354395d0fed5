"""A process's metrics and traces: one SDK runtime serving Prometheus, and OpenTelemetry spans.

Metrics: the Temporal SDK's runtime telemetry serves one Prometheus endpoint per process
(``/metrics`` on PIZZA_METRICS_ADDRESS). Every client and worker made on that runtime reports
there, and so does anything recorded with its `MetricMeter`: workflow and activity meters
of its workers, and the HTTP API's own counters. Counters end in ``_total``, durations are
seconds and end in ``_seconds``.

Traces: when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) variable is
set, spans go to that OTLP/HTTP endpoint; otherwise no tracer is set up and nothing is sent.
Spans carry no failure message nor status description (common/spans.py): Temporal keeps
those encrypted, and a trace must not show them in clear.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
OTLP_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class MetricsUnavailable(Exception):
    """The metrics endpoint cannot be served (address taken, or not this machine's)."""


_runtime: Runtime | None = None


def process_runtime(
    metrics_address: str | None,
    *,
    histogram_buckets: Mapping[str, Sequence[float]] | None = None,
) -> Runtime:
    """The process's one SDK runtime; with ``metrics_address`` it serves Prometheus there.

    Made on the first call and set as the SDK's default runtime, so every client and worker
    of the process reports through it; later calls return the same runtime. The SDK core's
    own log lines go through Python logging (logger ``temporalio.core``), in the process's
    log format. Histograms recorded in seconds need their bucket bounds in
    ``histogram_buckets`` (by metric name): the SDK's default bounds are for milliseconds.
    """
    global _runtime
    if _runtime is not None:
        return _runtime
    metrics = None
    if metrics_address is not None:
        metrics = PrometheusConfig(
            bind_address=metrics_address,
            counters_total_suffix=True,
            unit_suffix=True,
            durations_as_seconds=True,
            histogram_bucket_overrides=dict(histogram_buckets or {}),
        )
    logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    try:
        runtime = Runtime(telemetry=TelemetryConfig(logging=logs, metrics=metrics))
    except ValueError as err:
        raise MetricsUnavailable(f"PIZZA_METRICS_ADDRESS {metrics_address}: {err}") from None
    Runtime.set_default(runtime, error_if_already_set=False)
    _runtime = runtime
    return runtime


def otlp_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTEL_EXPORTER_OTLP_* variables ask for spans to be exported."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in OTLP_ENDPOINT_VARIABLES)


def tracer_provider_from_env(service_name: str) -> TracerProvider | None:
    """A tracer provider exporting over OTLP/HTTP, set as the global one; None when no
    OTEL_EXPORTER_OTLP_* endpoint is configured.

    The exporter reads the standard variables itself (endpoint, headers, timeout,
    certificates). OTEL_SERVICE_NAME, if set, names the service instead of ``service_name``.
    """
    if not otlp_configured():
        return None
    for name in OTLP_PROTOCOL_VARIABLES:
        protocol = os.environ.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            log.warning("%s=%s: spans are exported over http/protobuf only", name, protocol)
            break
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    from pizza_saga.common.spans import ScrubbedTracerProvider

    # Anything else tracing through the global provider records no failure message either.
    trace.set_tracer_provider(ScrubbedTracerProvider(provider))
    return provider
