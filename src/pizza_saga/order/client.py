"""The client side of an order: place it, follow it, and report its outcome."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, field_validator
from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE, OperatorDecision, StepRecord
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.common.logmask import mask_card_numbers
from pizza_saga.common.settings import Settings
from pizza_saga.order.models import (
    OrderConfirmation,
    OrderRequest,
    PlacedOrder,
    SagaPolicy,
    SimulatedWaits,
)
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, PizzaOrderWorkflow, workflow_id_for

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
    """Why an order did not complete: the root cause's type and message.

    Card numbers in the message (a validation error quotes the input) are masked.
    """

    type: str
    message: str

    @field_validator("message")
    @classmethod
    def _masked(cls, message: str) -> str:
        return mask_card_numbers(message)


class PendingActivity(BaseModel):
    """An activity still running or retrying, as the server sees it."""

    activity_id: str
    activity_type: str
    attempt: int
    last_failure: str | None = None


class OrderOutcome(BaseModel):
    """What `pizza order` and `pizza status` report."""

    order_number: str
    workflow_id: str
    run_id: str | None
    status: OrderStatus
    error: OrderError | None = None
    confirmation: OrderConfirmation | None = None
    ledger: list[StepRecord] | None = None
    """None when the ledger query got no answer; ``ledger_unavailable`` says why."""
    ledger_unavailable: str | None = None
    pending_activities: list[PendingActivity] = []
    """For a running order: what is in flight, with its attempt (a step being retried)."""


class OrderAlreadyPlaced(Exception):
    """An order with this number was placed before; each number is one order."""


STATUS_OF: dict[WorkflowExecutionStatus, OrderStatus] = {
    WorkflowExecutionStatus.RUNNING: OrderStatus.RUNNING,
    WorkflowExecutionStatus.COMPLETED: OrderStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED: OrderStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: OrderStatus.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: OrderStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: OrderStatus.TIMED_OUT,
}


def order_request(order: PlacedOrder, settings: Settings) -> OrderRequest:
    """The workflow input for ``order`` (its card tokenized) under this deployment's settings."""
    return OrderRequest(
        order=order,
        waits=SimulatedWaits(
            prep_seconds=settings.prep_seconds, driver_seconds=settings.driver_seconds
        ),
        policy=SagaPolicy(
            deadline_seconds=settings.order_deadline_seconds,
            compensation_attempts=settings.compensation_attempts,
            compensation_backoff_seconds=settings.compensation_backoff_seconds,
            local_activities=settings.local_activities,
        ),
    )


async def place_order(
    client: Client, request: OrderRequest, *, task_queue: str
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """Start the order's workflow on ``task_queue``; OrderAlreadyPlaced if its number was used."""
    workflow_id = workflow_id_for(request.order.order_number)
    try:
        return await client.start_workflow(
            PizzaOrderWorkflow.run,
            request,
            id=workflow_id,
            task_queue=task_queue,
            # One order number, one run, ever: a second submit must not charge again.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise OrderAlreadyPlaced(request.order.order_number) from None


class NoSuchOrder(Exception):
    """No workflow of that order number is known to Temporal."""


def _handle(
    client: Client, order_number: str
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    return client.get_workflow_handle_for(PizzaOrderWorkflow.run, workflow_id_for(order_number))


async def cancel_order(client: Client, order_number: str) -> None:
    """Ask the order to cancel: its compensations run, then it ends Cancelled."""
    try:
        await _handle(client, order_number).cancel()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NoSuchOrder(order_number) from None
        raise


async def resolve_order(
    client: Client, order_number: str, decision: OperatorDecision
) -> StepRecord:
    """Send an operator's decision about a compensation that waits for one.

    Raises ValueError with the workflow's reason when the decision cannot apply.
    """
    handle = _handle(client, order_number)
    try:
        return await handle.execute_update(PizzaOrderWorkflow.resolve, decision)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise ValueError(
            cause.message if isinstance(cause, ApplicationError) else str(cause)
        ) from None
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    # Not found: either no such order, or it has already finished.
    try:
        status = (await handle.describe()).status
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NoSuchOrder(order_number) from None
        raise
    state = status.name if status else "finished"
    raise ValueError(f"the order has finished ({state}): nothing waits for an operator")


async def orders_needing_operator(client: Client) -> list[str]:
    """Order numbers of running orders whose rollback waits for an operator."""
    query = f"{NEEDS_OPERATOR_ATTRIBUTE.name} = true AND ExecutionStatus = 'Running'"
    return [
        execution.id.removeprefix(WORKFLOW_ID_PREFIX)
        async for execution in client.list_workflows(query)
        if execution.id.startswith(WORKFLOW_ID_PREFIX)
    ]


async def order_outcome(
    client: Client, order_number: str, *, wait: bool = True, ledger: bool = True
) -> OrderOutcome:
    """The order's outcome (waiting for it to finish if ``wait``), with its saga ledger
    unless ``ledger`` is False (asking a finished order for it makes a worker replay it)."""
    handle = _handle(client, order_number)
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
    outcome.pending_activities = [
        PendingActivity(
            activity_id=p.activity_id,
            activity_type=p.activity_type.name,
            attempt=p.attempt,
            last_failure=(
                mask_card_numbers(p.last_failure.message) or None
                if p.HasField("last_failure")
                else None
            ),
        )
        for p in description.raw_description.pending_activities
    ]
    outcome.status = STATUS_OF.get(description.status, OrderStatus.RUNNING)  # type: ignore[arg-type]
    if not wait and outcome.status is not OrderStatus.RUNNING:
        await _settle(handle, outcome)
    if not ledger:
        outcome.ledger_unavailable = "not asked for: GET the order for its ledger"
        return outcome
    try:
        outcome.ledger = await handle.query(
            PizzaOrderWorkflow.ledger, rpc_timeout=LEDGER_QUERY_TIMEOUT
        )
    except WorkflowQueryFailedError:
        # A worker answered, but could not rebuild the run: one whose input was refused
        # never got as far as its saga.
        outcome.ledger_unavailable = (
            "the worker could not rebuild the order to answer (an order refused for its input "
            "has no ledger)"
        )
    except RPCError:
        outcome.ledger_unavailable = "no worker answered (start `pizza worker`)"
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
    """The error the order failed with: the outermost application error or cancellation.

    Outermost, not innermost: SagaDeadlineExceeded is raised from the step's timeout, and
    it is the deadline a user needs to hear about.
    """
    error: BaseException | None = err.cause
    root: BaseException = err
    while error is not None:
        if isinstance(error, ApplicationError):
            return OrderError(type=error.type or "ApplicationError", message=error.message)
        if isinstance(error, CancelledError):
            return OrderError(type="CancelledError", message=error.message or "order cancelled")
        root, error = error, error.__cause__
    return OrderError(type=type(root).__name__, message=str(root))
