"""Following orders: one as it runs, what was ordered, the list of them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

from pydantic import BaseModel
from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.order import client as orders
from pizza_saga.order.client import STATUS_OF, OrderHistory, OrderOutcome, OrderStatus
from pizza_saga.order.models import OrderRequest, PlacedOrder
from pizza_saga.order.service._core import ServiceCore
from pizza_saga.order.service.errors import (
    InvalidInput,
    OrderNotFound,
    TemporalUnavailable,
)
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, workflow_id_for

QUIET_LOOK_SECONDS = 1.0
"""After this long with no new history event, a followed order with activities in flight is
described again (a retry's attempt and failure are not history events)."""
QUIET_LOOK_MAX_SECONDS = 8.0
"""The longest gap between such looks: each look that finds nothing new doubles the gap."""
LONG_POLL_SECONDS = 15.0
"""A followed order with nothing in flight waits this long per poll of its history."""


PAGE_TOKEN_CONTEXT = b"page-token:"
"""Keyed hashes of page tokens never equal those of request bodies."""


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


def snapshot_id(outcome: OrderOutcome) -> str:
    """A stable id of what an order looks like now: the same state, the same id."""
    digest = hashlib.sha256(outcome.model_dump_json(exclude={"run_id"}).encode()).hexdigest()
    return digest[:16]


class Following(ServiceCore):
    """Following orders."""

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
        """The order now, then each time its status, ledger or activities in flight change;
        ends once finished.

        It long-polls the order's history (on the server, no worker involved) and asks a
        worker for the ledger only when a workflow task completed or the run closed, the only
        moments the ledger can change; so a followed order costs the workers one query per
        workflow task, however long it is followed. A retry of an activity writes no history
        event: while activities are in flight and the history is quiet, the order is
        described again (the server answers that) after QUIET_LOOK_SECONDS, then less often.
        """
        history = OrderHistory(self._temporal, order_number)
        await self._asking(order_number, history.next(within=QUIET_LOOK_SECONDS))
        outcome = await self._asking(
            order_number, orders.described_outcome(self._temporal, order_number)
        )
        ledger_due = await self._complete(order_number, outcome, ledger=True)
        quiet = QUIET_LOOK_SECONDS
        moved = task_running = False
        last: str | None = None
        while True:
            current = snapshot_id(outcome)
            if current != last:
                last = current
                yield outcome
            if outcome.status is not OrderStatus.RUNNING:
                return
            watching = bool(outcome.pending_activities) or ledger_due or task_running
            events = await self._asking(
                order_number, history.next(within=quiet if watching else LONG_POLL_SECONDS)
            )
            if events:
                moved = True
                ledger_due = ledger_due or orders.may_change_ledger(events)
                # A workflow task under way is about to move the state: look once it is done.
                task_running = orders.task_running(events)
                if task_running and not history.closed:
                    continue
            elif not history.closed and not watching:
                continue
            ledger_due = ledger_due or history.closed
            new = await self._asking(
                order_number, orders.described_outcome(self._temporal, order_number)
            )
            if history.closed and new.status is OrderStatus.RUNNING:
                history.restart()  # the run was reset: a new one goes on
            if ledger_due:
                ledger_due = await self._complete(order_number, new, ledger=True)
            else:
                new.ledger, new.ledger_unavailable = outcome.ledger, outcome.ledger_unavailable
                await self._complete(order_number, new, ledger=False)
            changed = snapshot_id(new) != snapshot_id(outcome)
            quiet = (
                QUIET_LOOK_SECONDS if moved or changed else min(2 * quiet, QUIET_LOOK_MAX_SECONDS)
            )
            outcome, moved, task_running = new, False, False

    async def _complete(self, order_number: str, outcome: OrderOutcome, *, ledger: bool) -> bool:
        """Add a finished order's result (and the ledger, if ``ledger``) to a described
        ``outcome``; True if the ledger got no answer and is worth asking for again."""
        if outcome.status is not OrderStatus.RUNNING:
            await self._asking(order_number, orders.settle_outcome(self._temporal, outcome))
            ledger = True  # the final snapshot has the final ledger
        if not ledger:
            return False
        return await self._asking(order_number, orders.read_ledger(self._temporal, outcome))

    async def order(self, order_number: str) -> PlacedOrder | None:
        """What was ordered: the order as its workflow got it (the card a vault token, never
        a number); None when its input is not an order (another client's bad input)."""
        handle = self._temporal.get_workflow_handle(workflow_id_for(order_number))
        try:
            async for event in handle.fetch_history_events(page_size=1):
                started = event.workflow_execution_started_event_attributes
                decoded = await self._temporal.data_converter.decode(
                    started.input.payloads, [OrderRequest]
                )
                request = decoded[0] if decoded else None
                return request.order if isinstance(request, OrderRequest) else None
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(order_number) from None
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None
        except (ValueError, TypeError, RuntimeError):  # not an order request, or not ours
            return None
        raise OrderNotFound(order_number)

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


_VISIBILITY_STATUS = {
    OrderStatus.RUNNING: "Running",
    OrderStatus.COMPLETED: "Completed",
    OrderStatus.FAILED: "Failed",
    OrderStatus.CANCELLED: "Canceled",
    OrderStatus.TERMINATED: "Terminated",
    OrderStatus.TIMED_OUT: "TimedOut",
}
