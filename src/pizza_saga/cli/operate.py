"""`pizza doctor`, `pizza db upgrade` and `pizza bench`: checking, migrating, measuring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from pizza_saga.cli._shared import (
    EXIT_FAILED,
    app,
    db_app,
    err,
    fail,
    load_settings,
    out,
    run_command,
)


@app.command()
def doctor() -> None:
    """Check that this deployment can take orders, one line per check (exit 0: all pass).

    Temporal and its namespace, the SagaNeedsOperator search attribute, a worker polling
    PIZZA_TASK_QUEUE, the encryption keys (on the latest order's history), and the store's
    reachability and schema; each failed check says what to do.
    """
    from pizza_saga.doctor import examine

    settings = load_settings()
    checks = run_command(examine(settings))
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        out.print(f"{mark} {check.name}: {escape(check.detail)}", soft_wrap=True)
    failed = [check.name for check in checks if not check.ok]
    if failed:
        out.print(f"[red]{len(failed)} of {len(checks)} checks failed[/]: {', '.join(failed)}")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"[green]All {len(checks)} checks passed[/]")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store database's schema to this version; stock new menu items.

    Run once per deployment before starting workers on a shared (PostgreSQL) database; the
    embedded SQLite default does this by itself.
    """
    from pizza_saga.app import upgrade_stores
    from pizza_saga.common.db import open_engine, shown

    settings = load_settings()
    engine = open_engine(settings.store_url)
    before, after = upgrade_stores(engine)
    where = shown(engine.url)
    if before == after:
        out.print(f"Store database {where} is at schema {after}: nothing to do")
    else:
        out.print(f"Store database {where} upgraded from schema {before or 'none'} to {after}")


@app.command()
def bench(
    orders: Annotated[int, typer.Option(min=10, max=100_000, help="Orders to place.")] = 600,
    concurrency: Annotated[int, typer.Option(min=1, max=1000, help="Orders in flight.")] = 20,
    completed: Annotated[float, typer.Option(min=0, help="Share that completes.")] = 0.8,
    declined: Annotated[float, typer.Option(min=0, help="Share with a declined card.")] = 0.1,
    bill_failure: Annotated[float, typer.Option(min=0, help="Share whose bill bounces.")] = 0.1,
    results_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="JSON results; the PNG plot goes beside it. Default bench/results.json "
            "(bench/results-streams.json with --streams).",
        ),
    ] = None,
    store: Annotated[
        str,
        typer.Option(
            help="sqlite, or postgres: the stores on a private PostgreSQL cluster the bench "
            "starts (needs PostgreSQL's server binaries).",
        ),
    ] = "sqlite",
    via: Annotated[
        str,
        typer.Option(
            help="client, or api: also place the orders through `pizza api` "
            "(POST /api/orders?wait=true) and measure its overhead against the client.",
        ),
    ] = "client",
    streams: Annotated[
        int,
        typer.Option(
            min=0,
            max=10_000,
            help="Measure only what open event streams cost: new orders' latency through "
            "`pizza api` with this many streams open on as many running orders, against none.",
        ),
    ] = 0,
    peers: Annotated[
        bool,
        typer.Option(
            "--peers",
            help="Compare instead with DBOS Transact: the orders (regular and local mode) "
            "beside the same saga on DBOS, on SQLite (needs pizza-saga[peers]).",
        ),
    ] = False,
    dbos_sqlite: Annotated[
        str,
        typer.Option(
            help="With --peers: wal, DBOS's system database on the stores' SQLite settings "
            "(WAL, synchronous=normal); or defaults, DBOS's own (rollback journal, "
            "synchronous=full).",
        ),
    ] = "wal",
) -> None:
    """Measure the order saga against the engine's limit on the same server (waits zero),
    with regular activities and in local mode; or, with --streams, what open event streams
    cost new orders; or, with --peers, the orders beside the same saga on DBOS Transact."""
    from rich.progress import Progress

    if peers:
        if completed + declined + bill_failure <= 0:
            fail("--completed, --declined, --bill-failure: at least one share must be above 0")
        if dbos_sqlite not in ("wal", "defaults"):
            fail(f"--dbos-sqlite: {dbos_sqlite!r} is neither wal nor defaults")
        if store != "sqlite" or via != "client" or streams:
            fail("--peers runs on SQLite, placing orders directly: no --store, --via or --streams")
        mix = {"completed": completed, "declined": declined, "bill_failure": bill_failure}
        _bench_peers(
            orders,
            concurrency,
            mix,
            "wal" if dbos_sqlite == "wal" else "defaults",
            results_path or Path("bench/results-peers.json"),
        )
        return
    if streams:
        _bench_streams(streams, orders, results_path or Path("bench/results-streams.json"))
        return
    results_path = results_path or Path("bench/results.json")

    from pizza_saga.bench.report import results_view, write_json, write_plot
    from pizza_saga.bench.run import BenchSettings, benchmark
    from pizza_saga.common.pgcluster import PostgresUnavailable

    if via not in ("client", "api"):
        fail(f"--via: {via!r} is neither client nor api")
    if store not in ("sqlite", "postgres"):
        fail(f"--store: {store!r} is neither sqlite nor postgres")
    if completed + declined + bill_failure <= 0:
        fail("--completed, --declined, --bill-failure: at least one share must be above 0")
    bench_settings = BenchSettings(
        orders=orders,
        concurrency=concurrency,
        mix={"completed": completed, "declined": declined, "bill_failure": bill_failure},
        store="postgres" if store == "postgres" else "sqlite",
        via="api" if via == "api" else "client",
    )

    async def run() -> None:
        try:
            # Drawn twice a second: on a terminal its CPU counts as the client's (about 2 ms
            # a second; ten times a second with every phase shown it was about 95).
            with Progress(console=err, transient=True, refresh_per_second=2) as progress:
                results = await benchmark(bench_settings, progress)
        except PostgresUnavailable as e:
            fail(f"--store postgres: {e}")
        write_json(results, results_path)
        plot = results_path.with_suffix(".png")
        plotted = write_plot(results, plot)
        out.print(results_view(results))
        out.print(f"Results: {results_path}" + (f" and {plot}" if plotted else " (no plot)"))

    run_command(run())


