"""The event streams over a real socket: uvicorn on a free port, read as a browser reads them.

Orders run on the real dev server and a real `pizza worker` (tests/site.py). A stream sends
one event per change of the order and closes after the last; reconnecting with the last id
resends nothing; any number of subscribers of an order share one watcher.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from pizza_saga.api.events import list_hub, order_hub, stream_limits
from pizza_saga.common.formatting import workflow_url
from pizza_saga.order.client import OrderOutcome
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD
from pizza_saga.order.service import snapshot_id
from tests.orders import new_order
from tests.processes import until
from tests.site import SEED_FORM, STREAM_SECONDS, Event, Served, Site, card_numbers_in, finish

pytestmark = pytest.mark.devserver


@pytest.fixture(scope="module")
async def served(site: Site) -> AsyncIterator[Served]:
    """The API over orders that wait 1 s in the kitchen and 30 s for a driver."""
    async with site.serve(PIZZA_PREP_SECONDS="1", PIZZA_DRIVER_SECONDS="30") as api:
        yield api


def outcome_of(event: Event) -> OrderOutcome:
    """The order's outcome an event carries (its data without the Web UI link)."""
    data = event.json()
    data.pop("web_ui_url")
    return OrderOutcome.model_validate(data)


def driver_waiting(event: Event) -> bool:
    """The order waits for its driver: nothing changes for the next 30 s."""
    data = event.json()
    return any(
        r["step"] == "notify_delivery_driver" and r["state"] == "RUNNING"
        for r in data["ledger"] or []
    ) and any(p["activity_type"] == "notify_delivery_driver" for p in data["pending_activities"])


async def test_an_order_stream_sends_each_change_until_the_end_then_closes(
    served: Served, site: Site
) -> None:
    order = new_order(credit_card_info__number=BROKEN_CARD)
    await served.service.place(order)
    path = f"/api/orders/{order.order_number}/events"
    customer = served.customer_headers(order.order_number)

    async with served.stream(path, headers=customer) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        events = await stream.rest()

    outcomes = [outcome_of(e) for e in events]
    assert len(events) >= 2, "the order was followed from before its end"
    assert [o.status for o in outcomes[:-1]] == ["RUNNING"] * (len(outcomes) - 1)
    last = outcomes[-1]
    assert last.status == "FAILED"
    assert last.error is not None
    assert last.error.type == "CreditCardProcessingError"
    assert [(r.step, r.state, r.compensation, r.compensation_state) for r in last.ledger or []] == [
        ("get_distance", "SUCCEEDED", None, "NONE"),
        ("update_inventory", "SUCCEEDED", "revert_inventory", "COMPENSATED"),
        ("process_credit_card", "FAILED", "refund_customer", "COMPENSATED"),
    ]
    ids = [e.id for e in events]
    assert ids == [snapshot_id(o) for o in outcomes]
    assert len(set(ids)) == len(ids), "each event is a change"
    assert events[-1].json()["web_ui_url"] == workflow_url(
        site.ui_url, "default", last.workflow_id, last.run_id
    )

    # A browser reconnecting with the final snapshot's id is told there is nothing more.
    async with served.stream(path, last_event_id=ids[-1], headers=customer) as again:
        assert again.response.status_code == 204
        assert await again.rest() == []
    # A new reader of a finished order gets its final snapshot, once, and the end.
    async with served.stream(path, as_operator=True) as fresh:
        assert [e.id for e in await fresh.rest()] == [ids[-1]]
    # Another id (an older snapshot's) is no reason to hold the current one back.
    async with served.stream(path, last_event_id=ids[0], headers=customer) as stale:
        assert [e.id for e in await stale.rest()] == [ids[-1]]


