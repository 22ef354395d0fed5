"""Placing an order, once: the card becomes a vault token, the saga starts; an idempotency
key makes a request safe to send again."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.service import RPCError

from pizza_saga.order import client as orders
from pizza_saga.order.client import OrderOutcome, OrderStatus
from pizza_saga.order.idempotency import KeyClaim, KeyState
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.service._core import ServiceCore
from pizza_saga.order.service.errors import (
    IdempotencyKeyReused,
    NoWorker,
    OrderAlreadyPlaced,
    OrderNotFound,
    RequestInProgress,
    TemporalUnavailable,
)

KEY_WAIT_SECONDS = 10.0
"""How long a request waits for another request with its idempotency key to place the order."""


KEY_STALE_SECONDS = 60.0
"""A key claimed this long ago and never marked placed lost its request (a crash): taken over."""


KEY_POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Placement:
    """A placed order's outcome so far, and whether an earlier request with the same
    idempotency key placed it (``replayed``)."""

    outcome: OrderOutcome
    replayed: bool


class Placing(ServiceCore):
    """Placing orders."""

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
                ttl=self._card_token_life,
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
