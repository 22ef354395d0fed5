"""The bench's counting, on histories of real runs (tests/histories)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from pizza_saga.bench.run import billable_actions, load_blocks, percentiles, rollback_ms

HISTORIES = Path(__file__).parent / "histories"


def history(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())


@pytest.mark.parametrize(
    ("name", "actions"),
    [
        # start + 5 activities + the prep timer
        ("happy", 7),
        # start + distance, inventory, charge + refund and revert
        ("declined", 6),
        # start + distance, inventory, charge, bill + refund and revert
        ("bill_failure", 7),
        # start + 5 attempts of the refund, 4 backoff timers, the operator's update, the
        # retried refund, and the search attribute set and cleared, + distance, inventory,
        # charge, bill, revert
        ("operator_resolved", 1 + 4 + 5 + 4 + 1 + 1 + 2 + 1),
    ],
)
def test_billable_actions_are_counted_from_the_history(name: str, actions: int) -> None:
    assert billable_actions(history(name)) == actions


def test_rollback_time_runs_from_the_failure_to_the_last_compensation() -> None:
    rolled_back = rollback_ms(history("bill_failure"))

    assert rolled_back is not None and 0 < rolled_back < 60_000
    assert rollback_ms(history("happy")) is None


def test_percentiles() -> None:
    assert percentiles([float(v) for v in range(1, 101)]) == {
        "p50": 50.5,
        "p95": 95.0,
        "p99": 99.0,
    }
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_load_blocks_run_every_order_index_once_for_the_engine_and_once_for_orders() -> None:
    blocks = load_blocks(11, rounds=2)

    assert [who for who, _ in blocks] == ["engine", "orders", "orders", "engine"] * 2
    for who in ("engine", "orders"):
        indexes = [i for w, r in blocks if w == who for i in r]
        assert indexes == list(range(11))


def test_load_blocks_with_the_api_run_each_runner_in_turn_then_in_reverse() -> None:
    runners = ["engine", "orders", "api"]

    blocks = load_blocks(12, rounds=2, runners=runners)

    assert [who for who, _ in blocks] == (runners + runners[::-1]) * 2
    for who in runners:
        assert [i for w, r in blocks if w == who for i in r] == list(range(12))
