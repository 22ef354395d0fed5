"""Who may do what on the web pages: an operator's login, a customer's link, the forms.

In Debian's Chromium (the `browser` and `page` fixtures of tests/test_pages.py) where it is
about what a person sees, over HTTP where it is about what a page answers. The API runs
in-process on a free port; orders run on the real dev server and a real `pizza worker`
(tests/site.py): an order waits 15 minutes for its driver (it is still running when a
refused cancel is checked), and an order whose refunds fail waits for an operator.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie

import httpx
import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from pizza_saga.access.service import Actor
from pizza_saga.api.access import SESSION_COOKIE
from pizza_saga.api.pages import CSRF_COOKIE, LOGIN_ATTEMPTS
from pizza_saga.api.views import needs_operator
from pizza_saga.billing import cards
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.menu import MENU
from tests import test_pages as chromium
from tests.orders import new_order
from tests.processes import until
from tests.site import Served, Site, csrf_of, finish

pytestmark = pytest.mark.devserver

browser = chromium.browser
page = chromium.page
"""Debian's Chromium, and a fresh page of it on this module's site (tests/test_pages.py)."""

SAGA_SECONDS = 30.0
"""How long a page may take to show what the saga does."""
TESTS = Actor.operator("tests", source="tests")
SOURCE = "127.0.0.1"
SKIP_REASON = "refunded by hand at the till"
WRONG_KEY = "That is not an operator key (or it was revoked)."


@dataclass(frozen=True)
class Order:
    """An order placed through the API, and its customer's token."""

    number: str
    token: str


PLACED: list[str] = []
"""The orders this module placed (those still running are ended after it)."""


@pytest.fixture(scope="module")
async def served(site: Site) -> AsyncIterator[Served]:
    """The pages over orders that wait 15 minutes for a driver and whose failing refunds
    wait for an operator after 2 quick attempts."""
    async with site.serve(
        PIZZA_DRIVER_SECONDS="900",
        PIZZA_COMPENSATION_ATTEMPTS="2",
        PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05",
    ) as api:
        try:
            yield api
        finally:
            for number in PLACED:
                await finish(api.service, number)


async def place(served: Served, **changes: object) -> Order:
    """Place an order through the API, as a customer does: its number and token."""
    order = new_order(**changes)
    answer = await served.http.post("/api/orders", json=order.model_dump(mode="json"))
    assert answer.status_code == 202, answer.text
    PLACED.append(order.order_number)
    return Order(order.order_number, answer.json()["access_token"])


async def place_running(served: Served) -> Order:
    """An order waiting for its driver: it runs until it is cancelled."""
    order = await place(served)

    async def driver_called() -> bool:
        outcome = await served.service.outcome(order.number)
        return any(p.activity_type == "notify_delivery_driver" for p in outcome.pending_activities)

    await until(f"order {order.number} to wait for its driver", driver_called)
    return order


async def place_waiting(served: Served) -> Order:
    """An order whose rollback waits for an operator (its refund keeps failing)."""
    order = await place(
        served,
        credit_card_info__number=cards.REFUND_FAILING_CARD,
        customer__email="bounce@example.com",
    )

    async def waits() -> bool:
        return bool(needs_operator(await served.service.outcome(order.number)))

    await until(f"order {order.number} to wait for an operator", waits)
    return order


async def new_operator(served: Served, name: str) -> str:
    """A key of a new operator called ``name``."""
    _, key = await served.service.access.add_operator(name, by=TESTS)
    return key


async def with_session_of(page: Page, served: Served, name: str) -> None:
    """The browser of ``page`` holds the page session of a new operator called ``name``
    (as a login with their key gives it)."""
    access = served.service.access
    operator = await access.operator_by_key(await new_operator(served, name))
    assert operator is not None
    session = access.session_for(operator)
    await page.context.add_cookies(
        [
            {
                "name": SESSION_COOKIE,
                "value": session,
                "url": served.url,
                "httpOnly": True,
                "sameSite": "Lax",  # as the login sets it
            }
        ]
    )


async def unchanged(served: Served, order: Order) -> tuple[object, ...]:
    """What a refused form must leave as it was: the order's state and ledger, its audit
    trail, the stock."""
    outcome = await served.service.outcome(order.number)
    return (
        outcome.status,
        [(r.step, r.state, r.compensation_state) for r in outcome.ledger or []],
        await served.service.access.audit(order_number=order.number),
        served.service.stock(),
    )


# --- Operators ---------------------------------------------------------------------------------


