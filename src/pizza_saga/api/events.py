"""Server-sent events: an order's snapshots as they change, and the list of recent orders.

Every stream is fed by a hub (`hub.py`): one watcher per order, however many browser tabs
follow it, and one poller of the order list for every home page open.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Request, Response
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from starlette.types import Receive, Scope, Send

from pizza_saga.api.access import StreamOperator, StreamOrderActor, source_of
from pizza_saga.api.hub import Hub, HubClosed, Subscription
from pizza_saga.api.problems import Problem
from pizza_saga.common.formatting import workflow_url
from pizza_saga.order.client import OrderOutcome, OrderStatus
from pizza_saga.order.service import (
    OrderNotFound,
    OrderService,
    OrderSummary,
    ServiceError,
    snapshot_id,
)

ORDER_NUMBER = re.compile(r"[A-Za-z0-9_-]{1,40}")
"""What an order number can be (as `PizzaOrder` validates it); anything else is no order."""
KEEPALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""
RETRY_MS = 2000
"""How long a browser waits before it reconnects a stream that broke."""
LIST_INTERVAL = 1.0
"""Seconds between looks at the list of recent orders while a home page follows it."""
LIST_SIZE = 50
"""Orders the home page shows."""
RECENT = "recent"
"""The list hub's one key."""
STREAMS_RETRY_AFTER = 10
"""Seconds a client refused for too many open streams is told to wait (Retry-After)."""

router = APIRouter(tags=["events"])


def install(app: FastAPI) -> None:
    """Add the event routes and their hubs to ``app`` (its state holds the service)."""
    service: OrderService = app.state.service
    app.state.order_hub = Hub[str, OrderOutcome](service.watch)
    app.state.list_hub = Hub[str, list[OrderSummary]](lambda _: watch_list(service))
    app.state.stream_limits = StreamLimits(
        per_client=service.settings.streams_per_client, total=service.settings.streams_max
    )
    app.include_router(router)


async def close(app: FastAPI) -> None:
    """End every stream of ``app`` and stop its watchers (before the server stops)."""
    await order_hub(app).close()
    await list_hub(app).close()


def order_hub(app: FastAPI) -> Hub[str, OrderOutcome]:
    """The hub of ``app``'s order streams."""
    hub: Hub[str, OrderOutcome] = app.state.order_hub
    return hub


def list_hub(app: FastAPI) -> Hub[str, list[OrderSummary]]:
    """The hub of ``app``'s order-list streams."""
    hub: Hub[str, list[OrderSummary]] = app.state.list_hub
    return hub


class StreamLimits:
    """Counts the open event streams, per client address and in all, and refuses one more
    beyond either cap (429): each stream holds a connection, and each order followed a
    watcher on Temporal."""

    def __init__(self, *, per_client: int, total: int) -> None:
        self.per_client, self.total = per_client, total
        self._open: dict[str, int] = {}
        self._count = 0

    def open_streams(self, source: str | None = None) -> int:
        """Streams open now: from ``source``, or in all."""
        return self._count if source is None else self._open.get(source, 0)

    def admit(self, source: str) -> Callable[[], None]:
        """Count one more stream from ``source`` and return its release (safe to call
        twice); Problem 429 with Retry-After if that would pass a cap."""
        if self._open.get(source, 0) >= self.per_client:
            raise self._refusal(
                f"{source} has {self.per_client} event streams open, the most one client may "
                "(PIZZA_STREAMS_PER_CLIENT); close one or try again later",
                "PIZZA_STREAMS_PER_CLIENT",
                self.per_client,
            )
        if self._count >= self.total:
            raise self._refusal(
                f"the server has {self.total} event streams open, its most "
                "(PIZZA_STREAMS_MAX); try again later",
                "PIZZA_STREAMS_MAX",
                self.total,
            )
        self._open[source] = self._open.get(source, 0) + 1
        self._count += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._count -= 1
            left = self._open[source] - 1
            if left:
                self._open[source] = left
            else:
                del self._open[source]

        return release

    @staticmethod
    def _refusal(detail: str, limit: str, most: int) -> Problem:
        return Problem(
            429,
            detail,
            headers={"Retry-After": str(STREAMS_RETRY_AFTER)},
            limit=limit,
            max_streams=most,
        )


def stream_limits(app: FastAPI) -> StreamLimits:
    """The caps on ``app``'s open event streams, and their counts."""
    limits: StreamLimits = app.state.stream_limits
    return limits


def outcome_data(outcome: OrderOutcome, request: Request) -> dict[str, Any]:
    """An order snapshot as events and pages carry it: the outcome and its Web UI link."""
    links = request.app.state.links
    data: dict[str, Any] = outcome.model_dump(mode="json")
    data["web_ui_url"] = workflow_url(
        links.ui_url, links.namespace, outcome.workflow_id, outcome.run_id
    )
    return data


def recent_first(orders: list[OrderSummary]) -> list[OrderSummary]:
    """Orders waiting for an operator first, then the rest, each newest first."""
    return sorted(orders, key=lambda o: not (o.needs_operator and o.status is OrderStatus.RUNNING))


