"""Spans that carry no failure message: what Temporal stores encrypted stays out of traces.

Temporal's history holds failure messages and stack traces encrypted (the codec encodes
failures); an exception recorded on a span would carry them in clear to the trace backend:
a bill's address, an operator's reason for a skip, a validation error quoting the input.
`ScrubbedTracerProvider` wraps a tracer provider so that every span made through it keeps
the exception's type, its frames and its error status, never its message:

- an ``exception`` event has ``exception.type`` (and, for a Temporal application error,
  ``temporal.error.type``), ``exception.escaped`` and ``exception.stacktrace`` with the
  frames of each exception of the chain and their types only; no ``exception.message``;
- a status keeps its code and drops its description.

The client's TracingInterceptor and the API's request instrumentation both trace through it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types
from temporalio.exceptions import ApplicationError

EXCEPTION_EVENT = "exception"
DROPPED_ATTRIBUTES = frozenset({"exception.message", "exception.stacktrace"})
"""Attributes of an exception event that may quote data; the stack trace is rebuilt bare."""


def exception_type(exc: BaseException) -> str:
    """The exception's type as OpenTelemetry names it (module and qualified name)."""
    kind = type(exc)
    module = kind.__module__
    return f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__


def bare_stacktrace(exc: BaseException) -> str:
    """The traceback of ``exc`` and its causes, oldest first: their frames and types, no message."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for item in reversed(chain):
        if parts:
            parts.append("\nThe above exception led to the following exception:\n\n")
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{exception_type(item)}\n")
    return "".join(parts)


def _scrubbed_event(attributes: types.Attributes) -> dict[str, types.AnyValue]:
    return {k: v for k, v in (attributes or {}).items() if k not in DROPPED_ATTRIBUTES}


class ScrubbedSpan(Span):
    """A span that records exceptions and statuses without their messages."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def __getattr__(self, name: str) -> Any:
        """What else the span has (the SDK's ``kind``, ``name``...) reads through."""
        if name == "_span":
            raise AttributeError(name)
        return getattr(self._span, name)

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time=end_time)

    def get_span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._span.set_attributes(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self._span.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if name == EXCEPTION_EVENT:
            attributes = _scrubbed_event(attributes)
        self._span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        self._span.set_status(Status(code))

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        recorded: dict[str, types.AnyValue] = {
            "exception.type": exception_type(exception),
            "exception.stacktrace": bare_stacktrace(exception),
            "exception.escaped": str(escaped),
        }
        if isinstance(exception, ApplicationError) and exception.type:
            recorded["temporal.error.type"] = exception.type
        recorded.update(_scrubbed_event(attributes))
        self._span.add_event(EXCEPTION_EVENT, recorded, timestamp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if isinstance(exc_val, Exception) and self.is_recording():
            self.record_exception(exc_val, escaped=True)
            self.set_status(StatusCode.ERROR)
        self.end()


class ScrubbedTracer(trace.Tracer):
    """A tracer whose spans are `ScrubbedSpan`s."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        # The inner span never records an exception itself: only this wrapper does.
        span = self._tracer.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
        )
        return ScrubbedSpan(span)

    # The API types this as its own private context-manager class; any context manager works.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class ScrubbedTracerProvider(trace.TracerProvider):
    """A tracer provider over ``provider`` whose tracers make `ScrubbedSpan`s."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        return ScrubbedTracer(
            self.provider.get_tracer(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
        )
