"""`pizza inventory` and `pizza payments`: stock and money."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pizza_saga.cli._shared import (
    app,
    fail,
    load_settings,
    order_service,
    out,
    print_json,
    run_command,
)


@app.command()
def inventory(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print as JSON: item -> quantity.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="ITEM=QUANTITY", help="Set an item's stock (repeatable)."),
    ] = None,
) -> None:
    """Pizzas on hand (and, with --set, restock)."""
    from pizza_saga.order.service import InvalidInput
    from pizza_saga.render import stock_table

    settings = load_settings()
    changes: dict[str, int] = {}
    for assignment in set_ or []:
        item, sep, quantity = assignment.rpartition("=")
        if not sep or not quantity.isdigit():
            fail(f"--set {assignment!r}: say ITEM=QUANTITY, with a whole number")
        changes[item] = int(quantity)
    service = run_command(order_service(settings, temporal=False))
    try:
        stock = service.set_stock(changes) if changes else service.stock()
    except InvalidInput as e:
        fail(f"--set: {e}")
    if as_json:
        print_json(json.dumps(stock))
    else:
        out.print(stock_table(stock))


@app.command()
def payments(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print as a JSON list, amounts in cents (3500).")
    ] = False,
    order_number: Annotated[
        str | None, typer.Option(help="Only this order's charge and refund.")
    ] = None,
) -> None:
    """Every charge and refund, oldest first: amounts in dollars ($35.00; with --json in
    cents), cards by their last 4 digits only."""
    from pizza_saga.render import payments_table

    service = run_command(order_service(load_settings(), temporal=False))
    entries = service.payments(order_number=order_number)
    if as_json:
        print_json(
            json.dumps(
                [
                    {
                        "order_number": p.order_number,
                        "kind": p.kind,
                        "amount": p.amount,
                        "card_last4": p.card_last4,
                        "created_at": p.created_at.isoformat(),
                    }
                    for p in entries
                ]
            )
        )
    else:
        out.print(payments_table(entries))
