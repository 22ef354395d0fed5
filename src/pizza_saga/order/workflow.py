"""PizzaOrderWorkflow: the order saga.

Distance check, the kitchen's prep time, then three saga steps (reserve the pizzas, charge
the card, send the bill); if any of them fails, what was done is undone in reverse order
and the original error fails the run. The driver is told last: a delivery nobody takes is
reported as "DELIVERY FAILURE", not rolled back, because the pizzas are made and paid for.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from pizza_saga.billing.activities import BillingActivities
    from pizza_saga.billing.models import Bill, ChargeRequest, RefundRequest
    from pizza_saga.inventory.activities import InventoryActivities
    from pizza_saga.inventory.models import StockRequest
    from pizza_saga.order.activities import get_distance, notify_delivery_driver
    from pizza_saga.order.menu import price_order
    from pizza_saga.order.models import DeliveryRequest, OrderConfirmation, OrderRequest
    from pizza_saga.saga import Saga, SagaOptions, StepRecord

WORKFLOW_ID_PREFIX = "pizza-workflow-order-"
MAX_DELIVERY_KM = 25

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
"""Forward steps retry passing failures a few times; final errors are non-retryable."""


def workflow_id_for(order_number: str) -> str:
    """The workflow id of an order: one order number, one workflow."""
    return f"{WORKFLOW_ID_PREFIX}{order_number}"


# A payload that does not decode into OrderRequest (another client's bad input) fails the
# run at once instead of retrying the workflow task forever.
@workflow.defn(name="PizzaOrderWorkflow", failure_exception_types=[ValidationError])
class PizzaOrderWorkflow:
    """One pizza order, run as a saga."""

    def __init__(self) -> None:
        self._saga = Saga(SagaOptions(step_timeout=timedelta(seconds=10), step_retry=STEP_RETRY))

    @workflow.query
    def ledger(self) -> list[StepRecord]:
        """Each saga step so far, with its compensation and their states."""
        return self._saga.ledger

    @workflow.run
    async def run(self, request: OrderRequest) -> OrderConfirmation:
        order = request.order
        price = price_order(pizza.price for pizza in order.items)

        if order.is_delivery:
            distance = await workflow.execute_activity(
                get_distance, order.address, start_to_close_timeout=timedelta(seconds=5)
            )
            if distance.kilometers > MAX_DELIVERY_KM:
                raise ApplicationError(
                    f"customer lives outside the service area: {distance.kilometers} km away, "
                    f"we deliver up to {MAX_DELIVERY_KM} km",
                    type="OutsideServiceAreaError",
                    non_retryable=True,
                )
            workflow.logger.info("distance is %d km", distance.kilometers)

        if request.waits.prep_seconds > 0:
            await workflow.sleep(timedelta(seconds=request.waits.prep_seconds))

        async with self._saga as saga:
            stock = StockRequest(
                order_number=order.order_number,
                items=dict(Counter(pizza.description for pizza in order.items)),
            )
            await saga.step(
                "update_inventory",
                InventoryActivities.update_inventory,
                stock,
                compensation=InventoryActivities.revert_inventory,
                compensation_arg=stock,
            )
            charge = await saga.step(
                "process_credit_card",
                BillingActivities.process_credit_card,
                ChargeRequest(
                    order_number=order.order_number,
                    holder_name=order.credit_card_info.holder_name,
                    card_number=order.credit_card_info.number,
                    amount=price.total,
                ),
                compensation=BillingActivities.refund_customer,
                compensation_arg=RefundRequest(order_number=order.order_number),
            )
            # No compensation of its own, but inside the saga: a bill that cannot be sent
            # refunds the charge and puts the pizzas back.
            bill = await saga.step(
                "send_bill",
                BillingActivities.send_bill,
                Bill(
                    customer_id=order.customer.customer_id,
                    customer_email=order.customer.email,
                    order_number=order.order_number,
                    description="Pizza",
                    amount=charge.amount,
                ),
            )

        status = "SUCCESS"
        if order.is_delivery and not await self._driver_accepted(request):
            status = "DELIVERY FAILURE"
        return OrderConfirmation(
            order_number=order.order_number,
            status=status,
            confirmation_number=bill.confirmation_number,
            billing_timestamp=bill.billing_timestamp,
            amount=bill.amount,
            card_last4=charge.card_last4,
        )

    async def _driver_accepted(self, request: OrderRequest) -> bool:
        try:
            answer = await workflow.execute_activity(
                notify_delivery_driver,
                DeliveryRequest(
                    order_number=request.order.order_number,
                    address=request.order.address,
                    wait_seconds=request.waits.driver_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=request.waits.driver_seconds + 30),
                heartbeat_timeout=timedelta(seconds=5),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            workflow.logger.warning(
                "could not reach a driver for order %s", request.order.order_number
            )
            return False
        return answer.accepted
