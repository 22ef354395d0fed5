"""`pizza inventory`, `pizza payments` and `pizza record-refund`: stock and money."""

from __future__ import annotations

import json
import re
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
from pizza_saga.common.formatting import cents


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
    from pizza_saga.billing.store import net_charged
    from pizza_saga.common.db import as_utc
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
                        "created_at": as_utc(p.created_at).isoformat(),
                        "reference": p.reference,
                        "operator": p.operator,
                    }
                    for p in entries
                ]
            )
        )
    else:
        out.print(payments_table(entries))
        if order_number is not None:
            out.print(f"Net charged: {cents(net_charged(entries))}")


DOLLARS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")


@app.command("record-refund")
def record_refund(
    order_number: Annotated[str, typer.Argument(help="The order's number.")],
    amount: Annotated[
        str, typer.Option(help="Dollars given back, e.g. 35.00.", show_default=False)
    ],
    reference: Annotated[
        str,
        typer.Option(help="The transfer's reference (the bank's id).", show_default=False),
    ],
    operator: Annotated[
        str,
        typer.Option(help="Who gave it back, as the audit trail records it.", show_default=False),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Record a refund made outside the product (a bank transfer) after `pizza resolve
    --skip` of the order's refund: it shows in `pizza payments`, the API and the order page,
    and counts in the order's net charge.

    Only for an order whose refund an operator skipped; at most what it was charged, net.
    The same reference again is the same refund (recorded once). Exit 4 when the order's
    refund was not skipped.
    """
    import getpass

    from pizza_saga.access.service import Actor
    from pizza_saga.access.store import InvalidOperator, check_name
    from pizza_saga.common.db import as_utc
    from pizza_saga.order.service import InvalidInput

    if not DOLLARS.fullmatch(amount.strip()):
        fail(f"--amount {amount!r}: say dollars and cents, e.g. 35.00")
    dollars, _, fraction = amount.strip().partition(".")
    amount_cents = int(dollars) * 100 + int(fraction.ljust(2, "0") or "0")
    try:
        name = check_name(operator)
    except InvalidOperator as e:
        fail(f"--operator: {str(e).removeprefix('name: ')}")
    by = Actor.operator(name, source=f"cli:{getpass.getuser()}")
    settings = load_settings()

    async def run() -> None:
        service = await order_service(settings)
        try:
            recorded = await service.record_manual_refund(
                order_number, amount=amount_cents, reference=reference, by=by
            )
        except InvalidInput as e:
            fail(f"--{e.field}: {e.reason}" if e.field else str(e))
        entry = recorded.entry
        if as_json:
            print_json(
                json.dumps(
                    {
                        "order_number": entry.order_number,
                        "kind": entry.kind,
                        "amount": entry.amount,
                        "reference": entry.reference,
                        "operator": entry.operator,
                        "created_at": as_utc(entry.created_at).isoformat(),
                        "recorded_now": recorded.now,
                    }
                )
            )
            return
        said = "Recorded" if recorded.now else "Already recorded"
        out.print(
            f"{said}: {cents(entry.amount)} given back for order {entry.order_number} "
            f"by {entry.operator}, reference {entry.reference}"
        )

    run_command(run())
