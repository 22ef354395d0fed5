"""Replay recorded histories of real runs against today's workflow code.

A change to PizzaOrderWorkflow (or the saga engine) that would break running orders on
deploy (a non-deterministic change) fails here. Histories: tests/histories/*.json, made by
`python -m tests.histories.record`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from pizza_saga.common.temporal import data_converter
from pizza_saga.order.workflow import PizzaOrderWorkflow

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
    }


@pytest.mark.parametrize("name", HISTORIES)
async def test_recorded_history_replays_deterministically(name: str) -> None:
    history = WorkflowHistory.from_json(name, HISTORIES[name])
    replayer = Replayer(workflows=[PizzaOrderWorkflow], data_converter=data_converter())

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, result.replay_failure
