"""The client side of an order: place it, follow it, and report its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any, NoReturn

from pydantic import BaseModel, field_validator
from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE, OperatorDecision, StepRecord
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
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
from pizza_saga.order.amend import AMENDMENT_ERROR, Amendment, AmendmentRecord, OrderNow
from pizza_saga.order.models import (
    OrderConfirmation,
    OrderRequest,
    PlacedOrder,
    SagaPolicy,
    SimulatedWaits,
)
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, PizzaOrderWorkflow, workflow_id_for

LEDGER_QUERY_TIMEOUT = timedelta(seconds=5)
LONG_POLL_MARGIN = 1.0
"""Seconds before its deadline at which the server answers a history long poll that saw
nothing new (measured on the dev server); a poll's deadline is the wait plus this."""


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
    await _gone(handle, order_number, "nothing waits for an operator")


async def _gone(handle: WorkflowHandle[Any, Any], order_number: str, so: str) -> NoReturn:
    """Why an update found no run: NoSuchOrder, or ValueError saying it has finished."""
    try:
        status = (await handle.describe()).status
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise NoSuchOrder(order_number) from None
        raise
    state = status.name if status else "finished"
    raise ValueError(f"the order has finished ({state}): {so}")


class AmendmentRefused(ValueError):
    """The order did not take the amendment; ``field`` names what is wrong ("order": it no
    longer takes amendments)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


async def amend_order(client: Client, order_number: str, amendment: Amendment) -> AmendmentRecord:
    """Send a customer's amendment to a running order and return what it did.

    Raises AmendmentRefused with the workflow's reason, NoSuchOrder if there is no such
    order, or ValueError if it has finished.
    """
    handle = _handle(client, order_number)
    try:
        return await handle.execute_update(PizzaOrderWorkflow.amend, amendment)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == AMENDMENT_ERROR:
            field = str(cause.details[0]) if cause.details else "amendment"
            raise AmendmentRefused(field, cause.message) from None
        raise AmendmentRefused("amendment", getattr(cause, "message", str(cause))) from None
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    await _gone(handle, order_number, "it can no longer change")


async def order_now(client: Client, order_number: str) -> OrderNow:
    """A running order's pizzas, address and price now, and whether it takes amendments."""
    now: OrderNow = await _handle(client, order_number).query(
        PizzaOrderWorkflow.now, rpc_timeout=LEDGER_QUERY_TIMEOUT
    )
    return now


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
    if wait:
        settled = OrderOutcome(
            order_number=order_number,
            workflow_id=handle.id,
            run_id=None,
            status=OrderStatus.RUNNING,
        )
        await _settle(handle, settled)
        outcome = await described_outcome(client, order_number)
        outcome.confirmation, outcome.error = settled.confirmation, settled.error
    else:
        outcome = await described_outcome(client, order_number)
        if outcome.status is not OrderStatus.RUNNING:
            await _settle(handle, outcome)
    if not ledger:
        outcome.ledger_unavailable = "not asked for: GET the order for its ledger"
        return outcome
    await read_ledger(client, outcome)
    return outcome


async def described_outcome(client: Client, order_number: str) -> OrderOutcome:
    """The order as the server describes it: status, run, pending activities with their
    attempts. No ledger and no result: no worker is asked anything."""
    handle = _handle(client, order_number)
    description = await handle.describe()
    return OrderOutcome(
        order_number=order_number,
        workflow_id=handle.id,
        run_id=description.run_id,
        status=STATUS_OF.get(description.status, OrderStatus.RUNNING)
        if description.status is not None
        else OrderStatus.RUNNING,
        pending_activities=[
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
        ],
    )


async def settle_outcome(client: Client, outcome: OrderOutcome) -> None:
    """Add a finished order's confirmation or error to ``outcome``."""
    await _settle(_handle(client, outcome.order_number), outcome)


async def read_ledger(client: Client, outcome: OrderOutcome) -> bool:
    """Ask a worker for the order's ledger and put it in ``outcome`` (or why there is none);
    True if it is worth asking again later (no worker answered)."""
    handle = _handle(client, outcome.order_number)
    outcome.ledger, outcome.ledger_unavailable = None, None
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
        return True
    return False


class OrderHistory:
    """The events of an order's run as they happen, by long polls of its history: the server
    holds each poll until something new is written, and no worker is involved."""

    def __init__(self, client: Client, order_number: str) -> None:
        self._client = client
        self._execution = WorkflowExecution(workflow_id=workflow_id_for(order_number))
        self._token = b""
        self.closed = False
        """The run has closed: its last event has been read."""

    async def next(self, *, within: float) -> Sequence[HistoryEvent]:
        """The events written since the last call (the whole history on the first), or none
        after about ``within`` seconds without any. Raises RPCError (NOT_FOUND: no order)."""
        request = GetWorkflowExecutionHistoryRequest(
            namespace=self._client.namespace,
            execution=self._execution,
            next_page_token=self._token,
            wait_new_event=True,
        )
        try:
            response = await self._client.workflow_service.get_workflow_execution_history(
                request, timeout=timedelta(seconds=within + LONG_POLL_MARGIN)
            )
        except RPCError as err:
            if err.status is RPCStatusCode.DEADLINE_EXCEEDED:  # a busy server answered late
                return ()
            raise
        self._token = response.next_page_token
        self.closed = not self._token  # the last page of a closed run has no next one
        return response.history.events

    def restart(self) -> None:
        """Follow the workflow's current run from its start (after a reset started one)."""
        self._token, self.closed = b"", False


LEDGER_EVENTS = frozenset({EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED})
"""History events after which the ledger may differ: the workflow's state moves only when a
workflow task completes."""


def may_change_ledger(events: Sequence[HistoryEvent]) -> bool:
    """Whether the workflow's state (so its ledger) may have moved with ``events``."""
    return any(event.event_type in LEDGER_EVENTS for event in events)


TASK_UNDER_WAY = frozenset(
    {EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED}
)


def task_running(events: Sequence[HistoryEvent]) -> bool:
    """Whether ``events`` end with a workflow task not yet completed (the state is about to
    move: what the server describes now may be ahead of the ledger a query would get)."""
    return bool(events) and events[-1].event_type in TASK_UNDER_WAY


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
