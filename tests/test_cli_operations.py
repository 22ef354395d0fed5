"""The operator's commands (`pizza cancel`, `needs-operator`, `resolve`) on the real dev server.

Like tests/test_cli.py (whose module-scoped `pizza` fixture this module reuses, so it gets a
server and worker of its own), every test reads what a user reads: exit status, stdout JSON
or text, one-line errors on stderr, and the money and stock in the stores. Waiting for a
state polls, with a deadline, rather than sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporal_saga import CompensationState, StepRecord, StepState
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError

from pizza_saga.billing import cards
from pizza_saga.common.temporal import connect
from pizza_saga.order.models import OrderConfirmation
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from tests.test_cli import Pizza, new_number, pizza

__all__ = ["pizza"]  # the module-scoped fixture, used by name: keep its import

pytestmark = pytest.mark.devserver

WAIT_SECONDS = 60.0
"""How long a poll waits for a state before the test fails."""
POLL_SECONDS = 0.1

BOUNCING_EMAIL = "bounce@example.com"
"""Sandbox rule: the bill to this address bounces, after the card was charged."""

# --- running commands --------------------------------------------------------------------


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def _one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The stderr of a command that failed as a user error: ``code``, one line, no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _needing_operator(pizza: Pizza) -> list[str]:
    listed: list[str] = _json(pizza.run("needs-operator", "--json"))
    return listed


def _words(text: str) -> str:
    """Text as a reader sees it, whatever the terminal width wrapped."""
    return " ".join(text.split())


def _compensations(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["step"], s["compensation_state"]) for s in outcome["ledger"] if s["compensation"]]


# --- waiting for a state -------------------------------------------------------------------


async def _connect(pizza: Pizza) -> Client:
    return await connect(pizza.settings, f"localhost:{pizza.port}")


def _until(what: str, check: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    """Call ``check`` until it holds; fail, saying what was awaited, at the deadline."""

    async def poll() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() > deadline:
                raise AssertionError(f"gave up after {timeout}s waiting for {what}")
            await asyncio.sleep(POLL_SECONDS)

    asyncio.run(poll())


def _until_order(
    pizza: Pizza,
    order_number: str,
    what: str,
    check: Callable[[Client, str], Awaitable[bool]],
    timeout: float = WAIT_SECONDS,
) -> None:
    """Poll ``check(client, workflow_id)`` with an in-process client (quicker than the CLI)."""

    async def poll() -> None:
        client = await _connect(pizza)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await check(client, workflow_id_for(order_number)):
            if loop.time() > deadline:
                raise AssertionError(f"gave up after {timeout}s waiting for {what}")
            await asyncio.sleep(POLL_SECONDS)

    asyncio.run(poll())


async def _ledger(client: Client, workflow_id: str) -> list[StepRecord]:
    handle: WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]
    handle = client.get_workflow_handle_for(PizzaOrderWorkflow.run, workflow_id)
    try:
        return await handle.query(PizzaOrderWorkflow.ledger)
    except (RPCError, WorkflowQueryFailedError):
        return []  # no workflow task has run yet


def _step_is(step: str, state: StepState) -> Callable[[Client, str], Awaitable[bool]]:
    async def check(client: Client, workflow_id: str) -> bool:
        return any(r.step == step and r.state is state for r in await _ledger(client, workflow_id))

    return check


async def _rollback_waits_for_operator(client: Client, workflow_id: str) -> bool:
    """A compensation needs an operator and every other one has had its turn."""
    states = {r.compensation_state for r in await _ledger(client, workflow_id)}
    busy = {CompensationState.REGISTERED, CompensationState.RUNNING, CompensationState.RETRYING}
    return CompensationState.NEEDS_OPERATOR in states and not states & busy


async def _closed(client: Client, workflow_id: str) -> bool:
    status = (await client.get_workflow_handle(workflow_id).describe()).status
    return status is not None and status is not WorkflowExecutionStatus.RUNNING


@pytest.fixture
def orders(pizza: Pizza) -> Iterator[list[str]]:
    """Numbers of the orders a test places; any left running afterwards is wound down
    (cancelled, or terminated once it only waits for an operator), so it cannot change the
    stock or money a later test looks at."""
    numbers: list[str] = []
    yield numbers

    async def wind_down() -> None:
        client = await _connect(pizza)
        loop = asyncio.get_running_loop()
        for number in numbers:
            workflow_id = workflow_id_for(number)
            handle = client.get_workflow_handle(workflow_id)
            deadline = loop.time() + WAIT_SECONDS
            try:
                await handle.cancel()
            except RPCError:
                continue  # never started
            while not await _closed(client, workflow_id) and loop.time() < deadline:
                if await _rollback_waits_for_operator(client, workflow_id):
                    with contextlib.suppress(RPCError):  # it may have just ended
                        await handle.terminate("test teardown")
                else:
                    await asyncio.sleep(POLL_SECONDS)

    asyncio.run(wind_down())


# --- cancel --------------------------------------------------------------------------------


def test_cancel_while_waiting_for_the_driver_undoes_the_order(
    pizza: Pizza, orders: list[str]
) -> None:
    before = pizza.stock()
    number = new_number()
    orders.append(number)
    placed = pizza.run(
        "order", "--order-number", number, "--no-wait", "--json", PIZZA_DRIVER_SECONDS="60"
    )
    assert _json(placed)["status"] == "RUNNING"
    _until_order(
        pizza,
        number,
        "the driver to be notified",
        _step_is("notify_delivery_driver", StepState.RUNNING),
    )
    assert pizza.net_charged(number) == 3500, "charged before the driver is called"

    done = pizza.run("cancel", number, "--json")

    outcome = _json(done)
    assert outcome["status"] == "CANCELLED"
    assert _compensations(outcome) == [
        ("update_inventory", "COMPENSATED"),
        ("process_credit_card", "COMPENSATED"),
    ]
    driver = [s["state"] for s in outcome["ledger"] if s["step"] == "notify_delivery_driver"]
    assert driver == ["CANCELLED"]
    assert pizza.net_charged(number) == 0
    assert pizza.stock() == before


# --- a refund that needs an operator ---------------------------------------------------------


def _place_order_whose_refund_fails(pizza: Pizza, orders: list[str], tmp_path: Path) -> str:
    """An order charged to a card that refuses refunds, whose bill bounces: its rollback
    fails every refund attempt and waits, listed by `pizza needs-operator`."""
    order = _json(pizza.run("order", "--example"))
    order["customer"]["email"] = BOUNCING_EMAIL
    order_file = tmp_path / "bouncing-order.json"
    order_file.write_text(json.dumps(order), encoding="utf-8")
    number = new_number()
    orders.append(number)

    placed = pizza.run(
        "order",
        "--no-wait",
        "--json",
        "--file",
        str(order_file),
        "--order-number",
        number,
        "--card",
        cards.REFUND_FAILING_CARD,
        PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05",
    )

    assert _json(placed)["status"] == "RUNNING"
    _until_order(
        pizza, number, "the rollback to wait for an operator", _rollback_waits_for_operator
    )
    # The ledger says so at once; the list (Temporal's visibility) may lag a moment.
    _until("`pizza needs-operator` to list the order", lambda: number in _needing_operator(pizza))
    return number


def test_refund_that_keeps_failing_waits_for_an_operator_who_retries_it(
    pizza: Pizza, orders: list[str], tmp_path: Path
) -> None:
    before = pizza.stock()
    number = _place_order_whose_refund_fails(pizza, orders, tmp_path)

    shown = pizza.run("status", number)
    no_reason = pizza.run("resolve", number, "--skip", "--operator", "ana")
    no_operator = pizza.run("resolve", number, "--skip", "--reason", "refunded by phone")
    retried = pizza.run("resolve", number, "--retry", "--json")

    assert shown.returncode == 0, shown.stderr
    assert "NEEDS_OPERATOR" in shown.stdout
    assert f"pizza resolve {number} --retry" in _words(shown.stdout)
    assert f'pizza resolve {number} --skip --reason "..." --operator NAME' in _words(shown.stdout)

    assert "--reason" in _one_line_error(no_reason)
    assert "--operator" in _one_line_error(no_operator)

    record = _json(retried)
    assert record["step"] == "process_credit_card"
    assert record["compensation_state"] == "COMPENSATED"
    assert record["compensation_attempts"] == cards.REFUND_FAILURES + 1 == 6

    _until_order(pizza, number, "the order to end", _closed)
    final = _json(pizza.run("status", number, "--json"))
    assert final["status"] == "FAILED"
    assert final["error"]["type"] == "BillDeliveryError"
    assert _compensations(final) == [
        ("update_inventory", "COMPENSATED"),
        ("process_credit_card", "COMPENSATED"),
    ]
    assert pizza.net_charged(number) == 0
    assert pizza.stock() == before
    _until(
        "`pizza needs-operator` to drop the order",
        lambda: number not in _needing_operator(pizza),
    )
    # The product refunded it: there is no manual refund to record.
    not_skipped = pizza.run(
        "record-refund", number, "--amount", "1.00", "--reference", "B-1", "--operator", "ana"
    )
    assert "its refund was not skipped" in _one_line_error(not_skipped, 4)
    assert pizza.net_charged(number) == 0


def test_refund_an_operator_skips_fails_the_order_with_the_operators_reason(
    pizza: Pizza, orders: list[str], tmp_path: Path
) -> None:
    before = pizza.stock()
    number = _place_order_whose_refund_fails(pizza, orders, tmp_path)

    skipped = pizza.run(
        "resolve", number, "--skip", "--reason", "refunded by phone", "--operator", "ana", "--json"
    )

    record = _json(skipped)
    assert record["step"] == "process_credit_card"
    assert record["compensation_state"] == "SKIPPED"
    assert "refunded by phone" in record["operator_note"]

    _until_order(pizza, number, "the order to end", _closed)
    final = _json(pizza.run("status", number, "--json"))
    assert final["status"] == "FAILED"
    assert final["error"]["type"] == "SagaCompensationError"
    assert "refunded by phone" in final["error"]["message"]
    assert _compensations(final) == [
        ("update_inventory", "COMPENSATED"),
        ("process_credit_card", "SKIPPED"),
    ]
    # The product refunded nothing: the operator says a person did, outside it.
    assert pizza.net_charged(number) == 3500
    assert pizza.stock() == before
    _until(
        "`pizza needs-operator` to drop the order",
        lambda: number not in _needing_operator(pizza),
    )

    # The person's transfer, recorded: it shows in the payments and the net charge.
    refund = ["record-refund", number, "--reference", "BANK-77", "--operator", "ana"]
    zero = pizza.run(*refund, "--amount", "0")
    negative = pizza.run(*refund, "--amount=-35.00")
    over = pizza.run(*refund, "--amount", "35.01")
    nameless = pizza.run("record-refund", number, "--amount", "35.00", "--reference", "BANK-77")
    assert "--amount" in _one_line_error(zero)
    assert "--amount" in _one_line_error(negative)
    assert "--amount: at most $35.00" in _one_line_error(over)
    assert "--operator" in nameless.stderr and nameless.returncode == 2
    assert pizza.net_charged(number) == 3500  # none of them changed anything

    recorded = _json(pizza.run(*refund, "--amount", "35.00", "--json"))
    again = pizza.run(*refund, "--amount", "35.00")
    listed = pizza.run("payments", "--order-number", number)
    assert {k: recorded[k] for k in ("kind", "amount", "reference", "operator")} == {
        "kind": "manual_refund",
        "amount": 3500,
        "reference": "BANK-77",
        "operator": "ana",
    }
    assert recorded["recorded_now"] is True
    assert again.returncode == 0 and "Already recorded" in again.stdout, again.stderr
    assert "BANK-77 (by ana)" in _words(listed.stdout)
    assert "Net charged: $0.00" in listed.stdout
    assert pizza.net_charged(number) == 0
    shown = pizza.run("status", number)
    assert "ana manual_refund ($35.00 reference BANK-77)" in _words(shown.stdout), shown.stdout


# --- orders the commands cannot act on ---------------------------------------------------------


@pytest.mark.parametrize("command", [["cancel"], ["resolve", "--retry"]], ids=["cancel", "resolve"])
def test_unknown_order_is_a_one_line_error(pizza: Pizza, command: list[str]) -> None:
    number = new_number()

    done = pizza.run(command[0], number, *command[1:])  # nothing to change: no such order

    error = _one_line_error(done)
    assert "no order" in error
    assert number in error


def test_resolve_of_a_completed_order_says_it_has_finished(pizza: Pizza, orders: list[str]) -> None:
    number = new_number()
    orders.append(number)
    completed = _json(pizza.run("order", "--order-number", number, "--json"))
    assert completed["status"] == "COMPLETED"

    done = pizza.run("resolve", number, "--retry")  # refused: changes nothing

    error = _one_line_error(done, code=4)
    assert "has already finished" in error
    assert number in error
    assert pizza.net_charged(number) == 3500


def test_cancel_of_a_finished_order_says_nothing_was_cancelled(
    pizza: Pizza, orders: list[str]
) -> None:
    number = new_number()
    orders.append(number)
    assert _json(pizza.run("order", "--order-number", number, "--json"))["status"] == "COMPLETED"

    done = pizza.run("cancel", number)

    error = _one_line_error(done, code=4)
    assert f"order {number} has already finished (COMPLETED): nothing cancelled" in error
    assert pizza.net_charged(number) == 3500


def test_an_order_whose_rollback_waits_for_an_operator_says_so_while_it_waits(
    pizza: Pizza, orders: list[str], tmp_path: Path
) -> None:
    order = _json(pizza.run("order", "--example"))
    order["customer"]["email"] = BOUNCING_EMAIL
    order["credit_card_info"]["number"] = cards.REFUND_FAILING_CARD
    number = order["order_number"] = new_number()
    orders.append(number)
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(order), encoding="utf-8")
    waiting = subprocess.Popen(
        pizza.command("order", "--file", str(order_file)),
        env={**pizza.env, "PIZZA_COMPENSATION_BACKOFF_SECONDS": "0.05"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert waiting.stderr is not None
        said = waiting.stderr.readline()  # blocks until the command says something
        assert f"Order {number} waits for an operator" in said, said
        assert f"pizza resolve {number} --retry" in said
        assert waiting.poll() is None, "it keeps waiting for the outcome"

        assert _json(pizza.run("resolve", number, "--retry", "--json"))["compensation_state"] == (
            "COMPENSATED"
        )
        assert waiting.wait(timeout=WAIT_SECONDS) == 1  # rolled back: failed, as the seed's
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert pizza.net_charged(number) == 0
