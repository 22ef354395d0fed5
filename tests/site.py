"""The web tests' site: a real dev server, a real `pizza worker`, and the API served by uvicorn.

One dev server and one worker (its own task queue) serve the whole session; each test module
serves the API in-process on a free port, over an OrderService with its own settings (the
simulated waits and the compensations' patience travel with each order, from the settings of
whoever places it). Event streams are read over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from temporal_saga import OperatorAction

from pizza_saga.access.service import Actor
from pizza_saga.api.access import SESSION_COOKIE
from pizza_saga.api.server import ApiServer
from pizza_saga.api.views import needs_operator
from pizza_saga.app import build_api, build_service, open_stores
from pizza_saga.billing import cards
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD
from pizza_saga.order.service import OrderService, ServiceError
from tests.processes import Deployment, Process, deployment

TEST_CARDS = [
    GOOD_CARD,
    BROKEN_CARD,
    cards.DECLINED_CARD,
    cards.FLAKY_CARD,
    cards.REFUND_FAILING_CARD,
]
"""Every card number of the sandbox: none may ever appear in a page or an event."""
WORKER_ENV = {
    "PIZZA_COMPENSATION_BACKOFF_SECONDS": "0.05",
    "PIZZA_SHUTDOWN_GRACE_SECONDS": "0",
}
"""The site's settings beyond a deployment's (tests/processes.py: the simulated waits at 0)."""
SEED_FORM = {
    "customer.customer_id": "12983",
    "customer.name": "María García",
    "customer.email": "maria1985@example.com",
    "customer.phone": "415-555-7418",
    "qty.0": "1",
    "qty.1": "1",
    "qty.2": "1",
    "is_delivery": "on",
    "address.line1": "701 Mission Street",
    "address.line2": "Apartment 9C",
    "address.city": "San Francisco",
    "address.state": "CA",
    "address.postal_code": "94103",
    "credit_card_info.holder_name": "Lisa Anderson",
    "card": "approved",
}
"""The new-order form as the page fills it in (the seed's order, the seed's good card)."""
STREAM_SECONDS = 60.0
"""Longest a test reads an event stream before it fails."""


def card_numbers_in(text: str) -> list[str]:
    """The sandbox card numbers found in ``text`` (none, in a passing test)."""
    return [card for card in TEST_CARDS if card in text]


@dataclass
class Event:
    """One server-sent event as a client parses it."""

    data: str = ""
    id: str | None = None
    event: str = "message"

    def json(self) -> Any:
        """The event's data, parsed."""
        return json.loads(self.data)


@dataclass
class Stream:
    """An open event stream: its response and the events read so far."""

    response: httpx.Response
    events: list[Event] = field(default_factory=list)
    _lines: AsyncIterator[str] | None = None

    async def next(self) -> Event | None:
        """The next event; None once the server has closed the stream."""
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        event = Event()
        data: list[str] = []
        async for line in self._lines:
            if line == "":
                if data:
                    event.data = "\n".join(data)
                    self.events.append(event)
                    return event
                event = Event()  # a comment-only block (keep-alive)
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                event.id = value
            elif name == "event":
                event.event = value
        return None

    async def until(self, what: str, check: Any) -> Event:
        """Read events until ``check(event)`` holds; fail if the stream ends first."""
        async with asyncio.timeout(STREAM_SECONDS):
            while True:
                event = await self.next()
                assert event is not None, f"the stream ended before {what}"
                if check(event):
                    return event

    async def rest(self) -> list[Event]:
        """Every event until the server closes the stream."""
        events = []
        async with asyncio.timeout(STREAM_SECONDS):
            while (event := await self.next()) is not None:
                events.append(event)
        return events


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


async def csrf_of(http: httpx.AsyncClient, page: str = "/orders/new") -> str:
    """The CSRF token the forms of ``page`` carry for this client (its seed cookie is kept
    by the client), as a browser has it from the page it posts from."""
    found = CSRF_FIELD.search((await http.get(page)).text)
    assert found, f"no CSRF token in {page}"
    return found.group(1)


