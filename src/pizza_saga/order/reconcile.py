"""The reconciler: orders whose run ended without finishing its saga are rolled back.

An order's run that Temporal terminated (`temporal workflow terminate`, or a history pushed
past Temporal's limits) or timed out never ran its compensations: its pizzas stay taken and
its charge stands. The reconciler, a workflow that a schedule starts every minute
(`ensure_reconcile_schedule`, from every `pizza worker`), finds them from Temporal's
visibility and the effects rows, and runs the order's own compensations (order/reconciler.py:
the same activities, keyed on the same execution, so each effect is undone once whoever gets
there first). Each
order it rolls back is logged as a warning, counted in `pizza_orders_reconciled` and written
to the audit trail; `pizza doctor` names the orders still waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporal_saga.effects import EffectKey
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowExecutionStatus,
)
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.access.service import AccessService, Actor
from pizza_saga.billing.activities import CHARGE_STEP
from pizza_saga.billing.store import PaymentStore
from pizza_saga.billing.vault import CardVault
from pizza_saga.inventory.activities import STEP as STOCK_STEP
from pizza_saga.inventory.store import InventoryStore
from pizza_saga.order.amend import CHARGE_DIFFERENCE, RESERVE_ADDED, step_kind
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX

RECONCILER_WORKFLOW = "PizzaReconcileOrders"
"""The reconciler workflow's type (order/reconciler.py)."""
RECONCILED = "pizza_orders_reconciled"
"""Counter of orders the reconciler rolled back, by the ``status`` their run ended with."""
LOOKBACK = timedelta(days=7)
"""How far back the reconciler looks for ended runs (a pass every minute finds each at once;
this covers a reconciler that was itself down)."""
EVERY = timedelta(minutes=1)
"""How often the schedule starts a pass."""
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
"""A compensation that keeps failing is left for the next pass (the order stays named)."""
ENDED_UNFINISHED = {
    WorkflowExecutionStatus.TERMINATED: "TERMINATED",
    WorkflowExecutionStatus.TIMED_OUT: "TIMED_OUT",
}
"""Run endings that skip the saga's rollback: failed, cancelled and completed runs end
through it."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AbandonedOrder:
    """An order whose run ended without its saga finishing, and what it left in place."""

    order_number: str
    execution: str
    """The saga's execution (workflow id / first run id): whose effects these are."""
    status: str
    """How its run ended: TERMINATED or TIMED_OUT."""
    reserved: dict[str, int] = field(default_factory=dict)
    charged: int = 0
    card_kept: bool = False
    amendment_reservations: list[str] = field(default_factory=list)
    """Steps of its amendments' reservations that stand (oldest first)."""
    amendment_charges: list[str] = field(default_factory=list)
    """Steps of its amendments' charges that stand (oldest first)."""


@dataclass(frozen=True)
class Reconciled:
    """What the reconciler undid for one order."""

    order_number: str
    status: str
    pizzas_back: int
    refunded: int


def reconcile_schedule_id(task_queue: str) -> str:
    """The id of the schedule that reconciles the orders of ``task_queue``."""
    return f"pizza-reconcile-{task_queue}"


def reconciler_workflow_id(task_queue: str) -> str:
    """The workflow id of a reconciler pass for ``task_queue``."""
    return f"pizza-reconciler-{task_queue}"


