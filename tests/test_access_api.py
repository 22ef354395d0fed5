"""Who may call each endpoint of the JSON API, over a real socket, on real orders.

Every endpoint of the app's routes is called with each credential a caller can have: none,
the token of the order it names, the token of another order, an operator's key, a revoked
operator key. A refusal changes nothing (the order's history in Temporal, its ledger, the
stock, the audit trail are as before) and tells nothing: with no credential or another
order's token the answer is the same whether the order exists or not, and no answer or log
line carries a credential. Orders run on the real dev server and a real `pizza worker`
(tests/site.py); an order waits 15 minutes for its driver, so it is still running when a
refused cancel is checked; an order whose refunds fail waits for an operator.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporal_saga import OperatorAction
from temporalio.client import Client

from pizza_saga.access.service import Actor
from pizza_saga.access.tokens import AccessTokens
from pizza_saga.api.access import SESSION_COOKIE, AccessLimiter
from pizza_saga.api.problems import MEDIA_TYPE
from pizza_saga.api.views import needs_operator
from pizza_saga.billing import cards
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.menu import MENU
from tests.orders import new_order
from tests.processes import until
from tests.site import STREAM_SECONDS, Served, Site, Stream, finish

pytestmark = pytest.mark.devserver

SOURCE = "127.0.0.1"
"""Where the tests' requests come from, as the audit trail records it."""
ITEM = next(iter(MENU))
"""The menu item the stock endpoint is called on."""
BOUNCE_EMAIL = "bounce@example.com"
SKIP_REASON = "refunded by hand at the till"
FAILED_ATTEMPTS = 20
"""Bad credentials an address may send per minute (api/access.py)."""


class Credential(enum.Enum):
    """What a caller presents."""

    NONE = "no credential"
    OWN = "the order's token"
    OTHER = "another order's token"
    OPERATOR = "an operator key"
    REVOKED = "a revoked operator key"


@dataclass(frozen=True)
class Order:
    """An order placed through the API, and the customer's token it was answered with."""

    number: str
    token: str


@dataclass(frozen=True)
class Endpoint:
    """One route of the API, who may call it, and what it answers them."""

    method: str
    path: str
    who: str
    """``anyone``, ``order`` (its customer or an operator) or ``operators``."""
    ok: int
    stream: bool = False
    target: str = "running"
    """The module's order the path names: ``running`` or ``waiting`` (for an operator)."""

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def names_order(self) -> bool:
        return "{order_number}" in self.path

    def expected(self, credential: Credential) -> int:
        """The status ``credential`` gets here."""
        if self.who == "anyone" or credential is Credential.OPERATOR:
            return self.ok
        if credential in (Credential.NONE, Credential.REVOKED):
            return 401
        if credential is Credential.OWN and self.who == "order":
            return self.ok
        return 403


ENDPOINTS = [
    Endpoint("POST", "/api/orders", "anyone", 202),
    Endpoint("GET", "/api/orders", "operators", 200),
    Endpoint("GET", "/api/orders/{order_number}", "order", 200),
    Endpoint("POST", "/api/orders/{order_number}/cancel", "order", 202),
    # The running order waits for its driver: past its cut-off, the change is refused, once
    # the caller may ask (tests/test_amend_faces.py amends orders in the kitchen).
    Endpoint("PATCH", "/api/orders/{order_number}", "order", 409),
    Endpoint("POST", "/api/orders/{order_number}/resolve", "operators", 200, target="waiting"),
    Endpoint("GET", "/api/orders/{order_number}/events", "order", 200, stream=True),
    Endpoint("GET", "/api/orders/{order_number}/payments", "order", 200),
    Endpoint(
        "POST", "/api/orders/{order_number}/manual-refunds", "operators", 201, target="waiting"
    ),
    Endpoint("GET", "/api/payments", "operators", 200),
    Endpoint("GET", "/api/inventory", "anyone", 200),
    Endpoint("PUT", "/api/inventory/{item}", "operators", 200),
    Endpoint("GET", "/api/events/orders", "operators", 200, stream=True),
]
"""Every route of the API (test_every_api_route_is_in_the_table keeps it so)."""