async def test_an_operator_logs_in_with_their_key_and_out_again(page: Page, served: Served) -> None:
    key = await new_operator(served, "pat")

    await page.goto("/")
    await expect(page).to_have_url(f"{served.url}/login?next=%2F")
    await expect(page.locator("h1")).to_have_text("Operator login")
    await page.locator("#key").fill("pzop_0000000000000000_" + "x" * 43)
    async with page.expect_response(lambda r: r.request.method == "POST") as wrong:
        await page.get_by_role("button", name="Log in").click()
    assert (await wrong.value).status == 401
    await expect(page.locator("#login-error")).to_have_text(WRONG_KEY)
    await expect(page.locator("#operator-name")).to_have_count(0)
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}

    await page.locator("#key").fill(key)
    await page.get_by_role("button", name="Log in").click()

    await expect(page).to_have_url(f"{served.url}/")
    await expect(page.locator("h1")).to_have_text("Recent orders")
    await expect(page.locator("#operator-name")).to_have_text("Operator pat")
    await expect(page.get_by_role("link", name="Stock and payments")).to_be_visible()
    session = [c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert len(session) == 1
    assert session[0]["httpOnly"] is True
    assert session[0]["sameSite"] == "Lax"
    assert SESSION_COOKIE not in await page.evaluate("document.cookie"), "no script reads it"
    assert key not in await page.content()

    await page.get_by_role("button", name="Log out").click()

    await expect(page).to_have_url(f"{served.url}/login")
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}
    await page.goto("/stock")
    await expect(page).to_have_url(f"{served.url}/login?next=%2Fstock")
    await expect(page.locator("#operator-name")).to_have_count(0)


