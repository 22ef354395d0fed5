"""The bench's results: a table for the terminal, JSON, and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table


def results_table(results: dict[str, Any]) -> Table:
    """The figures a user asks for, with the engine's own where there is one."""
    table = Table(title="pizza bench", title_justify="left")
    table.add_column("measure")
    table.add_column("order saga", justify="right")
    table.add_column("engine limit", justify="right")
    lat = results["latency_ms"]
    engine_lat = results["engine_latency_under_load_ms"]
    actions = results["actions_per_order"]
    engine_actions = results["engine_actions_per_workflow"]
    rows = [
        ("throughput (workflows/s)", results["orders_per_s"], results["engine_limit_per_s"]),
        ("ratio to the engine", results["ratio"], 1.0),
        ("idle latency p50 (ms)", results["idle_latency_ms"], results["engine_latency_ms"]),
        (
            "completed latency p50/p95/p99 (ms)",
            _three(lat["completed"]),
            _three(engine_lat["completed"]),
        ),
        (
            "rolled-back latency p50/p95/p99 (ms)",
            _three(lat["rolled_back"]),
            _three(engine_lat["rolled_back"]),
        ),
        (
            "idle rollback p50/p99 (ms)",
            _pair(results["idle_rollback_ms"]),
            _pair(results["engine_idle_rollback_ms"]),
        ),
        (
            "rollback under load p50/p99 (ms)",
            _pair(results["rollback_ms"]),
            _pair(results["engine_rollback_ms"]),
        ),
        (
            "billable actions: completed/rolled back",
            f"{actions['completed']}/{actions['rolled_back']}",
            f"{engine_actions['completed']}/{engine_actions['rolled_back']}",
        ),
        (
            "history events: completed/rolled back",
            "/".join(str(v) for v in results["history_events_per_order"].values()),
            "",
        ),
        (
            "worker CPU (s)",
            results["worker_cpu_seconds"]["orders"],
            results["worker_cpu_seconds"]["baseline"],
        ),
        ("worker peak RSS (MiB)", results["worker_peak_rss_mib"], ""),
    ]
    api = results.get("api")
    if api is not None:
        overhead = api["overhead_ms"]
        rows += [
            ("via the API: throughput (orders/s)", api["orders_per_s"], ""),
            ("via the API: ratio to direct", api["ratio_to_direct"], ""),
            ("via the API: completed p50/p95/p99 (ms)", _three(api["latency_ms"]["completed"]), ""),
            (
                "API overhead p50 per order: idle/under load (ms)",
                f"{overhead['idle_p50']}/{overhead['loaded_p50']}",
                "",
            ),
            ("API process CPU per order (ms)", api["api_cpu_ms_per_order"], ""),
            (
                "worker CPU per order: via the API/direct (ms)",
                f"{api['worker_cpu_ms_per_order']['api']}/"
                f"{api['worker_cpu_ms_per_order']['direct']}",
                "",
            ),
        ]
    for name, ours, engine in rows:
        table.add_row(name, str(ours), str(engine))
    return table


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def write_plot(results: dict[str, Any], path: Path) -> bool:
    """Latency distribution and throughput over time; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timeline = results["timeline"]["orders"]
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in ("completed", "rolled_back"):
        values = [ms for _, k, ms in timeline if k == kind]
        if values:
            latency.hist(values, bins=40, alpha=0.6, label=f"{kind} ({len(values)})")
    latency.set_xlabel("order latency (ms)")
    latency.set_ylabel("orders")
    latency.set_title("Latency distribution")
    latency.legend()
    finished = sorted(t for t, _, _ in timeline)
    if finished:
        seconds = int(finished[-1]) + 1
        per_second = [0] * seconds
        for t in finished:
            per_second[min(int(t), seconds - 1)] += 1
        throughput.plot(range(seconds), per_second, label="orders finished")
    throughput.axhline(
        results["engine_limit_per_s"], color="grey", linestyle="--", label="engine limit"
    )
    throughput.set_xlabel("time since the first order (s)")
    throughput.set_ylabel("orders/s")
    throughput.set_title("Throughput over time")
    throughput.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _pair(p: dict[str, float | None]) -> str:
    return "n/a" if p["p50"] is None else f"{p['p50']}/{p['p99']}"


def _three(p: dict[str, float]) -> str:
    return f"{p['p50']}/{p['p95']}/{p['p99']}"
