"""The order service: every use case of the product, with typed errors.

Placing, following, cancelling, resolving and listing orders, stock and payments. The CLI
and the HTTP API are thin faces over it: they turn its errors into exit codes and HTTP
statuses, and never talk to Temporal or the stores on their own.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel
from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE, OperatorAction, OperatorDecision, StepRecord
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.billing.store import PaymentEntry, PaymentStore
from pizza_saga.billing.vault import CardVault
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.store import InventoryStore
from pizza_saga.order import client as orders
from pizza_saga.order.client import STATUS_OF, OrderOutcome, OrderStatus
from pizza_saga.order.idempotency import IdempotencyStore, KeyClaim, KeyState
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, workflow_id_for

MAX_REASON = 500
"""Longest operator reason kept in the ledger."""
MAX_STOCK = 1_000_000
POLLER_FRESH = timedelta(seconds=90)
"""A worker's long poll lasts up to about a minute: one seen later than this is gone."""
WATCH_INTERVAL = 0.25
"""Seconds between looks at a followed order (describe and ledger query)."""
WORKER_SEEN_SECONDS = 1.0
"""How long placing trusts that a worker polls, once Temporal said so."""
KEY_WAIT_SECONDS = 10.0
"""How long a request waits for another request with its idempotency key to place the order."""
KEY_STALE_SECONDS = 60.0
"""A key claimed this long ago and never marked placed lost its request (a crash): taken over."""
KEY_POLL_INTERVAL = 0.05
PAGE_TOKEN_CONTEXT = b"page-token:"
"""Keyed hashes of page tokens never equal those of request bodies."""


class ErrorKind(StrEnum):
    """What kind of refusal a service error is: each face maps the kinds once (exit codes,
    HTTP statuses), never the error classes one by one."""

    INVALID = "invalid"
    """The input cannot be used; sending it again changes nothing."""
    NOT_FOUND = "not_found"
    """What it names does not exist."""
    DUPLICATE = "duplicate"
    """It was asked before (an order number or idempotency key already used, or in use)."""
    CONFLICT = "conflict"
    """The order is not in a state the request can act on (finished, nothing waits)."""
    UNAVAILABLE = "unavailable"
    """Temporal or a worker is not there: try again later."""


class ServiceError(Exception):
    """A use case could not be carried out; the message says why, for a person."""

    kind: ClassVar[ErrorKind] = ErrorKind.INVALID


