"""What every part of the order service shares: its client and stores, an order's status and
outcome, whether a worker polls."""

from __future__ import annotations

import getpass
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.access.service import AccessService, Actor
from pizza_saga.billing.store import PaymentStore
from pizza_saga.billing.vault import CardVault
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.store import InventoryStore
from pizza_saga.order import client as orders
from pizza_saga.order.client import STATUS_OF, OrderOutcome, OrderStatus
from pizza_saga.order.idempotency import IdempotencyStore
from pizza_saga.order.service.errors import (
    OrderNotFound,
    TemporalUnavailable,
)
from pizza_saga.order.workflow import workflow_id_for

T = TypeVar("T")

POLLER_FRESH = timedelta(seconds=90)
"""A worker's long poll lasts up to about a minute: one seen later than this is gone."""


WORKER_SEEN_SECONDS = 1.0
"""How long placing trusts that a worker polls, once Temporal said so."""


def _local_operator() -> Actor:
    """The operator on this machine (the CLI, with the store and Temporal at hand)."""
    return Actor.operator(f"cli:{getpass.getuser()}", source="cli")


class ServiceCore:
    """The order service's state: one Temporal client, the stores, the settings."""

    def __init__(
        self,
        *,
        client: Client | None,
        inventory: InventoryStore,
        payments: PaymentStore,
        vault: CardVault,
        idempotency: IdempotencyStore,
        access: AccessService,
        settings: Settings,
    ) -> None:
        self._client = client
        self.access = access
        """Operators, credentials and the audit trail (the faces check callers with it)."""
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
    def _card_token_life(self) -> timedelta:
        """How long a placed order's card token lives: until its order can no longer be
        charged (its deadline rolls it back), however long the workers are away; at least
        PIZZA_CARD_TOKEN_TTL_SECONDS."""
        seconds = max(self._settings.card_token_ttl_seconds, self._settings.order_deadline_seconds)
        return timedelta(seconds=seconds)

    @property
    def settings(self) -> Settings:
        """The settings the service was built with (its faces read their limits there)."""
        return self._settings

    @property
    def task_queue(self) -> str:
        return self._settings.task_queue

    async def outcome(self, order_number: str) -> OrderOutcome:
        """The order's outcome so far, with its ledger."""
        return await self._outcome(order_number, wait=False)

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
        return await self._asking(
            order_number,
            orders.order_outcome(self._temporal, order_number, wait=wait, ledger=ledger),
        )

    async def _asking(self, order_number: str, call: Awaitable[T]) -> T:
        """``call``'s answer, Temporal's errors as the service's (no such order, or none)."""
        try:
            return await call
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(order_number) from None
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None
