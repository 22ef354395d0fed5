"""No card number in plain text anywhere: Temporal's history and database, logs, stores.

Runs the demo's scenario and the failure paths through the real CLI against a real
`pizza server` and `pizza worker`, then scans everything they wrote: every history as the
server returns it (payload data base64-decoded, not decrypted), the server's SQLite files
(WAL included), the worker's and server's logs, and the store database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError

from pizza_saga.billing import cards
from pizza_saga.common.temporal import binary, connect
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.order.workflow import workflow_id_for
from tests.test_cli import Pizza, codec_token, new_number, pizza

__all__ = ["pizza"]  # the module-scoped server + worker fixture, used by name

pytestmark = pytest.mark.devserver

TEST_CARDS = [
    GOOD_CARD,
    BROKEN_CARD,
    cards.DECLINED_CARD,
    cards.FLAKY_CARD,
    cards.REFUND_FAILING_CARD,
]


def findings(data: bytes, where: str) -> list[str]:
    """Where in ``data`` a test card number appears in plain text."""
    return [f"{card} in {where}" for card in TEST_CARDS if card.encode() in data]


def decoded_payload_data(node: Any) -> Iterator[bytes]:
    """Every base64 'data' field of a history's JSON, decoded (not decrypted)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                yield base64.b64decode(value)
            else:
                yield from decoded_payload_data(value)
    elif isinstance(node, list):
        for value in node:
            yield from decoded_payload_data(value)


def test_the_scan_would_see_a_card_number_in_a_history() -> None:
    # The scan itself can fail: a plain payload holding a card number is found.
    payload = {"data": base64.b64encode(f'{{"number": "{GOOD_CARD}"}}'.encode()).decode()}
    history = {"events": [{"workflowExecutionStartedEventAttributes": {"input": payload}}]}

    found = [f for data in decoded_payload_data(history) for f in findings(data, "history")]

    assert GOOD_CARD not in json.dumps(history)  # a plain grep of the JSON misses it...
    assert f"{GOOD_CARD} in history" in found  # ...the scan does not


def bounce_file(tmp_path: Path, card: str) -> str:
    order = example_order(card_number=card).model_dump()
    order["customer"]["email"] = "bounce@example.com"
    path = tmp_path / f"bounce-{card[-4:]}.json"
    path.write_text(json.dumps(order))
    return str(path)


async def until_needs_operator(pizza: Pizza, number: str) -> None:
    async with asyncio.timeout(60):
        while number not in json.loads(pizza.run("needs-operator", "--json").stdout):  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def test_no_card_number_is_written_anywhere_in_plain_text(
    pizza: Pizza, tmp_path: Path
) -> None:
    numbers: list[str] = []

    def order(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        numbers.append(new_number())
        return pizza.run("order", "--order-number", numbers[-1], *args, **env)

    # The demo's two orders, and every failure path.
    outputs = [
        order("--card", GOOD_CARD),
        order("--card", BROKEN_CARD),
        order("--card", cards.DECLINED_CARD),
        order("--card", cards.FLAKY_CARD),
        order("--file", bounce_file(tmp_path, GOOD_CARD)),
    ]
    # A refund that needs an operator, who skips it.
    outputs.append(
        order(
            "--file",
            bounce_file(tmp_path, cards.REFUND_FAILING_CARD),
            "--no-wait",
            PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05",
        )
    )
    await until_needs_operator(pizza, numbers[-1])
    skipped = pizza.run(
        "resolve", numbers[-1], "--skip", "--reason", "refunded by hand", "--operator", "ana"
    )
    assert skipped.returncode == 0, skipped.stderr
    outputs.append(skipped)
    # Another client sends an invalid order holding a card number: the validation error
    # (which quotes the input) must not leak it either.
    client = await connect(pizza.settings, f"localhost:{pizza.port}")
    bad = example_order(order_number=new_number()).model_dump()
    bad["credit_card_info"]["number"] = GOOD_CARD + "x"
    numbers.append(bad["order_number"])
    handle = await client.start_workflow(
        "PizzaOrderWorkflow",
        {"order": bad},
        id=workflow_id_for(bad["order_number"]),
        task_queue=pizza.settings.task_queue,
    )
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 60)

    assert scan(pizza, numbers, outputs) == []


def web_ui_payload_data(node: Any, pizza: Pizza) -> list[bytes]:
    """Every payload of a history's JSON as the Web UI shows it: decoded by the codec server."""
    payloads = list(_payload_nodes(node))
    answer = httpx.post(
        f"http://localhost:{pizza.codec_port}/decode",
        json={"payloads": payloads},
        headers={"X-Namespace": "default", **codec_auth(pizza)},
        timeout=30,
    )
    answer.raise_for_status()
    return [base64.b64decode(p.get("data", "")) for p in answer.json()["payloads"]]


def _payload_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "metadata" in node and "encoding" in node["metadata"]:
            yield node
        else:
            for value in node.values():
                yield from _payload_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payload_nodes(value)


def codec_auth(pizza: Pizza) -> dict[str, str]:
    """The credentials the codec server asks of a caller: its token, as the CLI sends it."""
    return {"Authorization": f"Bearer {codec_token(pizza)}"}


def scan(
    pizza: Pizza, numbers: list[str], outputs: list[subprocess.CompletedProcess[str]]
) -> list[str]:
    """Every place a test card number appears, in plain text or decrypted as the Web UI
    shows it."""
    found: list[str] = []
    for done in outputs:
        found += findings(done.stdout.encode() + done.stderr.encode(), "CLI output")
    for number in numbers:
        shown = subprocess.run(
            [
                str(binary("temporal")),
                *("workflow", "show", "-o", "json", "--address", f"localhost:{pizza.port}"),
                *("-w", workflow_id_for(number)),
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        history = json.loads(shown.stdout)
        assert history["events"], number
        found += findings(shown.stdout, f"history of {number} (raw JSON)")
        for data in decoded_payload_data(history):
            found += findings(data, f"history of {number} (payload data)")
        decrypted = web_ui_payload_data(history, pizza)
        assert decrypted, number
        for data in decrypted:
            found += findings(data, f"history of {number} (decrypted, as the Web UI shows it)")
    files = [p for p in pizza.home.rglob("*") if p.is_file()]
    assert {"temporal.db", "pizza.db", "worker.log"} <= {p.name for p in files}
    for path in files:
        found += findings(path.read_bytes(), str(path.relative_to(pizza.home)))

    return found
