"""The orders of the JSON API: place, follow, list, amend, cancel, resolve.

Placing answers 202 Accepted with the order's ``Location`` (and its state, whatever it
is). With ``wait=true`` it waits up to
``wait_seconds`` (30 s at most) for the outcome: 201 Created when the order has finished by
then (its outcome, COMPLETED or FAILED, is in the body: a failed order is still an order
placed, not an HTTP error), else 202 Accepted with the state so far, to be followed at its
``Location``. An ``Idempotency-Key`` makes placing safe to send again (see OrderService).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request, Response
from temporal_saga import StepRecord

from pizza_saga.api.access import OperatorActor, OrderActor
from pizza_saga.api.deps import Service
from pizza_saga.api.schemas import (
    OrderChange,
    OrderNumber,
    OrderResource,
    Resolution,
    problems,
)
from pizza_saga.common.formatting import workflow_url
from pizza_saga.order.amend import AmendmentRecord
from pizza_saga.order.client import OrderOutcome, OrderStatus
from pizza_saga.order.idempotency import MAX_KEY_LENGTH
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.service import InvalidInput, OrderPage

router = APIRouter(prefix="/api/orders", tags=["orders"])

MAX_WAIT_SECONDS = 30.0
"""The longest a request waits for an order's outcome before answering with its state."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_PAGE_SIZE = 100


def order_resource(request: Request, outcome: OrderOutcome) -> OrderResource:
    """The outcome with its link into the Temporal Web UI."""
    links = request.app.state.links
    url = workflow_url(links.ui_url, links.namespace, outcome.workflow_id, outcome.run_id)
    return OrderResource(**dict(outcome), web_ui_url=url)


def location(order_number: str) -> str:
    """Where the order is, for the ``Location`` header."""
    return f"{router.prefix}/{order_number}"


@router.post(
    "",
    status_code=202,
    response_model=OrderResource,
    responses={
        201: {"model": OrderResource, "description": "Placed, and finished within the wait"},
        202: {"description": "Placed; still running (follow `Location`)"},
        **problems(
            400,
            409,
            422,
            503,
            on_409="The order number was already used, or a request with the same "
            "`Idempotency-Key` is still placing the order",
            on_422="Invalid order, or an `Idempotency-Key` sent before with another order",
            on_503="No worker polls the task queue, or Temporal does not answer: "
            "nothing was placed",
        ),
    },
)
async def place_order(
    order: PizzaOrder,
    service: Service,
    request: Request,
    response: Response,
    wait: Annotated[bool, Query(description="Wait for the outcome (see wait_seconds).")] = False,
    wait_seconds: Annotated[
        float, Query(gt=0, le=MAX_WAIT_SECONDS, description="How long to wait at most.")
    ] = MAX_WAIT_SECONDS,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            pattern=rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$",
            description="Any unique string (a UUID): the same key with the same order gets "
            "the same order, never a second one; with another order, 422.",
        ),
    ] = None,
) -> OrderResource:
    """Place an order; it runs as a saga (202, or 201 once finished with `wait=true`).

    Anyone may place an order; the answer carries the customer's `access_token` to it.
    """
    if idempotency_key is None:
        outcome = await service.place(order)
    else:
        placed = await service.place_once(
            order, idempotency_key=idempotency_key, key_field=IDEMPOTENCY_HEADER
        )
        outcome = placed.outcome
        if placed.replayed:
            response.headers[REPLAYED_HEADER] = "true"
    if wait and outcome.status is OrderStatus.RUNNING:
        # The outcome, not the ledger: asking a finished order for its ledger makes a worker
        # replay its history. The Location (GET) has the ledger.
        outcome = await service.wait(order.order_number, within=wait_seconds, ledger=False)
    # Without wait always 202, so that a request sent again answers as it did the first time.
    finished = wait and outcome.status is not OrderStatus.RUNNING
    response.status_code = 201 if finished else 202
    response.headers["Location"] = location(order.order_number)
    token = service.access.order_token(order.order_number)
    resource = order_resource(request, outcome)
    return resource.model_copy(
        update={"access_token": token, "page_url": page_url(order.order_number, token)}
    )


