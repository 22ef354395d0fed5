"""The order's own activities: distance to the customer, and the delivery driver."""

from __future__ import annotations

import asyncio

from temporalio import activity

from pizza_saga.order.models import Address, DeliveryRequest, Distance, DriverAnswer

NO_DRIVER_POSTAL_CODE = "00000"
"""Sandbox rule: no driver ever takes a delivery to this postal code."""

HEARTBEAT_EVERY_SECONDS = 0.5


@activity.defn
async def get_distance(address: Address) -> Distance:
    """Simulated distance, as in the seed: from the lengths of the address lines."""
    kilometers = len(address.line1) + len(address.line2) - 10
    return Distance(kilometers=kilometers if kilometers >= 1 else 5)


@activity.defn
async def notify_delivery_driver(request: DeliveryRequest) -> DriverAnswer:
    """Tell the drivers about the delivery and wait for one to answer, heartbeating."""
    waited = 0.0
    while waited < request.wait_seconds:
        activity.heartbeat(waited)
        step = min(HEARTBEAT_EVERY_SECONDS, request.wait_seconds - waited)
        await asyncio.sleep(step)
        waited += step
    if request.address.postal_code == NO_DRIVER_POSTAL_CODE:
        activity.logger.warning("No driver took the delivery of order %s", request.order_number)
        return DriverAnswer(accepted=False)
    activity.logger.info("A driver took the delivery of order %s", request.order_number)
    return DriverAnswer(accepted=True, driver="Driver #7")
