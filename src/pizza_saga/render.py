"""How orders, the ledger, stock and payments look on a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from temporal_saga import CompensationState, StepRecord, StepState

from pizza_saga.billing.store import PaymentEntry
from pizza_saga.common.formatting import cents, workflow_url
from pizza_saga.order.client import OrderOutcome, OrderStatus

_STATUS_STYLE = {
    OrderStatus.COMPLETED: "bold green",
    OrderStatus.RUNNING: "bold cyan",
}
_STATE_STYLE = {
    StepState.SUCCEEDED: "green",
    StepState.FAILED: "red",
    CompensationState.COMPENSATED: "yellow",
    CompensationState.NEEDS_OPERATOR: "bold red",
    CompensationState.SKIPPED: "bold red",
    StepState.CANCELLED: "yellow",
}


def print_outcome(console: Console, outcome: OrderOutcome, ui_url: str, namespace: str) -> None:
    """The order's status line, its ledger, and where to see it in the Web UI."""
    style = _STATUS_STYLE.get(outcome.status, "bold red")
    line = f"Order [bold]{outcome.order_number}[/]: [{style}]{outcome.status}[/]"
    if outcome.confirmation is not None:
        c = outcome.confirmation
        line += (
            f" ({c.status}) charged {cents(c.amount)} to card ending {c.card_last4}, "
            f"bill {c.confirmation_number}"
        )
    if outcome.error is not None:
        line += f" [red]{escape(outcome.error.type)}: {escape(outcome.error.message)}[/]"
    console.print(line, highlight=False)
    if outcome.ledger is not None:
        console.print(ledger_table(outcome.ledger))
        waiting = [
            r.step
            for r in outcome.ledger
            if r.compensation_state is CompensationState.NEEDS_OPERATOR
        ]
        if waiting:
            console.print(
                f"[bold red]Needs an operator:[/] the compensation of {', '.join(waiting)} "
                f"keeps failing. Fix the cause, then `pizza resolve {outcome.order_number} "
                "--retry`, or handle it by hand and `pizza resolve "
                f'{outcome.order_number} --skip --reason "..." --operator NAME`.'
            )
    else:
        console.print(f"[dim]ledger unavailable: {outcome.ledger_unavailable}[/]")
    url = workflow_url(ui_url, namespace, outcome.workflow_id, outcome.run_id)
    for pending in outcome.pending_activities:
        if pending.attempt > 1:
            console.print(
                f"[yellow]{pending.activity_id}: attempt {pending.attempt}[/]"
                + (
                    f", last failure: {escape(pending.last_failure)}"
                    if pending.last_failure
                    else ""
                )
            )
    console.print(f"Web UI: {url}", highlight=False, soft_wrap=True)


def ledger_table(ledger: list[StepRecord]) -> Table:
    """The saga ledger: one row per step, forward and compensation side by side."""
    table = Table(title="Saga ledger", title_justify="left")
    for column in ("step", "state", "compensation", "compensation state", "attempts", "notes"):
        table.add_column(column)
    for record in ledger:
        notes = [
            text for text in (record.error, record.compensation_error, record.operator_note) if text
        ]
        table.add_row(
            record.step,
            _styled(record.state),
            record.compensation or "-",
            _styled(record.compensation_state),
            str(record.compensation_attempts) if record.compensation_attempts else "",
            "; ".join(notes),
        )
    return table


def stock_table(stock: dict[str, int]) -> Table:
    table = Table(title="Inventory", title_justify="left")
    table.add_column("item")
    table.add_column("on hand", justify="right")
    for item, quantity in stock.items():
        table.add_row(item, str(quantity))
    return table


def payments_table(payments: list[PaymentEntry]) -> Table:
    table = Table(title="Payments", title_justify="left")
    for column in ("order", "kind", "amount", "card / reference", "at"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for p in payments:
        table.add_row(
            p.order_number,
            p.kind,
            cents(p.amount),
            f"•••• {p.card_last4}" if p.card_last4 else f"{p.reference} (by {p.operator})",
            p.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _styled(state: StepState | CompensationState) -> str:
    style = _STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else str(state)
