"""`pizza order`, `status`, `cancel`, `resolve` and `needs-operator`: an order's life."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from pizza_saga.cli._shared import (
    EXIT_FAILED,
    app,
    err,
    fail,
    load_settings,
    order_service,
    out,
    print_json,
    run_command,
    web_ui,
)
from pizza_saga.common.errors import describe_validation_error
from pizza_saga.common.settings import Settings

NO_WORKER_HINT_SECONDS = 3.0
"""`pizza order` says so when no worker has picked the order up after this long."""


def new_order_number() -> str:
    """A fresh order number, so every `pizza order` is a new order."""
    return f"XD{secrets.token_hex(4).upper()}"


def load_order(file: Path | None, card: str | None, order_number: str | None) -> Any:
    """The order to place: the file's (or the seed's), with the flags applied, validated."""
    from pizza_saga.order.example import example_order
    from pizza_saga.order.models import PizzaOrder

    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            fail(f"--file {file}: cannot read it: {e}")
        try:
            order = PizzaOrder.model_validate_json(text)
        except ValidationError as e:
            fail(describe_validation_error(e, f"--file {file}"))
        data = order.model_dump()
    else:
        data = example_order(order_number=new_order_number()).model_dump()
    for flag, value, path in (
        ("--order-number", order_number, ("order_number",)),
        ("--card", card, ("credit_card_info", "number")),
    ):
        if value is None:
            continue
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        try:
            PizzaOrder.model_validate(data)
        except ValidationError as e:
            fail(describe_validation_error(e, flag))
    return PizzaOrder.model_validate(data)


@app.command()
def order(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Order as JSON (see --example).")
    ] = None,
    card: Annotated[str | None, typer.Option(help="Card number to pay with.")] = None,
    order_number: Annotated[
        str | None, typer.Option(help="Order number (default: the file's, or a new one).")
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start it and return.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    example: Annotated[
        bool,
        typer.Option(
            "--example", help="Print the seed's order, under a new number, as JSON and exit."
        ),
    ] = False,
) -> None:
    """Place an order and wait for its outcome (exit 0 completed, 1 failed, 2 bad input)."""
    from pizza_saga.order.example import example_order

    if example:
        # A new number each time: a file made from it can be placed (once) without editing.
        print_json(example_order(order_number=new_order_number()).model_dump_json(indent=2))
        return
    settings = load_settings()
    pizza_order = load_order(file, card, order_number)
    code = run_command(_place(settings, pizza_order, wait=not no_wait, as_json=as_json))
    raise typer.Exit(code)


async def _place(settings: Settings, pizza_order: Any, *, wait: bool, as_json: bool) -> int:
    from pizza_saga.common.formatting import workflow_url
    from pizza_saga.order.client import OrderStatus
    from pizza_saga.render import print_outcome

    service = await order_service(settings)
    number = pizza_order.order_number
    try:
        placed = await service.place(pizza_order)
    except asyncio.CancelledError:  # Ctrl-C as it was being placed: perhaps it was
        err.print(f"Stopped while placing order {number}: see `pizza status {number}`")
        raise
    ui_url, namespace = web_ui(settings)
    if not wait and as_json:
        print_json(
            placed.model_dump_json(include={"order_number", "workflow_id", "run_id", "status"})
        )
        return 0
    # The number first, whatever happens while waiting: the order is placed, it goes on.
    # With --json on stderr, so that stdout stays the one JSON document scripts parse.
    (err if as_json else out).print(
        f"Order {number} placed: "
        f"{workflow_url(ui_url, namespace, placed.workflow_id, placed.run_id)}",
        soft_wrap=True,
    )
    if not wait:
        return 0
    try:
        outcome = await _follow(service, number, hint_no_worker=True)
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: the command stops, not the order
        err.print(
            f"Stopped waiting; order {number} goes on all the same: follow it with "
            f"`pizza status {number}`, or cancel it (what it did, a charge too, is undone) "
            f"with `pizza cancel {number}`"
        )
        raise
    if as_json:
        print_json(outcome.model_dump_json())
    else:
        print_outcome(out, outcome, ui_url, namespace)
    return 0 if outcome.status is OrderStatus.COMPLETED else EXIT_FAILED


def _picked_up(outcome: Any) -> bool:
    """Whether a worker has taken the order up: one answered for its ledger, or the order
    has activities in flight, or it has finished."""
    from pizza_saga.order.client import OrderStatus

    return (
        outcome.ledger is not None
        or bool(outcome.pending_activities)
        or outcome.status is not OrderStatus.RUNNING
    )


async def _follow(service: Any, order_number: str, *, hint_no_worker: bool = False) -> Any:
    """The order's final outcome; says on stderr, once, when its rollback needs a person,
    and (with ``hint_no_worker``) when no worker has picked it up after a few seconds."""
    picked_up = asyncio.Event()

    async def hint() -> None:
        try:
            await asyncio.wait_for(picked_up.wait(), NO_WORKER_HINT_SECONDS)
        except TimeoutError:
            err.print(
                f"No worker has picked up order {order_number} yet: is `pizza worker` running "
                f"(on task queue {service.task_queue})? Still waiting..."
            )

    hinting = asyncio.create_task(hint()) if hint_no_worker else None
    try:
        return await _watch(service, order_number, picked_up)
    finally:
        if hinting is not None:
            hinting.cancel()


async def _watch(service: Any, order_number: str, picked_up: asyncio.Event) -> Any:
    """``_follow``'s loop: sets ``picked_up`` once an outcome shows a worker has the order."""
    from temporal_saga import CompensationState

    told: set[str] = set()
    outcome = None
    async for outcome in service.watch(order_number):
        if _picked_up(outcome):
            picked_up.set()
        for record in outcome.ledger or []:
            if (
                record.compensation_state is CompensationState.NEEDS_OPERATOR
                and record.step not in told
            ):
                told.add(record.step)
                err.print(
                    f"Order {order_number} waits for an operator: {record.compensation} "
                    f"(undoing {record.step}) failed {record.compensation_attempts} times"
                    f" ({escape(record.compensation_error or 'no error recorded')}). Run "
                    f"`pizza resolve {order_number} --retry` or "
                    f"`pizza resolve {order_number} --skip --reason TEXT --operator NAME`; "
                    "still waiting..."
                )
    assert outcome is not None
    return outcome


