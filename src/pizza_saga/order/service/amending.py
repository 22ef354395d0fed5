"""Amending a running order: pizzas added or removed, a new delivery address, until the
kitchen is done (the order's cut-off). The order's workflow re-prices it and moves the stock
and money; this checks the input and the stock first, and records who asked."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.access.service import Actor
from pizza_saga.common.errors import field_path
from pizza_saga.order import client as orders
from pizza_saga.order.amend import (
    Amendment,
    AmendmentError,
    AmendmentRecord,
    OrderNow,
    Repriced,
    reprice,
)
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.menu import MENU
from pizza_saga.order.service._core import ServiceCore, _local_operator
from pizza_saga.order.service.errors import (
    AlreadyFinished,
    CannotAmend,
    InvalidInput,
    OrderNotFound,
    TemporalUnavailable,
)
from pizza_saga.order.workflow import workflow_id_for


def _amendment(
    amendment_id: str,
    add: Sequence[str],
    remove: Sequence[str],
    address: Mapping[str, Any] | None,
) -> Amendment:
    """The amendment as the workflow takes it; InvalidInput naming the field if it is bad."""
    for description in (*add, *remove):
        if description not in MENU:
            field = "add" if description in add else "remove"
            choices = "; ".join(f"'{name}'" for name in MENU)
            raise InvalidInput(f"'{description}' is not on the menu ({choices})", field=field)
    try:
        return Amendment.model_validate(
            {
                "amendment_id": amendment_id,
                "add": [{"description": d, "price": MENU[d]} for d in add],
                "remove": list(remove),
                "address": address,
            }
        )
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        path = field_path(first["loc"])
        raise InvalidInput(first["msg"].removeprefix("Value error, "), field=path) from None


AMEND_UPDATE = "amend"
"""The order workflow's update that amends it (PizzaOrderWorkflow.amend)."""


class Amending(ServiceCore):
    """The amend use case."""

    async def order_now(self, order_number: str) -> OrderNow:
        """A running order's pizzas, address and price now, and whether it takes changes."""
        status = await self._status(order_number)
        if status is not OrderStatus.RUNNING:
            raise AlreadyFinished(order_number, status, "it can no longer change")
        return await self._asking(order_number, orders.order_now(self._temporal, order_number))

    async def amendments(self, order_number: str) -> list[AmendmentRecord]:
        """The amendments the order took, oldest first, read from its history (no worker
        is asked): each completed amend update's answer."""
        handle = self._temporal.get_workflow_handle(workflow_id_for(order_number))
        found: list[AmendmentRecord] = []
        amends: set[str] = set()
        try:
            async for event in handle.fetch_history_events():
                if event.HasField("workflow_execution_update_accepted_event_attributes"):
                    accepted = event.workflow_execution_update_accepted_event_attributes
                    if accepted.accepted_request.input.name == AMEND_UPDATE:
                        amends.add(accepted.accepted_request.meta.update_id)
                completed = event.workflow_execution_update_completed_event_attributes
                if completed.meta.update_id not in amends:
                    continue
                if not completed.outcome.HasField("success"):
                    continue
                decoded = await self._temporal.data_converter.decode(
                    completed.outcome.success.payloads, [AmendmentRecord]
                )
                found.append(decoded[0])
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(order_number) from None
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None
        return found

    async def preview_amendment(
        self,
        order_number: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        address: Mapping[str, Any] | None = None,
    ) -> Repriced:
        """What `amend` would make of the order (its new price, what is charged or refunded),
        changing nothing; the same errors as `amend`."""
        _, repriced = await self._checked(order_number, add, remove, address, None)
        return repriced

    async def _checked(
        self,
        order_number: str,
        add: Sequence[str],
        remove: Sequence[str],
        address: Mapping[str, Any] | None,
        amendment_id: str | None,
    ) -> tuple[Amendment, Repriced]:
        now = await self.order_now(order_number)
        if address is not None and now.address is not None:  # the fields given change
            address = {**now.address.model_dump(), **address}
        amendment = _amendment(amendment_id or uuid.uuid4().hex, add, remove, address)
        if not now.amendable:
            raise CannotAmend(f"order {order_number}: {now.why_not}")
        try:
            repriced = reprice(now.items, now.total, amendment)
        except AmendmentError as err:
            raise InvalidInput(err.reason, field=err.field) from None
        on_hand = self._inventory.on_hand()
        for item, wanted in Counter(repriced.reserve).items():
            if on_hand.get(item, 0) < wanted:
                raise InvalidInput(
                    f"{wanted} more '{item}' asked, {on_hand.get(item, 0)} in stock", field="add"
                )
        return amendment, repriced

    async def amend(
        self,
        order_number: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        address: Mapping[str, Any] | None = None,
        amendment_id: str | None = None,
        by: Actor | None = None,
    ) -> AmendmentRecord:
        """Change a running order: ``add`` and ``remove`` pizzas (menu descriptions, one per
        pizza), a new delivery ``address`` (the fields given replace the order's). A retry
        with the same ``amendment_id`` gets the first answer and changes nothing more.

        Raises InvalidInput naming the field (nothing to change, not on the menu, not in the
        order, an empty order, too far, not in stock), CannotAmend past the order's cut-off
        (the kitchen is done) or while it rolls back, AlreadyFinished, OrderNotFound.
        """
        by = by or _local_operator()
        if amendment_id is not None:  # sent again: the first answer, checked against now
            for earlier in await self.amendments(order_number):
                if earlier.amendment_id != amendment_id:
                    continue
                same = (earlier.added, earlier.removed) == (list(add), list(remove))
                if not same or (address is not None and earlier.address is None):
                    raise InvalidInput(
                        "was used before for another change: use a new one",
                        field="amendment_id",
                    )
                return earlier
        amendment, _ = await self._checked(order_number, add, remove, address, amendment_id)
        try:
            record = await self._asking(
                order_number, orders.amend_order(self._temporal, order_number, amendment)
            )
        except orders.NoSuchOrder:
            raise OrderNotFound(order_number) from None
        except orders.AmendmentRefused as err:
            if err.field == "order":
                raise CannotAmend(f"order {order_number}: {err}") from None
            raise InvalidInput(str(err).removeprefix(f"{err.field}: "), field=err.field) from None
        except ValueError as err:
            raise CannotAmend(f"order {order_number}: {err}") from None
        await self.access.record(
            by,
            "amend",
            order_number=order_number,
            detail=f"amendment {record.amendment_id}: total {record.total}",
        )
        return record
