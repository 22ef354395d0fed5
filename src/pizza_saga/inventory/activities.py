"""Inventory activities: take an order's pizzas off the shelf, and put them back."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from pizza_saga.common.activity_keys import workflow_key
from pizza_saga.inventory.models import StockReleased, StockRequest
from pizza_saga.inventory.store import AlreadyReleased, InventoryStore, OutOfStock
from pizza_saga.saga import CompensationContext, StepOutcome


class InventoryActivities:
    """Activities over one InventoryStore; idempotent per workflow id."""

    def __init__(self, store: InventoryStore) -> None:
        self._store = store

    @activity.defn
    async def update_inventory(self, request: StockRequest) -> None:
        """Reserve the order's pizzas. Out of stock is final: retrying will not bake more."""
        workflow_id = workflow_key()
        try:
            await asyncio.to_thread(
                self._store.reserve, workflow_id, request.order_number, request.items
            )
        except OutOfStock as err:
            raise ApplicationError(str(err), type="OutOfStockError", non_retryable=True) from None
        except AlreadyReleased as err:
            raise ApplicationError(
                str(err), type="AlreadyRolledBackError", non_retryable=True
            ) from None
        activity.logger.info("Inventory updated for order %s", request.order_number)

    @activity.defn
    async def revert_inventory(
        self, request: StockRequest, context: CompensationContext
    ) -> StockReleased:
        """Compensation of update_inventory: put back whatever this order took, if anything.

        Whatever the step's outcome, the store decides from its record of this workflow:
        an "unknown" reservation is put back if and only if it happened.
        """
        workflow_id = workflow_key()
        released = await asyncio.to_thread(self._store.release, workflow_id, request.order_number)
        if not released and context.outcome is StepOutcome.SUCCEEDED:
            raise ApplicationError(
                f"update_inventory succeeded for order {request.order_number} "
                "but no reservation is recorded",
                type="CompensationInconsistencyError",
                non_retryable=True,
            )
        if released:
            summary = f"Reverted changes to inventory: {sum(released.values())} pizzas back"
        else:
            summary = "Nothing to revert: no pizzas had been taken"
        activity.logger.info("%s (order %s)", summary, request.order_number)
        return StockReleased(items=released, summary=summary)
