"""The JSON API over real processes: a private Temporal dev server, a `pizza worker` and
`pizza api` processes, driven over HTTP on loopback as any client would.

Three `pizza api` processes share the dev server and the store database: the main one; one
whose drivers take ten minutes to answer, so its orders stay running; one whose task queue
no worker polls. Every response is checked for card numbers as it arrives.

The tests call as an operator (an API key of the deployment's store) unless they act as a
customer: anyone may place an order, and the `access_token` of the answer opens that order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from pizza_saga.billing import cards
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.order.idempotency import IdempotencyKeyRow
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import PizzaOrder
from tests.processes import Api, Deployment, deployment, until

pytestmark = pytest.mark.devserver

CARDS = (GOOD_CARD, BROKEN_CARD, cards.DECLINED_CARD, cards.REFUND_FAILING_CARD)
"""Full card numbers the tests send: none may come back, in any response or log."""
PROBLEM = "application/problem+json"
LARGE, SMALL, MEDIUM = MENU
SEED_LEDGER = [
    ("get_distance", "SUCCEEDED"),
    ("update_inventory", "SUCCEEDED"),
    ("process_credit_card", "SUCCEEDED"),
    ("send_bill", "SUCCEEDED"),
    ("notify_delivery_driver", "SUCCEEDED"),
]


PLACEMENT_ONLY = ("access_token", "page_url")
"""What only the answer to placing an order carries (the customer's token, and link)."""


@dataclass
class Live:
    """The deployment, its three API processes and an operator's API key."""

    deployment: Deployment
    main: Api
    slow_driver: Api
    no_worker: Api
    operator_key: str


@pytest.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    home = tmp_path_factory.mktemp("api")
    # The placing process sets the saga's policy: quick compensation retries.
    async with deployment(
        home, pizza_home=home / "pizza-home", queue="api", PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05"
    ) as dep:
        dep.spawn("worker", "worker")
        main, slow_driver, no_worker = await asyncio.gather(
            dep.api("api"),
            dep.api("api-slow-driver", PIZZA_DRIVER_SECONDS="600"),
            dep.api("api-no-worker", PIZZA_TASK_QUEUE=f"no-worker-{uuid.uuid4().hex}"),
        )
        await main.ready()
        yield Live(dep, main, slow_driver, no_worker, dep.operator_key())


async def no_card_numbers(response: httpx.Response) -> None:
    """Event hook: fail the request whose response holds a full card number."""
    body = (await response.aread()).decode(errors="replace")
    for card in CARDS:
        where = f"{response.request.method} {response.request.url}"
        assert card not in body, f"{where} answered a full card number"
        assert card not in str(response.headers), f"{where} sent a card number in a header"


def client_of(api: Api, *, bearer: str | None = None) -> httpx.AsyncClient:
    """A client of ``api``: without credentials, or with ``bearer`` (an operator's key, or a
    customer's order token)."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.AsyncClient(
        base_url=api.url,
        timeout=60,
        headers=headers,
        event_hooks={"response": [no_card_numbers]},
    )


@pytest.fixture
async def api(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    """The operator's client of the main API process."""
    async with client_of(live.main, bearer=live.operator_key) as client:
        yield client


@pytest.fixture
async def public(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the main API process without credentials (a customer placing orders)."""
    async with client_of(live.main) as client:
        yield client


def new_number() -> str:
    return f"API{uuid.uuid4().hex[:8].upper()}"


def order_json(number: str | None = None, *, card: str = GOOD_CARD, **changes: Any) -> Any:
    """The seed's order as a client sends it, under a fresh number, with ``changes``."""
    data: Any = example_order(order_number=number or new_number(), card_number=card).model_dump()
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = data
        for key in parents:
            target = target[key]
        target[leaf] = value
    return data


async def stock(api: httpx.AsyncClient) -> dict[str, int]:
    response = await api.get("/api/inventory")
    assert response.status_code == 200
    result: dict[str, int] = response.json()
    return result


async def payments_of(api: httpx.AsyncClient, number: str) -> list[tuple[str, int, str]]:
    response = await api.get("/api/payments", params={"order_number": number})
    assert response.status_code == 200
    return [(p["kind"], p["amount"], p["card_last4"]) for p in response.json()]


async def order_of(api: httpx.AsyncClient, number: str) -> Any:
    response = await api.get(f"/api/orders/{number}")
    assert response.status_code == 200, response.text
    return response.json()


async def finished(api: httpx.AsyncClient, number: str) -> Any:
    """The order once it has finished (polled with a deadline)."""
    seen: dict[str, Any] = {}

    async def done() -> bool:
        seen["order"] = await order_of(api, number)
        return bool(seen["order"]["status"] != "RUNNING")

    await until(f"order {number} to finish", done)
    return seen["order"]


def assert_problem(response: httpx.Response, status: int, *, detail: str = "") -> Any:
    """The response is a problem document of ``status`` whose detail says ``detail``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert detail in body["detail"]
    assert "Traceback" not in response.text
    return body


# --- Placing and following ----------------------------------------------------------------


async def test_seed_order_completes_and_is_charged_once(
    live: Live, api: httpx.AsyncClient, public: httpx.AsyncClient
) -> None:
    before = await stock(public)
    number = new_number()

    placed = await public.post("/api/orders", params={"wait": "true"}, json=order_json(number))

    assert placed.status_code == 201, placed.text
    assert placed.headers["location"] == f"/api/orders/{number}"
    order = placed.json()
    assert (order["order_number"], order["status"], order["error"]) == (number, "COMPLETED", None)
    assert (order["confirmation"]["amount"], order["confirmation"]["card_last4"]) == (3500, "4242")
    assert order["web_ui_url"] == (
        f"{live.deployment.ui_url}/namespaces/default/workflows/"
        f"pizza-workflow-order-{number}/{order['run_id']}/history"
    )
    # The answer to the POST leaves the ledger to the order's resource (no replay to wait for),
    # which its customer reads with the token the answer carries.
    assert order["ledger"] is None and "GET the order" in order["ledger_unavailable"]
    token = order["access_token"]
    assert token == live.deployment.stores.tokens.order_token(number)
    assert order["page_url"] == f"/orders/{number}?token={token}"
    async with client_of(live.main, bearer=token) as customer:
        resource = await order_of(customer, number)
    assert [(s["step"], s["state"]) for s in resource["ledger"]] == SEED_LEDGER
    assert {k: v for k, v in resource.items() if not k.startswith("ledger")} == {
        k: (None if k in PLACEMENT_ONLY else v)
        for k, v in order.items()
        if not k.startswith("ledger")
    }
    assert await payments_of(api, number) == [("charge", 3500, "4242")]
    after = await stock(public)
    assert {item: before[item] - after[item] for item in before} == dict.fromkeys(MENU, 1)


async def test_the_seed_broken_card_rolls_back_with_the_original_error(
    api: httpx.AsyncClient,
) -> None:
    before = await stock(api)
    number = new_number()

    placed = await api.post(
        "/api/orders", params={"wait": "true"}, json=order_json(number, card=BROKEN_CARD)
    )

    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "FAILED"
    assert order["error"] == {
        "type": "CreditCardProcessingError",
        "message": "card ending 2424 has 15 digits, not 16",
    }
    ledger = (await order_of(api, number))["ledger"]
    assert [
        (s["step"], s["state"], s["compensation"], s["compensation_state"]) for s in ledger
    ] == [
        ("get_distance", "SUCCEEDED", None, "NONE"),
        ("update_inventory", "SUCCEEDED", "revert_inventory", "COMPENSATED"),
        ("process_credit_card", "FAILED", "refund_customer", "COMPENSATED"),
    ]
    assert await payments_of(api, number) == []
    assert await stock(api) == before


async def test_without_wait_the_order_is_accepted_and_followed_at_its_location(
    live: Live, public: httpx.AsyncClient
) -> None:
    number = new_number()

    placed = await public.post("/api/orders", json=order_json(number))

    assert placed.status_code == 202, placed.text
    assert placed.json()["status"] == "RUNNING"
    assert placed.json()["workflow_id"] == f"pizza-workflow-order-{number}"
    # The customer follows it with the token the answer carries.
    async with client_of(live.main, bearer=placed.json()["access_token"]) as customer:
        followed = await finished(customer, placed.headers["location"].removeprefix("/api/orders/"))
    assert followed["status"] == "COMPLETED"


async def test_a_number_already_used_is_a_conflict_and_charges_nothing_more(
    api: httpx.AsyncClient,
) -> None:
    number = new_number()
    first = await api.post("/api/orders", params={"wait": "true"}, json=order_json(number))

    again = await api.post("/api/orders", params={"wait": "true"}, json=order_json(number))
    with_a_new_key = await api.post(
        "/api/orders", json=order_json(number), headers={"Idempotency-Key": str(uuid.uuid4())}
    )

    assert first.status_code == 201
    assert_problem(again, 409, detail=f"order {number} was already placed")
    assert_problem(with_a_new_key, 409, detail=f"order {number} was already placed")
    assert await payments_of(api, number) == [("charge", 3500, "4242")]


def _changed(change: str) -> str:
    order = order_json()
    exec(change, {"order": order})
    return json.dumps(order)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ("{not json", "", "not valid JSON"),
        ("del order['customer']['email']", "/customer/email", "Field required"),
        (
            "order['items'][0]['price'] = 1400",
            "/items/0/price",
            "1400 does not match the menu price 1500",
        ),
        ("order['items'][1]['price'] = -1200", "/items/1/price", "greater than or equal to 0"),
        ("order['items'][2]['price'] = 13.5", "/items/2/price", "a valid integer"),
        (
            "order['items'][0]['description'] = 'Hawaiian'",
            "/items/0/description",
            "'Hawaiian' is not on the menu",
        ),
        ("order['items'] = []", "/items", "at least 1 item"),
        ("order['items'] = order['items'] * 7", "/items", "at most 20 items"),
        # (Long, but within the API's body limit: a larger body is refused unread, with 413.)
        ("order['customer']['name'] = 'x' * 10000", "/customer/name", "at most 100 characters"),
        ("order['is_delivery'] = 'yes'", "/is_delivery", "a valid boolean"),
        ("order['tip'] = 100", "/tip", "Extra inputs are not permitted"),
        (
            "order['credit_card_info']['number'] = '4242-abcd-4242-4242'",
            "/credit_card_info/number",
            "a card number has only digits",
        ),
        (
            "order['credit_card_info']['number'] = '4' * 25",
            "/credit_card_info/number",
            "25 digits is too long",
        ),
        ("order['order_number'] = 'has space'", "/order_number", "must be 1-40 letters"),
    ],
)
async def test_bad_orders_are_rejected_with_the_field_and_the_reason(
    api: httpx.AsyncClient, body: str, field: str, reason: str
) -> None:
    text = body if body.startswith("{") else _changed(body)
    before = await stock(api)

    response = await api.post(
        "/api/orders",
        params={"wait": "true"},
        content=text,
        headers={"content-type": "application/json"},
    )

    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == [field]
    assert reason in problem["errors"][0]["reason"]
    assert reason in problem["detail"]
    assert await stock(api) == before
    if not body.startswith("{") and "order_number" not in body:
        number = json.loads(text)["order_number"]
        assert (await api.get(f"/api/orders/{number}")).status_code == 404


async def test_unknown_orders_are_404_and_bad_numbers_422_naming_the_number(
    api: httpx.AsyncClient,
) -> None:
    unknown = new_number()

    for method, path in (
        ("GET", f"/api/orders/{unknown}"),
        ("POST", f"/api/orders/{unknown}/cancel"),
    ):
        assert_problem(await api.request(method, path), 404, detail=f"no order {unknown!r}")
    assert_problem(await api.post(f"/api/orders/{unknown}/resolve", json={"action": "retry"}), 404)
    for bad in ("has%20space", "x" * 41, "semi;colon"):
        problem = assert_problem(await api.get(f"/api/orders/{bad}"), 422)
        assert [e["field"] for e in problem["errors"]] == ["order_number"]


# --- Cancelling and resolving -------------------------------------------------------------


async def test_cancelling_a_running_order_undoes_it_and_a_finished_one_is_a_conflict(
    live: Live, api: httpx.AsyncClient
) -> None:
    before = await stock(api)
    number = new_number()
    async with client_of(live.slow_driver) as slow:
        # Its driver takes ten minutes to answer: the wait ends first, the order runs on.
        placed = await slow.post(
            "/api/orders", params={"wait": "true", "wait_seconds": "0.5"}, json=order_json(number)
        )
        assert placed.status_code == 202, placed.text
        assert placed.json()["status"] == "RUNNING"
    token = placed.json()["access_token"]

    async def charged() -> bool:
        return await payments_of(api, number) == [("charge", 3500, "4242")]

    await until(f"order {number} to be charged", charged)
    nothing_waits = await api.post(f"/api/orders/{number}/resolve", json={"action": "retry"})
    assert_problem(nothing_waits, 409, detail="no compensation")

    # Its customer cancels it (with the token of the answer placed at another API process).
    async with client_of(live.main, bearer=token) as customer:
        cancelled = await customer.post(f"/api/orders/{number}/cancel")

        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.headers["location"] == f"/api/orders/{number}"
        order = await finished(customer, number)
        assert order["status"] == "CANCELLED"
        compensations = {s["step"]: s["compensation_state"] for s in order["ledger"]}
        assert compensations["update_inventory"] == "COMPENSATED"
        assert compensations["process_credit_card"] == "COMPENSATED"
        assert await payments_of(api, number) == [
            ("charge", 3500, "4242"),
            ("refund", 3500, "4242"),
        ]
        assert await stock(api) == before
        again = await customer.post(f"/api/orders/{number}/cancel")
        assert_problem(again, 409, detail="already finished (CANCELLED)")
    by_operator = await api.post(f"/api/orders/{number}/cancel")
    assert_problem(by_operator, 409, detail="already finished (CANCELLED)")


async def test_a_rollback_waiting_for_an_operator_is_listed_and_resolved(
    api: httpx.AsyncClient,
) -> None:
    number = new_number()
    # Charged, then the bill bounces; the refund fails until an operator retries it.
    placed = await api.post(
        "/api/orders",
        params={"wait": "true", "wait_seconds": "1"},
        json=order_json(
            number, card=cards.REFUND_FAILING_CARD, customer__email="bounce@example.com"
        ),
    )
    assert placed.status_code in (201, 202), placed.text

    async def listed() -> bool:
        page = await api.get("/api/orders", params={"needs_operator": "true"})
        assert page.status_code == 200, page.text
        return number in [o["order_number"] for o in page.json()["orders"]]

    await until(f"order {number} to wait for an operator", listed)
    resolve = f"/api/orders/{number}/resolve"
    for decision, status, field in (
        ({"action": "skip"}, 422, "/reason"),
        ({"action": "skip", "reason": "   "}, 422, "/reason"),
        ({"action": "skip", "reason": "x" * 501}, 422, "/reason"),
        ({"action": "RETRY"}, 422, "/action"),
        ({"action": "retry", "extra": 1}, 422, "/extra"),
    ):
        problem = assert_problem(await api.post(resolve, json=decision), status)
        assert [e["field"] for e in problem["errors"]] == [field], decision
    wrong_step = await api.post(resolve, json={"action": "retry", "step": "send_bill"})
    assert_problem(wrong_step, 409, detail="no compensation of")

    resolved = await api.post(resolve, json={"action": "retry", "reason": "processor is back"})

    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["step"] == "process_credit_card"
    order = await finished(api, number)
    assert order["status"] == "FAILED"
    assert await payments_of(api, number) == [("charge", 3500, "0341"), ("refund", 3500, "0341")]
    after = await api.post(resolve, json={"action": "retry"})
    assert_problem(after, 409, detail="has already finished (FAILED)")


# --- Listing -------------------------------------------------------------------------------


async def test_orders_are_listed_newest_first_a_page_at_a_time(api: httpx.AsyncClient) -> None:
    numbers = [new_number() for _ in range(3)]
    for number in numbers:
        placed = await api.post("/api/orders", params={"wait": "true"}, json=order_json(number))
        assert placed.status_code == 201

    async def first_page() -> list[str]:
        page = await api.get("/api/orders", params={"status": "COMPLETED", "page_size": 2})
        assert page.status_code == 200, page.text
        return [o["order_number"] for o in page.json()["orders"]]

    async def newest_listed() -> bool:
        return await first_page() == numbers[:0:-1]

    await until("the newest orders to be listed", newest_listed)
    page = (await api.get("/api/orders", params={"status": "COMPLETED", "page_size": 2})).json()
    assert page["next_page_token"]
    following = await api.get(
        "/api/orders",
        params={"status": "COMPLETED", "page_size": 2, "page_token": page["next_page_token"]},
    )
    assert following.status_code == 200
    assert following.json()["orders"][0]["order_number"] == numbers[0]
    assert all(o["status"] == "COMPLETED" for o in following.json()["orders"])
    for params, field in (
        ({"page_token": "not-hex"}, "page_token"),
        ({"page_token": "00ff"}, "page_token"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "101"}, "page_size"),
        ({"status": "completed"}, "status"),
    ):
        problem = assert_problem(await api.get("/api/orders", params=params), 422)
        assert [e["field"] for e in problem["errors"]] == [field], params


# --- Idempotency keys ------------------------------------------------------------------------


async def test_the_same_key_and_order_get_the_same_answer_and_one_order(
    api: httpx.AsyncClient,
) -> None:
    number, key = new_number(), str(uuid.uuid4())
    send = {"params": {"wait": "true"}, "headers": {"Idempotency-Key": key}}

    first = await api.post("/api/orders", json=order_json(number), **send)  # type: ignore[arg-type]
    again = await api.post("/api/orders", json=order_json(number), **send)  # type: ignore[arg-type]

    assert (first.status_code, again.status_code) == (201, 201)
    assert first.headers["location"] == again.headers["location"] == f"/api/orders/{number}"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.json()["confirmation"] == first.json()["confirmation"]
    assert await payments_of(api, number) == [("charge", 3500, "4242")]


async def test_a_key_sent_with_another_order_is_refused_and_places_nothing(
    api: httpx.AsyncClient,
) -> None:
    key = str(uuid.uuid4())
    first = await api.post("/api/orders", json=order_json(), headers={"Idempotency-Key": key})
    other = new_number()

    reused = await api.post("/api/orders", json=order_json(other), headers={"Idempotency-Key": key})

    assert first.status_code == 202
    problem = assert_problem(reused, 422, detail="used for another request")
    assert [e["field"] for e in problem["errors"]] == ["Idempotency-Key"]
    assert_problem(await api.get(f"/api/orders/{other}"), 404)


async def test_requests_at_once_with_one_key_place_one_order(api: httpx.AsyncClient) -> None:
    number, key = new_number(), str(uuid.uuid4())
    before = await stock(api)

    answers = await asyncio.gather(
        *(
            api.post("/api/orders", json=order_json(number), headers={"Idempotency-Key": key})
            for _ in range(8)
        )
    )

    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    assert {a.headers["location"] for a in answers} == {f"/api/orders/{number}"}
    assert [a.headers.get("idempotent-replayed") for a in answers].count(None) == 1
    assert (await finished(api, number))["status"] == "COMPLETED"
    later = await api.post("/api/orders", json=order_json(number), headers={"Idempotency-Key": key})
    assert (later.status_code, later.headers["idempotent-replayed"]) == (202, "true")
    assert later.json()["status"] == "COMPLETED"
    assert await payments_of(api, number) == [("charge", 3500, "4242")]
    after = await stock(api)
    assert {item: before[item] - after[item] for item in before} == dict.fromkeys(MENU, 1)


async def test_a_key_whose_request_placed_nothing_can_be_sent_again(
    live: Live, api: httpx.AsyncClient
) -> None:
    number, key = new_number(), str(uuid.uuid4())
    async with client_of(live.no_worker) as unready:
        refused = await unready.post(
            "/api/orders", json=order_json(number), headers={"Idempotency-Key": key}
        )
    assert_problem(refused, 503, detail="no worker polls task queue")

    placed = await api.post(
        "/api/orders",
        params={"wait": "true"},
        json=order_json(number),
        headers={"Idempotency-Key": key},
    )

    assert placed.status_code == 201, placed.text
    assert "idempotent-replayed" not in placed.headers


async def test_a_key_left_by_a_request_that_died_is_settled(
    live: Live, api: httpx.AsyncClient
) -> None:
    """A request that claimed its key and died before saying whether it placed the order:
    once the claim is stale, the key follows the order (placed or not)."""
    engine = live.deployment.stores.engine
    keys = live.deployment.stores.idempotency
    placed_before, never_placed = new_number(), new_number()
    assert (await api.post("/api/orders", json=order_json(placed_before))).status_code == 202
    for number in (placed_before, never_placed):
        body = PizzaOrder.model_validate(order_json(number)).model_dump_json().encode()
        keys.claim(f"died-{number}", body=body, order_number=number)
    with engine.begin() as conn:
        conn.execute(
            update(IdempotencyKeyRow).values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )

    answers = {
        number: await api.post(
            "/api/orders", json=order_json(number), headers={"Idempotency-Key": f"died-{number}"}
        )
        for number in (placed_before, never_placed)
    }

    assert answers[placed_before].status_code == 202
    assert answers[placed_before].headers["idempotent-replayed"] == "true"
    assert answers[never_placed].status_code == 202, answers[never_placed].text
    assert "idempotent-replayed" not in answers[never_placed].headers
    for number in (placed_before, never_placed):
        assert (await finished(api, number))["status"] == "COMPLETED"
        assert await payments_of(api, number) == [("charge", 3500, "4242")]


async def test_a_request_waits_for_the_one_placing_its_order_and_answers_with_it(
    live: Live, api: httpx.AsyncClient
) -> None:
    """Another request (in any process) holds the key and is placing the order: this one
    waits for it, then answers with that order."""
    keys = live.deployment.stores.idempotency
    number, key = new_number(), str(uuid.uuid4())
    body = PizzaOrder.model_validate(order_json(number)).model_dump_json().encode()
    holder = keys.claim(key, body=body, order_number=number)
    waiting = asyncio.create_task(
        api.post("/api/orders", json=order_json(number), headers={"Idempotency-Key": key})
    )
    # The holder places the order, then says so.
    assert (await api.post("/api/orders", json=order_json(number))).status_code == 202
    assert not waiting.done()
    keys.placed(key, holder.claim)

    answer = await waiting

    assert answer.status_code == 202, answer.text
    assert answer.headers["idempotent-replayed"] == "true"
    assert answer.headers["location"] == f"/api/orders/{number}"
    assert (await finished(api, number))["status"] == "COMPLETED"
    assert await payments_of(api, number) == [("charge", 3500, "4242")]


async def test_a_malformed_key_is_rejected_naming_the_header(api: httpx.AsyncClient) -> None:
    for key in ("x" * 256, "with space"):
        problem = assert_problem(
            await api.post("/api/orders", json=order_json(), headers={"Idempotency-Key": key}),
            422,
        )
        assert [e["field"] for e in problem["errors"]] == ["Idempotency-Key"]


# --- Stock, payments, health, documents ------------------------------------------------------


async def test_stock_is_set_per_item_and_off_menu_items_or_bad_quantities_are_refused(
    api: httpx.AsyncClient,
) -> None:
    before = await stock(api)

    changed = await api.put(f"/api/inventory/{SMALL}", json={"quantity": 42})

    assert changed.status_code == 200, changed.text
    assert changed.json() == {"item": SMALL, "quantity": 42}
    assert await stock(api) == {**before, SMALL: 42}
    for item, body, field in (
        ("Hawaiian", {"quantity": 1}, "item"),
        (SMALL, {"quantity": -1}, "/quantity"),
        (SMALL, {"quantity": 1_000_001}, "/quantity"),
        (SMALL, {"quantity": "5"}, "/quantity"),
        (SMALL, {"quantity": True}, "/quantity"),
        (SMALL, {"quantity": 1.5}, "/quantity"),
        (SMALL, {}, "/quantity"),
    ):
        problem = assert_problem(await api.put(f"/api/inventory/{item}", json=body), 422)
        assert [e["field"] for e in problem["errors"]] == [field], (item, body)
    assert await stock(api) == {**before, SMALL: 42}
    restored = await api.put(f"/api/inventory/{SMALL}", json={"quantity": before[SMALL]})
    assert restored.status_code == 200


async def test_payments_list_amounts_and_last_four_digits_only(api: httpx.AsyncClient) -> None:
    number = new_number()
    await api.post("/api/orders", params={"wait": "true"}, json=order_json(number))

    everything = await api.get("/api/payments")
    bad = await api.get("/api/payments", params={"order_number": "no spaces allowed"})

    assert everything.status_code == 200
    mine = [p for p in everything.json() if p["order_number"] == number]
    assert [(p["kind"], p["amount"], p["card_last4"]) for p in mine] == [("charge", 3500, "4242")]
    assert datetime.fromisoformat(mine[0]["created_at"]).tzinfo is not None
    problem = assert_problem(bad, 422)
    assert [e["field"] for e in problem["errors"]] == ["order_number"]


async def test_ready_with_a_worker_and_503_naming_the_worker_without_one(
    live: Live, api: httpx.AsyncClient
) -> None:
    number = new_number()

    ready_answer = await api.get("/readyz")
    async with client_of(live.no_worker) as unready:
        not_ready = await unready.get("/readyz")
        refused = await unready.post("/api/orders", json=order_json(number))

    assert ready_answer.status_code == 200
    assert ready_answer.json()["status"] == "ready"
    problem = assert_problem(not_ready, 503, detail="pizza worker")
    assert problem["missing"] == ["worker"]
    assert_problem(refused, 503, detail="nothing was placed")
    assert_problem(await api.get(f"/api/orders/{number}"), 404)


async def test_openapi_and_docs_describe_every_endpoint(api: httpx.AsyncClient) -> None:
    document = await api.get("/openapi.json")
    docs = await api.get("/docs")

    assert document.status_code == 200
    paths = document.json()["paths"]
    assert {
        "/api/orders",
        "/api/orders/{order_number}",
        "/api/orders/{order_number}/cancel",
        "/api/orders/{order_number}/resolve",
        "/api/inventory",
        "/api/inventory/{item}",
        "/api/payments",
    } <= set(paths)
    assert PROBLEM in paths["/api/orders"]["post"]["responses"]["422"]["content"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_unknown_routes_and_methods_are_problems_too(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/api/nothing-here"), 404)
    not_allowed = assert_problem(await api.delete("/api/orders"), 405)
    assert not_allowed["detail"]
    assert "POST" in (await api.delete("/api/orders")).headers["allow"]


async def test_no_process_logged_a_card_number(live: Live, api: httpx.AsyncClient) -> None:
    for card in CARDS:
        await api.post("/api/orders", params={"wait": "true"}, json=order_json(card=card))
        await api.post("/api/orders", json={**order_json(card=card), "tip": 1})

    logs = live.deployment.logs()

    assert "card ending" in logs, "the worker's log should be in the deployment's logs"
    for card in CARDS:
        assert card not in logs
