"""The order service: every use case of the product, with typed errors.

Placing, following, cancelling, resolving and listing orders, stock and payments. The CLI
and the HTTP API are thin faces over it: they turn its errors into exit codes and HTTP
statuses, and never talk to Temporal or the stores on their own.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.billing.store import PaymentEntry, PaymentStore
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.store import InventoryStore
from pizza_saga.order import client as orders
from pizza_saga.order.client import STATUS_OF, OrderOutcome, OrderStatus
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, workflow_id_for
from pizza_saga.saga import NEEDS_OPERATOR_ATTRIBUTE, OperatorAction, OperatorDecision, StepRecord

MAX_REASON = 500
"""Longest operator reason kept in the ledger."""
MAX_STOCK = 1_000_000
POLLER_FRESH = timedelta(seconds=90)
"""A worker's long poll lasts up to about a minute: one seen later than this is gone."""
WATCH_INTERVAL = 0.25
"""Seconds between looks at a followed order (describe and ledger query)."""


class ServiceError(Exception):
    """A use case could not be carried out; the message says why, for a person."""


class InvalidInput(ServiceError):
    """Input the service cannot use; ``field`` names which part, when one does."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.reason = field, message


class OrderNotFound(ServiceError):
    """No order with that number is known to Temporal."""

    def __init__(self, order_number: str) -> None:
        super().__init__(f"no order {order_number!r} is known")
        self.order_number = order_number


class OrderAlreadyPlaced(ServiceError):
    """An order with this number was placed before: one number, one order."""

    def __init__(self, order_number: str) -> None:
        super().__init__(f"order {order_number} was already placed; give it a new number")
        self.order_number = order_number


class AlreadyFinished(ServiceError):
    """The order has finished: nothing to cancel or decide any more."""

    def __init__(self, order_number: str, status: OrderStatus, action: str) -> None:
        super().__init__(f"order {order_number} has already finished ({status}): {action}")
        self.order_number, self.status = order_number, status


class NothingToResolve(ServiceError):
    """No compensation of the order waits for the decision given."""


class TemporalUnavailable(ServiceError):
    """Temporal did not answer, or refused the request."""


class NoWorker(ServiceError):
    """No worker polls the task queue: orders would wait, silently, until one starts."""

    def __init__(self, task_queue: str) -> None:
        super().__init__(
            f"no worker polls task queue {task_queue}: start one with `pizza worker` "
            "(nothing was placed)"
        )
        self.task_queue = task_queue


class OrderSummary(BaseModel):
    """An order as lists show it."""

    order_number: str
    workflow_id: str
    status: OrderStatus
    needs_operator: bool
    started_at: datetime | None
    closed_at: datetime | None


class OrderPage(BaseModel):
    """One page of orders, newest first, and the token of the next page (None at the end)."""

    orders: list[OrderSummary]
    next_page_token: str | None


@dataclass(frozen=True)
class Readiness:
    """What a deployment needs to take orders, and what is missing."""

    temporal: bool
    worker: bool
    store: bool

    @property
    def missing(self) -> list[str]:
        return [name for name in ("temporal", "worker", "store") if not getattr(self, name)]


def snapshot_id(outcome: OrderOutcome) -> str:
    """A stable id of what an order looks like now: the same state, the same id."""
    digest = hashlib.sha256(outcome.model_dump_json(exclude={"run_id"}).encode()).hexdigest()
    return digest[:16]


class OrderService:
    """The use cases of pizza orders over one Temporal client and one store database."""

    def __init__(
        self,
        *,
        client: Client | None,
        inventory: InventoryStore,
        payments: PaymentStore,
        settings: Settings,
    ) -> None:
        self._client = client
        self._inventory = inventory
        self._payments = payments
        self._settings = settings

    @property
    def _temporal(self) -> Client:
        """The Temporal client; stock and payments work without one (``client=None``)."""
        if self._client is None:
            raise TemporalUnavailable("this service was built without a Temporal client")
        return self._client

    @property
    def task_queue(self) -> str:
        return self._settings.task_queue

    # --- Orders ---------------------------------------------------------------------------

    async def place(self, order: PizzaOrder) -> OrderOutcome:
        """Start the order's saga; its outcome so far (RUNNING).

        Raises NoWorker before placing anything when no worker polls the task queue, and
        OrderAlreadyPlaced when the number was used.
        """
        if not await self.worker_polling():
            raise NoWorker(self.task_queue)
        request = orders.order_request(order, self._settings)
        try:
            handle = await orders.place_order(self._temporal, request, task_queue=self.task_queue)
        except orders.OrderAlreadyPlaced:
            raise OrderAlreadyPlaced(order.order_number) from None
        except RPCError as err:
            raise TemporalUnavailable(f"Temporal refused the order: {err.message}") from None
        return OrderOutcome(
            order_number=order.order_number,
            workflow_id=handle.id,
            run_id=handle.result_run_id,
            status=OrderStatus.RUNNING,
        )

    async def outcome(self, order_number: str) -> OrderOutcome:
        """The order's outcome so far, with its ledger."""
        return await self._outcome(order_number, wait=False)

    async def wait(self, order_number: str, *, within: float | None = None) -> OrderOutcome:
        """The order's outcome once it has finished, or as it stands after ``within`` s."""
        try:
            return await asyncio.wait_for(self._outcome(order_number, wait=True), within)
        except TimeoutError:
            return await self.outcome(order_number)

    async def watch(self, order_number: str) -> AsyncIterator[OrderOutcome]:
        """The order now, then each time its status or ledger changes; ends once finished."""
        last: str | None = None
        while True:
            outcome = await self.outcome(order_number)
            current = snapshot_id(outcome)
            if current != last:
                last = current
                yield outcome
            if outcome.status is not OrderStatus.RUNNING:
                return
            await asyncio.sleep(WATCH_INTERVAL)

    async def cancel(self, order_number: str) -> None:
        """Ask a running order to cancel: its compensations run, then it ends CANCELLED."""
        status = await self._status(order_number)
        if status is not OrderStatus.RUNNING:
            raise AlreadyFinished(order_number, status, "nothing cancelled")
        try:
            await orders.cancel_order(self._temporal, order_number)
        except orders.NoSuchOrder:
            raise OrderNotFound(order_number) from None

    async def resolve(
        self,
        order_number: str,
        *,
        action: OperatorAction,
        step: str | None = None,
        reason: str | None = None,
    ) -> StepRecord:
        """An operator's decision about a compensation that waits for one."""
        reason = reason.strip() if reason else None
        if action is OperatorAction.SKIP and not reason:
            raise InvalidInput(
                "say why the compensation is skipped (it is kept in the ledger)", field="reason"
            )
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidInput(f"at most {MAX_REASON} characters", field="reason")
        decision = OperatorDecision(action=action, step=step, reason=reason)
        status = await self._status(order_number)
        if status is not OrderStatus.RUNNING:
            raise AlreadyFinished(order_number, status, "nothing waits for an operator")
        try:
            return await orders.resolve_order(self._temporal, order_number, decision)
        except orders.NoSuchOrder:
            raise OrderNotFound(order_number) from None
        except ValueError as err:
            raise NothingToResolve(f"order {order_number}: {err}") from None

    async def list_orders(
        self,
        *,
        status: OrderStatus | None = None,
        needs_operator: bool = False,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> OrderPage:
        """Orders newest first, from Temporal's visibility; those waiting for an operator
        only, with ``needs_operator``."""
        clauses = [f"TaskQueue = '{self.task_queue}'", "WorkflowType = 'PizzaOrderWorkflow'"]
        if status is not None:
            clauses.append(f"ExecutionStatus = '{_VISIBILITY_STATUS[status]}'")
        if needs_operator:
            clauses.append(f"{NEEDS_OPERATOR_ATTRIBUTE.name} = true")
            clauses.append("ExecutionStatus = 'Running'")
        try:
            token = bytes.fromhex(page_token) if page_token else None
        except ValueError:
            raise InvalidInput("not a page token from this service", field="page_token") from None
        pages = self._temporal.list_workflows(
            " AND ".join(clauses), page_size=page_size, next_page_token=token
        )
        try:
            await pages.fetch_next_page()
        except RPCError as err:
            if err.status is RPCStatusCode.INVALID_ARGUMENT and token is not None:
                raise InvalidInput(
                    "not a page token from this service", field="page_token"
                ) from None
            raise TemporalUnavailable(f"Temporal refused the listing: {err.message}") from None
        summaries = [
            OrderSummary(
                order_number=execution.id.removeprefix(WORKFLOW_ID_PREFIX),
                workflow_id=execution.id,
                status=STATUS_OF.get(execution.status, OrderStatus.RUNNING)
                if execution.status is not None
                else OrderStatus.RUNNING,
                needs_operator=bool(
                    execution.typed_search_attributes.get(NEEDS_OPERATOR_ATTRIBUTE)
                ),
                started_at=execution.start_time,
                closed_at=execution.close_time,
            )
            for execution in pages.current_page or []
            if execution.id.startswith(WORKFLOW_ID_PREFIX)
        ]
        next_token = pages.next_page_token
        return OrderPage(orders=summaries, next_page_token=next_token.hex() if next_token else None)

    async def count_needing_operator(self) -> int:
        """How many running orders wait for an operator's decision (from visibility)."""
        query = " AND ".join(
            [
                f"TaskQueue = '{self.task_queue}'",
                "WorkflowType = 'PizzaOrderWorkflow'",
                f"{NEEDS_OPERATOR_ATTRIBUTE.name} = true",
                "ExecutionStatus = 'Running'",
            ]
        )
        try:
            return (await self._temporal.count_workflows(query)).count
        except RPCError as err:
            raise TemporalUnavailable(f"Temporal refused the count: {err.message}") from None

    # --- Stock and payments ---------------------------------------------------------------

    def stock(self) -> dict[str, int]:
        """Pizzas on hand: menu item -> quantity."""
        return self._inventory.on_hand()

    def set_stock(self, quantities: Mapping[str, int]) -> dict[str, int]:
        """Set items' quantities (items must be on the menu); the stock after."""
        for item, quantity in quantities.items():
            if item not in MENU:
                raise InvalidInput(f"{item!r} is not on the menu ({', '.join(MENU)})", field="item")
            if isinstance(quantity, bool) or not 0 <= quantity <= MAX_STOCK:
                raise InvalidInput(
                    f"must be a whole number from 0 to {MAX_STOCK}", field="quantity"
                )
        self._inventory.stock_up(quantities, overwrite=True)
        return self.stock()

    def payments(self, *, order_number: str | None = None) -> list[PaymentEntry]:
        """Every charge and refund, oldest first; one order's with ``order_number``."""
        entries = self._payments.payments()
        if order_number is not None:
            entries = [p for p in entries if p.order_number == order_number]
        return entries

    # --- Health -----------------------------------------------------------------------------

    async def worker_polling(self) -> bool:
        """Whether a worker has polled the order task queue lately (True if unknowable)."""
        try:
            described = await self._temporal.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self._temporal.namespace,
                    task_queue=TaskQueue(name=self.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
        except RPCError as err:
            if err.status is RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server
                return True
            raise TemporalUnavailable(f"cannot ask Temporal about workers: {err.message}") from None
        now = datetime.now(UTC)
        return any(
            now - poller.last_access_time.ToDatetime(tzinfo=UTC) < POLLER_FRESH
            for poller in described.pollers
        )

    async def readiness(self) -> Readiness:
        """Temporal reachable, a worker polling, the store database answering."""
        try:
            worker = await self.worker_polling()
            temporal = True
        except (TemporalUnavailable, RuntimeError):
            temporal = worker = False
        try:
            self._inventory.on_hand()
            store = True
        except Exception:  # any database error means "not ready", said by name
            store = False
        return Readiness(temporal=temporal, worker=worker, store=store)

    # --- Internals --------------------------------------------------------------------------

    async def _status(self, order_number: str) -> OrderStatus:
        handle = self._temporal.get_workflow_handle(workflow_id_for(order_number))
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(order_number) from None
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None
        status = description.status
        return STATUS_OF.get(status, OrderStatus.RUNNING) if status else OrderStatus.RUNNING

    async def _outcome(self, order_number: str, *, wait: bool) -> OrderOutcome:
        try:
            return await orders.order_outcome(self._temporal, order_number, wait=wait)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(order_number) from None
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None


_VISIBILITY_STATUS = {
    OrderStatus.RUNNING: "Running",
    OrderStatus.COMPLETED: "Completed",
    OrderStatus.FAILED: "Failed",
    OrderStatus.CANCELLED: "Canceled",
    OrderStatus.TERMINATED: "Terminated",
    OrderStatus.TIMED_OUT: "TimedOut",
}
