"""The Temporal Web UI of `pizza server` in headless Chromium: decoded payloads after login only.

A person follows what `pizza server` prints: turns on the Web UI's codec setting, opens the
login URL (from the file it names) once, and then sees an order's input decoded; before the
login the same page shows only ciphertext.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, Response, async_playwright, expect

from pizza_saga.app import open_stores
from pizza_saga.common.codec_server import SESSION_COOKIE
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import order_request, place_order
from pizza_saga.order.example import example_order
from tests.test_pages import CHROMIUM, CHROMIUM_ARGS, require_chromium

pytestmark = pytest.mark.devserver

START_TIMEOUT = 60
UI_TIMEOUT_MS = 15_000
CUSTOMER = "María García"
"""The example order's customer: in the workflow's input, which Temporal holds encrypted."""


@dataclass(frozen=True)
class Served:
    home: Path
    address: str
    ui_url: str
    codec_url: str
    login_url: str
    """As the file `pizza server` named holds it."""
    instructions: str


@pytest.fixture
def browser_path(monkeypatch: pytest.MonkeyPatch) -> str:
    """Debian's Chromium, checked before any server starts; playwright downloads nothing."""
    require_chromium()
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", "/nonexistent/playwright-browsers")
    return str(CHROMIUM)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """`pizza server` on free ports, as a user starts it; what it printed."""
    home = tmp_path / "pizza-home"
    port, ui_port, codec_port = free_port(), free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pizza_saga", "server", "--port", str(port)),
        *("--ui-port", str(ui_port), "--codec-port", str(codec_port)),
        env={**os.environ, "PIZZA_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        printed = await asyncio.wait_for(_until_login_file(process.stdout), START_TIMEOUT)
        named = re.search(r"open the login URL kept in (\S+)", printed)
        assert named is not None, printed
        login_url = await asyncio.to_thread(Path(named.group(1)).read_text)
        yield Served(
            home,
            f"localhost:{port}",
            f"http://localhost:{ui_port}",
            f"http://localhost:{codec_port}",
            login_url.strip(),
            printed,
        )
    finally:
        process.terminate()
        await process.communicate()


async def _until_login_file(stdout: asyncio.StreamReader) -> str:
    lines: list[str] = []
    while not lines or "open the login URL kept in" not in lines[-1]:
        line = (await stdout.readline()).decode()
        assert line, "pizza server exited before naming its login URL's file:\n" + "".join(lines)
        lines.append(line)
    return "".join(lines)


async def test_web_ui_shows_an_orders_input_decoded_only_after_login(
    browser_path: str, served: Served
) -> None:
    settings = Settings.model_validate({"PIZZA_HOME": served.home})
    client = await connect(settings, served.address)
    order = example_order(order_number=f"UI{uuid.uuid4().hex[:8].upper()}")
    card = open_stores(settings).vault.tokenize(
        order.credit_card_info.number, order_number=order.order_number
    )
    # No worker: the run waits, and its history holds the encrypted input.
    handle = await place_order(
        client, order_request(order.placed(card), settings), task_queue=f"ui-{uuid.uuid4().hex}"
    )
    history = await handle.fetch_history()
    [sealed] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    ciphertext = base64.b64encode(sealed.data).decode()[:24]
    workflow_page = f"{served.ui_url}/namespaces/default/workflows/{handle.id}"
    assert 'turn on "Include cross-origin credentials"' in served.instructions

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            await page.goto(workflow_page, wait_until="commit")
            await _turn_on_credentials(page, served.codec_url)

            # The UI now sends this browser's cookies to the codec server, but it has none.
            for tab in ("Event History", "Timeline"):
                refused = await _open_tab(page, tab, served.codec_url)
                assert refused.status == 401
            await expect(page.get_by_text(ciphertext).first).to_be_visible(timeout=UI_TIMEOUT_MS)
            assert CUSTOMER not in await page.content()

            login = await context.new_page()
            await login.goto(served.login_url)
            await expect(login.get_by_role("heading", name="Logged in")).to_be_visible(
                timeout=UI_TIMEOUT_MS
            )
            await login.close()

            for tab in ("Event History", "Timeline"):
                decoded = await _open_tab(page, tab, served.codec_url)
                assert decoded.status == 200
                assert SESSION_COOKIE in (await decoded.request.all_headers())["cookie"]
            await expect(page.get_by_text(CUSTOMER).first).to_be_visible(timeout=UI_TIMEOUT_MS)
            await expect(page.get_by_test_id("data-encoder-status-success")).to_be_visible(
                timeout=UI_TIMEOUT_MS
            )
        finally:
            await browser.close()

    log = (served.home / "codec-server.log").read_text()
    ui_origin = f'origin="{served.ui_url}"'
    assert f'POST "/decode" 401 {ui_origin} refused: no credential' in log
    assert f'POST "/decode" 200 {ui_origin}' in log
    assert CUSTOMER not in log


async def _open_tab(page: Page, tab: str, endpoint: str) -> Response:
    """Open a tab of the workflow's page; the codec server's answer to the UI's decode."""
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.startswith(f"{endpoint}/decode")
    ) as answer:
        # "Event History" carries its count ("Event History 2"); "Timeline" stands alone.
        await page.get_by_text(tab, exact=tab == "Timeline").first.click()
    return await answer.value


async def _turn_on_credentials(page: Page, endpoint: str) -> None:
    """The Web UI's Codec Server settings, as the printed instructions say."""
    await page.locator("[data-testid^='data-encoder-status']").click()
    await page.get_by_test_id("use-local-endpoint-input").check()
    await page.locator("#data-encoder-endpoint-input").fill(endpoint)
    await page.get_by_test_id("data-encoder-include-credentials").check()
    await page.get_by_role("button", name="Apply").click()
