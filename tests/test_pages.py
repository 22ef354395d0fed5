"""The web pages: their forms over HTTP, then what a user sees in a real Chromium.

The API runs in-process on a free port (uvicorn), orders on the real dev server and a real
`pizza worker` (tests/site.py). The browser is Debian's Chromium driven by Playwright; where
it is missing the browser tests skip with a line saying how to install it, and with CI=true
they fail instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from pizza_saga.api.access import SESSION_COOKIE
from pizza_saga.api.views import MIN_AXIS_SECONDS
from pizza_saga.order.example import GOOD_CARD
from tests.site import SEED_FORM, Served, Site, card_numbers_in, csrf_of

pytestmark = pytest.mark.devserver

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAGA_SECONDS = 30.0
"""How long a page may take to show what the saga does."""


@pytest.fixture(scope="module")
async def served(site: Site) -> AsyncIterator[Served]:
    """The pages over orders that wait 2 s in the kitchen and 30 s for a driver, and whose
    failing compensations are retried quickly (5 attempts, 0.05 s backoff)."""
    async with site.serve(
        PIZZA_PREP_SECONDS="2",
        PIZZA_DRIVER_SECONDS="30",
        PIZZA_COMPENSATION_ATTEMPTS="5",
        PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05",
    ) as api:
        yield api


CUSTOMER_LINK = re.compile(r"/orders/([A-Za-z0-9_-]+)\?token=([^&]+)")
"""An order's page as its customer has it (the order's token in the link)."""


def number_of(location: str) -> str:
    """The order number from a redirect to its page: the customer's link."""
    found = CUSTOMER_LINK.fullmatch(location)
    assert found, location
    return found.group(1)


# --- Forms over HTTP ---------------------------------------------------------------------------


async def test_the_new_order_form_is_the_seeds_order_with_the_sandbox_values(
    served: Served,
) -> None:
    page = await served.http.get("/orders/new")

    assert page.status_code == 200
    for value in ("María García", "maria1985@example.com", "701 Mission Street", "94103"):
        assert f'value="{value}"' in page.text
    for last4 in ("4242", "2424", "0002", "0119", "0341"):
        assert f"card ending {last4}" in page.text
    for value in ("bounce@example.com", "00000", "Out of stock"):
        assert value in page.text
    assert card_numbers_in(page.text) == []


async def test_each_submit_is_a_new_order_unless_a_number_is_typed(served: Served) -> None:
    first = await served.post_form("/orders/new", {**SEED_FORM, "card": "fifteen"})
    second = await served.post_form("/orders/new", {**SEED_FORM, "card": "fifteen"})
    typed = await served.post_form(
        "/orders/new", {**SEED_FORM, "card": "fifteen", "order_number": "PAGE-TYPED-1"}
    )
    again = await served.post_form(
        "/orders/new", {**SEED_FORM, "card": "fifteen", "order_number": "PAGE-TYPED-1"}
    )

    assert [r.status_code for r in (first, second, typed)] == [303, 303, 303]
    numbers = [number_of(r.headers["location"]) for r in (first, second, typed)]
    for response, number in zip((first, second, typed), numbers, strict=True):
        assert response.headers["location"] == served.customer_link(number)
    assert numbers[0] != numbers[1]
    assert numbers[2] == "PAGE-TYPED-1"
    assert again.status_code == 409
    assert "PAGE-TYPED-1 was already placed" in again.text
    assert 'id="order_number" name="order_number" type="text" value="PAGE-TYPED-1"' in again.text


