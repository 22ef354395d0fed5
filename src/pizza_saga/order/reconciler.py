"""PizzaReconcileOrders: one reconciler pass (see order/reconcile.py for what and why)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from temporal_saga import CompensationContext, StepOutcome

    from pizza_saga.billing.activities import CHARGE_STEP, BillingActivities
    from pizza_saga.billing.models import RefundRequest
    from pizza_saga.inventory.activities import STEP as STOCK_STEP
    from pizza_saga.inventory.activities import InventoryActivities
    from pizza_saga.inventory.models import StockRequest
    from pizza_saga.order.reconcile import (
        RECONCILER_WORKFLOW,
        STEP_RETRY,
        AbandonedOrder,
        ReconcileActivities,
        Reconciled,
    )


@workflow.defn(name=RECONCILER_WORKFLOW)
class ReconcileOrdersWorkflow:
    """One reconciler pass: every abandoned order rolled back through its compensations."""

    @workflow.run
    async def run(self) -> list[Reconciled]:
        found = await workflow.execute_activity_method(
            ReconcileActivities.find_abandoned_orders,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=STEP_RETRY,
        )
        done: list[Reconciled] = []
        for order in found:
            try:
                done.append(await self._roll_back(order))
            except ActivityError as err:  # the next pass tries again: the order stays named
                workflow.logger.warning(
                    "could not roll back order %s yet: %s", order.order_number, err.cause or err
                )
        return done

    async def _roll_back(self, order: AbandonedOrder) -> Reconciled:
        """The order's compensations, newest first: its amendments' refunds and pizzas
        back, then its own refund and pizzas back."""
        refunded = pizzas_back = 0
        for step in reversed(order.amendment_charges):
            receipt = await workflow.execute_activity_method(
                BillingActivities.refund_customer,
                args=[
                    RefundRequest(order.order_number, order.execution, step),
                    CompensationContext(step=step, outcome=StepOutcome.UNKNOWN, attempt=1),
                ],
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=STEP_RETRY,
            )
            refunded += receipt.amount
        for step in reversed(order.amendment_reservations):
            back = await workflow.execute_activity_method(
                InventoryActivities.revert_inventory,
                args=[
                    StockRequest(order.order_number, {}, order.execution, step),
                    CompensationContext(step=step, outcome=StepOutcome.UNKNOWN, attempt=1),
                ],
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=STEP_RETRY,
            )
            pizzas_back += sum(back.items.values())
        refund = await workflow.execute_activity_method(
            BillingActivities.refund_customer,
            args=[
                RefundRequest(order_number=order.order_number, execution=order.execution),
                CompensationContext(step=CHARGE_STEP, outcome=StepOutcome.UNKNOWN, attempt=1),
            ],
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=STEP_RETRY,
        )
        released = await workflow.execute_activity_method(
            InventoryActivities.revert_inventory,
            args=[
                StockRequest(
                    order_number=order.order_number,
                    items=order.reserved,
                    execution=order.execution,
                ),
                CompensationContext(step=STOCK_STEP, outcome=StepOutcome.UNKNOWN, attempt=1),
            ],
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=STEP_RETRY,
        )
        done = Reconciled(
            order_number=order.order_number,
            status=order.status,
            pizzas_back=pizzas_back + sum(released.items.values()),
            refunded=refunded + refund.amount,
        )
        if done.pizzas_back or done.refunded:
            await workflow.execute_activity_method(
                ReconcileActivities.report_reconciled,
                done,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=STEP_RETRY,
            )
        return done