async def abandoned_orders(
    client: Client,
    *,
    task_queue: str,
    inventory: InventoryStore,
    payments: PaymentStore,
    vault: CardVault,
    now: datetime | None = None,
) -> list[AbandonedOrder]:
    """Orders of ``task_queue`` whose latest run ended terminated or timed out with effects
    still in place (pizzas taken, a charge standing, a card number kept)."""
    since = (now or datetime.now(UTC)) - LOOKBACK
    query = (
        f"TaskQueue = '{task_queue}' AND WorkflowType = 'PizzaOrderWorkflow' AND "
        "ExecutionStatus IN ('Terminated', 'TimedOut') AND "
        f"CloseTime > '{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    )
    found: dict[str, AbandonedOrder] = {}
    async for listed in client.list_workflows(query):
        if not listed.id.startswith(WORKFLOW_ID_PREFIX) or listed.id in found:
            continue
        # A reset ends a run as terminated and goes on in a new one: only the latest counts.
        description = await client.get_workflow_handle(listed.id).describe()
        status = ENDED_UNFINISHED.get(description.status) if description.status else None
        if status is None:
            continue
        first_run = description.raw_description.workflow_execution_info.first_run_id
        order_number = listed.id.removeprefix(WORKFLOW_ID_PREFIX)
        execution = f"{listed.id}/{first_run or description.run_id}"
        order = await asyncio.to_thread(
            _left_in_place, order_number, execution, status, inventory, payments, vault
        )
        if order is not None:
            found[listed.id] = order
    return list(found.values())


def _left_in_place(
    order_number: str,
    execution: str,
    status: str,
    inventory: InventoryStore,
    payments: PaymentStore,
    vault: CardVault,
) -> AbandonedOrder | None:
    reserved = inventory.reserved(EffectKey(key=order_number, step=STOCK_STEP, owner=execution))
    charge = payments.charged(EffectKey(key=order_number, step=CHARGE_STEP, owner=execution))
    added = inventory.reservations(
        order_number, execution, steps=lambda step: step_kind(step) == RESERVE_ADDED
    )
    more = payments.charges(
        order_number, execution, steps=lambda step: step_kind(step) == CHARGE_DIFFERENCE
    )
    card_kept = vault.keeps(order_number=order_number)
    if not reserved and charge is None and not card_kept and not added and not more:
        return None
    return AbandonedOrder(
        order_number=order_number,
        execution=execution,
        status=status,
        reserved=reserved or {},
        charged=(charge.amount if charge else 0) + sum(c.amount for c in more.values()),
        card_kept=card_kept,
        amendment_reservations=list(added),
        amendment_charges=list(more),
    )


class ReconcileActivities:
    """The reconciler's own activities: finding abandoned orders, and reporting each."""

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        inventory: InventoryStore,
        payments: PaymentStore,
        vault: CardVault,
        access: AccessService,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._inventory = inventory
        self._payments = payments
        self._vault = vault
        self._access = access

    @activity.defn
    async def find_abandoned_orders(self) -> list[AbandonedOrder]:
        """Orders whose run ended without its saga finishing, with what they left."""
        return await abandoned_orders(
            self._client,
            task_queue=self._task_queue,
            inventory=self._inventory,
            payments=self._payments,
            vault=self._vault,
        )

    @activity.defn
    async def report_reconciled(self, done: Reconciled) -> None:
        """Alert on an order the reconciler rolled back: a warning, a metric, an audit entry."""
        activity.logger.warning(
            "order %s: its run ended %s with effects in place; the reconciler rolled it back "
            "(%d pizzas back, %d cents refunded)",
            done.order_number,
            done.status,
            done.pizzas_back,
            done.refunded,
        )
        activity.metric_meter().create_counter(
            RECONCILED, "Orders whose run ended without its rollback, rolled back afterwards."
        ).add(1, {"status": done.status})
        await self._access.record(
            Actor.operator("reconciler", source="reconciler"),
            "reconcile",
            order_number=done.order_number,
            detail=f"run {done.status.lower()}; {done.pizzas_back} pizzas back, "
            f"{done.refunded} cents refunded",
        )


async def ensure_reconcile_schedule(client: Client, *, task_queue: str) -> bool:
    """Create the schedule of reconciler passes for ``task_queue`` unless it exists; False
    when this Temporal has no schedules (the time-skipping test server)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILER_WORKFLOW,
            id=reconciler_workflow_id(task_queue),
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(reconcile_schedule_id(task_queue), schedule)
    except ScheduleAlreadyRunningError:
        pass
    except RPCError as err:
        if err.status is RPCStatusCode.UNIMPLEMENTED:
            return False
        raise
    return True


async def reconcile_now(client: Client, *, task_queue: str) -> list[Reconciled]:
    """Run one reconciler pass now (`pizza reconcile`) and return what it rolled back."""
    done: list[Reconciled] = await client.execute_workflow(
        RECONCILER_WORKFLOW,
        id=f"{reconciler_workflow_id(task_queue)}-now-{datetime.now(UTC):%Y%m%dT%H%M%S%f}",
        task_queue=task_queue,
        result_type=list[Reconciled],
    )
    return done
