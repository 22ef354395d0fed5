"""Replay recorded histories of real runs against today's workflow code.

A change to PizzaOrderWorkflow (or the saga engine) that would break running orders on
deploy (a non-deterministic change) fails here. Histories: tests/histories/*.json, made by
`python -m tests.histories.record`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.temporal import data_converter
from pizza_saga.order.models import OrderRequest
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for

TEST_KEYS = KeyRing.from_json(
    (Path(__file__).parent / "histories" / "key-ring.txt").read_text(),
    "tests/histories/key-ring.txt",
)
"""The test-only key ring the histories were recorded (encrypted) under."""
HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent / "histories").glob("*.json"))
}


def test_every_scenario_has_a_recorded_history() -> None:
    assert set(HISTORIES) == {
        "happy",
        "declined",
        "bill_failure",
        "cancelled",
        "operator_resolved",
        "out_of_stock",
        "amended",
        "amended_cancelled",
    }


async def _workflow_id(history_json: str) -> str:
    """The id the history ran under: the order's, from its (encrypted) input."""
    started = json.loads(history_json)["events"][0]["workflowExecutionStartedEventAttributes"]
    [payload] = started["input"]["payloads"]
    encrypted = Payload(
        metadata={k: base64.b64decode(v) for k, v in payload["metadata"].items()},
        data=base64.b64decode(payload["data"]),
    )
    [request] = await data_converter(TEST_KEYS).decode([encrypted], [OrderRequest])
    assert isinstance(request, OrderRequest)
    return workflow_id_for(request.order.order_number)


RUNNERS = {"sandboxed": SandboxedWorkflowRunner, "unsandboxed": UnsandboxedWorkflowRunner}
"""Both ways a worker may run the workflow (PIZZA_WORKFLOW_SANDBOX): each must replay alike."""


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("name", HISTORIES)
async def test_recorded_history_replays_deterministically(name: str, runner: str) -> None:
    history = WorkflowHistory.from_json(await _workflow_id(HISTORIES[name]), HISTORIES[name])
    replayer = Replayer(
        workflows=[PizzaOrderWorkflow],
        data_converter=data_converter(TEST_KEYS, strict=True),
        workflow_runner=RUNNERS[runner](),
    )

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, result.replay_failure


@pytest.mark.parametrize("name", HISTORIES)
def test_recorded_history_holds_only_ciphertext(name: str) -> None:
    encodings = [
        base64.b64decode(payload["metadata"]["encoding"])
        for payload in _payloads(json.loads(HISTORIES[name]))
    ]
    assert encodings
    assert set(encodings) == {b"binary/encrypted"}


def _payloads(node: Any) -> Iterator[dict[str, Any]]:
    """Every payload (an object with metadata and data) in a history's JSON.

    Search attributes are left out: Temporal must read them to index them, so they are
    never encrypted (and hold no personal data: only SagaNeedsOperator true/false, and the
    patches a run took). So is a patch's marker: the SDK reads its id back in the clear.
    """
    if isinstance(node, dict):
        if "metadata" in node and "encoding" in node["metadata"]:
            yield node
        else:
            for key, value in node.items():
                if key not in ("searchAttributes", "patch-data"):
                    yield from _payloads(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payloads(value)
