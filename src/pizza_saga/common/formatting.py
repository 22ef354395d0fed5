"""How every face writes money and links to the Web UI: the terminal, the API, the pages."""

from __future__ import annotations

from urllib.parse import quote


def cents(amount: int) -> str:
    """1500 -> '$15.00'."""
    return f"${amount / 100:,.2f}"


def workflow_url(ui_url: str, namespace: str, workflow_id: str, run_id: str | None) -> str:
    """Link to a run's history in the Temporal Web UI."""
    base = f"{ui_url.rstrip('/')}/namespaces/{quote(namespace)}/workflows/{quote(workflow_id)}"
    return f"{base}/{run_id}/history" if run_id else base
