"""Every error as ``application/problem+json`` (RFC 9457), never a stack trace.

The service's typed errors map to HTTP statuses here, once; validation errors name the
field (a JSON pointer into the request) and the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from pizza_saga.order.service import ErrorKind, InvalidInput, ServiceError

MEDIA_TYPE = "application/problem+json"
MAX_ERRORS = 20
"""Validation errors listed in one answer (the rest counted)."""
MAX_ERROR_TEXT = 200
log = logging.getLogger(__name__)

STATUS_OF: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.DUPLICATE: 409,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.FORBIDDEN: 403,
}
"""The HTTP status of each kind of service error (the pages answer with the same)."""
TITLES = {
    400: "Bad request",
    401: "Credentials required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(Exception):
    """An error a route answers with, as a problem document."""

    def __init__(
        self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra
        self.headers = headers or {}


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    """A problem response: type, title, status, detail, and any extension members."""
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def _pointer(location: tuple[Any, ...] | list[Any]) -> str:
    """A JSON pointer (or parameter name) from pydantic's error location."""
    where = list(location)
    if where and where[0] == "body":
        return "/" + "/".join(str(part) for part in where[1:])
    return str(where[-1]) if where else ""


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    """``{field, reason}`` of one validation error; a body that is not JSON is the whole
    body's error (pointer ""), not that of the character position where parsing stopped."""
    if error.get("type") == "json_invalid":
        where = error.get("loc", ())[-1]
        cause = error.get("ctx", {}).get("error", "")
        return {"field": "", "reason": f"not valid JSON at character {where}: {cause}"}
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return {"field": _pointer(error.get("loc", ())), "reason": reason}


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, err: ServiceError) -> JSONResponse:
        status = STATUS_OF[err.kind]
        extra: dict[str, Any] = {}
        if isinstance(err, InvalidInput) and err.field:
            extra["errors"] = [{"field": err.field, "reason": err.reason}]
        return problem(status, str(err), **extra)

    @app.exception_handler(Problem)
    async def route_problem(_: Request, err: Problem) -> JSONResponse:
        response = problem(err.status, err.detail, **err.extra)
        response.headers.update(err.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        # At most MAX_ERRORS, each cut short: the answer to a body of many bad keys stays small.
        found = err.errors()
        errors = [_field_error(e) for e in found[:MAX_ERRORS]]
        for e in errors:
            e["field"], e["reason"] = e["field"][:MAX_ERROR_TEXT], e["reason"][:MAX_ERROR_TEXT]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        if len(found) > MAX_ERRORS:
            detail += f"; and {len(found) - MAX_ERRORS} more"
        return problem(422, detail or "invalid request", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        response = problem(err.status_code, str(err.detail))
        response.headers.update(err.headers or {})  # 405's Allow, for one
        return response

    @app.exception_handler(OperationalError)
    async def store_away(_: Request, err: OperationalError) -> JSONResponse:
        # The store database is down or restarting: try again, not "the service is broken".
        log.warning("the store database does not answer: %s", err.orig)
        response = problem(503, "the store database does not answer; try again in a moment")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(500, "the service failed unexpectedly; the error is in its log")