async def test_the_same_form_sent_twice_is_one_order(served: Served) -> None:
    page = await served.http.get("/orders/new")
    found = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert found, "the form carries its idempotency key"
    form = {**SEED_FORM, "card": "declined", "idempotency_key": found.group(1)}

    first = await served.post_form("/orders/new", form)
    second = await served.post_form("/orders/new", form)  # a double click, a re-post
    other = await served.post_form("/orders/new", {**form, "qty.0": "3"})  # edited after

    assert (first.status_code, second.status_code) == (303, 303)
    assert first.headers["location"] == second.headers["location"]
    assert other.status_code == 409
    assert "This form placed an order before" in other.text
    fresh = re.search(r'name="idempotency_key" value="([^"]+)"', other.text)
    assert fresh and fresh.group(1) != found.group(1)
    # The same order, not a second one under a used number (which would be 409).
    outcome = await served.service.outcome(number_of(first.headers["location"]))
    assert outcome.order_number == number_of(second.headers["location"])


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"customer.email": "nobody"}, "customer.email", "is not an email address"),
        ({"qty.0": "0", "qty.1": "0", "qty.2": "0"}, "items", "at least 1 item"),
        ({"qty.1": "many"}, "qty.1", "a whole number from 0 to 20"),
        ({"customer.customer_id": "x"}, "customer.customer_id", "a whole number above 0"),
        (
            {"card": "gold", "credit_card_info.number": ""},
            "credit_card_info.number",
            "a sandbox card",
        ),
        (
            {"card": "other", "credit_card_info.number": "4242x"},
            "credit_card_info.number",
            "only digits",
        ),
        ({"address.postal_code": "!"}, "address.postal_code", "3-10 letters"),
        ({"order_number": "no spaces"}, "order_number", "letters, digits"),
    ],
)
async def test_a_wrong_field_comes_back_named_in_the_form(
    served: Served, changes: dict[str, str], field: str, reason: str
) -> None:
    page = await served.post_form(
        "/orders/new", {**SEED_FORM, "credit_card_info.number": GOOD_CARD, **changes}
    )

    assert page.status_code == 422
    alert = re.search(r'<p class="alert" role="alert" id="form-error">(.*?)</p>', page.text, re.S)
    assert alert, page.text
    assert f"<strong>{field}</strong>" in alert.group(1)
    assert reason in alert.group(1)
    assert 'value="María García"' in page.text, "what was typed is kept"
    assert card_numbers_in(page.text) == [], "but never the card number"


async def test_no_client_input_makes_a_server_error(served: Served) -> None:
    taken = await served.post_form("/orders/new", {**SEED_FORM, "card": "fifteen"})
    number = number_of(taken.headers["location"])
    junk = ["", " ", "x" * 5000, "\x00", "💥", "-1", "9" * 30, "<script>alert(1)</script>"]
    statuses: dict[int, int] = {}
    csrf = await csrf_of(served.http)
    # Every field spoiled in turn; the rest is valid (its CSRF token too) but names an order
    # that exists, so nothing new is placed.
    for name in [*SEED_FORM, "order_number", "credit_card_info.number", "unknown"]:
        for value in junk:
            form = {**SEED_FORM, "order_number": number, name: value, "csrf": csrf}
            page = await served.http.post("/orders/new", data=form)
            statuses[page.status_code] = statuses.get(page.status_code, 0) + 1
            assert page.status_code < 500, (name, value, page.text)
            assert "<script>alert(1)</script>" not in page.text
    raw_bodies: list[tuple[dict[str, str], bytes]] = [
        ({"content-type": "application/json"}, b'{"order_number": "X"}'),
        ({"content-type": "application/x-www-form-urlencoded"}, b"\xff\xfe=\xff"),
        ({"content-type": "application/x-www-form-urlencoded"}, b"a=" + b"x" * 20_000),
        ({"content-type": "application/x-www-form-urlencoded"}, b"&".join([b"k=v"] * 500)),
        ({"content-type": "multipart/form-data; boundary=x"}, b"--x--"),
    ]
    # Posted by the operator (who may use all three), a form's body with its CSRF token.
    operator_csrf = await csrf_of(served.operator)
    for path in ("/orders/new", f"/orders/{number}/resolve", "/stock"):
        for headers, body in raw_bodies:
            if headers["content-type"] == "application/x-www-form-urlencoded":
                body += b"&csrf=" + operator_csrf.encode()
            page = await served.operator.post(path, content=body, headers=headers)
            assert 400 <= page.status_code < 500, (path, body[:40], page.status_code)
    for path in ("/orders/NOSUCH-ORDER", "/orders/%00", "/orders/" + "x" * 500):
        page = await served.operator.get(path)
        assert page.status_code == 404
        assert "No such order" in page.text
    assert set(statuses) <= {303, 409, 422}, statuses  # 303: a new, valid order number


