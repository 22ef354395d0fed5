"""`pizza bench` end to end at its smallest size, on each store: every runner, every
process's CPU per order, the targets. No timing is asserted (figures of 10 orders are noise).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pizza_saga.bench.report import results_view
from pizza_saga.bench.run import RUNNERS
from pizza_saga.cli import UserError, app
from pizza_saga.common import pgcluster
from tests.postgres import unavailable

BENCH_TIMEOUT = 300
TARGETS = {
    "throughput",
    "worker_cpu",
    "server_cpu",
    "rollback",
    "local_throughput",
    "local_actions",
    "worker_rss",
}


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    """`pizza bench` with the fewest orders, on its own dev server; its JSON results."""
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "pizza_saga", "bench", "--orders", "10", "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    for runner in RUNNERS:
        # A heading of two words may wrap over two lines: the table is as wide as its figures
        # make it, within the 120 columns of a non-terminal.
        assert all(word in done.stdout for word in runner.split()), runner
    assert "targets" in done.stdout
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.devserver
@pytest.mark.processes
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_bench_reports_every_runner_its_processes_cpu_and_the_targets(
    tmp_path: Path, store: str
) -> None:
    if store == "postgres" and pgcluster.find_bindir() is None:
        unavailable(pgcluster.NO_SERVER)
    out = tmp_path / f"results-{store}.json"

    results = run_bench(out, "--store", store)

    assert results["store"] == store
    assert results["settings"]["runners"] == list(RUNNERS)
    assert {who for who, _ in results["block_rates_per_s"]} == set(RUNNERS)
    cpu = results["cpu_ms_per_order"]
    assert set(cpu) == set(RUNNERS)
    processes = {"server", "worker", "client"} | ({"database"} if store == "postgres" else set())
    for runner, figures in cpu.items():
        assert set(figures) == processes, runner
        # The engine's workflows never touch the store database: its share can be 0.
        assert all(positive(figures[p]) for p in ("server", "worker", "client")), runner
        assert all(isinstance(v, int | float) and v >= 0 for v in figures.values()), runner
    if store == "postgres":
        # /proc counts in 10 ms ticks: over the three order runners the database shows.
        orders = ("orders", "local orders", "unsandboxed orders")
        assert sum(cpu[who]["database"] for who in orders) > 0
    assert set(results["targets"]) == TARGETS
    for name, target in results["targets"].items():
        assert target["met"] in (True, False, None), name
        assert target["op"] in ("<=", ">="), name
    # Each count holds one action for the TemporalChangeVersion upsert that the SDK makes for
    # the pay-first patch (until the patch is removed, once no older order is left).
    assert results["targets"]["local_actions"]["value"] == 4
    local = results["local"]
    assert positive(local["orders_per_s"]) and positive(local["engine_limit_per_s"])
    assert local["actions_per_order"]["completed"] == 4
    assert results["actions_per_order"]["completed"] == 7
    # Orders and engine both outside the SDK's sandbox, compared with each other.
    assert results["unsandboxed"]["actions_per_order"]["completed"] == 7
    for name in ("throughput", "worker_cpu", "server_cpu"):
        assert positive(results["targets"][name]["unsandboxed_ratio"]), name
    assert positive(results["targets"]["worker_rss"]["value"])
    assert positive(results["unsandboxed_worker_peak_rss_mib"])
    assert set(results["timeline"]) == {"orders", "local orders"}
    plotted = out.with_suffix(".png").exists()
    assert plotted == (importlib.util.find_spec("matplotlib") is not None)

    # A server the bench did not start is not measured, and the table says so.
    cpu["engine"]["server"] = None
    console = Console(record=True, width=200)
    console.print(results_view(results))
    text = console.export_text()
    assert "not measured" in text
    for target in results["targets"].values():
        assert target["what"] in text


def test_the_bench_on_postgres_without_postgresql_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)
    out = tmp_path / "results.json"

    with pytest.raises(UserError) as refused:
        app(
            ["bench", "--store", "postgres", "--orders", "10", "--out", str(out)],
            standalone_mode=False,
        )

    assert refused.value.exit_code == 2
    assert "PostgreSQL's server is not installed" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not out.exists()


@pytest.mark.devserver
@pytest.mark.processes
def test_the_streams_figure_times_new_orders_with_streams_open_and_without(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results-streams.json"
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    command = ["bench", "--streams", "3", "--orders", "10", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "pizza_saga", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["streams"] == results["streams_open_at_the_end"] == 3
    for side in ("none", "streams"):
        assert positive(results["latency_ms"][side]["p50"]), side
        assert all(positive(v) for v in results["cpu_ms_per_order"][side].values()), side
    target = results["target"]
    assert (target["op"], target["target"]) == ("<=", 1.2)
    assert target["met"] == (target["value"] <= 1.2)
    assert "latency p50 ratio" in done.stdout
