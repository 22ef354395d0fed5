"""The order service: every use case of the product, with typed errors.

Placing (placing.py), following (following.py), amending (amending.py) and operating
(operating.py: cancelling,
resolving, stock, payments and manual refunds, readiness) orders, over what they share
(_core.py); before a deploy, replaying them against the new code (replaying.py: ReplayCheck,
which needs no store); the errors (errors.py) have kinds each face maps once. The CLI, the HTTP API
and the pages are thin faces over `OrderService`: they never talk to Temporal or the stores
on their own.
"""

from __future__ import annotations

from pizza_saga.order.service._core import POLLER_FRESH, ServiceCore
from pizza_saga.order.service.amending import Amending
from pizza_saga.order.service.errors import (
    AlreadyFinished,
    CannotAmend,
    ErrorKind,
    HistoryFileError,
    IdempotencyKeyReused,
    InvalidInput,
    NotAllowed,
    NothingToResolve,
    NoWorker,
    OrderAlreadyPlaced,
    OrderNotFound,
    RefundNotSkipped,
    ReplayFailed,
    RequestInProgress,
    ServiceError,
    TemporalUnavailable,
)
from pizza_saga.order.service.following import Following, OrderPage, OrderSummary, snapshot_id
from pizza_saga.order.service.operating import (
    MAX_REASON,
    MAX_REFERENCE,
    MAX_STOCK,
    ManualRefundRecorded,
    Operating,
    Readiness,
)
from pizza_saga.order.service.placing import Placement, Placing
from pizza_saga.order.service.replaying import Breakage, OrderReplay, ReplayCheck, ReplayReport
from pizza_saga.order.service.sandbox import SandboxCard, SandboxHints, sandbox_hints


class OrderService(Placing, Following, Amending, Operating, ServiceCore):
    """The use cases of pizza orders over one Temporal client and one store database."""

    sandbox = staticmethod(sandbox_hints)
    """The sandbox's cards, special values and the seed's order, for a face to offer."""


__all__ = [
    "MAX_REASON",
    "MAX_REFERENCE",
    "MAX_STOCK",
    "POLLER_FRESH",
    "AlreadyFinished",
    "Breakage",
    "CannotAmend",
    "ErrorKind",
    "HistoryFileError",
    "IdempotencyKeyReused",
    "InvalidInput",
    "ManualRefundRecorded",
    "NoWorker",
    "NotAllowed",
    "NothingToResolve",
    "OrderAlreadyPlaced",
    "OrderNotFound",
    "OrderPage",
    "OrderReplay",
    "OrderService",
    "OrderSummary",
    "Placement",
    "Readiness",
    "RefundNotSkipped",
    "ReplayCheck",
    "ReplayFailed",
    "ReplayReport",
    "RequestInProgress",
    "SandboxCard",
    "SandboxHints",
    "ServiceError",
    "TemporalUnavailable",
    "snapshot_id",
]
