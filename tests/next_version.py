"""The order workflow as a next build might change it, for the deploy tests: a step added
(the customer is told the order is on its way) and a step's arguments changed (the driver
is also told how many pizzas to carry, a field the previous build's request lacks).

Registered under the same name as today's workflow, so that each build's workers run "the"
order workflow, and an order that met the wrong build's code would fail.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError
    from temporal_saga import Saga

    from pizza_saga.order.activities import notify_delivery_driver
    from pizza_saga.order.models import (
        Address,
        DeliveryRequest,
        DriverAnswer,
        OrderConfirmation,
        OrderRequest,
    )
    from pizza_saga.order.workflow import PizzaOrderWorkflow

ANNOUNCE_STEP = "announce_order"


class Announcement(BaseModel):
    """What the customer is told when the driver leaves."""

    order_number: str
    pizzas: int


class NextDeliveryRequest(BaseModel):
    """The driver's request of the next build: the pizzas to carry are required."""

    order_number: str
    address: Address
    wait_seconds: float = 0.0
    pizzas: int


@activity.defn(name=ANNOUNCE_STEP)
async def announce_order(announcement: Announcement) -> None:
    """Tell the customer the order is on its way (here: the log)."""
    activity.logger.info("order %s is on its way", announcement.order_number)


@activity.defn(name="notify_delivery_driver")
async def notify_driver_with_pizzas(request: NextDeliveryRequest) -> DriverAnswer:
    """The driver step of the next build, with its new argument."""
    return await notify_delivery_driver(
        DeliveryRequest(
            order_number=request.order_number,
            address=request.address,
            wait_seconds=request.wait_seconds,
        )
    )


@workflow.defn(name="PizzaOrderWorkflow", failure_exception_types=[ValidationError])
class NextPizzaOrderWorkflow(PizzaOrderWorkflow):
    """Today's order saga with the next build's changes."""

    @workflow.run
    async def run(self, request: OrderRequest) -> OrderConfirmation:
        return await super().run(request)

    async def _driver_accepted(self, saga: Saga, request: OrderRequest) -> bool:
        order = request.order
        await saga.execute_activity(
            announce_order, Announcement(order_number=order.order_number, pizzas=len(order.items))
        )
        answer = await saga.execute_activity(
            notify_driver_with_pizzas,
            NextDeliveryRequest(
                order_number=order.order_number,
                address=order.address,
                wait_seconds=request.waits.driver_seconds,
                pizzas=len(order.items),
            ),
            start_to_close_timeout=timedelta(seconds=request.waits.driver_seconds + 30),
            heartbeat_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        return answer.accepted
