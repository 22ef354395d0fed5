"""The bench's counting, on histories of real runs (tests/histories), and its CPU readings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from pizza_saga.bench.cpu import (
    machine_busy_seconds,
    own_cpu_seconds,
    peak_rss_mib,
    process_cpu_seconds,
    tree_cpu_seconds,
)
from pizza_saga.bench.run import RUNNERS, billable_actions, load_blocks, percentiles, rollback_ms

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


def test_load_blocks_of_every_runner_interleave_regular_and_local_mode() -> None:
    blocks = load_blocks(300, rounds=2, runners=RUNNERS)

    assert [who for who, _ in blocks] == [*RUNNERS, *reversed(RUNNERS)] * 2
    for who in RUNNERS:
        assert [i for w, r in blocks if w == who for i in r] == list(range(300))


BURN = "import time\nwhile time.process_time() < {seconds}: pass\n"
"""A child that spends this much CPU time, then (with `input()` after it) waits."""


@pytest.mark.processes
def test_a_process_tree_counts_its_exited_and_its_live_children() -> None:
    me = os.getpid()
    before = tree_cpu_seconds(me)

    subprocess.run([sys.executable, "-c", BURN.format(seconds=0.3)], check=True)
    after_exited = tree_cpu_seconds(me)
    live = subprocess.Popen(
        [sys.executable, "-c", BURN.format(seconds=0.3) + "print(flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None
        live.stdout.readline()  # it has burnt its CPU and waits
        with_live = tree_cpu_seconds(me)
        live_own = process_cpu_seconds(live.pid)
    finally:
        live.communicate("\n", timeout=30)

    # The exited child's time is in this process's cutime/cstime (reaped by run()).
    assert after_exited - before >= 0.25
    assert live_own >= 0.25
    assert with_live - after_exited >= live_own - 0.02  # ticks: 10 ms apart


def test_own_cpu_time_grows_with_work_and_peak_memory_is_read() -> None:
    before = own_cpu_seconds()
    sum(i * i for i in range(300_000))

    assert own_cpu_seconds() > before
    assert peak_rss_mib(os.getpid()) > 1


def test_the_machine_busy_time_counts_this_process_work_too() -> None:
    machine, own = machine_busy_seconds(), own_cpu_seconds()
    while own_cpu_seconds() - own < 0.2:
        sum(i * i for i in range(10_000))

    # /proc/stat counts in ticks, per core; others' work can only add to it.
    assert machine_busy_seconds() - machine >= own_cpu_seconds() - own - 0.05