async def test_buttons_on_a_finished_order_say_why_nothing_happened(served: Served) -> None:
    placed = await served.post_form("/orders/new", {**SEED_FORM, "card": "declined"})
    number = number_of(placed.headers["location"])
    await served.service.wait(number, within=SAGA_SECONDS)

    # The customer cancels from their page (its form carries the token); the operator
    # cancels and decides from theirs.
    token = served.service.access.order_token(number)
    cancel = await served.post_form(f"/orders/{number}/cancel", {"token": token})
    by_operator = await served.post_form(f"/orders/{number}/cancel", {}, as_operator=True)
    retry = await served.post_form(
        f"/orders/{number}/resolve", {"action": "RETRY"}, as_operator=True
    )
    nonsense = await served.post_form(
        f"/orders/{number}/resolve", {"action": "MAYBE"}, as_operator=True
    )
    nobody = await served.post_form("/orders/NOSUCH-ORDER/cancel", {}, as_operator=True)

    assert cancel.status_code == 409
    assert f"order {number} has already finished (FAILED): nothing cancelled" in cancel.text
    assert 'class="badge failed"' in cancel.text
    assert by_operator.status_code == 409
    assert f"order {number} has already finished (FAILED): nothing cancelled" in by_operator.text
    assert retry.status_code == 409
    assert "nothing waits for an operator" in retry.text
    assert nonsense.status_code == 422
    assert "choose Retry or Skip" in nonsense.text
    assert nobody.status_code == 404


async def test_forms_posted_from_another_site_are_refused(served: Served) -> None:
    before = await served.service.list_orders(page_size=100)
    # With the CSRF token and the operator's session (as a cross-site post would carry them
    # in a browser that sent cookies): the other site is what is refused.
    csrf = await csrf_of(served.operator)
    refused = await served.operator.post(
        "/orders/new",
        data={**SEED_FORM, "csrf": csrf},
        headers={"Origin": "http://elsewhere.example"},
    )
    cancel = await served.operator.post(
        "/orders/ANY/cancel", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
    )

    for answer in (refused, cancel):
        assert answer.status_code == 403
        assert "accepted from this site&#39;s pages only" in answer.text
    after = await served.service.list_orders(page_size=100)
    assert len(after.orders) == len(before.orders)


async def test_the_stock_page_restocks_and_lists_payments(served: Served) -> None:
    item = "Medium, with extra cheese"
    restocked = await served.post_form("/stock", {"qty.2": "250"}, as_operator=True)
    wrong = await served.post_form("/stock", {"qty.2": "lots"}, as_operator=True)
    page = await served.operator.get("/stock")

    assert restocked.status_code == 303
    assert served.service.stock()[item] == 250
    row = re.search(rf'<tr data-item="{item}">.*?on-hand">(\d+)<', page.text, re.S)
    assert row and row.group(1) == "250"
    assert wrong.status_code == 422
    assert "whole number" in wrong.text
    for payment in served.service.payments():
        assert f'data-order="{payment.order_number}" data-kind="{payment.kind}"' in page.text
    assert card_numbers_in(page.text) == []


async def test_the_order_page_shows_what_was_ordered_with_the_customer_masked(
    served: Served,
) -> None:
    placed = await served.post_form("/orders/new", {**SEED_FORM, "card": "approved"})
    number = number_of(placed.headers["location"])
    await served.service.wait(number, within=SAGA_SECONDS)

    # As its customer sees it (the link it was placed with), and as an operator does.
    for page in (
        await served.http.get(placed.headers["location"]),
        await served.operator.get(f"/orders/{number}"),
    ):
        shows_what_was_ordered_masked(page)


def shows_what_was_ordered_masked(page: httpx.Response) -> None:
    """The seed's order with the approved card: the lines, the money, the customer masked."""
    assert page.status_code == 200, page.text
    lines = re.findall(
        r'<tr data-item="([^"]+)"><td>[^<]*</td><td class="number">(\d+)</td>', page.text
    )
    assert lines == [
        ("Large, with mushrooms and onions", "1"),
        ("Small, with pepperoni", "1"),
        ("Medium, with extra cheese", "1"),
    ]
    for shown in ('id="subtotal">$40.00<', 'id="discount">-$5.00<', 'id="total">$35.00<'):
        assert shown in page.text
    for shown in ("María G.", "m•••@example.com", "•••-•••-7418", "San Francisco, CA 94103"):
        assert shown in page.text
    assert "Lisa A., card ending 4242" in page.text
    for hidden in ("García", "maria1985", "415-555", "Mission Street", "Anderson", "tok_"):
        assert hidden not in page.text
    charges = re.findall(
        r'<tr data-kind="(\w+)"><td>\w+</td><td class="number">([^<]+)</td>\s*'
        r'<td class="card">([^<]*)</td>',
        page.text,
    )
    assert charges == [("charge", "$35.00", "•••• 4242")]
    assert card_numbers_in(page.text) == []