@app.command()
def status(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """An order's outcome so far and its saga ledger."""
    from pizza_saga.render import print_outcome

    settings = load_settings()

    async def run() -> None:
        service = await order_service(settings)
        outcome = await service.outcome(order_number)
        if as_json:
            print_json(outcome.model_dump_json())
        else:
            ui_url, namespace = web_ui(settings)
            print_outcome(out, outcome, ui_url, namespace)
            for entry in await service.access.audit(order_number=order_number):
                reason = f": {entry.reason}" if entry.reason else ""
                detail = f" ({entry.detail})" if entry.action == "manual_refund" else ""
                out.print(
                    f"Audit  {entry.at:%Y-%m-%d %H:%M:%S} {entry.actor} {entry.action}"
                    f"{detail}{reason} (from {entry.source})",
                    markup=False,
                )

    run_command(run())


@app.command()
def amend(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    add: Annotated[
        list[str] | None, typer.Option("--add", help="A pizza to add (its menu name); repeat.")
    ] = None,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", help="A pizza to remove (its menu name); repeat."),
    ] = None,
    line1: Annotated[str | None, typer.Option(help="New delivery address: line 1.")] = None,
    line2: Annotated[str | None, typer.Option(help="New delivery address: line 2.")] = None,
    city: Annotated[str | None, typer.Option(help="New delivery address: city.")] = None,
    state: Annotated[str | None, typer.Option(help="New delivery address: state.")] = None,
    postal_code: Annotated[
        str | None, typer.Option(help="New delivery address: postal code.")
    ] = None,
    amendment_id: Annotated[
        str | None,
        typer.Option("--id", help="Key of this change: the same key again changes nothing more."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the amendment as JSON.")] = False,
) -> None:
    """Change a running order until the kitchen is done: add or remove pizzas, a new address.

    The order is re-priced: what is added is reserved and charged, what is removed goes back
    to stock and is refunded. Exit 2 for a change the order cannot take (the field is
    named), 4 once the kitchen is done or the order has finished.
    """
    from pizza_saga.common.formatting import cents

    settings = load_settings()
    given = {
        "line1": line1,
        "line2": line2,
        "city": city,
        "state": state,
        "postal_code": postal_code,
    }
    address = {field: value for field, value in given.items() if value is not None} or None

    async def run() -> int:
        service = await order_service(settings)
        record = await service.amend(
            order_number,
            add=add or [],
            remove=remove or [],
            address=address,
            amendment_id=amendment_id,
        )
        if as_json:
            print_json(record.model_dump_json())
            return 0
        moved = []
        if record.charged:
            moved.append(f"{cents(record.charged)} charged")
        if record.refunded:
            moved.append(f"{cents(record.refunded)} refunded")
        out.print(
            f"Order {order_number} amended ({record.amendment_id}): total now "
            f"{cents(record.total)}" + (f"; {', '.join(moved)}" if moved else "")
        )
        return 0

    raise typer.Exit(run_command(run()))


@app.command()
def cancel(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Ask, and return.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Cancel an order: what it did is undone, then it ends CANCELLED (exit 0).

    Exit 4 when the order has already finished (nothing is cancelled).
    """
    from pizza_saga.order.client import OrderStatus
    from pizza_saga.render import print_outcome

    settings = load_settings()

    async def run() -> int:
        service = await order_service(settings)
        await service.cancel(order_number)
        if no_wait:
            out.print(f"Cancellation of order {order_number} requested")
            return 0
        try:
            outcome = await _follow(service, order_number)
        except asyncio.CancelledError:  # Ctrl-C: the cancellation goes on all the same
            err.print(
                f"Stopped waiting; the cancellation of order {order_number} goes on: follow "
                f"it with `pizza status {order_number}`"
            )
            raise
        if as_json:
            print_json(outcome.model_dump_json())
        else:
            print_outcome(out, outcome, *web_ui(settings))
        return 0 if outcome.status is OrderStatus.CANCELLED else EXIT_FAILED

    raise typer.Exit(run_command(run()))


@app.command()
def resolve(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    retry: Annotated[bool, typer.Option("--retry", help="Try the compensation again.")] = False,
    skip: Annotated[
        bool, typer.Option("--skip", help="Record that a person handled it; do not run it.")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --skip).")] = None,
    step: Annotated[
        str | None, typer.Option(help="Which step's compensation, if several wait.")
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            help="Who decides (required with --skip), as the audit trail records it; "
            "default for --retry: cli:<your login>."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the step as JSON.")] = False,
) -> None:
    """Decide about a compensation that needs an operator (see `pizza needs-operator`).

    Exit 4 when nothing waits for that decision (or the order has finished).
    """
    import getpass

    from pydantic import TypeAdapter
    from temporal_saga import OperatorAction, StepRecord

    from pizza_saga.access.service import Actor
    from pizza_saga.access.store import InvalidOperator, check_name
    from pizza_saga.render import ledger_table

    if retry == skip:
        fail("say either --retry or --skip")
    if skip and not operator:
        fail(
            "--operator: name who handled the compensation by hand (required with --skip: "
            "the customer's money is then the shop's to return; it is in the audit trail)"
        )
    try:
        name = check_name(operator) if operator else f"cli:{getpass.getuser()}"
    except InvalidOperator as e:
        fail(f"--operator: {str(e).removeprefix('name: ')}")
    by = Actor.operator(name, source=f"cli:{getpass.getuser()}")
    settings = load_settings()

    async def run() -> None:
        from pizza_saga.order.service import InvalidInput

        try:
            record = await (await order_service(settings)).resolve(
                order_number,
                action=OperatorAction.RETRY if retry else OperatorAction.SKIP,
                step=step,
                reason=reason,
                by=by,
            )
        except InvalidInput as e:
            fail(f"--{e.field}: {e.reason}" if e.field else str(e))
        if as_json:
            print_json(TypeAdapter(StepRecord).dump_json(record).decode())
        else:
            out.print(ledger_table([record]))

    run_command(run())


@app.command()
def reconcile(
    as_json: Annotated[bool, typer.Option("--json", help="Print as a JSON list.")] = False,
) -> None:
    """Roll back now every order whose run ended (terminated, timed out) with its pizzas
    taken or its charge standing; every worker's schedule does it each minute anyway."""
    import dataclasses
    import json

    settings = load_settings()

    async def run() -> None:
        done = await (await order_service(settings)).reconcile()
        if as_json:
            print_json(json.dumps([dataclasses.asdict(d) for d in done]))
            return
        if not done:
            out.print("Nothing to reconcile: every ended order finished or rolled back")
        for d in done:
            out.print(
                f"Order {d.order_number} ({d.status.lower()}): {d.pizzas_back} pizzas back, "
                f"{d.refunded / 100:.2f} refunded",
                soft_wrap=True,
            )

    run_command(run())


@app.command("needs-operator")
def needs_operator(
    as_json: Annotated[bool, typer.Option("--json", help="Print as a JSON list.")] = False,
) -> None:
    """Orders whose rollback waits for an operator's decision."""
    settings = load_settings()

    async def run() -> None:
        service = await order_service(settings)
        numbers: list[str] = []
        token = None
        while True:
            page = await service.list_orders(needs_operator=True, page_token=token)
            numbers += [summary.order_number for summary in page.orders]
            token = page.next_page_token
            if token is None:
                break
        if as_json:
            print_json(json.dumps(numbers))
        elif numbers:
            for number in numbers:
                out.print(f"{number}  (pizza status {number})")
        else:
            out.print("No order needs an operator.")

    run_command(run())