class InvalidInput(ServiceError):
    """Input the service cannot use; ``field`` names which part, when one does."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.reason = field, message


class OrderNotFound(ServiceError):
    """No order with that number is known to Temporal."""

    kind = ErrorKind.NOT_FOUND

    def __init__(self, order_number: str) -> None:
        super().__init__(f"no order {order_number!r} is known")
        self.order_number = order_number


class OrderAlreadyPlaced(ServiceError):
    """An order with this number was placed before: one number, one order."""

    kind = ErrorKind.DUPLICATE

    def __init__(self, order_number: str) -> None:
        super().__init__(f"order {order_number} was already placed; give it a new number")
        self.order_number = order_number


class AlreadyFinished(ServiceError):
    """The order has finished: nothing to cancel or decide any more."""

    kind = ErrorKind.CONFLICT

    def __init__(self, order_number: str, status: OrderStatus, action: str) -> None:
        super().__init__(f"order {order_number} has already finished ({status}): {action}")
        self.order_number, self.status = order_number, status


class NothingToResolve(ServiceError):
    """No compensation of the order waits for the decision given."""

    kind = ErrorKind.CONFLICT


class IdempotencyKeyReused(InvalidInput):
    """The idempotency key came with another request before: one key, one request."""

    def __init__(self, *, field: str) -> None:
        super().__init__(
            "this key was used for another request (another order); "
            "send a new key with each new order",
            field=field,
        )


class RequestInProgress(ServiceError):
    """Another request with the same idempotency key is still placing the order."""

    kind = ErrorKind.DUPLICATE


class TemporalUnavailable(ServiceError):
    """Temporal did not answer, or refused the request."""

    kind = ErrorKind.UNAVAILABLE


class NoWorker(ServiceError):
    """No worker polls the task queue: orders would wait, silently, until one starts."""

    kind = ErrorKind.UNAVAILABLE

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
class Placement:
    """A placed order's outcome so far, and whether an earlier request with the same
    idempotency key placed it (``replayed``)."""

    outcome: OrderOutcome
    replayed: bool


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
        vault: CardVault,
        idempotency: IdempotencyStore,
        settings: Settings,
    ) -> None:
        self._client = client
        self._inventory = inventory
        self._payments = payments
        self._vault = vault
        self._keys = idempotency
        self._worker_seen_at = -WORKER_SEEN_SECONDS
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

        The card number stops here: it is exchanged for a vault token, and the workflow gets
        the token and the last four digits only. Raises NoWorker before anything happens when
        no worker polls the task queue, and OrderAlreadyPlaced when the number was used.
        """
        if not await self._worker_seen_lately():
            raise NoWorker(self.task_queue)
        card = await asyncio.to_thread(
            functools.partial(
                self._vault.tokenize,
                order.credit_card_info.number,
                order_number=order.order_number,
            )
        )
        request = orders.order_request(order.placed(card), self._settings)
        try:
            handle = await orders.place_order(self._temporal, request, task_queue=self.task_queue)
        except orders.OrderAlreadyPlaced:
            await asyncio.to_thread(self._vault.discard, card)
            raise OrderAlreadyPlaced(order.order_number) from None
        except RPCError as err:
            await asyncio.to_thread(self._vault.discard, card)
            raise TemporalUnavailable(f"Temporal refused the order: {err.message}") from None
        return OrderOutcome(
            order_number=order.order_number,
            workflow_id=handle.id,
            run_id=handle.result_run_id,
            status=OrderStatus.RUNNING,
        )

    async def place_once(
        self, order: PizzaOrder, *, idempotency_key: str, key_field: str = "idempotency_key"
    ) -> Placement:
        """Place ``order`` once for ``idempotency_key``: sent again with the same order, the
        same order (``replayed``), never a second one.

        Raises IdempotencyKeyReused (naming ``key_field``) when the key came with another
        order, RequestInProgress when another request with it is still placing the order
        after KEY_WAIT_SECONDS, and whatever ``place`` raises (after NoWorker and
        OrderAlreadyPlaced, which place nothing, the key is freed at once).
        """
        body = order.model_dump_json().encode()
        waited_until = time.monotonic() + KEY_WAIT_SECONDS
        while True:
            claim = await asyncio.to_thread(
                self._keys.claim, idempotency_key, body=body, order_number=order.order_number
            )
            if claim.state is KeyState.REUSED:
                raise IdempotencyKeyReused(field=key_field)
            if claim.state is KeyState.PLACED:
                return Placement(await self.outcome(claim.order_number), replayed=True)
            if claim.state is KeyState.CLAIMED:
                # Shielded: a client that goes away does not stop the order half placed.
                placing = asyncio.ensure_future(self._place_claimed(order, idempotency_key, claim))
                return Placement(await asyncio.shield(placing), replayed=False)
            if await self._abandoned(idempotency_key, claim):
                continue
            if time.monotonic() > waited_until:
                raise RequestInProgress(
                    f"another request with this idempotency key is still placing order "
                    f"{claim.order_number}; send it again in a moment"
                )
            await asyncio.sleep(KEY_POLL_INTERVAL)

    async def _place_claimed(self, order: PizzaOrder, key: str, claim: KeyClaim) -> OrderOutcome:
        try:
            outcome = await self.place(order)
        except (NoWorker, OrderAlreadyPlaced):
            # Surely nothing placed for this key: free it for the request to be sent again.
            # After other errors the order may exist; the key settles once stale (_abandoned).
            await asyncio.to_thread(self._keys.release, key, claim.claim)
            raise
        await asyncio.to_thread(self._keys.placed, key, claim.claim)
        return outcome

    async def _abandoned(self, key: str, claim: KeyClaim) -> bool:
        """Whether a pending claim was left by a request that died (then it is settled:
        marked placed if its order exists, freed if not)."""
        age = datetime.now(UTC) - claim.created_at
        if age < timedelta(seconds=KEY_STALE_SECONDS):
            return False
        try:
            await self._status(claim.order_number)
        except OrderNotFound:
            await asyncio.to_thread(self._keys.release, key, claim.claim)
        else:
            await asyncio.to_thread(self._keys.placed, key, claim.claim)
        return True

    async def outcome(self, order_number: str) -> OrderOutcome:
        """The order's outcome so far, with its ledger."""
        return await self._outcome(order_number, wait=False)

    async def wait(
        self, order_number: str, *, within: float | None = None, ledger: bool = True
    ) -> OrderOutcome:
        """The order's outcome once it has finished, or as it stands after ``within`` s;
        without its ledger if ``ledger`` is False (cheaper: no replay on a worker)."""
        try:
            return await asyncio.wait_for(
                self._outcome(order_number, wait=True, ledger=ledger), within
            )
        except TimeoutError:
            return await self._outcome(order_number, wait=False, ledger=ledger)

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
        token = self._page_token(page_token) if page_token else None
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
        return OrderPage(
            orders=summaries,
            next_page_token=self._signed(next_token) if next_token else None,
        )

    def _signed(self, token: bytes) -> str:
        """Temporal's page token with a keyed hash: Temporal answers a forged one with an
        internal error, so only the service's own tokens are passed on."""
        raw = base64.urlsafe_b64encode(token).decode().rstrip("=")
        return f"{raw}.{self._keys.fingerprint(PAGE_TOKEN_CONTEXT + token)}"

    def _page_token(self, signed: str) -> bytes:
        """The Temporal page token in ``signed``; InvalidInput unless the service made it."""
        raw, _, mac = signed.partition(".")
        try:
            token = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except ValueError:
            token = b""
        if not token or not self._keys.same_body(PAGE_TOKEN_CONTEXT + token, mac):
            raise InvalidInput("not a page token from this service", field="page_token")
        return token

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
        return self._payments.payments(order_number=order_number)

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

    async def _worker_seen_lately(self) -> bool:
        """worker_polling, asked at most once a second while it says yes: placing orders
        under load needs no round trip each to learn what a second ago told."""
        now = time.monotonic()
        if now - self._worker_seen_at < WORKER_SEEN_SECONDS:
            return True
        polling = await self.worker_polling()
        if polling:
            self._worker_seen_at = now
        return polling

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

    async def _outcome(self, order_number: str, *, wait: bool, ledger: bool = True) -> OrderOutcome:
        try:
            return await orders.order_outcome(
                self._temporal, order_number, wait=wait, ledger=ledger
            )
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