async def test_cancel_and_retry_notices_show_only_while_the_order_runs(served: Served) -> None:
    placed = await served.post_form("/orders/new", SEED_FORM)  # 30 s for a driver
    number = number_of(placed.headers["location"])
    # Where each button lands: a cancel, the customer's link; a retry, the operator's page.
    cancel_page = f"{served.customer_link(number)}&done=cancel"
    retry_page = f"/orders/{number}?done=retry"

    running = await served.http.get(cancel_page)
    retrying = await served.operator.get(retry_page)
    await served.service.cancel(number)
    await served.service.wait(number, within=SAGA_SECONDS)
    cancelled = await served.http.get(cancel_page)
    retried = await served.operator.get(retry_page)

    assert "Cancellation requested" in running.text
    assert "data-while-running" in running.text
    assert "Retry requested." in retrying.text
    assert 'class="badge cancelled"' in cancelled.text
    assert "Cancellation requested" not in cancelled.text
    assert "Retry requested." not in retried.text


# --- In the browser ----------------------------------------------------------------------------


def require_chromium() -> None:
    """Skip the test where Chromium is missing, saying how to install it; fail it under CI."""
    if CHROMIUM.exists():
        return
    how = "apt-get update && apt-get install -y chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must install it ({how})")
    pytest.skip(f"{CHROMIUM} is missing; install it with: {how}")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright; skipped (or, under CI, failed) if missing."""
    require_chromium()
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = "/nonexistent/playwright-browsers"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, served: Served) -> AsyncIterator[Page]:
    """A fresh browser page on the site; its JavaScript errors fail the test."""
    context = await browser.new_context(
        base_url=served.url, viewport={"width": 1280, "height": 900}
    )
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        await context.close()
    assert errors == [], errors


async def log_in_as_operator(page: Page, served: Served) -> None:
    """The browser of ``page`` holds the operator's session on ``served``'s pages from now."""
    await page.context.add_cookies(
        [{"name": SESSION_COOKIE, "value": served.operator_session, "url": served.url}]
    )


ORDER_PAGE = re.compile(r"/orders/[A-Za-z0-9_-]+\?token=[^&]+$")
"""Where placing an order from the form lands: its page, by the customer's link."""


def order_number_in(url: str) -> str:
    """The order number of an order page's URL (with or without its token)."""
    return urlsplit(url).path.rsplit("/", 1)[1]


async def no_card_number_shown(page: Page) -> None:
    """The page as the browser has it now holds no sandbox card number."""
    html = await page.content()
    assert card_numbers_in(html) == []


async def place_from_the_form(page: Page, **fields: str) -> str:
    """Fill the new-order form (field id -> value), place it, land on its page: its number."""
    await page.goto("/orders/new")
    await expect(page.locator('[id="customer.name"]')).to_have_value("María García")
    for field, value in fields.items():
        await page.locator(f'[id="{field}"]').fill(value)
    await page.get_by_role("button", name="Place order").click()
    await page.wait_for_url(ORDER_PAGE)
    return order_number_in(page.url)


def step(page: Page, name: str) -> Locator:
    """A saga step's row in the order page's timeline."""
    return page.locator(f'.step[data-step="{name}"]')


