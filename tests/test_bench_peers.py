"""`pizza bench --peers` end to end at its smallest size: the orders on a real dev server and
worker, the same saga on a real DBOS Transact, each runner's figures and books. No timing is
asserted (figures of 10 orders are noise)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pizza_saga.bench.peers import INVOLVED, RUNNERS, THROUGHPUT_TARGET
from pizza_saga.bench.run import IDLE_SAMPLES, WARM_UP
from pizza_saga.cli import UserError, app
from tests.test_bench_run import BENCH_TIMEOUT, positive

ORDERS = 10


@pytest.mark.devserver
@pytest.mark.processes
def test_the_peers_bench_reports_each_runner_and_checks_their_books(tmp_path: Path) -> None:
    out = tmp_path / "results-peers.json"
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    command = ["bench", "--peers", "--orders", str(ORDERS), "--out", str(out)]
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
    assert list(results["runners"]) == list(RUNNERS)
    assert {who for who, _ in results["block_rates_per_s"]} == set(RUNNERS)
    placed = WARM_UP + min(IDLE_SAMPLES, ORDERS) + ORDERS
    for who, figures in results["runners"].items():
        assert positive(figures["orders_per_s"]), who
        assert positive(figures["idle_latency_ms"]), who
        assert positive(figures["latency_ms"]["completed"]["p50"]), who
        cpu = figures["cpu_ms_per_order"]
        # Every process the runner's orders run on, each measured: for DBOS its one process.
        assert set(cpu) == {*INVOLVED[who], "total"}, who
        assert all(positive(ms) for ms in cpu.values()), who
        assert figures["other_load_cores"] >= 0, who
        books = figures["books"]
        assert books["orders"] == books["as_planned"] == placed, who
        assert books["completed"] > 0, who
        assert books["charged_cents"] == books["expected_cents"] > 0, who
        assert books["pizzas_taken"] == books["expected_pizzas"] > 0, who
        assert books["ok"], who
    assert results["books_ok"]
    target = results["target"]
    assert (target["op"], target["target"]) == (">=", THROUGHPUT_TARGET)
    assert target["met"] == (target["value"] >= THROUGHPUT_TARGET)
    assert results["settings"]["dbos"]["version"] == "3.4.0"
    for who in RUNNERS:
        assert who in done.stdout
    assert "books add up" in done.stdout
    assert target["what"] in done.stdout


@pytest.mark.parametrize(
    "wrong",
    [["--store", "postgres"], ["--via", "api"], ["--streams", "3"], ["--dbos-sqlite", "fast"]],
)
def test_the_peers_bench_refuses_what_it_does_not_run(tmp_path: Path, wrong: list[str]) -> None:
    out = tmp_path / "results-peers.json"

    with pytest.raises(UserError) as refused:
        app(["bench", "--peers", *wrong, "--out", str(out)], standalone_mode=False)

    assert refused.value.exit_code == 2
    assert not out.exists()


def test_the_peers_bench_without_dbos_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "dbos" else find_spec(name)
    )
    out = tmp_path / "results-peers.json"

    with pytest.raises(UserError) as refused:
        app(["bench", "--peers", "--out", str(out)], standalone_mode=False)

    assert "pip install -e '.[peers]'" in str(refused.value)
    assert not out.exists()