async def test_subscribers_of_one_order_share_one_watcher(served: Served) -> None:
    order = new_order()
    await served.service.place(order)
    path = f"/api/orders/{order.order_number}/events"
    hub = order_hub(served.app)
    # The customer (by header, and as a browser's EventSource: in the link) and an operator.
    token = served.service.access.order_token(order.order_number)
    customer = served.customer_headers(order.order_number)

    async with (
        served.stream(path, headers=customer) as first,
        served.stream(f"{path}?token={token}") as second,
    ):
        waiting = await first.until("the driver's wait", driver_waiting)
        assert (await second.until("the driver's wait", driver_waiting)).id == waiting.id
        assert hub.watchers == 1
        assert hub.subscribers(order.order_number) == 2

        # A reconnect with the current snapshot's id is not sent it again: its first event
        # is the next change (the cancellation), while the other two see both.
        async with served.stream(path, last_event_id=waiting.id, as_operator=True) as third:
            assert hub.watchers == 1
            assert hub.subscribers(order.order_number) == 3
            await served.service.cancel(order.order_number)
            resumed = await third.rest()
        assert resumed, "the change after the reconnect was sent"
        assert waiting.id not in [e.id for e in resumed]
        assert outcome_of(resumed[-1]).status == "CANCELLED"

        for stream in (first, second):
            rest = await stream.rest()
            assert outcome_of(rest[-1]).status == "CANCELLED"
            assert [e.id for e in rest] == [e.id for e in resumed]

    await until("the watcher to stop", lambda: hub.watchers == 0)


async def test_the_watcher_stops_when_its_last_subscriber_leaves(served: Served) -> None:
    order = new_order()
    await served.service.place(order)
    hub = order_hub(served.app)

    async with served.stream(
        f"/api/orders/{order.order_number}/events",
        headers=served.customer_headers(order.order_number),
    ) as stream:
        await stream.until("the driver's wait", driver_waiting)
        assert hub.watchers == 1

    await until("the watcher to stop", lambda: hub.watchers == 0)
    assert (await served.service.outcome(order.order_number)).status == "RUNNING"
    await served.service.cancel(order.order_number)


@pytest.mark.parametrize("number", ["NOSUCH1", "a.b", "x" * 41, "%20"])
async def test_an_unknown_order_is_a_404_problem(served: Served, number: str) -> None:
    response = await served.operator.get(f"/api/orders/{number}/events")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert order_hub(served.app).watchers == 0


async def test_the_list_stream_shows_new_orders(served: Served) -> None:
    hub = list_hub(served.app)
    async with served.stream("/api/events/orders", as_operator=True) as stream:
        await stream.until("the list", lambda e: "orders" in e.json())
        order = new_order(credit_card_info__number=BROKEN_CARD)
        await served.service.place(order)
        await stream.until(
            "the new order, failed",
            lambda e: any(
                o["order_number"] == order.order_number and o["status"] == "FAILED"
                for o in e.json()["orders"]
            ),
        )
        assert hub.watchers == 1
    await until("the list's poller to stop", lambda: hub.watchers == 0)