@dataclass
class Served:
    """The API and pages of one OrderService, served on a free port.

    ``http`` is a visitor without credentials (a customer, or an attacker); ``operator`` is
    logged in as an operator (its session cookie, and its key as a bearer for the API).
    """

    url: str
    app: FastAPI
    service: OrderService
    http: httpx.AsyncClient
    operator: httpx.AsyncClient
    operator_key: str
    operator_session: str

    async def post_form(
        self, path: str, data: Mapping[str, str], *, as_operator: bool = False
    ) -> httpx.Response:
        """Post a form as the pages do: with the CSRF token of this client's pages."""
        http = self.operator if as_operator else self.http
        return await http.post(path, data={**data, "csrf": await csrf_of(http)})

    def customer_link(self, order_number: str) -> str:
        """The order's page as its customer has it (the token in the link)."""
        token = self.service.access.order_token(order_number)
        return f"/orders/{order_number}?token={token}"

    def customer_headers(self, order_number: str) -> dict[str, str]:
        """The headers of the order's customer on the API: their token as a bearer."""
        return {"Authorization": f"Bearer {self.service.access.order_token(order_number)}"}

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        last_event_id: str | None = None,
        *,
        as_operator: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Stream]:
        """Open the event stream at ``path`` (as a browser would reconnect, with its id): as
        the operator, or with ``headers`` (e.g. `customer_headers`), or with what ``path``
        carries (``?token=``)."""
        sent = {"Accept": "text/event-stream", **(headers or {})}
        if last_event_id is not None:
            sent["Last-Event-ID"] = last_event_id
        http = self.operator if as_operator else self.http
        async with http.stream("GET", path, headers=sent) as response:
            yield Stream(response)


@dataclass
class Site:
    """A dev server and a `pizza worker` on their own task queue, sharing one PIZZA_HOME."""

    deployment: Deployment
    worker: Process

    @property
    def ui_url(self) -> str:
        return self.deployment.ui_url

    @property
    def worker_log(self) -> Path:
        return self.worker.log

    def settings(self, **env: str) -> Settings:
        return Settings.from_env({**self.deployment.env, **env})

    @contextlib.asynccontextmanager
    async def serve(self, **env: str) -> AsyncIterator[Served]:
        """The API and pages over a service with these settings (e.g. PIZZA_DRIVER_SECONDS)."""
        settings = self.settings(**env)
        client = await connect(settings, self.deployment.address)
        service = build_service(client, open_stores(settings), settings)
        app = build_api(service, ui_url=self.ui_url, namespace=client.namespace)
        _, key = await service.access.add_operator(
            "test-operator", by=Actor.operator("tests", source="tests")
        )
        operator = await service.access.operator_by_key(key)
        assert operator is not None
        session = service.access.session_for(operator)
        async with (
            ApiServer(app, port=0) as server,
            httpx.AsyncClient(base_url=server.url, timeout=STREAM_SECONDS) as http,
            httpx.AsyncClient(
                base_url=server.url,
                timeout=STREAM_SECONDS,
                headers={"Authorization": f"Bearer {key}"},
                cookies={SESSION_COOKIE: session},
            ) as as_operator,
        ):
            yield Served(server.url, app, service, http, as_operator, key, session)


@contextlib.asynccontextmanager
async def running_site(home: Path, env: Mapping[str, str] = WORKER_ENV) -> AsyncIterator[Site]:
    """Start a private dev server and a `pizza worker` process; stop both afterwards."""
    async with deployment(home, queue="web") as site:
        site.env.update(env)
        yield Site(site, await site.worker())


async def finish(service: OrderService, number: str) -> None:
    """Cancel the order, or skip what it waits for, so that it holds no worker slot."""
    try:
        outcome = await service.outcome(number)
        if outcome.status is not OrderStatus.RUNNING:
            return
        if needs_operator(outcome):
            await service.resolve(number, action=OperatorAction.SKIP, reason="the test is over")
        else:
            await service.cancel(number)
    except ServiceError:
        pass
