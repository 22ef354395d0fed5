"""The bench's results: tables for the terminal, JSON, and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

PROCESSES = {
    "server": "Temporal server",
    "worker": "worker",
    "client": "client (bench driver)",
    "database": "database (PostgreSQL)",
    "api": "API process",
}
"""The processes whose CPU per order the bench reports, as the table names them."""
Figure = Callable[[str, dict[str, Any]], object]
"""One figure of a runner, from its name and its side of the results."""


def streams_view(results: dict[str, Any]) -> Table:
    """The streams figure: new orders' latency and each process's CPU, with streams and
    without, and the target."""
    table = Table(title=f"New orders with {results['streams']} event streams open, and with none")
    table.add_column("")
    table.add_column("none", justify="right")
    table.add_column(f"{results['streams']} streams", justify="right")
    latency, cpu = results["latency_ms"], results["cpu_ms_per_order"]
    for cut in ("p50", "p95", "p99"):
        table.add_row(
            f"latency {cut} (ms)", _shown(latency["none"][cut]), _shown(latency["streams"][cut])
        )
    for process in ("server", "worker", "api"):
        table.add_row(
            f"{PROCESSES[process]} CPU ms per order",
            _shown(cpu["none"].get(process)),
            _shown(cpu["streams"].get(process)),
        )
    quiet = results["quiet_cpu_ms_per_s"]
    table.add_row(
        "CPU ms per s, streams open, nothing placed",
        "",
        " / ".join(f"{p} {_shown(quiet.get(p))}" for p in ("server", "worker", "api")),
    )
    target = results["target"]
    met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
    table.add_row(
        "latency p50 ratio",
        "",
        f"{_shown(target['value'])} ({target['op']} {target['target']}: {met})",
    )
    return table


def results_view(results: dict[str, Any]) -> Group:
    """The figures a user asks for, a column per runner, then the targets."""
    return Group(runners_table(results), targets_table(results))


def runners_table(results: dict[str, Any]) -> Table:
    """Every figure of each runner (engine limit and orders: regular, local and unsandboxed;
    the API)."""
    settings = results["settings"]
    local, api, targets = results["local"], results.get("api"), results["targets"]
    unsandboxed = results["unsandboxed"]
    engine_rate = results["engine_limit_per_s"]
    runners: dict[str, dict[str, Any]] = {
        "engine": {**_engine_side(results), "ratio": 1.0},
        "orders": {**_orders_side(results), "ratio": results["ratio"]},
        "local engine": {
            **_engine_side(local),
            "ratio": _ratio(local["engine_limit_per_s"], engine_rate),
        },
        "local orders": {
            **_orders_side(local),
            "ratio": targets["local_throughput"]["value"],
            "local_ratio": local["ratio"],
        },
        "unsandboxed engine": {
            **_engine_side(unsandboxed),
            "ratio": _ratio(unsandboxed["engine_limit_per_s"], engine_rate),
        },
        "unsandboxed orders": {
            **_orders_side(unsandboxed),
            "ratio": _ratio(unsandboxed["orders_per_s"], engine_rate),
            "unsandboxed_ratio": unsandboxed["ratio"],
        },
    }
    if api is not None:
        runners["api"] = {
            "rate": api["orders_per_s"],
            "ratio": _ratio(api["orders_per_s"], engine_rate),
            "idle": api["idle_latency_ms"],
            "latency": api["latency_ms"],
            "direct_ratio": api["ratio_to_direct"],
            "overhead": f"{api['overhead_ms']['idle_p50']}/{api['overhead_ms']['loaded_p50']}",
        }
    table = Table(
        title=f"pizza bench: store {results['store']}, {settings['orders']} orders per "
        f"runner, concurrency {settings['concurrency']}",
        title_justify="left",
        caption=f"worker peak RSS: {results['worker_peak_rss_mib']} MiB (the default, "
        f"sandboxed, orders and engine), {results['unsandboxed_worker_peak_rss_mib']} MiB "
        "(unsandboxed); rollback n/a: local activities leave no activity events to time it by; "
        "unsandboxed: orders and engine outside the SDK's sandbox (PIZZA_WORKFLOW_SANDBOX=false)",
        caption_justify="left",
    )
    table.add_column("measure")
    for who in runners:
        table.add_column(who, justify="right")

    def row(name: str, figure: Figure) -> None:
        table.add_row(name, *(_shown(figure(who, side)) for who, side in runners.items()))

    row("throughput (workflows/s)", lambda _, side: side["rate"])
    row("ratio to the engine limit", lambda _, side: side["ratio"])
    row("ratio to the local engine limit", lambda _, side: side.get("local_ratio"))
    row("ratio to the unsandboxed engine", lambda _, side: side.get("unsandboxed_ratio"))
    if api is not None:
        row("ratio to direct orders", lambda _, side: side.get("direct_ratio"))
    row("idle latency p50 (ms)", lambda _, side: side["idle"])
    for kind, label in (("completed", "completed"), ("rolled_back", "rolled back")):
        for cut in ("p50", "p95", "p99"):
            row(f"{label} under load {cut} (ms)", _latency(kind, cut))
    row("idle rollback p50/p99 (ms)", lambda _, side: _pair(side.get("idle_rollback")))
    row("rollback under load p50/p99 (ms)", lambda _, side: _pair(side.get("rollback")))
    row("billable actions: completed/rolled back", lambda _, side: _slash(side.get("actions")))
    row("history events: completed/rolled back", lambda _, side: _slash(side.get("events")))
    cpu: dict[str, dict[str, float | None]] = results["cpu_ms_per_order"]
    for process, name in PROCESSES.items():
        if any(process in figures for figures in cpu.values()):
            row(f"CPU per order, {name} (ms)", _cpu(cpu, process))
    row("worker CPU for all orders (s)", lambda _, side: side.get("worker_cpu"))
    if api is not None:
        row("API overhead p50: idle/under load (ms)", lambda _, side: side.get("overhead"))
    return table


def targets_table(results: dict[str, Any]) -> Table:
    """Each target: the value reached, the bound, met or not."""
    table = Table(title="targets", title_justify="left")
    table.add_column("target")
    table.add_column("value", justify="right")
    table.add_column("bound", justify="right")
    table.add_column("met")
    for target in results["targets"].values():
        met = target["met"]
        verdict = "not measured" if met is None else "[green]met[/]" if met else "[red]not met[/]"
        table.add_row(
            target["what"], _shown(target["value"]), f"{target['op']} {target['target']}", verdict
        )
        informed = {
            "idle_ratio": "  idle rollback p50 / the engine's (information)",
            "unsandboxed_ratio": "  the same, orders and engine unsandboxed (information)",
        }
        for key, label in informed.items():
            if key in target:
                table.add_row(label, _shown(target[key]), "", "")
    return table


def _latency(kind: str, cut: str) -> Figure:
    return lambda _, side: side["latency"][kind][cut]


def _cpu(cpu: dict[str, dict[str, float | None]], process: str) -> Figure:
    def figure(who: str, _: dict[str, Any]) -> str:
        value = cpu.get(who, {}).get(process)
        return "not measured" if value is None else str(value)

    return figure


def _engine_side(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "rate": figures["engine_limit_per_s"],
        "idle": figures["engine_latency_ms"],
        "latency": figures["engine_latency_under_load_ms"],
        "idle_rollback": figures["engine_idle_rollback_ms"],
        "rollback": figures["engine_rollback_ms"],
        "actions": figures["engine_actions_per_workflow"],
        "events": figures["engine_history_events_per_workflow"],
        "worker_cpu": figures["worker_cpu_seconds"]["baseline"],
    }


def _orders_side(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "rate": figures["orders_per_s"],
        "idle": figures["idle_latency_ms"],
        "latency": figures["latency_ms"],
        "idle_rollback": figures["idle_rollback_ms"],
        "rollback": figures["rollback_ms"],
        "actions": figures["actions_per_order"],
        "events": figures["history_events_per_order"],
        "worker_cpu": figures["worker_cpu_seconds"]["orders"],
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def write_plot(results: dict[str, Any], path: Path) -> bool:
    """Latency distribution and throughput over time of the orders, regular and local;
    False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timelines = results["timeline"]
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 4.5))
    every = [ms for timeline in timelines.values() for _, _, ms in timeline]
    low, high = min(every, default=0.0), max(every, default=1.0)
    bins = [low + (high - low) * i / 60 for i in range(61)]  # the same for every series
    for who, timeline in timelines.items():
        for kind in ("completed", "rolled_back"):
            values = [ms for _, k, ms in timeline if k == kind]
            if values:
                latency.hist(values, bins=bins, alpha=0.5, label=f"{who}, {kind} ({len(values)})")
    latency.set_xlabel("order latency under load (ms)")
    latency.set_ylabel("orders")
    latency.set_title("Latency distribution")
    latency.legend(fontsize="small")
    ends = [t for timeline in timelines.values() for t, _, _ in timeline]
    seconds = int(max(ends, default=0)) + 1
    for who, timeline in timelines.items():
        per_second = [0] * seconds
        for t, _, _ in timeline:
            per_second[min(int(t), seconds - 1)] += 1
        throughput.plot(range(seconds), per_second, label=f"{who} finished")
    throughput.axhline(
        results["engine_limit_per_s"], color="grey", linestyle="--", label="engine limit"
    )
    if "local" in results:
        throughput.axhline(
            results["local"]["engine_limit_per_s"],
            color="grey",
            linestyle=":",
            label="local engine limit",
        )
    throughput.set_xlabel("time since the first loaded order (s); runners take turns")
    throughput.set_ylabel("orders/s")
    throughput.set_title("Throughput over time")
    throughput.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _shown(value: object) -> str:
    return "" if value is None else str(value)


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs else None


def _pair(p: dict[str, float | None] | None) -> str | None:
    if p is None:
        return None
    return "n/a" if p["p50"] is None else f"{p['p50']}/{p['p99']}"


def _slash(by_kind: dict[str, float] | None) -> str | None:
    return None if by_kind is None else "/".join(str(v) for v in by_kind.values())