def _bench_streams(streams: int, orders: int, results_path: Path) -> None:
    """`pizza bench --streams N`: the streams figure alone (``orders`` new orders in all)."""
    from rich.progress import Progress

    from pizza_saga.bench.report import streams_view, write_json
    from pizza_saga.bench.streams import StreamBenchSettings, stream_benchmark

    settings = StreamBenchSettings(streams=streams, orders=max(1, orders // 4))

    async def run() -> None:
        with Progress(console=err, transient=True, refresh_per_second=2) as progress:
            results = await stream_benchmark(settings, progress)
        write_json(results, results_path)
        out.print(streams_view(results))
        out.print(f"Results: {results_path}")

    run_command(run())


def _bench_peers(
    orders: int,
    concurrency: int,
    mix: dict[str, float],
    dbos_sqlite: Literal["wal", "defaults"],
    results_path: Path,
) -> None:
    """`pizza bench --peers`: the orders beside the same saga on DBOS Transact."""
    import importlib.util

    from rich.progress import Progress

    if importlib.util.find_spec("dbos") is None:
        fail("--peers: DBOS Transact is not installed: pip install -e '.[peers]'")

    from pizza_saga.bench.peers import PeersSettings, peers_benchmark, peers_view
    from pizza_saga.bench.report import write_json

    settings = PeersSettings(
        orders=orders, concurrency=concurrency, mix=mix, dbos_sqlite=dbos_sqlite
    )

    async def run() -> None:
        with Progress(console=err, transient=True, refresh_per_second=2) as progress:
            results = await peers_benchmark(settings, progress)
        write_json(results, results_path)
        out.print(peers_view(results))
        out.print(f"Results: {results_path}")

    run_command(run())
