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
    step: str = "update_inventory"
    """Which of the order's reservations: its first, or an amendment's added pizzas."""


@dataclass(frozen=True)
class StockReduction:
    """Pizzas an amendment removed, put back from the order's reservations that hold them."""

    order_number: str
    execution: str
    step: str
    """The amendment's step: keys the release, so it happens once."""
    take_from: dict[str, dict[str, int]]
    """Reservation step -> menu item -> how many to put back of it."""


@dataclass(frozen=True)
class StockReleased:
    """What a rollback put back on the shelf; empty when nothing had been taken."""

    items: dict[str, int]
    summary: str
    """What happened, in words, for the Web UI's history view."""