async def test_a_rolled_back_order_unfolds_live_on_its_page(
    page: Page, served: Served, site: Site, tmp_path: Path
) -> None:
    # Reserved and charged, then the kitchen (2 s), then a bill that bounces: it rolls back.
    number = await place_from_the_form(page, **{"customer.email": "bounce@example.com"})

    # The page came from the server while the order was still in the kitchen ...
    await expect(page.locator("#outcome-label")).to_have_text("Running")
    await page.evaluate("window.sameDocument = true")
    # ... and everything after arrives by events, without a reload.
    failed = step(page, "send_bill")
    charged = step(page, "process_credit_card")
    await expect(failed.locator(".forward-state")).to_have_text(
        "FAILED", timeout=SAGA_SECONDS * 1000
    )
    await expect(charged.locator(".compensation-state")).to_have_text(
        "COMPENSATED", timeout=SAGA_SECONDS * 1000
    )
    await expect(step(page, "update_inventory").locator(".compensation-state")).to_have_text(
        "COMPENSATED"
    )
    await expect(page.locator("#outcome-label")).to_have_text("Failed")
    await expect(page.locator("#outcome-detail")).to_have_text(
        f"BillDeliveryError: bill for order {number} bounced: mailbox unavailable"
    )
    assert await page.evaluate("window.sameDocument") is True

    await expect(step(page, "update_inventory").locator(".step-name small")).to_have_text(
        "undo: revert_inventory"
    )
    await expect(charged.locator(".step-name small")).to_have_text("undo: refund_customer")
    await expect(failed.locator(".compensation-state")).to_have_count(0)  # a bill is not undone
    # What was ordered, the customer masked; the charge and its refund.
    await expect(page.locator("#total")).to_have_text("$35.00")
    await expect(page.locator("#customer-name")).to_have_text("María G.")
    await expect(page.locator("#customer-email")).to_have_text("b•••@example.com")
    await expect(page.locator("#card")).to_have_text("Lisa A., card ending 4242")
    money = page.locator("#order-payments tbody tr td:nth-child(1)")
    await expect(money).to_have_text(["charge", "refund"])
    await expect(page.locator("#cancel-form")).to_be_hidden()
    await expect(page.locator("#resolve-form")).to_have_count(0)  # an operator's, only
    await expect(page.locator("#web-ui")).to_have_attribute(
        "href", re.compile(rf"/namespaces/default/workflows/pizza-workflow-order-{number}/")
    )
    # Bars sit on the time axis by their timestamps: each compensation after its step ended.
    for name in ("update_inventory", "process_credit_card"):
        forward = await step(page, name).locator(".bar.forward").bounding_box()
        undo = await step(page, name).locator(".bar.compensation").bounding_box()
        assert forward and undo
        assert undo["x"] >= forward["x"] + forward["width"] - 2
        colours = (
            await step(page, name)
            .locator(".bar")
            .evaluate_all("bars => bars.map(b => getComputedStyle(b).backgroundColor)")
        )
        assert len(set(colours)) == 2, colours
    # The kitchen's 2 s is a labelled break; the rollback, milliseconds, gets room to read:
    # the refund (the charge's compensation) ran before the revert (the inventory's).
    # (The first break: on a loaded machine a slow step may make another.)
    await expect(page.locator("#axis-breaks .break-label").first).to_have_text(
        re.compile(r"^2\.\d s$")
    )
    track = await step(page, "update_inventory").locator(".track").bounding_box()
    kitchen = await step(page, "update_inventory").locator(".break").first.bounding_box()
    refund = await charged.locator(".bar.compensation").bounding_box()
    revert = await step(page, "update_inventory").locator(".bar.compensation").bounding_box()
    assert track and kitchen and refund and revert
    assert kitchen["width"] <= 0.5 * track["width"]
    assert refund["x"] + refund["width"] <= revert["x"] + 1
    # On one linear axis the rollback would get its share of the whole time: a sliver.
    ledger = {r.step: r for r in (await served.service.outcome(number)).ledger or []}
    first, undone = ledger["get_distance"].started_at, ledger["update_inventory"].compensated_at
    began = ledger["process_credit_card"].compensation_started_at
    assert first and undone and began
    linear = track["width"] * (undone - began) / (undone - first)
    drawn = revert["x"] + revert["width"] - refund["x"]
    assert drawn >= 2 * linear, (drawn, linear)
    axis = await page.locator("#axis span").all_text_contents()
    assert len(set(axis)) == len(axis), axis
    await no_card_number_shown(page)
    await page.locator("main").screenshot(path=tmp_path / "rolled-back-order.png")


