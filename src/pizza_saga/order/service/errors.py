"""The order service's typed errors: each has a kind, which each face maps once (exit
statuses, HTTP statuses)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pizza_saga.order.client import OrderStatus


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
    FORBIDDEN = "forbidden"
    """The caller may not do this (a customer asking for an operator's use case)."""


class ServiceError(Exception):
    """A use case could not be carried out; the message says why, for a person."""

    kind: ClassVar[ErrorKind] = ErrorKind.INVALID


class NotAllowed(ServiceError):
    """Only an operator may do this."""

    kind = ErrorKind.FORBIDDEN


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


class CannotAmend(ServiceError):
    """The order takes no amendment now: past its cut-off (the kitchen is done), or ending."""

    kind = ErrorKind.CONFLICT


class NothingToResolve(ServiceError):
    """No compensation of the order waits for the decision given."""

    kind = ErrorKind.CONFLICT


class RefundNotSkipped(ServiceError):
    """A manual refund is recorded only for an order whose refund an operator skipped: any
    other order's money the product refunds (or has refunded) by itself."""

    kind = ErrorKind.CONFLICT

    def __init__(self, order_number: str, state: str) -> None:
        super().__init__(
            f"order {order_number}: its refund was not skipped by an operator ({state}); a "
            "manual refund is recorded only after `pizza resolve --skip` of the refund"
        )
        self.order_number, self.state = order_number, state


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


class HistoryFileError(InvalidInput):
    """A file given as a workflow history cannot be read as one."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}", field="histories")
        self.path = path


class ReplayFailed(ServiceError):
    """The replay itself stopped (not one history's verdict): nothing can be said of the rest."""

    kind = ErrorKind.UNAVAILABLE
