"""Amending an order from every face: `PATCH /api/orders/{n}`, `pizza amend`, and the order
page in a real Chromium (a form that shows the new total before confirming). Orders wait 10
minutes in the kitchen here, so that each test amends a running order; each ends it."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from pizza_saga.order.menu import MENU
from tests.site import SEED_FORM, Served, Site
from tests.test_pages import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SAGA_SECONDS,
    no_card_number_shown,
    place_from_the_form,
    require_chromium,
    step,
)

pytestmark = pytest.mark.devserver

LARGE, SMALL, MEDIUM = MENU


@pytest.fixture(scope="module")
async def served(site: Site) -> AsyncIterator[Served]:
    async with site.serve(PIZZA_PREP_SECONDS="600", PIZZA_DRIVER_SECONDS="0") as api:
        yield api


async def placed(served: Served) -> str:
    """A new order of the seed's three pizzas (3500 cents), placed from the form and in the
    kitchen: reserved and charged."""
    response = await served.post_form("/orders/new", SEED_FORM)
    assert response.status_code == 303
    found = re.search(r"/orders/([A-Za-z0-9_-]+)\?", response.headers["location"])
    assert found
    number = found.group(1)
    async with asyncio.timeout(SAGA_SECONDS):
        while not served.service.payments(order_number=number):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return number


def net(served: Served, number: str) -> int:
    return sum(
        p.amount if p.kind == "charge" else -p.amount
        for p in served.service.payments(order_number=number)
    )


async def ended(served: Served, number: str) -> None:
    """Cancel the order and wait until it has rolled back."""
    await served.service.cancel(number)
    await served.service.wait(number, within=SAGA_SECONDS)


# --- The API -----------------------------------------------------------------------------------


async def test_patch_amends_the_order_once_per_idempotency_key(served: Served) -> None:
    before = served.service.stock()
    number = await placed(served)
    headers = {**served.customer_headers(number), "Idempotency-Key": "add-one-small"}

    first = await served.http.patch(f"/api/orders/{number}", json={"add": [SMALL]}, headers=headers)
    again = await served.http.patch(f"/api/orders/{number}", json={"add": [SMALL]}, headers=headers)

    assert (first.status_code, again.status_code) == (200, 200), first.text
    assert first.json() == again.json()
    assert (first.json()["total"], first.json()["charged"]) == (4700, 1200)
    assert net(served, number) == 4700
    assert before[SMALL] - served.service.stock()[SMALL] == 2  # its first one, the added one
    other = await served.http.patch(
        f"/api/orders/{number}", json={"add": [MEDIUM]}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "amendment_id"
    await ended(served, number)
    assert net(served, number) == 0
    assert served.service.stock() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"add": ["Huge, with everything"]}, "add"),
        ({"remove": [LARGE, LARGE]}, "remove"),
        ({"remove": [LARGE, SMALL, MEDIUM]}, "remove"),
        ({}, "amendment"),
        ({"address": {"line1": "A very long street name, far out of town"}}, "address"),
        ({"address": {"postal_code": "!"}}, "address.postal_code"),
        ({"pizzas": [SMALL]}, "pizzas"),
    ],
)
async def test_patch_refuses_a_bad_change_naming_the_field(
    served: Served, change: dict[str, object], field: str
) -> None:
    number = await placed(served)
    before = served.service.stock()

    refused = await served.http.patch(
        f"/api/orders/{number}", json=change, headers=served.customer_headers(number)
    )

    assert refused.status_code == 422, refused.text
    # The body's own fields as JSON pointers (/pizzas), the service's as paths (address.city).
    fields = [e["field"].strip("/").replace("/", ".") for e in refused.json()["errors"]]
    assert field in fields, refused.json()
    assert "Traceback" not in refused.text
    assert served.service.stock() == before and net(served, number) == 3500
    assert await served.service.amendments(number) == []
    await ended(served, number)


async def test_patch_needs_the_orders_token_and_409s_once_the_order_ends(
    served: Served,
) -> None:
    number = await placed(served)

    anonymous = await served.http.patch(f"/api/orders/{number}", json={"add": [SMALL]})
    assert anonymous.status_code == 401
    await ended(served, number)
    late = await served.http.patch(
        f"/api/orders/{number}", json={"add": [SMALL]}, headers=served.customer_headers(number)
    )
    assert late.status_code == 409, late.text
    assert net(served, number) == 0


# --- The command line --------------------------------------------------------------------------


async def test_pizza_amend_changes_the_order_and_names_a_bad_field(
    served: Served, site: Site
) -> None:
    number = await placed(served)

    done = await asyncio.to_thread(
        site.deployment.run, "amend", number, "--remove", LARGE, "--json"
    )
    bad = await asyncio.to_thread(site.deployment.run, "amend", number, "--add", "Calzone")

    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["total"], record["refunded"]) == (2500, 1000)
    assert bad.returncode == 2
    assert "add:" in bad.stderr and "not on the menu" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert net(served, number) == 2500
    await ended(served, number)
    late = await asyncio.to_thread(site.deployment.run, "amend", number, "--add", SMALL)
    assert late.returncode == 4, late.stderr


# --- The page, in a browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
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


async def test_a_customer_amends_the_order_from_its_page_seeing_the_new_total_first(
    page: Page, served: Served
) -> None:
    number = await place_from_the_form(page)
    await expect(step(page, "process_credit_card").locator(".forward-state")).to_have_text(
        "SUCCEEDED", timeout=SAGA_SECONDS * 1000
    )
    await page.reload()
    form = page.locator("#amend-form")
    await expect(form).to_be_visible()
    await expect(page.locator("#qty-1")).to_have_value("1")

    await page.locator("#qty-1").fill("2")  # one more small pepperoni
    await page.get_by_role("button", name="Show the new total").click()

    await expect(page.locator("#amend-total")).to_have_text("$47.00")
    await expect(page.locator("#amend-moves")).to_have_text("$12.00 more charged")
    assert net(served, number) == 3500  # nothing changed before the confirmation
    await page.get_by_role("button", name="Confirm change").click()

    await expect(page.locator("#notice")).to_contain_text("Order changed")
    await expect(page.locator("#total")).to_have_text("$47.00")
    rows = page.locator("#amendments tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.locator("td:nth-child(2)")).to_have_text(SMALL)
    added = page.locator('.step[data-step^="reserve_added_pizzas:"]')
    await expect(added.locator(".forward-state")).to_have_text("SUCCEEDED")
    charged = page.locator('.step[data-step^="charge_difference:"]')
    await expect(charged.locator(".forward-state")).to_have_text("SUCCEEDED")
    money = page.locator("#order-payments tbody tr td:nth-child(2)")
    await expect(money).to_have_text(["$35.00", "$12.00"])
    await no_card_number_shown(page)
    assert net(served, number) == 4700

    # Cancelled now, the rollback undoes the amendment too.
    await page.get_by_role("button", name="Cancel order").click()
    await expect(page.locator("#outcome-label")).to_have_text(
        "Cancelled", timeout=SAGA_SECONDS * 1000
    )
    await expect(charged.locator(".compensation-state")).to_have_text("COMPENSATED")
    assert net(served, number) == 0
