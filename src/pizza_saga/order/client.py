"""The client side of an order: place it, follow it, and report its outcome."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from pizza_saga import TASK_QUEUE
from pizza_saga.common.settings import Settings
from pizza_saga.order.models import (
    OrderConfirmation,
    OrderRequest,
    PizzaOrder,
    SagaPolicy,
    SimulatedWaits,
)
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from pizza_saga.saga import StepRecord

LEDGER_QUERY_TIMEOUT = timedelta(seconds=5)


class OrderStatus(StrEnum):
    """An order's outcome so far (its workflow's status)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TERMINATED = "TERMINATED"
    TIMED_OUT = "TIMED_OUT"


class OrderError(BaseModel):
    """Why an order did not complete: the root cause's type and message."""

    type: str
    message: str


class OrderOutcome(BaseModel):
    """What `pizza order` and `pizza status` report."""

    order_number: str
    workflow_id: str
    run_id: str | None
    status: OrderStatus
    error: OrderError | None = None
    confirmation: OrderConfirmation | None = None
    ledger: list[StepRecord] | None = None
    """None when no worker answered the ledger query."""


class OrderAlreadyPlaced(Exception):
    """An order with this number was placed before; each number is one order."""


_STATUSES = {
    WorkflowExecutionStatus.RUNNING: OrderStatus.RUNNING,
    WorkflowExecutionStatus.COMPLETED: OrderStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED: OrderStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: OrderStatus.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: OrderStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: OrderStatus.TIMED_OUT,
}


def order_request(order: PizzaOrder, settings: Settings) -> OrderRequest:
    """The workflow input for ``order`` under this deployment's settings."""
    return OrderRequest(
        order=order,
        waits=SimulatedWaits(
            prep_seconds=settings.prep_seconds, driver_seconds=settings.driver_seconds
        ),
        policy=SagaPolicy(
            deadline_seconds=settings.order_deadline_seconds,
            compensation_attempts=settings.compensation_attempts,
            compensation_backoff_seconds=settings.compensation_backoff_seconds,
        ),
    )


async def place_order(
    client: Client, request: OrderRequest
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """Start the order's workflow; raise OrderAlreadyPlaced if its number was used."""
    workflow_id = workflow_id_for(request.order.order_number)
    try:
        return await client.start_workflow(
            PizzaOrderWorkflow.run,
            request,
            id=workflow_id,
            task_queue=TASK_QUEUE,
            # One order number, one run, ever: a second submit must not charge again.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise OrderAlreadyPlaced(request.order.order_number) from None


async def order_outcome(client: Client, order_number: str, *, wait: bool = True) -> OrderOutcome:
    """The order's outcome (waiting for it to finish if ``wait``), with its saga ledger."""
    handle = client.get_workflow_handle_for(PizzaOrderWorkflow.run, workflow_id_for(order_number))
    outcome = OrderOutcome(
        order_number=order_number,
        workflow_id=handle.id,
        run_id=None,
        status=OrderStatus.RUNNING,
    )
    if wait:
        await _settle(handle, outcome)
    description = await handle.describe()
    outcome.run_id = description.run_id
    outcome.status = _STATUSES.get(description.status, OrderStatus.RUNNING)  # type: ignore[arg-type]
    if not wait and outcome.status is not OrderStatus.RUNNING:
        await _settle(handle, outcome)
    try:
        outcome.ledger = await handle.query(
            PizzaOrderWorkflow.ledger, rpc_timeout=LEDGER_QUERY_TIMEOUT
        )
    except RPCError:
        outcome.ledger = None
    return outcome


async def _settle(
    handle: WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation], outcome: OrderOutcome
) -> None:
    """Wait for the run to close; record its confirmation or its error."""
    try:
        outcome.confirmation = await handle.result()
    except WorkflowFailureError as err:
        outcome.error = _root_error(err)


def _root_error(err: WorkflowFailureError) -> OrderError:
    root: BaseException = err
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, ApplicationError):
        return OrderError(type=root.type or "ApplicationError", message=root.message)
    if isinstance(root, CancelledError):
        return OrderError(type="CancelledError", message=root.message or "order cancelled")
    return OrderError(type=type(root).__name__, message=str(root))