async def test_cancelling_a_running_order_from_its_page(
    page: Page, served: Served, tmp_path: Path
) -> None:
    number = await place_from_the_form(page)
    driver = step(page, "notify_delivery_driver")
    await expect(driver.locator(".forward-state")).to_have_text(
        "RUNNING", timeout=SAGA_SECONDS * 1000
    )

    await page.get_by_role("button", name="Cancel order").click()

    await expect(page.locator("#outcome-label")).to_have_text(
        "Cancelled", timeout=SAGA_SECONDS * 1000
    )
    # Said while the rollback ran (if the page came in time to say it), not once it is over.
    await expect(page.locator(".notice")).to_be_hidden()
    await expect(driver.locator(".forward-state")).to_have_text("CANCELLED")
    for name in ("update_inventory", "process_credit_card"):
        await expect(step(page, name).locator(".compensation-state")).to_have_text("COMPENSATED")
    await expect(page.locator("#cancel-form")).to_be_hidden()
    # The money came back, on the order's own page too (drawn live from the API).
    money = page.locator("#order-payments tbody tr")
    await expect(money.locator("td:nth-child(1)")).to_have_text(["charge", "refund"])
    await expect(money.locator("td:nth-child(3)")).to_have_text(["•••• 4242", "•••• 4242"])
    await no_card_number_shown(page)
    await page.locator("main").screenshot(path=tmp_path / "cancelled-order.png")

    # The money came back: the operator's stock page shows the charge and its refund.
    await log_in_as_operator(page, served)
    await page.reload()
    await page.get_by_role("link", name="Stock and payments").click()
    payments = page.locator(f'#payments tr[data-order="{number}"]')
    await expect(payments).to_have_count(2)
    await expect(payments.locator("td:nth-child(2)")).to_have_text(["refund", "charge"])
    await expect(payments.locator("td:nth-child(4)")).to_have_text(["•••• 4242", "•••• 4242"])
    await no_card_number_shown(page)


async def test_an_operator_retries_a_stuck_refund_from_the_page(
    page: Page, served: Served, tmp_path: Path
) -> None:
    await log_in_as_operator(page, served)
    await page.goto("/orders/new")
    await page.get_by_label("card ending 0341").check()
    await page.locator('button[data-fill="customer.email"]').click()
    await expect(page.locator('[id="customer.email"]')).to_have_value("bounce@example.com")
    await page.get_by_role("button", name="Place order").click()
    await page.wait_for_url(ORDER_PAGE)

    refund = step(page, "process_credit_card")
    await expect(page.locator("#outcome-label")).to_have_text(
        "Needs operator", timeout=SAGA_SECONDS * 1000
    )
    await expect(refund.locator(".compensation-state")).to_have_text("NEEDS_OPERATOR")
    await expect(refund.locator(".attempts")).to_have_text("5 compensation attempts")
    await expect(refund.locator(".note.compensation-error")).to_contain_text(
        "refused by the processor (attempt 5)"
    )
    await expect(page.locator("#resolve-form")).to_be_visible()
    await expect(page.locator("#resolve-step")).to_have_value("process_credit_card")
    await page.locator("main").screenshot(path=tmp_path / "needs-operator.png")

    # Skipping needs a reason: the page says so, nothing else happens.
    await page.get_by_role("button", name="Skip").click()
    await expect(page.locator("#action-error")).to_contain_text(
        "say why the compensation is skipped"
    )
    await expect(page.locator("#outcome-label")).to_have_text("Needs operator")

    await page.get_by_role("button", name="Retry").click()

    await expect(refund.locator(".compensation-state")).to_have_text(
        "COMPENSATED", timeout=SAGA_SECONDS * 1000
    )
    await expect(refund.locator(".attempts")).to_have_text("6 compensation attempts")
    await expect(page.locator("#outcome-label")).to_have_text("Failed")
    await expect(page.locator("#outcome-detail")).to_contain_text("BillDeliveryError")
    await expect(page.locator("#resolve-form")).to_be_hidden()
    await expect(page.locator(".notice")).to_be_hidden()  # no "Retry requested" once failed
    await no_card_number_shown(page)
    await page.locator("main").screenshot(path=tmp_path / "resolved-order.png")


