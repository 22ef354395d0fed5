"""`pizza doctor`, `pizza replay-check`, `pizza db upgrade` and `pizza bench`: checking,
migrating, measuring."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from pizza_saga.cli._shared import (
    EXIT_FAILED,
    EXIT_INVALID,
    UserError,
    app,
    connect_temporal,
    db_app,
    err,
    fail,
    load_settings,
    out,
    print_json,
    run_command,
)

if TYPE_CHECKING:
    from pizza_saga.order.service import ReplayReport

EXIT_CANNOT_CHECK = EXIT_INVALID
"""`pizza replay-check` could not check (Temporal, keys, files): neither pass nor fail."""


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


@app.command("replay-check")
def replay_check(
    since: Annotated[
        float,
        typer.Option(min=0, help="Orders closed in the last this many days, besides running ones."),
    ] = 7,
    limit: Annotated[
        int,
        typer.Option(
            min=1, max=100_000, help="At most this many orders: running ones, then the newest."
        ),
    ] = 1000,
    histories: Annotated[
        Path | None,
        typer.Option(
            "--histories",
            metavar="DIR",
            help="Replay the history files (*.json, as `temporal workflow show --output json` "
            "writes them) in DIR instead of Temporal's orders; needs no server (--since and "
            "--limit do not apply).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replay running and recent orders against this version's code, before deploying it.

    Exit 0: every order replays; 1: some would break (each printed: non-determinism, or a
    payload this version cannot read); 2: nothing could be checked (Temporal, keys, files).
    """
    from temporalio.service import RPCError

    from pizza_saga.common.crypto import KeyRingError
    from pizza_saga.order.service import InvalidInput, ServiceError

    settings = load_settings()

    async def run() -> ReplayReport:
        from pizza_saga.app import build_replay_check

        client = None if histories is not None else await connect_temporal(settings)
        check = build_replay_check(settings, client)
        if histories is not None:
            return await check.files(histories)
        return await check.recent(since=timedelta(days=since), limit=limit)

    try:
        report = run_command(run())
    except UserError as e:  # Temporal's configuration or reachability: no verdict
        fail(str(e), EXIT_CANNOT_CHECK)
    except InvalidInput as e:
        fail(f"--{e.field}: {e.reason}" if e.field else str(e), EXIT_CANNOT_CHECK)
    except (ServiceError, KeyRingError) as e:
        fail(str(e), EXIT_CANNOT_CHECK)
    except RPCError as e:
        fail(f"Temporal refused the request: {e.message}", EXIT_CANNOT_CHECK)
    if as_json:
        _print_replay_json(report)
    else:
        _print_replay(
            report, since=since, limit=limit, histories=histories, task_queue=settings.task_queue
        )
    if report.broken:
        raise typer.Exit(EXIT_FAILED)


def _print_replay_json(report: ReplayReport) -> None:
    import json

    orders = [
        {
            "order_number": order.order_number,
            "workflow_id": order.workflow_id,
            "run_id": order.run_id,
            "status": order.status,
            "file": order.file,
            "ok": order.ok,
            "breakage": order.breakage,
            "reason": order.reason,
        }
        for order in report.orders
    ]
    summary = {
        "ok": not report.broken,
        "checked": len(report.orders),
        "running": report.running,
        "broken": len(report.broken),
        "not_checked": report.not_checked,
    }
    print_json(json.dumps({**summary, "orders": orders}))


def _print_replay(
    report: ReplayReport,
    *,
    since: float,
    limit: int,
    histories: Path | None,
    task_queue: str,
) -> None:
    """Each order that would break, one line each, then a summary line."""
    for order in report.broken:
        run = f"run {order.run_id}" + (f", file {order.file}" if order.file else "")
        if order.order_number:
            who = f"order {order.order_number} (workflow {order.workflow_id}, {run})"
        else:
            who = f"workflow {order.workflow_id} ({run})"
        out.print(f"[red]✗[/] {escape(who)}: {escape(order.verdict)}", soft_wrap=True)
    total = len(report.orders)
    if histories is not None:
        where = f"{total} histories in {histories}"
    else:
        closed = total - report.running
        where = (
            f"{report.running} running, {closed} closed in the last {since:g} days, "
            f"task queue {task_queue}"
        )
    if report.broken:
        out.print(
            f"[red]{len(report.broken)} of {total} orders would break on this version[/] "
            f"({escape(where)}): do not deploy it",
            soft_wrap=True,
        )
    elif total:
        out.print(
            f"[green]All {total} orders replay on this version[/] ({escape(where)})",
            soft_wrap=True,
        )
    else:
        out.print(f"No orders to check ({escape(where)})", soft_wrap=True)
    if report.not_checked:
        out.print(
            f"{report.not_checked} more orders matched and were not checked (--limit {limit})",
            soft_wrap=True,
        )


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