async def test_the_session_cookie_is_httponly_and_samesite(served: Served) -> None:
    key = await new_operator(served, "cookie-check")
    async with httpx.AsyncClient(base_url=served.url) as browser:
        csrf = await csrf_of(browser, "/login")
        answer = await browser.post("/login", data={"key": key, "csrf": csrf, "next": "/stock"})

    assert answer.status_code == 303
    assert answer.headers["location"] == "/stock"
    jar: SimpleCookie = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        jar.load(header)
    cookie = jar[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert int(cookie["max-age"]) == 8 * 3600
    assert key not in cookie.value, "the session is not the key"


async def test_an_operator_skips_a_compensation_waiting_for_one_and_the_audit_shows_it(
    page: Page, served: Served
) -> None:
    order = await place_waiting(served)
    await with_session_of(page, served, "sam")
    await page.goto(f"/orders/{order.number}")
    await expect(page.locator("#outcome-label")).to_have_text("Needs operator")
    await expect(page.locator("#audit tbody")).to_have_text("No one has acted on this order.")

    await page.locator("#reason").fill(SKIP_REASON)
    await page.get_by_role("button", name="Skip").click()

    await expect(page.locator("#outcome-label")).to_have_text("Failed", timeout=SAGA_SECONDS * 1000)
    await expect(page.locator("#resolve-form")).to_be_hidden()
    row = page.locator('#audit tr[data-action="skip"]')
    await expect(row.locator("td")).to_have_text(
        [re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"), "sam", "skip", SKIP_REASON, SOURCE]
    )
    trail = await served.service.access.audit(order_number=order.number)
    assert [(a.actor, a.action, a.reason, a.source) for a in trail] == [
        ("sam", "skip", SKIP_REASON, SOURCE)
    ]


async def test_too_many_wrong_keys_lock_the_login_for_a_while(site: Site) -> None:
    async with site.serve() as limited, httpx.AsyncClient(base_url=limited.url) as browser:
        csrf = await csrf_of(browser, "/login")
        wrong = [
            await browser.post("/login", data={"key": f"pzop_{n}_wrong", "csrf": csrf})
            for n in range(LOGIN_ATTEMPTS.amount)
        ]
        right = await browser.post("/login", data={"key": limited.operator_key, "csrf": csrf})

    assert [w.status_code for w in wrong] == [401] * LOGIN_ATTEMPTS.amount
    assert right.status_code == 429, "even the right key, from this address, for now"
    assert "too many failed attempts" in right.text
    assert SESSION_COOKIE not in right.cookies


# --- Customers -----------------------------------------------------------------------------------


async def test_a_customers_page_opens_with_its_own_link_only(page: Page, served: Served) -> None:
    order = await place_waiting(served)
    other = await place(served, credit_card_info__number=cards.DECLINED_CARD)

    bare = await page.goto(f"/orders/{order.number}")
    assert bare is not None and bare.status == 401
    await expect(page.locator("h1")).to_have_text("Link needed")
    await expect(page.locator("#outcome")).to_have_count(0)

    theirs = await page.goto(f"/orders/{order.number}?token={other.token}")
    assert theirs is not None and theirs.status == 403
    await expect(page.locator("h1")).to_have_text("Not this order")
    await expect(page.locator("#outcome")).to_have_count(0)

    mine = await page.goto(served.customer_link(order.number))
    assert mine is not None and mine.status == 200
    await expect(page.locator("h1")).to_have_text(f"Order {order.number}")
    await expect(page.locator("#outcome-label")).to_have_text("Needs operator")
    await expect(page.locator("#waiting-for-operator")).to_be_visible()
    # No operator's controls for the customer: no decision, no audit, no stock.
    await expect(page.locator("#resolve-form")).to_have_count(0)
    await expect(page.locator("#audit")).to_have_count(0)
    await expect(page.get_by_role("link", name="Stock and payments")).to_have_count(0)
    await expect(page.get_by_role("link", name="Orders", exact=True)).to_have_count(0)
    await expect(page.locator("#operator-name")).to_have_count(0)


async def test_a_refused_order_page_tells_nothing_of_whether_the_order_exists(
    served: Served,
) -> None:
    order = await place(served, credit_card_info__number=cards.DECLINED_CARD)
    nowhere = f"NOSUCH{uuid.uuid4().hex[:12].upper()}"
    other = await place(served, credit_card_info__number=cards.DECLINED_CARD)

    for query in ("", f"?token={other.token}", "?token=forged.token"):
        there = await served.http.get(f"/orders/{order.number}{query}")
        absent = await served.http.get(f"/orders/{nowhere}{query}")
        assert there.status_code in (401, 403)
        assert (absent.status_code, absent.text.replace(nowhere, "N")) == (
            there.status_code,
            there.text.replace(order.number, "N"),
        ), query


async def test_resolve_and_restock_are_for_operators_only(served: Served) -> None:
    order = await place_waiting(served)
    before = await unchanged(served, order)
    item = next(iter(MENU))
    quantity = str(served.service.stock()[item] + 5)

    resolve = await served.post_form(
        f"/orders/{order.number}/resolve",
        {"action": "SKIP", "reason": SKIP_REASON, "token": order.token},
    )
    restock = await served.post_form("/stock", {"qty.0": quantity, "token": order.token})

    for answer in (resolve, restock):
        assert answer.status_code == 401
        assert "Operators only" in answer.text
    assert await unchanged(served, order) == before


async def test_a_form_without_this_browsers_csrf_token_is_refused(served: Served) -> None:
    order = await place_running(served)
    before = await unchanged(served, order)
    path = f"/orders/{order.number}/cancel"
    async with httpx.AsyncClient(base_url=served.url) as elsewhere:
        foreign = await csrf_of(elsewhere)  # another browser's

    missing = await served.http.post(path, data={"token": order.token})
    wrong = await served.http.post(path, data={"token": order.token, "csrf": foreign})
    async with httpx.AsyncClient(base_url=served.url) as fresh:  # no CSRF cookie at all
        cookieless = await fresh.post(path, data={"token": order.token, "csrf": foreign})
    as_operator = await served.operator.post(path, data={"csrf": foreign})

    for answer in (missing, wrong, cookieless, as_operator):
        assert answer.status_code == 403, answer.text
        assert "this form is not from a page of this site" in answer.text
    assert await unchanged(served, order) == before


@pytest.mark.parametrize(
    "host",
    [
        "localhost",  # another site: the browser sends no Lax cookie along
        "127.0.0.1",  # the same site on another port: it sends them, Origin tells
    ],
)
async def test_a_form_posted_from_another_origin_is_refused(
    page: Page, served: Served, host: str
) -> None:
    order = await place_running(served)
    before = await unchanged(served, order)
    # The attacker knows the customer's link and has a CSRF token of their own browser.
    csrf = await csrf_of(served.http)
    await with_session_of(page, served, "victim")  # an operator's Lax cookie, at stake
    await page.goto(served.customer_link(order.number))
    assert CSRF_COOKIE in {c["name"] for c in await page.context.cookies()}
    attack = f"""<!doctype html><title>Win a pizza</title>
        <form id="f" method="post" action="{served.url}/orders/{order.number}/cancel">
          <input type="hidden" name="token" value="{order.token}">
          <input type="hidden" name="csrf" value="{csrf}">
        </form>
        <script>document.getElementById("f").submit()</script>"""

    async def attacker_page(_: web.Request) -> web.Response:
        return web.Response(text=attack, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", attacker_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with page.expect_response(lambda r: r.url.endswith("/cancel")) as posted:
            await page.goto(f"http://{host}:{port}/")
        answer = await posted.value
    finally:
        await runner.cleanup()

    assert answer.request.method == "POST"
    sent = (await answer.request.all_headers()).get("cookie", "")
    assert (SESSION_COOKIE in sent) == (host == "127.0.0.1"), sent
    assert answer.status == 403
    await expect(page.locator("h1")).to_have_text("Not accepted")
    await expect(page.locator(".alert")).to_have_text(
        "forms are accepted from this site's pages only"
    )
    assert await unchanged(served, order) == before
    assert (await served.service.outcome(order.number)).status is OrderStatus.RUNNING