async def test_a_manual_refund_after_a_skip_shows_in_the_order_payments_and_its_net(
    page: Page, served: Served
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await log_in_as_operator(page, served)
    await page.goto("/orders/new")
    await page.get_by_label("card ending 0341").check()
    await page.locator('button[data-fill="customer.email"]').click()
    await page.get_by_role("button", name="Place order").click()
    await page.wait_for_url(ORDER_PAGE)
    number = urlsplit(page.url).path.rsplit("/", 1)[1]
    await expect(page.locator("#outcome-label")).to_have_text(
        "Needs operator", timeout=SAGA_SECONDS * 1000
    )
    await page.locator("#reason").fill("refunded by bank transfer")
    await page.get_by_role("button", name="Skip").click()
    await expect(page.locator("#outcome-label")).to_have_text("Failed", timeout=SAGA_SECONDS * 1000)
    await expect(page.locator("#order-net")).to_have_text("$35.00")

    recorded = await served.operator.post(
        f"/api/orders/{number}/manual-refunds", json={"amount": 3500, "reference": "BANK-PAGE-1"}
    )
    assert recorded.status_code == 201, recorded.text
    await page.reload()
    await expect(page.locator("#live")).to_be_hidden()  # the stream's last snapshot drew it

    rows = page.locator("#order-payments tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text("manual_refund")
    await expect(rows.nth(1)).to_contain_text("$35.00")
    await expect(rows.nth(1).locator(".card")).to_have_text(
        "transfer BANK-PAGE-1 (by test-operator)"
    )
    await expect(page.locator("#order-net")).to_have_text("$0.00")
    assert errors == []


async def test_an_order_cancelled_in_the_kitchen_has_a_readable_axis(
    page: Page, site: Site, tmp_path: Path
) -> None:
    # A kitchen that takes 30 s: the cancel surely comes while the pizzas are prepared.
    async with site.serve(PIZZA_PREP_SECONDS="30") as slow:
        await page.goto(f"{slow.url}/orders/new")
        await page.get_by_role("button", name="Place order").click()
        await page.wait_for_url(ORDER_PAGE)
        distance = step(page, "get_distance")
        await expect(distance.locator(".forward-state")).to_have_text("SUCCEEDED")

        await page.get_by_role("button", name="Cancel order").click()

        await expect(page.locator("#outcome-label")).to_have_text(
            "Cancelled", timeout=SAGA_SECONDS * 1000
        )
        # Reserved and charged before the kitchen: both undone.
        await expect(page.locator(".step")).to_have_count(3)
        axis = await page.locator("#axis span").all_text_contents()
        assert len(set(axis)) == len(axis), f"the axis reads {axis}"
        track = await distance.locator(".track").bounding_box()
        bar = await distance.locator(".bar.forward").bounding_box()
        assert track and bar
        # The axis is at least MIN_AXIS_SECONDS long (longer here: the reservation, the
        # charge and their rollback follow): a step that took a few milliseconds is a short
        # bar on it, at most its share of MIN_AXIS_SECONDS, not the whole axis.
        number = order_number_in(page.url)
        record = (await slow.service.outcome(number)).ledger or []
        assert record and record[0].started_at and record[0].finished_at
        took = (record[0].finished_at - record[0].started_at).total_seconds()
        share = min(1.0, took / MIN_AXIS_SECONDS)
        assert bar["width"] <= (share + 0.05) * track["width"]
        await expect(page.locator(".notice")).to_be_hidden()
        money = page.locator("#order-payments tbody tr td:nth-child(1)")
        await expect(money).to_have_text(["charge", "refund"])
        await page.locator("main").screenshot(path=tmp_path / "cancelled-in-the-kitchen.png")


async def test_the_home_page_lists_new_orders_live(page: Page, served: Served) -> None:
    await log_in_as_operator(page, served)
    await page.goto("/")
    await expect(page.locator("h1")).to_have_text("Recent orders")
    placed = await served.post_form("/orders/new", {**SEED_FORM, "card": "declined"})
    number = number_of(placed.headers["location"])

    row = page.locator(f'#orders tr[data-order="{number}"]')
    await expect(row.locator(".badge")).to_have_text("Failed", timeout=SAGA_SECONDS * 1000)
    await row.get_by_role("link", name=number).click()
    await expect(page.locator("#outcome-detail")).to_contain_text("CardDeclinedError")
    await no_card_number_shown(page)