async def test_no_card_number_in_any_event_page_or_log(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Every sandbox card, picked and typed; the operator's card with a bouncing bill.
    choices: list[dict[str, str]] = [
        {"card": key} for key in ("approved", "fifteen", "declined", "transient")
    ]
    choices += [
        {"card": "other", "credit_card_info.number": number}
        for number in ("4242 4242 4242 4242", BROKEN_CARD, "4000-0000-0000-0002")
    ]
    choices.append({"card": "operator", "customer.email": "bounce@example.com"})
    seen: list[str] = []
    async with site.serve() as served:
        for choice in choices:
            placed = await served.post_form("/orders/new", {**SEED_FORM, **choice})
            assert placed.status_code == 303, placed.text
            link = placed.headers["location"]  # the customer's: /orders/{number}?token=...
            page = link.split("?", 1)[0]
            number = page.rsplit("/", 1)[1]
            assert link == served.customer_link(number)
            # The customer's stream (as their page opens it), the operator's where they act.
            token = served.service.access.order_token(number)
            async with served.stream(f"/api/orders/{number}/events?token={token}") as stream:
                resolved: set[tuple[str, int]] = set()
                while (event := await stream.next()) is not None:
                    # Once per wait: the next snapshot may be on its way before the decision.
                    waiting = {
                        (r["step"], r["compensation_attempts"])
                        for r in event.json()["ledger"] or []
                        if r["compensation_state"] == "NEEDS_OPERATOR"
                    }
                    if waiting - resolved:
                        resolved |= waiting
                        answer = await served.post_form(
                            f"{page}/resolve", {"action": "RETRY"}, as_operator=True
                        )
                        assert answer.status_code == 303, answer.text
                seen += [e.data for e in stream.events]
            assert outcome_of(stream.events[-1]).status in ("COMPLETED", "FAILED")
            seen.append((await served.http.get(link)).text)
            seen.append((await served.operator.get(page)).text)
            payments = await served.http.get(
                f"/api/orders/{number}/payments", headers=served.customer_headers(number)
            )
            assert payments.status_code == 200, payments.text
            seen.append(payments.text)
        # A form sent back for a mistake does not carry the typed number back either.
        wrong = await served.post_form(
            "/orders/new",
            {**SEED_FORM, "customer.email": "nobody", "credit_card_info.number": GOOD_CARD},
        )
        assert wrong.status_code == 422
        seen.append(wrong.text)
        for path in ("/", "/orders/new", "/stock"):
            shown = await served.operator.get(path)
            assert shown.status_code == 200, (path, shown.status_code)
            seen.append(shown.text)
        seen.append((await served.http.get("/orders/new")).text)
        listed = await served.operator.get("/api/payments")
        assert listed.status_code == 200, listed.text
        seen.append(listed.text)

    assert len(seen) > len(choices) * 3
    assert [card_numbers_in(text) for text in seen if card_numbers_in(text)] == []
    assert card_numbers_in(caplog.text) == []
    assert card_numbers_in(site.worker_log.read_text()) == []


@contextlib.asynccontextmanager
async def client_at(served: Served, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's client whose connections come from ``address`` (a loopback address of
    its own: another client, as the API counts them)."""
    async with httpx.AsyncClient(
        base_url=served.url,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        headers={"Authorization": f"Bearer {served.operator_key}"},
        timeout=STREAM_SECONDS,
    ) as http:
        yield http


def refused_for(response: httpx.Response, limit: str, most: int) -> None:
    """``response`` is the 429 of a stream over the cap ``limit``, naming it."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    problem = response.json()
    assert (problem["status"], problem["limit"], problem["max_streams"]) == (429, limit, most)
    assert limit in problem["detail"]


async def test_streams_beyond_a_clients_cap_or_the_servers_are_refused_with_429(
    site: Site,
) -> None:
    async with site.serve(
        PIZZA_DRIVER_SECONDS="30", PIZZA_STREAMS_PER_CLIENT="2", PIZZA_STREAMS_MAX="3"
    ) as served:
        caps = stream_limits(served.app)
        order = new_order()
        await served.service.place(order)
        events = f"/api/orders/{order.order_number}/events"
        sse = {"Accept": "text/event-stream"}
        try:
            async with (
                served.stream("/api/events/orders", as_operator=True) as listing,
                served.stream(events, as_operator=True) as following,
            ):
                assert (listing.response.status_code, following.response.status_code) == (200, 200)
                # A third from the same address: refused, whatever it asks for.
                for path in (events, "/api/events/orders"):
                    refused_for(
                        await served.operator.get(path, headers=sse), "PIZZA_STREAMS_PER_CLIENT", 2
                    )
                async with (
                    client_at(served, "127.0.0.2") as other,
                    client_at(served, "127.0.0.3") as third,
                ):
                    async with other.stream("GET", events, headers=sse) as more:
                        assert more.status_code == 200
                        assert caps.open_streams() == 3
                        refused_for(
                            await third.get("/api/events/orders", headers=sse),
                            "PIZZA_STREAMS_MAX",
                            3,
                        )
                    # A stream that ends frees its place, for its client and in all.
                    await until("the stream's place to be free", lambda: caps.open_streams() == 2)
                    async with third.stream("GET", events, headers=sse) as now:
                        assert now.status_code == 200
                        assert caps.open_streams("127.0.0.3") == 1
            await until("every place to be free", lambda: caps.open_streams() == 0)
            # Refusals and answers without a stream hold no place.
            finished = new_order(credit_card_info__number=BROKEN_CARD)
            await served.service.place(finished)
            await served.service.wait(finished.order_number)
            done = f"/api/orders/{finished.order_number}/events"
            for _ in range(3):
                async with served.stream(done, as_operator=True) as last:
                    assert [outcome_of(e).status for e in await last.rest()] == ["FAILED"]
            assert (await served.operator.get("/api/orders/NOSUCH1/events")).status_code == 404
            assert caps.open_streams() == 0
        finally:
            await finish(served.service, order.order_number)
