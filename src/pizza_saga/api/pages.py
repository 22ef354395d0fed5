"""The web pages: recent orders, a new order, an order's saga timeline, stock and payments.

Server-rendered (Jinja2) and useful without JavaScript; `static/app.js` keeps the home page
and an order's page live from the event streams. Buttons are plain forms posting to the
routes here, which call the order service and redirect back (303), or render the page again
with the error. A full card number is never written into a page: the form names the sandbox
cards by their last four digits and never fills a typed number back in.

Like every face, the pages talk to the order service only (and the model types it takes and
returns): the sandbox's cards, the seed's order and the other values to try come from
`OrderService.sandbox()`, what was ordered from `OrderService.order()`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from temporal_saga import OperatorAction

from pizza_saga.api import views
from pizza_saga.api.deps import Service
from pizza_saga.api.events import LIST_SIZE, ORDER_NUMBER, outcome_data, recent_first
from pizza_saga.api.problems import STATUS_OF
from pizza_saga.common.errors import field_path
from pizza_saga.common.formatting import cents
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import MAX_PIZZAS, PizzaOrder
from pizza_saga.order.service import (
    InvalidInput,
    OrderAlreadyPlaced,
    OrderNotFound,
    OrderService,
    ServiceError,
)

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16_384
"""A form body larger than this is not one of ours."""
MAX_FORM_FIELDS = 100
SANDBOX = OrderService.sandbox()
"""The sandbox cards the form offers (by their last four digits), the values to try, and the
seed's order the form starts from."""
OTHER_CARD = "other"

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")


def _when(moment: datetime | None) -> str:
    """A timestamp as the pages show it (UTC, to the second)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


templates.env.filters["cents"] = cents
templates.env.filters["when"] = _when
templates.env.filters["duration"] = views.duration


def install(app: FastAPI) -> None:
    """Add the pages and their static files to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


def _status_of(err: ServiceError) -> int:
    """The HTTP status a page answers a service error with."""
    return STATUS_OF[err.kind]


