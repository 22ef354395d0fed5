"""Inventory activities: take an order's pizzas off the shelf, and put them back."""

from __future__ import annotations

import asyncio

from temporal_saga import CompensationContext, StepOutcome
from temporal_saga.effects import EffectKey, EffectRefused
from temporalio import activity
from temporalio.exceptions import ApplicationError

from pizza_saga.inventory.models import StockReduction, StockReleased, StockRequest
from pizza_saga.inventory.store import InventoryStore, OutOfStock

STEP = "update_inventory"
"""The saga step whose effect (per order) the reservation is."""
OUT_OF_STOCK = "pizza_out_of_stock"
"""Counter of reservations refused for want of stock, by ``item`` (the first one short)."""


def _effect(request: StockRequest | StockReduction) -> EffectKey:
    return EffectKey(key=request.order_number, step=request.step, owner=request.execution)


class InventoryActivities:
    """Activities over one InventoryStore; idempotent per order."""

    def __init__(self, store: InventoryStore) -> None:
        self._store = store

    @activity.defn
    async def update_inventory(self, request: StockRequest) -> None:
        """Reserve the order's pizzas. Out of stock is final: retrying will not bake more."""
        try:
            await asyncio.to_thread(self._store.reserve, _effect(request), request.items)
        except OutOfStock as err:
            activity.metric_meter().create_counter(
                OUT_OF_STOCK, "Orders refused for want of stock."
            ).add(1, {"item": err.item})
            raise ApplicationError(str(err), type="OutOfStockError", non_retryable=True) from None
        except EffectRefused as err:
            raise ApplicationError(str(err), type=err.error_type, non_retryable=True) from None
        activity.logger.info("Inventory updated for order %s", request.order_number)

    @activity.defn
    async def release_removed_pizzas(self, request: StockReduction) -> StockReleased:
        """Put back the pizzas an amendment removed, once; the reservations they came from
        hold that much less, so their rollback puts back only the rest."""
        try:
            await asyncio.to_thread(self._store.put_back, _effect(request), request.take_from)
        except EffectRefused as err:
            raise ApplicationError(str(err), type=err.error_type, non_retryable=True) from None
        except (LookupError, ValueError) as err:
            raise ApplicationError(
                str(err), type="CompensationInconsistencyError", non_retryable=True
            ) from None
        items: dict[str, int] = {}
        for taken in request.take_from.values():
            for item, count in taken.items():
                items[item] = items.get(item, 0) + count
        summary = f"Put back {sum(items.values())} removed pizzas"
        activity.logger.info("%s (order %s)", summary, request.order_number)
        return StockReleased(items=items, summary=summary)

    @activity.defn
    async def revert_inventory(
        self, request: StockRequest, context: CompensationContext
    ) -> StockReleased:
        """Compensation of update_inventory: put back whatever this order took, if anything.

        Whatever the step's outcome, the store decides from its record of this order:
        an "unknown" reservation is put back if and only if it happened.
        """
        released = await asyncio.to_thread(self._store.release, _effect(request))
        if released is None and context.outcome is StepOutcome.SUCCEEDED:
            raise ApplicationError(
                f"update_inventory succeeded for order {request.order_number} "
                "but no reservation is recorded",
                type="CompensationInconsistencyError",
                non_retryable=True,
            )
        if released:
            summary = f"Reverted changes to inventory: {sum(released.values())} pizzas back"
        elif released is None:
            summary = "Nothing to revert: no pizzas had been taken"
        else:
            summary = "Nothing to revert: the order's amendments had put them back"
        activity.logger.info("%s (order %s)", summary, request.order_number)
        return StockReleased(items=released or {}, summary=summary)
