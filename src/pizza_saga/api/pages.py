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

import hashlib
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import limits
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from temporal_saga import OperatorAction

from pizza_saga.access.service import Actor
from pizza_saga.access.store import Operator
from pizza_saga.access.tokens import SESSION_SECONDS
from pizza_saga.api import views
from pizza_saga.api.access import (
    FAILED_ATTEMPTS,
    SESSION_COOKIE,
    AccessLimiter,
    Caller,
    caller_of,
    require_order,
    source_of,
)
from pizza_saga.api.deps import Service
from pizza_saga.api.events import LIST_SIZE, ORDER_NUMBER, outcome_data, recent_first
from pizza_saga.api.problems import STATUS_OF, Problem
from pizza_saga.common.errors import field_path
from pizza_saga.common.formatting import cents
from pizza_saga.order.amend import AmendmentRecord
from pizza_saga.order.client import OrderStatus
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import MAX_PIZZAS, PizzaOrder
from pizza_saga.order.service import (
    IdempotencyKeyReused,
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
CSRF_COOKIE = "pizza_csrf"
"""A random value per browser; every form sends back a token bound to it (CSRF_FIELD)."""
CSRF_FIELD = "csrf"
LOGIN_ATTEMPTS = limits.parse("10/minute")
"""Failed logins a client address may make before it is refused for a while."""

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


@dataclass(frozen=True)
class Visitor:
    """Who is looking at a page: an operator (logged in) or not, and the browser's CSRF seed."""

    operator: Operator | None
    source: str
    seed: str
    new_seed: bool
    csrf: str

    def actor(self) -> Actor:
        """The operator as an actor of a use case (only for an operator)."""
        assert self.operator is not None
        return Actor.operator(self.operator.name, source=self.source)


async def _visitor(request: Request, service: Service) -> Visitor:
    caller = await caller_of(request, cookies=True)
    seed = request.cookies.get(CSRF_COOKIE, "")
    new_seed = not (0 < len(seed) <= 64)
    if new_seed:
        seed = secrets.token_urlsafe(24)
    visitor = Visitor(
        operator=caller.operator,
        source=caller.source,
        seed=seed,
        new_seed=new_seed,
        csrf=service.access.tokens.csrf_token(seed),
    )
    request.state.visitor = visitor
    return visitor


PageVisitor = Annotated[Visitor, Depends(_visitor)]
"""Who looks at the page, as a route parameter (also kept on ``request.state``)."""


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> HTMLResponse:
    """``template`` rendered with ``context`` (and which menu entry is current, who looks, the
    CSRF token its forms send); a browser new to the pages gets its CSRF seed cookie."""
    visitor: Visitor | None = getattr(request.state, "visitor", None)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "nav": template.removesuffix(".html"),
            "operator": visitor.operator if visitor else None,
            "csrf": visitor.csrf if visitor else "",
            **context,
        },
        status_code,
    )
    if visitor is not None and visitor.new_seed:
        response.set_cookie(
            CSRF_COOKIE,
            visitor.seed,
            httponly=True,
            samesite="lax",
            secure=_secure(request),
        )
    return response


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
    """The posted form's fields, or the refusal page: from another site, not our form, or
    without the CSRF token of this browser's pages."""
    if _cross_site(request):
        return _refused(request)
    try:
        form = await _form(request)
    except FormError as err:
        return _refused(request, err)
    visitor: Visitor = request.state.visitor
    tokens = request.app.state.service.access.tokens
    if visitor.new_seed or not tokens.csrf_matches(visitor.seed, form.get(CSRF_FIELD, "")):
        return _refused(
            request,
            FormError(403, "this form is not from a page of this site, or too old: reload it"),
        )
    return form


def _cross_site(request: Request) -> bool:
    """Whether a POST comes from another site's page (forms of ours come from this one).

    A browser's own word (``Sec-Fetch-Site``) first; without it, ``Origin`` against
    ``Host``. The CSRF token (`_accepted_form`) is checked either way.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
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


def _to_login(request: Request) -> RedirectResponse:
    """An operator's page asked by someone not logged in: to the login, and back after."""
    return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)