async def watch_list(service: OrderService) -> AsyncIterator[list[OrderSummary]]:
    """The recent orders now, then each time the list changes; never ends by itself."""
    last: str | None = None
    while True:
        page = await service.list_orders(page_size=LIST_SIZE)
        orders = recent_first(page.orders)
        current = json.dumps([o.model_dump(mode="json") for o in orders])
        if current != last:
            last = current
            yield orders
        await asyncio.sleep(LIST_INTERVAL)


class _EventStream(EventSourceResponse):
    """An event stream that leaves its hub subscription, and frees its place under the
    caps, however the response ends."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        subscription: Subscription[Any],
        release: Callable[[], None],
    ) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._subscription = subscription
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()
            self._release()


async def _events(
    subscription: Subscription[Any], first: bytes | None, encode: Callable[[Any], bytes]
) -> AsyncIterator[bytes]:
    """The stream's bytes: ``first`` (if any), each next snapshot, keep-alive comments."""
    if first is not None:
        yield first
    while True:
        try:
            item = await asyncio.wait_for(subscription.next(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield KEEPALIVE_COMMENT
            continue
        except (ServiceError, HubClosed) as err:
            problem = {"title": "Stream interrupted", "detail": str(err)}
            yield format_sse_event(event="problem", data_str=json.dumps(problem), retry=RETRY_MS)
            return
        if item is None:
            return
        data = encode(item)
        if data:
            yield data


EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string"}}}


@router.get(
    "/api/orders/{order_number}/events",
    responses={
        200: {
            "description": "One event per change of the order, the last when it finished",
            "content": EVENT_STREAM,
        },
        204: {"description": "The order has finished and the client has its last snapshot"},
        401: {"description": "No credentials"},
        403: {"description": "These credentials do not open this order"},
        404: {"description": "No such order"},
        429: {"description": "Too many event streams open (from this client, or in all)"},
    },
)
async def order_events(
    order_number: str,
    _: StreamOrderActor,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The order's snapshots: now, then one per change of its status or ledger.

    Each event's data is the order's outcome (as `GET /api/orders/{n}`) plus `web_ui_url`;
    its id is the snapshot's content hash. The stream ends after the order's final snapshot.
    A client that reconnects with `Last-Event-ID` set to the current snapshot's id is not
    sent it again: it waits for the next change, or gets 204 if the order has finished.
    For its customer (the order's token as a bearer or `?token=`) or an operator. A client
    address holds at most `PIZZA_STREAMS_PER_CLIENT` streams open at once, the server
    `PIZZA_STREAMS_MAX`: one more is 429 (with Retry-After), its problem naming the limit.
    """
    if not ORDER_NUMBER.fullmatch(order_number):
        raise OrderNotFound(order_number)
    release = stream_limits(request.app).admit(source_of(request))
    try:
        return await _order_stream(order_number, request, last_event_id, release)
    except BaseException:
        release()
        raise


async def _order_stream(
    order_number: str, request: Request, last_event_id: str | None, release: Callable[[], None]
) -> Response:
    """`order_events`' answer, once the stream is admitted; ``release`` frees its place (the
    stream calls it when it ends; an answer without a stream, at once)."""
    subscription = order_hub(request.app).subscribe(order_number)
    try:
        first = await subscription.next()
    except BaseException as err:
        subscription.close()
        if isinstance(err, HubClosed):
            raise Problem(503, "the server is stopping") from None
        raise
    if first is None:  # the watcher always yields once before it ends; a stopping hub may not
        subscription.close()
        release()
        return Response(status_code=204)

    def encode(outcome: OrderOutcome) -> bytes:
        return format_sse_event(
            data_str=json.dumps(outcome_data(outcome, request)),
            id=snapshot_id(outcome),
            retry=RETRY_MS,
        )

    already_sent = last_event_id is not None and last_event_id == snapshot_id(first)
    if already_sent and first.status is not OrderStatus.RUNNING:
        subscription.close()
        release()
        return Response(status_code=204)
    return _EventStream(
        _events(subscription, None if already_sent else encode(first), encode),
        subscription,
        release,
    )


@router.get(
    "/api/events/orders",
    responses={
        200: {
            "description": "The recent orders, again each time the list changes",
            "content": EVENT_STREAM,
        },
        401: {"description": "No credentials"},
        403: {"description": "Operators only"},
        429: {"description": "Too many event streams open (from this client, or in all)"},
    },
)
async def order_list_events(
    _: StreamOperator,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The recent orders (those waiting for an operator first), again whenever they change.

    Each event's data is `{"orders": [...]}`: number, status, whether it needs an operator,
    start and close times. The stream does not end by itself. Operators only. It counts
    against the same caps as the order streams (429 beyond them).
    """
    release = stream_limits(request.app).admit(source_of(request))
    subscription = list_hub(request.app).subscribe(RECENT)
    skip = last_event_id

    def encode(orders: list[OrderSummary]) -> bytes:
        nonlocal skip
        data = json.dumps({"orders": [o.model_dump(mode="json") for o in orders]})
        digest = hashlib.sha256(data.encode()).hexdigest()[:16]
        if digest == skip:  # the client has this list already
            skip = None
            return b""
        skip = None
        return format_sse_event(data_str=data, id=digest, retry=RETRY_MS)

    return _EventStream(_events(subscription, None, encode), subscription, release)