@dataclass
class Answer:
    """A response as the tests look at it (for a stream: its first event)."""

    status: int
    headers: httpx.Headers
    text: str
    event: Any = None

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class World:
    """The module's site, its orders and credentials."""

    served: Served
    temporal: Client
    running: Order
    other: Order
    waiting: Order
    revoked_key: str
    placed: list[str] = field(default_factory=list)
    """Every order placed here (the module cancels those still running when it ends)."""

    @property
    def http(self) -> httpx.AsyncClient:
        return self.served.http

    def order(self, name: str) -> Order:
        return self.running if name == "running" else self.waiting

    def bearer(self, credential: Credential, target: Order) -> str | None:
        return {
            Credential.NONE: None,
            Credential.OWN: target.token,
            Credential.OTHER: self.other.token,
            Credential.OPERATOR: self.served.operator_key,
            Credential.REVOKED: self.revoked_key,
        }[credential]

    async def place(self, **changes: object) -> Order:
        """Place an order through the API, as anyone may."""
        order = new_order(**changes)
        answer = await self.http.post("/api/orders", json=order.model_dump(mode="json"))
        assert answer.status_code == 202, answer.text
        self.placed.append(order.order_number)
        return Order(order.order_number, answer.json()["access_token"])

    async def place_running(self) -> Order:
        """An order waiting for its driver (15 minutes): it runs until cancelled."""
        order = await self.place()

        async def driver_called() -> bool:
            outcome = await self.served.service.outcome(order.number)
            return any(
                p.activity_type == "notify_delivery_driver" for p in outcome.pending_activities
            )

        await until(f"order {order.number} to wait for its driver", driver_called)
        return order

    async def place_waiting(self) -> Order:
        """An order whose rollback waits for an operator (its refund keeps failing)."""
        order = await self.place(
            credit_card_info__number=cards.REFUND_FAILING_CARD, customer__email=BOUNCE_EMAIL
        )

        async def waits() -> bool:
            return bool(needs_operator(await self.served.service.outcome(order.number)))

        await until(f"order {order.number} to wait for an operator", waits)
        return order

    async def ended(self, number: str) -> OrderStatus:
        """Wait for the order to end (its stock back, if it failed); how it ended."""
        service = self.served.service

        async def over() -> bool:
            return (await service.outcome(number)).status is not OrderStatus.RUNNING

        await until(f"order {number} to end", over)
        return (await service.outcome(number)).status

    async def state(self, order: Order) -> dict[str, Any]:
        """What a refused call must leave as it was: the order's history and ledger, the
        stock, the audit trail."""
        service = self.served.service
        outcome = await service.outcome(order.number)
        history = await self.temporal.get_workflow_handle(outcome.workflow_id).fetch_history()
        return {
            "history events": len(history.events),
            "status": outcome.status,
            "ledger": [
                (r.step, r.state, r.compensation_state, r.compensation_attempts)
                for r in outcome.ledger or []
            ],
            "waiting for an operator": needs_operator(outcome),
            "stock": service.stock(),
            "payments": service.payments(order_number=order.number),
            "order's audit": await service.access.audit(order_number=order.number),
            "latest audit": await service.access.audit(limit=5),
        }

    def body(self, endpoint: Endpoint) -> Any:
        """What the endpoint is sent: something that would change things, if taken."""
        if str(endpoint) == "POST /api/orders":
            order = new_order(credit_card_info__number=cards.DECLINED_CARD)  # fails at once
            self.placed.append(order.order_number)
            return order.model_dump(mode="json")
        if endpoint.path.endswith("/resolve"):
            return {"action": "skip", "reason": SKIP_REASON}
        if endpoint.path.endswith("/manual-refunds"):
            return {"amount": 3500, "reference": "BANK-ACCESS-1"}
        if endpoint.method == "PUT":
            return {"quantity": self.served.service.stock()[ITEM] + 7}
        if endpoint.method == "PATCH":
            return {"add": [ITEM]}
        return None

    async def call(
        self,
        endpoint: Endpoint,
        number: str,
        bearer: str | None,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> Answer:
        """Call ``endpoint`` on order ``number`` with ``bearer`` (a stream: its first event)."""
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        path = endpoint.path.format(order_number=number, item=ITEM)
        # A client of its own: nothing (a cookie of an earlier page) rides along unasked.
        async with httpx.AsyncClient(
            base_url=self.served.url, timeout=STREAM_SECONDS, cookies=cookies
        ) as http:
            if endpoint.stream:
                headers["Accept"] = "text/event-stream"
                async with http.stream("GET", path, headers=headers, params=query) as response:
                    if response.status_code != 200:
                        await response.aread()
                        return Answer(response.status_code, response.headers, response.text)
                    event = await Stream(response).next()
                    assert event is not None, f"{endpoint} ended before its first event"
                    return Answer(200, response.headers, "", event.json())
            response = await http.request(
                endpoint.method, path, headers=headers, json=body, params=query
            )
            return Answer(response.status_code, response.headers, response.text)


def missing_number() -> str:
    """An order number no order has."""
    return f"NOSUCH{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture(scope="module")
async def world(site: Site) -> AsyncIterator[World]:
    """The API over orders that wait 15 minutes for a driver and whose failing refunds
    wait for an operator after 2 attempts; a running order, a finished one (another
    customer's), one waiting for an operator, and a revoked operator key."""
    async with site.serve(
        PIZZA_DRIVER_SECONDS="900",
        PIZZA_COMPENSATION_ATTEMPTS="2",
        PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05",
    ) as served:
        temporal = await connect(site.settings(), site.deployment.address)
        nobody = Order("", "")
        world = World(served, temporal, nobody, nobody, nobody, "")
        try:
            world.running = await world.place_running()
            world.other = await world.place(credit_card_info__number=cards.DECLINED_CARD)
            assert await world.ended(world.other.number) is OrderStatus.FAILED
            world.waiting = await world.place_waiting()
            _, world.revoked_key = await served.service.access.add_operator(
                "revoked-operator", by=Actor.operator("tests", source="tests")
            )
            await served.service.access.revoke(
                "revoked-operator", by=Actor.operator("tests", source="tests")
            )
            yield world
        finally:
            for number in world.placed:
                await finish(world.served.service, number)


@pytest.fixture(autouse=True)
def fresh_limiter(world: World) -> None:
    """Each test starts with no failed attempts counted (the 429 test has its own app)."""
    world.served.app.state.access_limiter = AccessLimiter()


def normalized(answer: Answer, number: str) -> tuple[int, str, str | None]:
    """A refusal as an outsider compares it: the order number it was asked about left out."""
    return (
        answer.status,
        answer.text.replace(number, "{order_number}"),
        answer.headers.get("www-authenticate"),
    )


def assert_refusal(answer: Answer, status: int, endpoint: Endpoint, number: str) -> None:
    """A problem document with ``status`` that names what is missing, and nothing else."""
    assert answer.status == status, answer.text
    assert answer.headers["content-type"] == MEDIA_TYPE
    problem = answer.json()
    assert set(problem) == {"type", "title", "status", "detail"}, problem
    assert problem["status"] == status
    detail = problem["detail"]
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "operator key" in detail, detail
    elif endpoint.who == "operators":
        assert detail.startswith("operators only"), detail
    else:
        assert detail == f"this token does not open order {number}", detail


# --- Every endpoint, every credential ------------------------------------------------------------


def test_every_api_route_is_in_the_table(world: World) -> None:
    paths = world.served.app.openapi()["paths"]
    routes = {
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        if path.startswith("/api")
        for method in operations
    }

    assert routes == {str(e) for e in ENDPOINTS}


@pytest.mark.parametrize("credential", list(Credential), ids=lambda c: c.name.lower())
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_each_endpoint_answers_each_credential(
    world: World, endpoint: Endpoint, credential: Credential
) -> None:
    status = endpoint.expected(credential)
    if status in (401, 403):
        await refused(world, endpoint, credential, status)
    else:
        await allowed(world, endpoint, credential)


async def refused(world: World, endpoint: Endpoint, credential: Credential, status: int) -> None:
    """Refused with ``status``; nothing changed; the same answer for an order that does not
    exist."""
    target = world.order(endpoint.target)
    bearer = world.bearer(credential, target)
    before = await world.state(target)

    answer = await world.call(endpoint, target.number, bearer, body=world.body(endpoint))

    assert_refusal(answer, status, endpoint, target.number)
    if bearer:
        assert bearer not in answer.text
    assert target.token not in answer.text
    assert await world.state(target) == before, "a refused call changed something"
    if endpoint.names_order:
        nowhere = missing_number()
        absent = await world.call(endpoint, nowhere, bearer, body=world.body(endpoint))
        assert normalized(absent, nowhere) == normalized(answer, target.number)


async def allowed(world: World, endpoint: Endpoint, credential: Credential) -> None:
    """Answered ``endpoint.ok``, and did what it says."""
    service = world.served.service
    operator = credential is Credential.OPERATOR
    if endpoint.path.endswith("/cancel"):
        target = await world.place_running()
    elif endpoint.path.endswith("/resolve"):
        target = await world.place_waiting()
    elif endpoint.path.endswith("/manual-refunds"):
        target = await world.place_waiting()
        skipper = Actor.operator("test-operator", source=SOURCE)
        await service.resolve(
            target.number, action=OperatorAction.SKIP, reason=SKIP_REASON, by=skipper
        )
        assert await world.ended(target.number) is OrderStatus.FAILED
    else:
        target = world.order(endpoint.target)
    body = world.body(endpoint)

    answer = await world.call(endpoint, target.number, world.bearer(credential, target), body=body)

    assert answer.status == endpoint.ok, answer.text
    who = "test-operator" if operator else f"customer of {target.number}"
    match str(endpoint):
        case "POST /api/orders":
            placed = answer.json()
            assert placed["order_number"] == body["order_number"]
            query = urlencode({"token": placed["access_token"]})
            assert placed["page_url"] == f"/orders/{placed['order_number']}?{query}"
            get = route_named("GET /api/orders/{order_number}")
            own = await world.call(get, placed["order_number"], placed["access_token"])
            assert own.status == 200, "the token answered opens the order placed"
            other = await world.call(get, target.number, placed["access_token"])
            assert other.status == 403, "and no other"
            await world.ended(placed["order_number"])
        case "GET /api/orders":
            assert isinstance(answer.json()["orders"], list)
        case "GET /api/orders/{order_number}":
            assert answer.json()["order_number"] == target.number
            assert answer.json()["status"] == "RUNNING"
        case "PATCH /api/orders/{order_number}":
            assert "kitchen" in answer.json()["detail"], answer.text
            assert await service.amendments(target.number) == []
        case "POST /api/orders/{order_number}/cancel":
            assert await world.ended(target.number) is OrderStatus.CANCELLED
            trail = await service.access.audit(order_number=target.number)
            assert [(a.actor, a.action, a.source) for a in trail] == [(who, "cancel", SOURCE)]
        case "POST /api/orders/{order_number}/resolve":
            assert answer.json()["step"] == "process_credit_card"
            trail = await service.access.audit(order_number=target.number)
            assert [(a.actor, a.action, a.reason, a.source) for a in trail] == [
                (who, "skip", SKIP_REASON, SOURCE)
            ]
            assert await world.ended(target.number) is OrderStatus.FAILED
        case "POST /api/orders/{order_number}/manual-refunds":
            assert answer.json()["kind"] == "manual_refund"
            assert [p.kind for p in service.payments(order_number=target.number)] == [
                "charge",
                "manual_refund",
            ]
            trail = await service.access.audit(order_number=target.number)
            assert [(a.actor, a.action, a.source) for a in trail][-1] == (
                who,
                "manual_refund",
                SOURCE,
            )
        case "GET /api/orders/{order_number}/events":
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert answer.event["order_number"] == target.number
        case "GET /api/orders/{order_number}/payments":
            assert [(p["order_number"], p["kind"]) for p in answer.json()] == [
                (target.number, "charge")
            ]
        case "GET /api/payments":
            mine = [p for p in answer.json() if p["order_number"] == target.number]
            assert [p["kind"] for p in mine] == ["charge"]
        case "GET /api/inventory":
            assert set(answer.json()) == set(MENU)
        case "PUT /api/inventory/{item}":
            assert answer.json() == {"item": ITEM, "quantity": body["quantity"]}
            assert service.stock()[ITEM] == body["quantity"]
            latest = (await service.access.audit(limit=1))[0]
            assert (latest.actor, latest.action, latest.source) == (who, "restock", SOURCE)
            assert json.loads(latest.detail) == {ITEM: body["quantity"]}
        case "GET /api/events/orders":
            assert isinstance(answer.event["orders"], list)
        case _:
            pytest.fail(f"no check for {endpoint}")


# --- Tokens ---------------------------------------------------------------------------------------


def route_named(name: str) -> Endpoint:
    return next(e for e in ENDPOINTS if str(e) == name)


@pytest.mark.parametrize(
    "name", ["GET /api/orders/{order_number}/events", "GET /api/orders/{order_number}/payments"]
)
async def test_the_streams_and_payments_take_the_token_in_the_query(
    world: World, name: str
) -> None:
    route = route_named(name)
    number = world.running.number

    own = await world.call(route, number, None, query={"token": world.running.token})
    other = await world.call(route, number, None, query={"token": world.other.token})
    nowhere = missing_number()
    absent = await world.call(route, nowhere, None, query={"token": world.other.token})

    assert own.status == 200
    assert_refusal(other, 403, route, number)
    assert normalized(absent, nowhere) == normalized(other, number)


@pytest.mark.parametrize(
    "name", ["GET /api/orders/{order_number}", "POST /api/orders/{order_number}/cancel"]
)
async def test_other_routes_take_no_token_in_the_query(world: World, name: str) -> None:
    route = route_named(name)
    before = await world.state(world.running)

    answer = await world.call(
        route, world.running.number, None, query={"token": world.running.token}
    )

    assert_refusal(answer, 401, route, world.running.number)
    assert world.running.token not in answer.text
    assert await world.state(world.running) == before


def forged_tokens(world: World) -> dict[str, str]:
    """Tokens an outsider might try on the running order."""
    token = world.running.token
    key_id, mac = token.rsplit(".", 1)
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    other_ring = AccessTokens(KeyRing.generate(key_id)).order_token(world.running.number)
    return {
        "one character changed": f"{key_id}.{flipped}",
        "signed with another key of the same id": other_ring,
        "an unknown key id": f"nosuchkey.{mac}",
        "no key id": mac,
        "the token of another order number": world.other.token,
        "the order number itself": world.running.number,
        "an operator key's shape, as a token": f"{key_id}_{mac}",
    }


async def test_a_forged_token_or_another_orders_token_is_forbidden(world: World) -> None:
    route = route_named("GET /api/orders/{order_number}")
    cancel = route_named("POST /api/orders/{order_number}/cancel")
    before = await world.state(world.running)

    for what, token in forged_tokens(world).items():
        world.served.app.state.access_limiter = AccessLimiter()  # not 429 on the way
        answer = await world.call(route, world.running.number, token)
        assert answer.status == 403, (what, answer.text)
        assert_refusal(answer, 403, route, world.running.number)
        refused_cancel = await world.call(cancel, world.running.number, token)
        assert refused_cancel.status == 403, (what, refused_cancel.text)
        if token != world.running.number:
            assert token not in answer.text + refused_cancel.text

    assert await world.state(world.running) == before


async def test_a_forged_operator_key_is_not_an_operator(world: World) -> None:
    key_id = world.served.operator_key.split("_")[1]
    route = route_named("GET /api/orders")
    forged = [
        f"pzop_{key_id}_{'x' * 43}",
        "pzop_0000000000000000_" + world.served.operator_key.rsplit("_", 1)[1],
        "pzop_",
        world.served.operator_key[:-1],
        world.served.operator_key + "x",
    ]

    for key in forged:
        answer = await world.call(route, "", key)
        assert_refusal(answer, 401, route, "")
        assert answer.json()["detail"] == "this operator key is not valid (unknown, or revoked)"
        assert key not in answer.text


async def test_a_revoked_key_and_its_sessions_are_refused_at_once(world: World) -> None:
    access = world.served.service.access
    by = Actor.operator("tests", source="tests")
    key, secret = await access.add_operator("leaving-operator", by=by)
    operator = await access.operator_by_key(secret)
    assert operator is not None
    session = {SESSION_COOKIE: access.session_for(operator)}
    orders = route_named("GET /api/orders")
    stream = route_named("GET /api/events/orders")
    assert (await world.call(orders, "", secret)).status == 200
    assert (await world.call(stream, "", None, cookies=session)).status == 200

    await access.revoke(key.key_id, by=by)

    assert_refusal(await world.call(orders, "", secret), 401, orders, "")
    assert_refusal(await world.call(stream, "", None, cookies=session), 401, stream, "")
    async with httpx.AsyncClient(base_url=world.served.url, cookies=session) as browser:
        home = await browser.get("/")
    assert home.status_code == 303
    assert home.headers["location"].startswith("/login")


async def test_a_page_session_opens_the_streams_but_not_the_rest_of_the_api(
    world: World,
) -> None:
    # The pages' EventSource sends the cookie; a form on another site could send it too,
    # so nothing that changes anything takes it.
    session = {SESSION_COOKIE: world.served.operator_session}
    number = world.running.number
    before = await world.state(world.running)

    streams = [
        await world.call(route_named("GET /api/events/orders"), number, None, cookies=session),
        await world.call(
            route_named("GET /api/orders/{order_number}/events"), number, None, cookies=session
        ),
    ]
    others = {
        name: await world.call(
            route_named(name), number, None, body=world.body(route_named(name)), cookies=session
        )
        for name in (
            "GET /api/orders",
            "POST /api/orders/{order_number}/cancel",
            "PUT /api/inventory/{item}",
            "GET /api/payments",
        )
    }

    assert [s.status for s in streams] == [200, 200]
    for name, answer in others.items():
        assert_refusal(answer, 401, route_named(name), number)
    assert await world.state(world.running) == before


# --- Too many bad attempts -----------------------------------------------------------------------


async def test_too_many_bad_credentials_from_one_address_are_refused_for_a_while(
    site: Site, world: World
) -> None:
    # An app of its own: its limiter counts for it alone.
    async with site.serve() as limited:
        number = world.running.number
        path = f"/api/orders/{number}"
        bad = [f"pzop_{uuid.uuid4().hex[:16]}_{'x' * 43}"] * (FAILED_ATTEMPTS // 2)
        bad += [world.other.token] * (FAILED_ATTEMPTS - len(bad))  # wrong order: counted too

        for token in bad:
            answer = await limited.http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code in (401, 403), answer.text
        refused = [
            await limited.http.get(path, headers={"Authorization": f"Bearer {token}"})
            for token in (bad[0], world.running.token, limited.operator_key)
        ]
        elsewhere = await world.served.http.get(
            path, headers={"Authorization": f"Bearer {world.running.token}"}
        )

    for answer in refused:  # even the right credentials, from this address, for now
        assert answer.status_code == 429, answer.text
        assert answer.headers["content-type"] == MEDIA_TYPE
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        detail = answer.json()["detail"]
        assert detail.startswith(f"too many failed attempts from {SOURCE}"), detail
        assert world.running.token not in answer.text
    assert elsewhere.status_code == 200, "another app's limiter has counted nothing"


# --- Secrets --------------------------------------------------------------------------------------


async def test_no_credential_is_in_any_answer_or_log_line(
    world: World, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    served = world.served
    key_secret = served.operator_key.rsplit("_", 1)[1]
    forged = forged_tokens(world)
    secrets = {
        "the operator key": served.operator_key,
        "the operator key's secret": key_secret,
        "the revoked key": world.revoked_key,
        "the session": served.operator_session,
        **{f"forged: {what}": token for what, token in forged.items() if len(token) > 20},
    }
    customer_tokens = {"running": world.running.token, "waiting": world.waiting.token}
    answers: list[str] = []

    def seen(response: httpx.Response | Answer) -> None:
        if isinstance(response, httpx.Response):
            status, text, headers = response.status_code, response.text, response.headers
        else:
            status, text, headers = response.status, response.text, response.headers
        shown = {k: v for k, v in headers.items() if k.lower() != "set-cookie"}
        answers.append(f"{status} {text} {shown}")

    for route in ENDPOINTS:
        if route.method != "GET":
            continue
        for credential in Credential:
            for number in (world.running.number, missing_number()):
                bearer = world.bearer(credential, world.running)
                seen(await world.call(route, number, bearer))
        for token in forged.values():
            seen(await world.call(route, world.running.number, token))
        world.served.app.state.access_limiter = AccessLimiter()
    for token in (served.operator_key, "pzop_wrong_wrong", world.revoked_key):
        async with httpx.AsyncClient(base_url=served.url) as browser:
            login = await browser.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert csrf
            seen(await browser.post("/login", data={"key": token, "csrf": csrf.group(1)}))
    seen(
        await served.http.post(
            "/api/orders/NOSUCH/resolve",
            json={"action": "maybe"},
            headers={"Authorization": f"Bearer {served.operator_key}"},
        )
    )

    assert len(answers) > 100
    for what, secret in {**secrets, **customer_tokens}.items():
        leaks = [a for a in answers if secret in a]
        assert leaks == [], f"{what} is in an answer: {leaks[0][:300]}"
    logged = caplog.text + site.worker_log.read_text()
    for what, secret in {**secrets, **customer_tokens}.items():
        assert secret not in logged, f"{what} is in the logs"


# --- The audit trail ------------------------------------------------------------------------------


async def test_an_operators_actions_are_in_the_audit_trail_with_their_name_and_address(
    world: World,
) -> None:
    access = world.served.service.access
    _, key = await access.add_operator("auditor", by=Actor.operator("tests", source="tests"))
    headers = {"Authorization": f"Bearer {key}"}
    running = await world.place_running()
    waiting = await world.place_waiting()
    http = world.served.http

    cancel = await http.post(f"/api/orders/{running.number}/cancel", headers=headers)
    resolve = await http.post(
        f"/api/orders/{waiting.number}/resolve",
        json={"action": "skip", "step": "process_credit_card", "reason": SKIP_REASON},
        headers=headers,
    )
    restock = await http.put(f"/api/inventory/{ITEM}", json={"quantity": 321}, headers=headers)

    assert [cancel.status_code, resolve.status_code, restock.status_code] == [202, 200, 200]
    assert await world.ended(running.number) is OrderStatus.CANCELLED
    assert await world.ended(waiting.number) is OrderStatus.FAILED
    cancelled = await access.audit(order_number=running.number)
    assert [(a.actor, a.action, a.source) for a in cancelled] == [("auditor", "cancel", SOURCE)]
    skipped = await access.audit(order_number=waiting.number)
    assert [(a.actor, a.action, a.reason, a.source, a.detail) for a in skipped] == [
        ("auditor", "skip", SKIP_REASON, SOURCE, "step process_credit_card")
    ]
    latest = (await access.audit(limit=1))[0]
    assert (latest.actor, latest.action, latest.source, latest.order_number) == (
        "auditor",
        "restock",
        SOURCE,
        None,
    )
    assert json.loads(latest.detail) == {ITEM: 321}
    for entry in [*cancelled, *skipped, latest]:
        assert key not in f"{entry}"