def _operators_only(request: Request) -> HTMLResponse:
    return _page(
        request,
        "message.html",
        {"title": "Operators only", "message": "Log in as an operator first (/login)."},
        401,
    )


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, service: Service, visitor: PageVisitor) -> Response:
    """Recent orders, those waiting for an operator first; live from the list stream.
    Operators only (others go to the login)."""
    if visitor.operator is None:
        return _to_login(request)
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
        # One per form shown: the same form sent twice (a double click, a reload of the
        # post) is the same order, never a second one.
        "idempotency_key": secrets.token_urlsafe(18),
    }
    for index, item in enumerate(MENU):
        values[f"qty.{index}"] = str(sum(1 for p in order.items if p.description == item))
    return values


def new_order_number(form_key: str | None = None) -> str:
    """A fresh order number: each form without one is a new order (the same form sent again,
    by its idempotency key, the same number)."""
    if form_key:
        return f"XD{hashlib.sha256(form_key.encode()).hexdigest()[:8].upper()}"
    return f"XD{secrets.token_hex(4).upper()}"


FORM_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _form_key(form: Mapping[str, str]) -> str | None:
    """The form's idempotency key, if it is one of ours."""
    key = form.get("idempotency_key", "")
    return key if FORM_KEY.fullmatch(key) else None


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
        "order_number": form.get("order_number", "").strip() or new_order_number(_form_key(form)),
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
async def new_order(request: Request, service: Service, _: PageVisitor) -> HTMLResponse:
    """The seed's order, ready to place, with the sandbox values to try."""
    return _order_form(request, service, _default_form())


@router.post("/orders/new", response_class=HTMLResponse)
async def place_order(request: Request, service: Service, _: PageVisitor) -> Response:
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
        key = _form_key(form)
        if key is None:
            await service.place(order)
        else:
            await service.place_once(
                order, idempotency_key=f"form:{key}", key_field="idempotency_key"
            )
    except OrderAlreadyPlaced as err:
        return _order_form(
            request, service, values, field="order_number", message=str(err), status_code=409
        )
    except IdempotencyKeyReused:
        # This form placed an order already, with other values (edited after going back).
        values["idempotency_key"] = _default_form()["idempotency_key"]
        message = "This form placed an order before, with other values: check them, then place."
        return _order_form(request, service, values, message=message, status_code=409)
    except InvalidInput as err:
        return _order_form(
            request, service, values, field=err.field, message=err.reason, status_code=422
        )
    except ServiceError as err:
        return _order_form(request, service, values, message=str(err), status_code=_status_of(err))
    return _back_to(_customer_link(service, order.order_number))


def _customer_link(service: OrderService, order_number: str, **query: str) -> str:
    """The order's page as its customer opens it: with the token in the link."""
    token = service.access.order_token(order_number)
    return f"/orders/{order_number}?{urlencode({'token': token, **query})}"


# --- An order ----------------------------------------------------------------------------------


PAGE_TITLES = {401: "Link needed", 403: "Not this order", 429: "Not now"}


def _order_access(
    request: Request, service: OrderService, order_number: str, token: str | None
) -> Actor | HTMLResponse:
    """Who may see order ``order_number`` here, by the API's rule (`require_order`: an
    operator, or its customer with its token, decided before any lookup); else the refusal
    page."""
    visitor: Visitor = request.state.visitor
    caller = Caller(source=visitor.source, operator=visitor.operator, order_token=token or None)
    limiter: AccessLimiter = request.app.state.access_limiter
    try:
        if caller.operator is None:
            limiter.refuse_if_exceeded(visitor.source, FAILED_ATTEMPTS)
        return require_order(caller, order_number, service.access, limiter)
    except Problem as err:
        message = err.detail
        if err.status == 401:
            message = (
                f"Order {order_number}'s page opens with the link it was placed with (it "
                "carries the order's token), or for an operator (/login)."
            )
        title = PAGE_TITLES.get(err.status, "Not accepted")
        return _page(request, "message.html", {"title": title, "message": message}, err.status)


