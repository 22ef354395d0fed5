"""Data the inventory activities take and return."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StockRequest:
    """Pizzas an order takes off the shelf (or, on rollback, puts back)."""

    order_number: str
    items: dict[str, int]
    """Menu item -> how many."""
    execution: str
    """The order's execution (Saga.execution): whose reservation this is."""


@dataclass(frozen=True)
class StockReleased:
    """What a rollback put back on the shelf; empty when nothing had been taken."""

    items: dict[str, int]
    summary: str
    """What happened, in words, for the Web UI's history view."""
