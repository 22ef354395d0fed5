"""The order's own activities: distance to the customer, and the delivery driver."""

from __future__ import annotations

import asyncio

from temporalio import activity

from pizza_saga.order.models import Address, DeliveryRequest, Distance, DriverAnswer

NO_DRIVER_POSTAL_CODE = "00000"
"""Sandbox rule: no driver ever takes a delivery to this postal code."""

HEARTBEAT_EVERY_SECONDS = 0.5


def simulated_distance(address: Address) -> Distance:
    """The sandbox's distance rule, as in the seed: from the lengths of the address lines.
    Pure, so the order's amend validator can check a new address with it."""
    kilometers = len(address.line1) + len(address.line2) - 10
    return Distance(kilometers=kilometers if kilometers >= 1 else 5)


@activity.defn
async def get_distance(address: Address) -> Distance:
    """Simulated distance to the customer (a real shop asks a maps service here)."""
    return simulated_distance(address)


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
