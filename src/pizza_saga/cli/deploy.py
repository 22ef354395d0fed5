"""`pizza deploy status` and `pizza deploy promote`: which build takes new orders."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from pizza_saga.cli._shared import (
    EXIT_FAILED,
    app,
    connect_temporal,
    fail,
    load_settings,
    out,
    print_json,
    run_command,
)

deploy_app = typer.Typer(
    help="Deploys with orders in flight: builds, where new orders go (README: Deploying).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The build new orders go to, and each build's running orders and whether a worker
    serves it (exit 1 if orders wait on a build no worker serves)."""
    from pizza_saga.deploys import deploy_status

    settings = load_settings()

    async def run() -> Any:
        return await deploy_status(await connect_temporal(settings), settings)

    found = run_command(run())
    if as_json:
        print_json(json.dumps(dataclasses.asdict(found)))
    else:
        _show(found)
    if found.stranded:
        raise typer.Exit(EXIT_FAILED)


@deploy_app.command("promote")
def promote(
    build_id: Annotated[
        str | None, typer.Argument(help="The build to send new orders to; default: this code's.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Even if no worker of it polls, or it misses a task queue."),
    ] = False,
) -> None:
    """Send new orders to a build (a deploy; rolling back is promoting the previous build).
    Orders already running finish on the build that started them."""
    from pizza_saga.deploys import DeployError
    from pizza_saga.deploys import promote as promote_build

    settings = load_settings()

    async def run() -> Any:
        client = await connect_temporal(settings)
        try:
            return await promote_build(client, settings, build_id, force=force)
        except DeployError as err:
            fail(str(err))

    found = run_command(run())
    out.print(f"New orders go to build {found.current}", soft_wrap=True)
    _show(found)


def _show(found: Any) -> None:
    if not found.versioned:
        out.print(
            f"Deployment {found.deployment}: not versioned (no versioned worker has polled, "
            "or PIZZA_WORKER_VERSIONING=false); every worker runs every order",
            soft_wrap=True,
        )
        return
    current = found.current or "none (new orders wait until a build is promoted)"
    out.print(
        f"Deployment {found.deployment}: new orders go to build {current}; "
        f"this code is build {found.this_build}",
        soft_wrap=True,
    )
    for build in found.builds:
        served = {True: "served", False: "NO WORKER", None: "workers unknown"}[build.served]
        mark = "current" if build.current else "       "
        orders = ", ".join(build.running[:10]) + (" ..." if len(build.running) > 10 else "")
        out.print(
            f"  {mark} {escape(build.build_id)}: {len(build.running)} running, {served}"
            + (f" ({escape(orders)})" if orders else ""),
            soft_wrap=True,
        )