def _page(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> HTMLResponse:
    """``template`` rendered with ``context`` (and which menu entry is current)."""
    return templates.TemplateResponse(
        request, template, {"nav": template.removesuffix(".html"), **context}, status_code
    )


def _back_to(url: str) -> RedirectResponse:
    """After a form: see ``url`` (303, so a reload does not post again)."""
    return RedirectResponse(url, status_code=303)


class FormError(Exception):
    """A posted body that is not a form of ours; ``status`` says how to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields (the last value of each name). FormError if not a form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(413, "the form is too large")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "the form could not be read") from None
    return dict(pairs)


async def _accepted_form(request: Request) -> dict[str, str] | HTMLResponse:
    """The posted form's fields, or the refusal page: from another site, or not our form."""
    if _cross_site(request):
        return _refused(request)
    try:
        return await _form(request)
    except FormError as err:
        return _refused(request, err)


def _cross_site(request: Request) -> bool:
    """Whether a POST comes from another site's page (forms of ours come from this one)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc != request.headers.get("host")


def _refused(request: Request, err: FormError | None = None) -> HTMLResponse:
    """The page for a post we do not take: from another site (403), or not a form of ours."""
    status, message = (
        (err.status, str(err)) if err else (403, "forms are accepted from this site's pages only")
    )
    return _page(request, "message.html", {"title": "Not accepted", "message": message}, status)


# --- Home ----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, service: Service) -> HTMLResponse:
    """Recent orders, those waiting for an operator first; live from the list stream."""
    error = None
    orders = []
    try:
        orders = recent_first((await service.list_orders(page_size=LIST_SIZE)).orders)
    except ServiceError as err:
        error = str(err)
    return _page(
        request,
        "home.html",
        {"orders": orders, "error": error, "OrderStatus": OrderStatus},
        503 if error else 200,
    )


# --- New order -------------------------------------------------------------------------------


def _default_form() -> dict[str, str]:
    """The new-order form's fields filled in with the seed's order."""
    order = SANDBOX.example
    values = {
        "order_number": "",
        "customer.customer_id": str(order.customer.customer_id),
        "customer.name": order.customer.name,
        "customer.email": order.customer.email,
        "customer.phone": order.customer.phone,
        "is_delivery": "on" if order.is_delivery else "",
        "address.line1": order.address.line1,
        "address.line2": order.address.line2,
        "address.city": order.address.city,
        "address.state": order.address.state,
        "address.postal_code": order.address.postal_code,
        "credit_card_info.holder_name": order.credit_card_info.holder_name,
        "card": "approved",
        "credit_card_info.number": "",
    }
    for index, item in enumerate(MENU):
        values[f"qty.{index}"] = str(sum(1 for p in order.items if p.description == item))
    return values


def new_order_number() -> str:
    """A fresh order number: each submit without one is a new order."""
    return f"XD{secrets.token_hex(4).upper()}"


def order_from_form(form: Mapping[str, str]) -> PizzaOrder:
    """The order the form describes; InvalidInput naming the first field that is wrong."""
    errors: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    for index, (description, price) in enumerate(MENU.items()):
        raw = form.get(f"qty.{index}", "0").strip() or "0"
        if not raw.isdigit() or int(raw) > MAX_PIZZAS:
            errors[f"qty.{index}"] = f"a whole number from 0 to {MAX_PIZZAS}"
            continue
        items += [{"description": description, "price": price}] * int(raw)
    customer_id = form.get("customer.customer_id", "").strip()
    if not customer_id.isdigit() or len(customer_id) > 16:
        errors["customer.customer_id"] = "a whole number above 0"
    number = form.get("credit_card_info.number", "").strip()
    if not number:
        card = SANDBOX.card(form.get("card", ""))
        if card is None:
            errors["credit_card_info.number"] = "type a card number or pick a sandbox card"
        else:
            number = card.number
    if errors:
        field, message = next(iter(errors.items()))
        raise InvalidInput(message, field=field)
    data = {
        "order_number": form.get("order_number", "").strip() or new_order_number(),
        "customer": {
            "customer_id": int(customer_id),
            "name": form.get("customer.name", ""),
            "email": form.get("customer.email", ""),
            "phone": form.get("customer.phone", ""),
        },
        "items": items,
        "is_delivery": form.get("is_delivery", "") == "on",
        "address": {
            key: form.get(f"address.{key}", "")
            for key in ("line1", "line2", "city", "state", "postal_code")
        },
        "credit_card_info": {
            "holder_name": form.get("credit_card_info.holder_name", ""),
            "number": number,
        },
    }
    try:
        return PizzaOrder.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = field_path(first["loc"])
        if field.startswith("items"):
            field = "items"
        raise InvalidInput(first["msg"].removeprefix("Value error, "), field=field) from None


def _order_form(
    request: Request,
    service: OrderService,
    values: Mapping[str, str],
    *,
    field: str | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The new-order form with ``values``, and the error of ``field`` if there is one."""
    # Never write a card number back into the page: the field starts empty again.
    shown = {**values, "credit_card_info.number": ""}
    stock = service.stock()
    return _page(
        request,
        "new_order.html",
        {
            "values": shown,
            "field": field,
            "message": message,
            "menu": list(MENU.items()),
            "stock": stock,
            "cards": SANDBOX.cards,
            "other_card": OTHER_CARD,
            "bounce_email": SANDBOX.bounce_email,
            "no_driver_postal_code": SANDBOX.no_driver_postal_code,
            "max_pizzas": MAX_PIZZAS,
        },
        status_code,
    )


@router.get("/orders/new", response_class=HTMLResponse)
async def new_order(request: Request, service: Service) -> HTMLResponse:
    """The seed's order, ready to place, with the sandbox values to try."""
    return _order_form(request, service, _default_form())


@router.post("/orders/new", response_class=HTMLResponse)
async def place_order(request: Request, service: Service) -> Response:
    """Place the order the form describes and go to its page; the form again if it is wrong."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    defaults = _default_form()
    values = {**defaults, **{k: v for k, v in form.items() if k in defaults}}
    if "is_delivery" not in form:
        values["is_delivery"] = ""
    try:
        order = order_from_form(form)
        await service.place(order)
    except OrderAlreadyPlaced as err:
        return _order_form(
            request, service, values, field="order_number", message=str(err), status_code=409
        )
    except InvalidInput as err:
        return _order_form(
            request, service, values, field=err.field, message=err.reason, status_code=422
        )
    except ServiceError as err:
        return _order_form(request, service, values, message=str(err), status_code=_status_of(err))
    return _back_to(f"/orders/{order.order_number}")


# --- An order ----------------------------------------------------------------------------------


async def _order_page(
    request: Request,
    service: OrderService,
    order_number: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The order's page, with the error of a button that could not act, if any."""
    try:
        if not ORDER_NUMBER.fullmatch(order_number):
            raise OrderNotFound(order_number)
        outcome = await service.outcome(order_number)
    except ServiceError as err:
        code = _status_of(err)
        title = "No such order" if code == 404 else "Cannot show the order"
        return _page(request, "message.html", {"title": title, "message": str(err)}, code)
    data = outcome_data(outcome, request)
    details: views.Details | None = None
    details_error = None
    try:
        placed = await service.order(order_number)
    except ServiceError as err:
        details_error = f"What was ordered cannot be shown now: {err}"
    else:
        details = views.details(placed) if placed is not None else None
    return _page(
        request,
        "order.html",
        {
            "outcome": outcome,
            "view": views.describe(outcome),
            "timeline": views.timeline(outcome),
            "long_wait": views.duration(views.LONG_WAIT_SECONDS),
            "details": details,
            "details_error": details_error,
            "payments": views.money(service.payments(order_number=order_number)),
            "payments_url": f"/api/payments?order_number={order_number}",
            "waiting": views.needs_operator(outcome),
            "can_cancel": views.can_cancel(outcome),
            "running": outcome.status is OrderStatus.RUNNING,
            "web_ui_url": data["web_ui_url"],
            "events_url": f"/api/orders/{order_number}/events",
            "error": error,
            "notice": views.notice(outcome, request.query_params.get("done")),
        },
        status_code,
    )


@router.get("/orders/{order_number}", response_class=HTMLResponse)
async def order_page(request: Request, service: Service, order_number: str) -> HTMLResponse:
    """The order's outcome and saga timeline; live while it runs."""
    return await _order_page(request, service, order_number)


@router.post("/orders/{order_number}/cancel", response_class=HTMLResponse)
async def cancel_order(request: Request, service: Service, order_number: str) -> Response:
    """Cancel the order, then back to its page (which shows the rollback)."""
    if _cross_site(request):
        return _refused(request)
    try:
        if not ORDER_NUMBER.fullmatch(order_number):
            raise OrderNotFound(order_number)
        await service.cancel(order_number)
    except ServiceError as err:
        return await _order_page(
            request, service, order_number, error=str(err), status_code=_status_of(err)
        )
    return _back_to(f"/orders/{order_number}?done=cancel")


@router.post("/orders/{order_number}/resolve", response_class=HTMLResponse)
async def resolve_order(request: Request, service: Service, order_number: str) -> Response:
    """An operator's decision (retry, or skip with a reason), then back to the order's page."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    try:
        if not ORDER_NUMBER.fullmatch(order_number):
            raise OrderNotFound(order_number)
        try:
            action = OperatorAction(form.get("action", "").upper())
        except ValueError:
            raise InvalidInput("choose Retry or Skip", field="action") from None
        await service.resolve(
            order_number,
            action=action,
            step=form.get("step") or None,
            reason=form.get("reason") or None,
        )
    except ServiceError as err:
        return await _order_page(
            request, service, order_number, error=str(err), status_code=_status_of(err)
        )
    return _back_to(f"/orders/{order_number}?done={action.value.lower()}")


# --- Stock and payments ------------------------------------------------------------------------


def _stock_page(
    request: Request, service: OrderService, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The stock and payments page, with the error of the restock form, if any."""
    payments = list(reversed(service.payments()))
    return _page(
        request,
        "stock.html",
        {
            "stock": service.stock(),
            "menu": list(MENU),
            "payments": payments,
            "error": error,
            "notice": request.query_params.get("done"),
        },
        status_code,
    )


@router.get("/stock", response_class=HTMLResponse)
async def stock_page(request: Request, service: Service) -> HTMLResponse:
    """Pizzas on hand, a form to restock, and every charge and refund (newest first)."""
    return _stock_page(request, service)


@router.post("/stock", response_class=HTMLResponse)
async def restock(request: Request, service: Service) -> Response:
    """Set the stock of the items the form names, then back to the stock page."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    changes: dict[str, int] = {}
    try:
        for index, item in enumerate(MENU):
            raw = form.get(f"qty.{index}", "").strip()
            if raw == "":
                continue
            if not raw.isdigit() or len(raw) > 9:
                raise InvalidInput("must be a whole number from 0 to 1000000", field=item)
            changes[item] = int(raw)
        service.set_stock(changes)
    except InvalidInput as err:
        return _stock_page(request, service, error=str(err), status_code=422)
    return _back_to("/stock?done=restock")
