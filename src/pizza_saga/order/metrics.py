"""Order metrics: orders by outcome (from the workflow) and orders waiting for an operator.

Orders are counted by the workflow when its saga ends, with `workflow.metric_meter()`: once
per order, never again on replay. Money and out-of-stock refusals are counted where they
happen, by the billing and inventory activities, only when the store records the effect
(see billing/activities.py, inventory/activities.py). The waiting orders are a gauge the
worker refreshes from Temporal's visibility (the SagaNeedsOperator search attribute).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from temporalio import workflow
from temporalio.common import MetricMeter

ORDERS = "pizza_orders"
"""Counter of orders that ended, by ``outcome`` (completed, delivery_failed, failed,
cancelled) and ``error`` (the error type of a failed order, else empty)."""
NEEDING_OPERATOR = "pizza_orders_needing_operator"
"""Gauge of running orders whose rollback waits for an operator (per task queue)."""
WAITING_REFRESH_SECONDS = 15.0

log = logging.getLogger(__name__)


def order_ended(outcome: str, error: str = "") -> None:
    """Count an order that ended (workflow code only)."""
    workflow.metric_meter().create_counter(ORDERS, "Orders that ended, by outcome.").add(
        1, {"outcome": outcome, "error": error}
    )


class CountsWaitingOrders(Protocol):
    """What the gauge needs: the order service's count and its task queue."""

    @property
    def task_queue(self) -> str: ...

    async def count_needing_operator(self) -> int: ...


async def report_orders_needing_operator(
    service: CountsWaitingOrders, meter: MetricMeter, *, every: float = WAITING_REFRESH_SECONDS
) -> None:
    """Set the waiting-orders gauge every ``every`` seconds, until cancelled."""
    gauge = meter.create_gauge(
        NEEDING_OPERATOR, "Running orders whose rollback waits for an operator."
    ).with_additional_attributes({"task_queue": service.task_queue})
    while True:
        try:
            gauge.set(await service.count_needing_operator())
        except Exception as err:  # Temporal away for a moment: keep the last value, say so
            log.warning("cannot count the orders waiting for an operator: %s", err)
        await asyncio.sleep(every)
