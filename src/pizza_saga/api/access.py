"""Who is calling: the credentials a request carries, checked, as route dependencies.

- An operator sends an API key (`pizza operator add`) as ``Authorization: Bearer pzop_...``,
  or, on the pages, the session cookie a login with that key set.
- A customer sends the token their order was placed with (``access_token`` in the answer;
  the order page's link carries it), as ``Authorization: Bearer <token>``; it opens that one
  order and nothing else.

Without credentials: 401. With credentials that do not open what is asked (a customer's
token on another order, or on an operator's route): 403, decided before anything is looked
up, so that an answer never tells whether some other order exists. Failed attempts are
rate limited per client address.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import limits
from fastapi import Depends, Query, Request
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from pizza_saga.access.service import AccessService, Actor
from pizza_saga.access.store import KEY_PREFIX, Operator
from pizza_saga.api.deps import Service
from pizza_saga.api.problems import Problem

SESSION_COOKIE = "pizza_session"
"""The operator's page session (HttpOnly, SameSite=Lax; forms also need their CSRF token)."""
FAILED_ATTEMPTS = limits.parse("20/minute")
"""Bad credentials a client address may send before it is refused for a while (429)."""
BEARER = "bearer "


class AccessLimiter:
    """Counts failed credential attempts (and logins) per client address, in this process."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def refuse_if_exceeded(self, source: str, limit: limits.RateLimitItem) -> None:
        """429 (with Retry-After) if ``source`` has used up ``limit``."""
        if not self._limiter.test(limit, source):
            reset = self._limiter.get_window_stats(limit, source).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            raise Problem(
                429,
                f"too many failed attempts from {source}; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def failed(self, source: str, limit: limits.RateLimitItem) -> None:
        self._limiter.hit(limit, source)


def source_of(request: Request) -> str:
    """The client's address, as the API sees it (its proxy's, behind one without
    forwarded headers)."""
    return request.client.host if request.client else "unknown"


def _access(request: Request) -> AccessService:
    access: AccessService = request.app.state.service.access
    return access


def _limiter(request: Request) -> AccessLimiter:
    limiter: AccessLimiter = request.app.state.access_limiter
    return limiter


def presented_bearer(request: Request) -> str | None:
    """The bearer credential of ``Authorization``, if any."""
    header = request.headers.get("authorization", "")
    if header[: len(BEARER)].lower() != BEARER:
        return None
    return header[len(BEARER) :].strip() or None


@dataclass(frozen=True)
class Caller:
    """What a request's credentials are: an operator, a customer's order token, or none."""

    source: str
    operator: Operator | None = None
    order_token: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.operator is None and self.order_token is None


def _unauthenticated(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="pizza-saga"'})


async def caller_of(request: Request, *, cookies: bool) -> Caller:
    """The request's caller; 401 for credentials that are not valid (unknown or revoked
    key, expired session), 429 after too many of them."""
    source = source_of(request)
    limiter = _limiter(request)
    access = _access(request)
    bearer = presented_bearer(request)
    if bearer is not None:
        limiter.refuse_if_exceeded(source, FAILED_ATTEMPTS)
        if not bearer.startswith(KEY_PREFIX + "_"):
            return Caller(source=source, order_token=bearer)
        operator = await access.operator_by_key(bearer)
        if operator is None:
            limiter.failed(source, FAILED_ATTEMPTS)
            raise _unauthenticated("this operator key is not valid (unknown, or revoked)")
        return Caller(source=source, operator=operator)
    cookie = request.cookies.get(SESSION_COOKIE) if cookies else None
    if cookie:
        operator = await access.operator_by_session(cookie)
        if operator is not None:
            return Caller(source=source, operator=operator)
    return Caller(source=source)


def require_operator(caller: Caller) -> Actor:
    """The operator ``caller`` is; 401 without credentials, 403 for a customer's token."""
    if caller.operator is not None:
        return Actor.operator(caller.operator.name, source=caller.source)
    if caller.anonymous:
        raise _unauthenticated(
            "operators only: send Authorization: Bearer <operator key> (`pizza operator add`)"
        )
    raise Problem(403, "operators only: an order's token opens that order and nothing else")


def require_order(
    caller: Caller, order_number: str, access: AccessService, limiter: AccessLimiter
) -> Actor:
    """Who may see or act on ``order_number``: an operator, or the customer whose token opens
    it. 401 without credentials; 403 for any other token (whether or not that order
    exists)."""
    if caller.operator is not None:
        return Actor.operator(caller.operator.name, source=caller.source)
    if caller.order_token is None:
        raise _unauthenticated(
            f"send Authorization: Bearer <the access_token order {order_number} was placed "
            "with, or an operator key>"
        )
    if not access.opens_order(caller.order_token, order_number):
        limiter.failed(caller.source, FAILED_ATTEMPTS)
        raise Problem(403, f"this token does not open order {order_number}")
    return Actor.customer(source=caller.source)


async def _operator(request: Request) -> Actor:
    return require_operator(await caller_of(request, cookies=False))


async def _order_actor(order_number: str, request: Request, service: Service) -> Actor:
    caller = await caller_of(request, cookies=False)
    return require_order(caller, order_number, service.access, _limiter(request))


async def _stream_operator(request: Request) -> Actor:
    return require_operator(await caller_of(request, cookies=True))


async def _stream_order_actor(
    order_number: str,
    request: Request,
    service: Service,
    token: Annotated[
        str | None,
        Query(
            max_length=200,
            description="The order's access token, for clients that cannot send headers "
            "(a browser's EventSource).",
        ),
    ] = None,
) -> Actor:
    caller = await caller_of(request, cookies=True)
    if caller.anonymous and token:
        caller = Caller(source=caller.source, order_token=token)
    return require_order(caller, order_number, service.access, _limiter(request))


StreamOperator = Annotated[Actor, Depends(_stream_operator)]
"""An event stream's operator: as OperatorActor, or a page session's cookie."""
StreamOrderActor = Annotated[Actor, Depends(_stream_order_actor)]
"""An event stream's reader of one order: as OrderActor, or a page session, or ``?token=``."""
OperatorActor = Annotated[Actor, Depends(_operator)]
"""The operator calling (401/403 otherwise), as a route parameter."""
OrderActor = Annotated[Actor, Depends(_order_actor)]
"""The operator, or the customer of the order in the path (401/403 otherwise)."""


SECRET_PARAMETERS = frozenset({"token"})
"""Query parameters that carry credentials: never in a trace."""
_URL_ATTRIBUTES = ("http.target", "http.url", "url.query", "url.full")


def scrub_trace(span: Any, scope: dict[str, Any]) -> None:
    """A request span's hook: the order token of a `?token=` link out of its URL attributes."""
    raw = scope.get("query_string", b"").decode("latin-1")
    if not raw or not any(k in SECRET_PARAMETERS for k, _ in parse_qsl(raw)):
        return
    redacted = urlencode(
        [(k, "REDACTED" if k in SECRET_PARAMETERS else v) for k, v in parse_qsl(raw)]
    )
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and raw in value:
            span.set_attribute(name, value.replace(raw, redacted))
