"""`pizza replay-check`, the deploy gate, as an operator and CI run it: a `pizza` process.

On recorded history files (no server), and on the real dev server (in memory) against real
orders run by this version's worker, one of them still running; then against a history this
version cannot replay: an order run by a test-only "earlier version" of PizzaOrderWorkflow
(registered under its name) that called the driver before anything else. What it prints,
its JSON and its exit status are what a deploy pipeline reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporal_saga import StepRecord
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from pizza_saga.app import Stores, build_worker
from pizza_saga.billing import cards
from pizza_saga.common.crypto import EncryptionCodec
from pizza_saga.common.ports import free_port
from pizza_saga.common.temporal import worker_client
from pizza_saga.order.activities import notify_delivery_driver
from pizza_saga.order.models import DeliveryRequest, OrderRequest
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from tests.orders import RESULT_TIMEOUT, fail_of, new_order, placed, result_of, start
from tests.postgres import SQLITE_ONLY
from tests.processes import new_task_queue, run_pizza

HISTORIES = Path(__file__).parent / "histories"
RECORDED_KEYS = {"PIZZA_KEY_FILE": str(HISTORIES / "key-ring.txt"), "PIZZA_ENCRYPTION_KEYS": ""}
"""The ring the recorded histories were written under (an empty value unsets a variable)."""


def replay_check(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = run_pizza(home, "replay-check", *args, **env)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def as_json(done: subprocess.CompletedProcess[str], code: int) -> Any:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a check that could not be made: exit 2, one line."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


# --- history files: what CI runs, without a server ---------------------------------------


@pytest.mark.parametrize("sandbox", ["true", "false"])
def test_the_recorded_histories_replay_on_this_version(tmp_path: Path, sandbox: str) -> None:
    done = replay_check(
        tmp_path, "--histories", str(HISTORIES), PIZZA_WORKFLOW_SANDBOX=sandbox, **RECORDED_KEYS
    )

    assert done.returncode == 0, (done.stdout, done.stderr)
    count = len(list(HISTORIES.glob("*.json")))
    assert done.stdout.strip() == (
        f"All {count} orders replay on this version ({count} histories in {HISTORIES})"
    )
    assert done.stderr == ""


def _with_payload(source: str, event_id: int, change: Callable[[dict[str, Any]], None]) -> Any:
    """A recorded history with ``change`` applied to the first payload of event ``event_id``."""
    history = json.loads((HISTORIES / source).read_text())
    [event] = [e for e in history["events"] if e["eventId"] == str(event_id)]
    [attributes] = [v for k, v in event.items() if k.endswith("EventAttributes")]
    payloads = attributes.get("result") or attributes.get("input")
    change(payloads["payloads"][0])
    return history


def _tampered(payload: dict[str, Any]) -> None:
    data = bytearray(base64.b64decode(payload["data"]))
    data[-1] ^= 1
    payload["data"] = base64.b64encode(bytes(data)).decode()


def _unknown_encoding(payload: dict[str, Any]) -> None:
    payload["metadata"]["encoding"] = base64.b64encode(b"binary/zstd").decode()


def _order_of(history: Any) -> tuple[str, str, str]:
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    workflow_id = started["workflowId"]
    return (
        workflow_id.removeprefix("pizza-workflow-order-"),
        workflow_id,
        started["originalExecutionRunId"],
    )


def test_a_payload_it_cannot_read_names_the_order_and_why(tmp_path: Path) -> None:
    files = tmp_path / "histories"
    files.mkdir()
    tampered = _with_payload("happy.json", 7, _tampered)  # get_distance's result
    unknown = _with_payload("declined.json", 17, _unknown_encoding)  # the charge's input
    (files / "tampered.json").write_text(json.dumps(tampered))
    (files / "unknown.json").write_text(json.dumps(unknown))
    shutil.copy(HISTORIES / "cancelled.json", files / "untouched.json")

    done = replay_check(tmp_path, "--histories", str(files), **RECORDED_KEYS)
    report = as_json(
        replay_check(tmp_path, "--histories", str(files), "--json", **RECORDED_KEYS), 1
    )

    assert done.returncode == 1, (done.stdout, done.stderr)
    *broken, summary = done.stdout.strip().splitlines()
    assert summary == (
        f"2 of 3 orders would break on this version (3 histories in {files}): do not deploy it"
    )
    number, workflow_id, run_id = _order_of(tampered)
    assert broken[0] == (
        f"✗ order {number} (workflow {workflow_id}, run {run_id}, file {files / 'tampered.json'}):"
        " cannot read the result of activity get_distance (event 7): payload under key "
        f"'{json.loads((HISTORIES / 'key-ring.txt').read_text())['primary']}' does not decrypt:"
        " tampered or a wrong key"
    )
    number, workflow_id, run_id = _order_of(unknown)
    assert broken[1].startswith(
        f"✗ order {number} (workflow {workflow_id}, run {run_id}, file {files / 'unknown.json'}):"
        " cannot read the input of activity process_credit_card (event 17): the payload was not"
        " encrypted (encoding 'binary/zstd')"
    )
    assert (report["ok"], report["checked"], report["broken"]) == (False, 3, 2)
    assert [(o["order_number"], o["ok"], o["breakage"]) for o in report["orders"]] == [
        (_order_of(tampered)[0], False, "unreadable_payload"),
        (_order_of(unknown)[0], False, "unreadable_payload"),
        (_order_of(json.loads((HISTORIES / "cancelled.json").read_text()))[0], True, None),
    ]


def _not_a_history(tmp_path: Path) -> list[str]:
    files = tmp_path / "histories"
    files.mkdir()
    (files / "package.json").write_text('{"name": "not a history"}')
    return ["--histories", str(files)]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreachable", "cannot reach Temporal at 127.0.0.1:"),
        ("bad keys", "error: PIZZA_ENCRYPTION_KEYS: not a key ring"),
        ("no keys", "error: no encryption key configured to read the histories with"),
        ("no directory", "error: --histories: "),
        ("not a history", "not a workflow history (missing 'events')"),
    ],
)
def test_what_it_cannot_check_is_one_line_and_exit_2(
    tmp_path: Path, case: str, expected: str
) -> None:
    args: list[str] = []
    env = {"PIZZA_ENCRYPTION_KEYS": "", "PIZZA_KEY_FILE": ""}
    if case == "unreachable":
        env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    elif case == "bad keys":
        env["PIZZA_ENCRYPTION_KEYS"] = "not a ring"
    elif case == "no keys":
        args = ["--histories", str(HISTORIES)]
    elif case == "no directory":
        args = ["--histories", str(tmp_path / "nowhere")]
        env.update(RECORDED_KEYS)
    else:
        args = _not_a_history(tmp_path)
        env.update(RECORDED_KEYS)

    line = one_line_error(replay_check(tmp_path, *args, **env))

    assert expected in line


# --- against Temporal: the orders of a task queue ----------------------------------------


@workflow.defn(name="PizzaOrderWorkflow")
class EarlierOrderWorkflow:
    """A test-only "earlier version" of the order that called the driver before anything
    else, then waited: today's code, which measures the distance first, cannot replay it."""

    @workflow.run
    async def run(self, request: OrderRequest) -> None:
        await workflow.execute_activity(
            notify_delivery_driver,
            DeliveryRequest(
                order_number=request.order.order_number,
                address=request.order.address,
                wait_seconds=0,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )
        await workflow.wait_condition(lambda: False)


def _deployment_env(env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    """What `pizza replay-check` needs to check the orders of ``task_queue`` on ``env``."""
    codec = env.client.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec)
    return {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "PIZZA_TASK_QUEUE": task_queue,
        "PIZZA_ENCRYPTION_KEYS": codec.ring.to_json(),
        "PIZZA_KEY_FILE": "",
    }


async def _until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(RESULT_TIMEOUT):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await check(), what


async def _listed(client: Client, task_queue: str, running: int, closed: int) -> None:
    """Wait until visibility lists the task queue's orders (it is eventually consistent)."""
    base = f"TaskQueue = '{task_queue}' AND WorkflowType = 'PizzaOrderWorkflow'"

    async def listed() -> bool:
        now_running = await client.count_workflows(f"{base} AND ExecutionStatus = 'Running'")
        now_closed = await client.count_workflows(f"{base} AND ExecutionStatus != 'Running'")
        return (now_running.count, now_closed.count) == (running, closed)

    await _until(f"{running} running and {closed} closed orders listed", listed)


@SQLITE_ONLY
async def test_real_orders_replay_and_an_order_this_version_cannot_replay_is_named(
    dev_env: WorkflowEnvironment, stores: Stores, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    async with build_worker(client, stores, task_queue=task_queue):
        done = [
            await start(client, new_order(), task_queue=task_queue, vault=stores.vault),
            await start(
                client,
                new_order(credit_card_info__number=cards.DECLINED_CARD),
                task_queue=task_queue,
                vault=stores.vault,
            ),
        ]
        await result_of(done[0])
        await fail_of(done[1])
        # An order that ends before its charge: a local activity and a patch marker.
        stores.inventory.stock_up({"Small, with pepperoni": 0}, overwrite=True)
        done.append(await start(client, new_order(), task_queue=task_queue, vault=stores.vault))
        await fail_of(done[2])
        stores.inventory.stock_up({"Small, with pepperoni": 100}, overwrite=True)
        held = await start(
            client,
            new_order(),
            task_queue=task_queue,
            vault=stores.vault,
            waits={"driver_seconds": 600},
        )

        async def waiting_for_the_driver() -> bool:
            ledger: list[StepRecord] = await held.query(PizzaOrderWorkflow.ledger)
            return bool(ledger) and ledger[-1].step == "notify_delivery_driver"

        await _until("the held order waits for its driver", waiting_for_the_driver)
        await _listed(client, task_queue, running=1, closed=3)

        passed = await asyncio.to_thread(
            replay_check, tmp_path, "--json", **_deployment_env(dev_env, task_queue)
        )
        limited = await asyncio.to_thread(
            replay_check, tmp_path, "--json", "--limit", "2", **_deployment_env(dev_env, task_queue)
        )

        await held.cancel()
        with pytest.raises(WorkflowFailureError):
            await result_of(held)

    report = as_json(passed, 0)
    assert passed.stderr == ""
    assert (report["ok"], report["checked"], report["running"], report["broken"]) == (
        True,
        4,
        1,
        0,
    )
    by_run = {order["run_id"]: order for order in report["orders"]}
    handles: list[WorkflowHandle[Any, Any]] = [*done, held]
    assert set(by_run) == {(await h.describe()).run_id for h in handles}
    statuses = sorted(order["status"] for order in report["orders"])
    assert statuses == ["COMPLETED", "FAILED", "FAILED", "RUNNING"]
    # Past the limit, running orders come first, then the newest closed; the rest is counted.
    first = as_json(limited, 0)
    assert (first["checked"], first["running"], first["not_checked"]) == (2, 1, 2)
    newest = (await done[2].describe()).run_id
    assert {o["run_id"] for o in first["orders"]} == {(await held.describe()).run_id, newest}

    # An order run by an earlier version whose steps differ: this version cannot replay it.
    earlier_queue = new_task_queue("earlier")
    order = new_order()
    async with Worker(
        worker_client(client),
        task_queue=earlier_queue,
        workflows=[EarlierOrderWorkflow],
        activities=[notify_delivery_driver],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        earlier = await client.start_workflow(
            EarlierOrderWorkflow.run,
            OrderRequest.model_validate({"order": placed(order, stores.vault)}),
            id=workflow_id_for(order.order_number),
            task_queue=earlier_queue,
        )

        async def driver_answered() -> bool:
            history = await earlier.fetch_history()
            return any(
                e.HasField("activity_task_completed_event_attributes") for e in history.events
            )

        await _until("the earlier version's order heard from its driver", driver_answered)
    await _listed(client, earlier_queue, running=1, closed=0)

    failed = await asyncio.to_thread(
        replay_check, tmp_path, **_deployment_env(dev_env, earlier_queue)
    )
    await earlier.terminate("test over")

    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert failed.stderr == ""  # the SDK's log of the failed replay is not the report
    [line, summary] = failed.stdout.strip().splitlines()
    run_id = (await earlier.describe()).run_id
    assert line.startswith(
        f"✗ order {order.order_number} (workflow {workflow_id_for(order.order_number)}, "
        f"run {run_id}): non-determinism: "
    )
    assert "get_distance" in line, line  # what this version does first
    assert summary == (
        "1 of 1 orders would break on this version (1 running, 0 closed in the last 7 days, "
        f"task queue {earlier_queue}): do not deploy it"
    )
