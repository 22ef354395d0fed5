"""The API docs at /docs come from this service alone: no CDN, every asset served here, and
in a real Chromium, under the page's own Content-Security-Policy, the operations render.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import async_playwright, expect

from pizza_saga.api.server import ApiServer
from pizza_saga.app import Stores, build_api, build_service
from pizza_saga.common.settings import Settings
from tests.postgres import SQLITE_ONLY
from tests.test_pages import CHROMIUM, CHROMIUM_ARGS, require_chromium

pytestmark = SQLITE_ONLY  # the docs read no store

REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""")
"""The URLs a page loads: its scripts, stylesheets, icon and the OpenAPI document."""


@pytest.fixture
def web(stores: Stores, settings: Settings) -> FastAPI:
    return build_api(build_service(None, stores, settings), ui_url="http://ui", namespace="default")


@pytest.fixture
async def http(web: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_docs_reference_no_other_host_and_every_asset_is_served_here(
    http: httpx.AsyncClient,
) -> None:
    docs = await http.get("/docs")

    assert docs.status_code == 200
    urls = [a or b for a, b in REFERENCE.findall(docs.text)]
    assert len(urls) == 4, urls  # stylesheet, icon, script, OpenAPI document
    assert [u for u in urls if urlsplit(u).netloc or not u.startswith("/")] == []
    assert "http://" not in docs.text and "https://" not in docs.text
    for url in urls:
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert int(asset.headers["content-length"]) > 0, url
    policy = docs.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self' 'sha256-" in policy
    assert "http" not in policy and "*" not in policy
    assert "frame-ancestors 'none'" in policy


async def test_redoc_is_off_and_the_assets_are_not_a_directory_listing(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/redoc")).status_code == 404
    assert (await http.get("/docs-assets/")).status_code == 404
    assert (await http.get("/docs-assets/../../pyproject.toml")).status_code == 404


async def test_the_docs_page_renders_the_operations_in_chromium_loading_nothing_elsewhere(
    web: FastAPI,
) -> None:
    require_chromium()
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = "/nonexistent/playwright-browsers"
    requested: list[str] = []
    problems: list[str] = []
    async with ApiServer(web, port=0) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(f"{server.url}/docs")

            operations = page.locator(".opblock-summary-path")
            await expect(
                operations.filter(has_text="/api/orders/{order_number}/cancel")
            ).to_be_visible()
            await expect(page.locator(".info .title")).to_contain_text("pizza-saga")
            count = await operations.count()
        finally:
            await browser.close()

    assert count >= 10
    assert problems == []  # no script error, no request refused by the page's policy
    origin = urlsplit(server.url).netloc
    assert requested and {urlsplit(url).netloc for url in requested} == {origin}, requested