def page_url(order_number: str, token: str) -> str:
    """The order's page for its customer: the token in the link."""
    return f"/orders/{order_number}?{urlencode({'token': token})}"


@router.get(
    "",
    response_model=OrderPage,
    responses=problems(401, 403, 422, 503, on_422="A bad filter, page size or page token"),
)
async def list_orders(
    service: Service,
    _: OperatorActor,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this state.")] = None,
    needs_operator: Annotated[
        bool, Query(description="Only running orders whose rollback waits for an operator.")
    ] = False,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    page_token: Annotated[
        str | None,
        Query(max_length=4096, description="`next_page_token` of the page before."),
    ] = None,
) -> OrderPage:
    """Orders, newest first, a page at a time (from Temporal's visibility store).
    Operators only."""
    return await service.list_orders(
        status=status, needs_operator=needs_operator, page_size=page_size, page_token=page_token
    )


@router.get(
    "/{order_number}",
    response_model=OrderResource,
    responses=problems(401, 403, 404, 422, 429, 503),
)
async def get_order(
    order_number: OrderNumber, _: OrderActor, service: Service, request: Request
) -> OrderResource:
    """An order's outcome so far, its saga ledger and its link in the Temporal Web UI
    (its customer, with its token, or an operator)."""
    return order_resource(request, await service.outcome(order_number))


@router.post(
    "/{order_number}/cancel",
    status_code=202,
    response_model=OrderResource,
    responses=problems(
        401,
        403,
        404,
        409,
        422,
        429,
        503,
        on_409="The order has already finished: nothing cancelled",
    ),
)
async def cancel_order(
    order_number: OrderNumber,
    actor: OrderActor,
    service: Service,
    request: Request,
    response: Response,
) -> OrderResource:
    """Ask a running order to cancel: what it did is undone, then it ends CANCELLED (its
    customer, with its token, or an operator)."""
    await service.cancel(order_number, by=actor)
    response.headers["Location"] = location(order_number)
    return order_resource(request, await service.outcome(order_number))


@router.patch(
    "/{order_number}",
    response_model=AmendmentRecord,
    responses=problems(
        400,
        401,
        403,
        404,
        409,
        422,
        429,
        503,
        on_409="The kitchen is done (or the order is ending or has finished): it can no "
        "longer change",
        on_422="A change the order cannot take: the field is named (nothing to change, not "
        "on the menu, not in the order, an empty order, too far, not in stock, an "
        "`Idempotency-Key` sent before with another change)",
    ),
)
async def amend_order(
    order_number: OrderNumber,
    change: OrderChange,
    actor: OrderActor,
    service: Service,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            pattern=r"^[A-Za-z0-9_-]{1,64}$",
            description="Letters, digits, '-' or '_' (a UUID): the same key again gets the "
            "same answer and changes nothing more.",
        ),
    ] = None,
) -> AmendmentRecord:
    """Change a running order until the kitchen is done: add or remove pizzas, a new
    address (its customer, with its token, or an operator). The order is re-priced: what is
    added is reserved and charged, what is removed goes back and is refunded."""
    address = change.address.model_dump(exclude_none=True) if change.address else None
    return await service.amend(
        order_number,
        add=change.add,
        remove=change.remove,
        address=address,
        amendment_id=idempotency_key,
        by=actor,
    )


@router.post(
    "/{order_number}/resolve",
    response_model=StepRecord,
    responses=problems(
        400,
        401,
        403,
        404,
        409,
        422,
        429,
        503,
        on_409="No compensation of the order waits for this decision, or it has finished",
        on_422="Invalid decision (a skip needs a reason; at most 500 characters)",
    ),
)
async def resolve_order(
    order_number: OrderNumber, actor: OperatorActor, resolution: Resolution, service: Service
) -> StepRecord:
    """Decide about a compensation that waits for an operator: the step as it is now.
    Operators only; the decision is in the audit trail with their name."""
    try:
        return await service.resolve(
            order_number,
            action=resolution.action.operator_action,
            step=resolution.step,
            reason=resolution.reason,
            by=actor,
        )
    except InvalidInput as err:
        # The service names body fields by name; the API by JSON pointer.
        raise InvalidInput(err.reason, field=f"/{err.field}" if err.field else None) from None
