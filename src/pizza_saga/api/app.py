"""Build the FastAPI app over an OrderService."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pizza_saga.api import docs, events, health, orders, pages, payments, problems, stock
from pizza_saga.api.access import AccessLimiter
from pizza_saga.order.service import OrderService


@dataclass(frozen=True)
class Links:
    """Where the Temporal Web UI is, for links from orders to their workflows."""

    ui_url: str
    namespace: str


SECURITY_HEADERS = {
    # An order's link carries its customer's token: never send it on to another site.
    # (Not no-referrer: under it browsers send `Origin: null` on this site's own forms.)
    "Referrer-Policy": "same-origin",
    # No page of ours in another site's frame (a framed button is a click away).
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (ASGI: event streams pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self._app(scope, receive, with_headers)


MAX_BODY_BYTES = 64 * 1024
"""The largest request body taken (an order of the most pizzas is about 4 KB): larger ones
get 413 before they are read whole."""


class _BodyTooLarge(Exception):
    pass


class _BodyLimit:
    """Refuses (413) a request whose body is over MAX_BODY_BYTES, by its Content-Length or
    as it arrives, before the app has it all in memory."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _too_large(scope, receive, send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES and not refused:
                    refused = True
                    if not started:
                        await _too_large(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:  # the app's own answer to the cut body: 413 went out instead
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self._app(scope, counted, watched)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = problems.problem(
        413, f"the request body is over {MAX_BODY_BYTES} bytes; nothing was done"
    )
    await response(scope, receive, send)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class _AllowedHosts:
    """Answers only requests whose ``Host`` is one of ours (400 otherwise): a site whose name
    was rebound to this machine cannot read or act through a browser that visits it."""

    def __init__(self, app: ASGIApp, *, names: Sequence[str]) -> None:
        self._app = app
        self._names = frozenset(name.lower().strip("[]") for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host
            name = (
                name.rsplit(":", 1)[0]
                if not host.startswith("[") and name.count(":") == 1
                else name
            )
            if name not in self._names:
                response = problems.problem(
                    400,
                    f"Host {host[:100]!r} is not a name this service answers to; an operator "
                    "adds it to PIZZA_ALLOWED_HOSTS",
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def create_app(
    service: OrderService, *, links: Links, allowed_hosts: Sequence[str] = ()
) -> FastAPI:
    """The API and the pages, over ``service``; who may call what: api/access.py. Requests
    must name loopback or one of ``allowed_hosts`` in their ``Host``."""
    app = FastAPI(
        title="pizza-saga",
        summary="Pizza orders that run as sagas on Temporal.",
        version="0.1.0",
        # FastAPI's own docs pages load their files from a CDN: ours serves them (api/docs.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.links = links
    app.state.access_limiter = AccessLimiter()
    problems.install(app)
    app.add_middleware(_BodyLimit)
    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_AllowedHosts, names=(*LOOPBACK_NAMES, *allowed_hosts))
    docs.install(app)
    app.include_router(health.router)
    app.include_router(orders.router)
    app.include_router(stock.router)
    app.include_router(payments.router)
    app.include_router(payments.orders_router)
    events.install(app)
    pages.install(app)
    return app