async def _order_page(
    request: Request,
    service: OrderService,
    order_number: str,
    *,
    token: str | None,
    error: str | None = None,
    status_code: int = 200,
    preview: AmendPreview | None = None,
) -> HTMLResponse:
    """The order's page, with the error of a button that could not act, if any, and the
    amendment to confirm (``preview``); ``token``: the customer's (None for an operator),
    carried by the page's links and forms."""
    visitor: Visitor = request.state.visitor
    query = f"?{urlencode({'token': token})}" if token else ""
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
    amendments: list[AmendmentRecord] = []
    try:
        placed = await service.order(order_number)
        amendments = await service.amendments(order_number)
    except ServiceError as err:
        details_error = f"What was ordered cannot be shown now: {err}"
    else:
        details = views.details(placed, amendments) if placed is not None else None
    amendable = False
    if outcome.status is OrderStatus.RUNNING and details is not None:
        try:
            amendable = (await service.order_now(order_number)).amendable
        except ServiceError:
            amendable = False
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
            "payments": (money := views.money(service.payments(order_number=order_number))),
            "net": views.net(money),
            "payments_url": f"/api/orders/{order_number}/payments{query}",
            "waiting": views.needs_operator(outcome),
            "can_cancel": views.can_cancel(outcome),
            "amendments": amendments,
            "amendable": amendable,
            "counts": views.counts(details),
            "menu": MENU,
            "preview": preview,
            "running": outcome.status is OrderStatus.RUNNING,
            "web_ui_url": data["web_ui_url"],
            "events_url": f"/api/orders/{order_number}/events{query}",
            "token": token,
            "audit": (
                await service.access.audit(order_number=order_number)
                if visitor.operator is not None
                else []
            ),
            "error": error,
            "notice": views.notice(outcome, request.query_params.get("done")),
        },
        status_code,
    )


@router.get("/orders/{order_number}", response_class=HTMLResponse)
async def order_page(
    request: Request,
    service: Service,
    visitor: PageVisitor,
    order_number: str,
    token: str | None = None,
) -> HTMLResponse:
    """The order's outcome and saga timeline; live while it runs. For its customer (the
    link it was placed with) or an operator."""
    actor = _order_access(request, service, order_number, token)
    if isinstance(actor, HTMLResponse):
        return actor
    return await _order_page(
        request, service, order_number, token=None if actor.is_operator else token
    )


@router.post("/orders/{order_number}/cancel", response_class=HTMLResponse)
async def cancel_order(
    request: Request, service: Service, visitor: PageVisitor, order_number: str
) -> Response:
    """Cancel the order, then back to its page (which shows the rollback). Its customer
    (the form carries the token) or an operator."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    token = form.get("token") or None
    actor = _order_access(request, service, order_number, token)
    if isinstance(actor, HTMLResponse):
        return actor
    token = None if actor.is_operator else token
    try:
        if not ORDER_NUMBER.fullmatch(order_number):
            raise OrderNotFound(order_number)
        await service.cancel(order_number, by=actor)
    except ServiceError as err:
        return await _order_page(
            request,
            service,
            order_number,
            token=token,
            error=str(err),
            status_code=_status_of(err),
        )
    if token:
        return _back_to(_customer_link(service, order_number, done="cancel"))
    return _back_to(f"/orders/{order_number}?done=cancel")


@dataclass(frozen=True)
class AmendPreview:
    """An amendment shown before it is confirmed: the order's new total and what moves."""

    wanted: dict[str, int]
    """Menu item -> how many the order would have."""
    address: dict[str, str]
    """The address fields given (the others stay)."""
    total: int
    charge: int
    refund: int
    amendment_id: str
    """Keys the confirmation: posting it twice changes the order once."""


ADDRESS_FIELDS = ("line1", "line2", "city", "state", "postal_code")


def _wanted(form: Mapping[str, str]) -> dict[str, int]:
    """The quantities the amend form asks for, by menu item; InvalidInput if one is bad."""
    wanted = {}
    for index, item in enumerate(MENU):
        raw = form.get(f"qty-{index}", "").strip()
        if not raw.isdigit() or int(raw) > MAX_PIZZAS:
            raise InvalidInput(f"'{item}': a number from 0 to {MAX_PIZZAS}", field="quantity")
        wanted[item] = int(raw)
    return wanted


@router.post("/orders/{order_number}/amend", response_class=HTMLResponse)
async def amend_order(
    request: Request, service: Service, visitor: PageVisitor, order_number: str
) -> Response:
    """Change the order: ``action=preview`` shows the new total, ``action=confirm`` makes the
    change, then back to the order's page. Its customer (the form carries the token) or an
    operator."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    token = form.get("token") or None
    actor = _order_access(request, service, order_number, token)
    if isinstance(actor, HTMLResponse):
        return actor
    token = None if actor.is_operator else token
    try:
        if not ORDER_NUMBER.fullmatch(order_number):
            raise OrderNotFound(order_number)
        wanted = _wanted(form)
        address = {f: form[f].strip() for f in ADDRESS_FIELDS if form.get(f, "").strip()}
        now = await service.order_now(order_number)
        before = Counter(pizza.description for pizza in now.items)
        add, remove = views.change_from_counts(before, wanted)
        if form.get("action") == "confirm":
            await service.amend(
                order_number,
                add=add,
                remove=remove,
                address=address or None,
                amendment_id=form.get("amendment_id") or None,
                by=actor,
            )
        else:
            repriced = await service.preview_amendment(
                order_number, add=add, remove=remove, address=address or None
            )
            preview = AmendPreview(
                wanted=wanted,
                address=address,
                total=repriced.price.total,
                charge=repriced.charge,
                refund=repriced.refund,
                amendment_id=uuid.uuid4().hex,
            )
            return await _order_page(request, service, order_number, token=token, preview=preview)
    except ServiceError as err:
        return await _order_page(
            request,
            service,
            order_number,
            token=token,
            error=str(err),
            status_code=_status_of(err),
        )
    if token:
        return _back_to(_customer_link(service, order_number, done="amend"))
    return _back_to(f"/orders/{order_number}?done=amend")


@router.post("/orders/{order_number}/resolve", response_class=HTMLResponse)
async def resolve_order(
    request: Request, service: Service, visitor: PageVisitor, order_number: str
) -> Response:
    """An operator's decision (retry, or skip with a reason), then back to the order's page.
    Operators only; the decision is in the audit trail with their name."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    if visitor.operator is None:
        return _operators_only(request)
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
            by=visitor.actor(),
        )
    except ServiceError as err:
        return await _order_page(
            request,
            service,
            order_number,
            token=None,
            error=str(err),
            status_code=_status_of(err),
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
async def stock_page(request: Request, service: Service, visitor: PageVisitor) -> Response:
    """Pizzas on hand, a form to restock, and every charge and refund (newest first).
    Operators only."""
    if visitor.operator is None:
        return _to_login(request)
    return _stock_page(request, service)


@router.post("/stock", response_class=HTMLResponse)
async def restock(request: Request, service: Service, visitor: PageVisitor) -> Response:
    """Set the stock of the items the form names, then back to the stock page. Operators
    only (in the audit trail)."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    if visitor.operator is None:
        return _operators_only(request)
    changes: dict[str, int] = {}
    try:
        for index, item in enumerate(MENU):
            raw = form.get(f"qty.{index}", "").strip()
            if raw == "":
                continue
            if not raw.isdigit() or len(raw) > 9:
                raise InvalidInput("must be a whole number from 0 to 1000000", field=item)
            changes[item] = int(raw)
        service.set_stock(changes, by=visitor.actor())
    except InvalidInput as err:
        return _stock_page(request, service, error=str(err), status_code=422)
    return _back_to("/stock?done=restock")


# --- Operator login ------------------------------------------------------------------------------


def _next_page(value: str | None) -> str:
    """Where to go after the login: a path of this site only (never another site's URL)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, _: PageVisitor, next: str | None = None) -> HTMLResponse:
    """The operator's login: their API key (`pizza operator add`)."""
    return _page(request, "login.html", {"next": _next_page(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, service: Service, visitor: PageVisitor) -> Response:
    """Check the key; a session cookie (HttpOnly, SameSite) for SESSION_SECONDS, or the
    login again. Failed attempts are limited per client address."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    next_page = _next_page(form.get("next"))
    limiter: AccessLimiter = request.app.state.access_limiter
    try:
        limiter.refuse_if_exceeded(source_of(request), LOGIN_ATTEMPTS)
    except Problem as err:
        return _page(request, "login.html", {"next": next_page, "error": err.detail}, 429)
    operator = await service.access.operator_by_key(form.get("key", "").strip())
    if operator is None:
        limiter.failed(source_of(request), LOGIN_ATTEMPTS)
        error = "That is not an operator key (or it was revoked)."
        return _page(request, "login.html", {"next": next_page, "error": error}, 401)
    response = _back_to(next_page)
    response.set_cookie(
        SESSION_COOKIE,
        service.access.session_for(operator),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request, service: Service, _: PageVisitor) -> Response:
    """End the operator's page sessions (this browser's, and any other of their key's)."""
    form = await _accepted_form(request)
    if isinstance(form, HTMLResponse):
        return form
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:  # over everywhere, not just forgotten here: a copied cookie dies with it
        await service.access.log_out(cookie)
    response = _back_to("/login")
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax", secure=_secure(request))
    return response
