"""The identity use cases: operators and their keys, who a request comes from, and the
audit trail. The faces (CLI, API, pages) call this; none reads the tables itself."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pizza_saga.access.store import (
    AuditEntry,
    AuditLog,
    InvalidOperator,
    Operator,
    OperatorKey,
    OperatorStore,
)
from pizza_saga.access.tokens import AccessTokens


class Role(StrEnum):
    """What a caller may do: an operator everything, a customer their own order."""

    OPERATOR = "operator"
    CUSTOMER = "customer"


@dataclass(frozen=True)
class Actor:
    """Who asks for a use case, as the face established it, and from where."""

    role: Role
    name: str
    """The operator's name; ``customer`` for a customer."""
    source: str
    """The client's address, or ``cli`` for the operator on the machine."""

    @classmethod
    def operator(cls, name: str, *, source: str) -> Actor:
        return cls(Role.OPERATOR, name, source)

    @classmethod
    def customer(cls, *, source: str) -> Actor:
        return cls(Role.CUSTOMER, "customer", source)

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR


class AccessService:
    """Operator keys, callers' credentials and the audit trail over the store."""

    def __init__(self, *, operators: OperatorStore, audit: AuditLog, tokens: AccessTokens) -> None:
        self._operators = operators
        self._audit = audit
        self.tokens = tokens

    # --- operators ---------------------------------------------------------------------------

    async def add_operator(self, name: str, *, by: Actor) -> tuple[OperatorKey, str]:
        """A new key for operator ``name`` and its secret (to show once); InvalidOperator."""
        key, secret = await asyncio.to_thread(self._operators.add, name)
        await self.record(by, "operator.add", detail=f"key {key.key_id} for {name}")
        return key, secret

    async def operator_keys(self) -> list[OperatorKey]:
        return await asyncio.to_thread(self._operators.keys)

    async def revoke(self, which: str, *, by: Actor) -> list[OperatorKey]:
        """Revoke key ``which`` or every key of operator ``which``; InvalidOperator if none."""
        revoked = await asyncio.to_thread(self._operators.revoke, which)
        if not revoked:
            raise InvalidOperator(f"no active operator key has the id or name {which!r}")
        keys = ", ".join(key.key_id for key in revoked)
        await self.record(by, "operator.revoke", detail=f"keys {keys}")
        return revoked

    # --- credentials -------------------------------------------------------------------------

    async def operator_by_key(self, presented: str) -> Operator | None:
        """The operator an API key belongs to; None if it is unknown or revoked."""
        return await asyncio.to_thread(self._operators.authenticate, presented)

    async def operator_by_session(self, cookie: str) -> Operator | None:
        """The operator of a valid page session whose key is still active."""
        session = self.tokens.session_of(cookie)
        if session is None:
            return None
        issued = datetime.fromtimestamp(session.issued_ms / 1000, UTC)
        return await asyncio.to_thread(
            functools.partial(self._operators.active, session.key_id, issued=issued)
        )

    async def log_out(self, cookie: str) -> None:
        """End the page sessions of the key ``cookie`` was issued for, in every browser."""
        session = self.tokens.session_of(cookie)
        if session is not None:
            await asyncio.to_thread(self._operators.end_sessions, session.key_id)

    def session_for(self, operator: Operator) -> str:
        return self.tokens.session(operator.key_id)

    def order_token(self, order_number: str) -> str:
        """The customer's token to ``order_number`` (returned when it is placed)."""
        return self.tokens.order_token(order_number)

    def opens_order(self, token: str, order_number: str) -> bool:
        return self.tokens.opens_order(token, order_number)

    # --- audit -------------------------------------------------------------------------------

    async def record(
        self,
        actor: Actor,
        action: str,
        *,
        order_number: str | None = None,
        reason: str = "",
        detail: str = "",
    ) -> None:
        """Append to the audit trail what ``actor`` did."""
        await asyncio.to_thread(
            self.record_now,
            actor,
            action,
            order_number=order_number,
            reason=reason,
            detail=detail,
        )

    def record_now(
        self,
        actor: Actor,
        action: str,
        *,
        order_number: str | None = None,
        reason: str = "",
        detail: str = "",
    ) -> None:
        """`record`, blocking (for a use case that runs on a thread)."""
        self._audit.record(
            actor=actor.name if actor.is_operator else f"customer of {order_number}",
            action=action,
            order_number=order_number,
            reason=reason,
            source=actor.source,
            detail=detail,
        )

    async def audit(self, *, order_number: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The order's trail, oldest first; or the latest ``limit`` entries."""
        return await asyncio.to_thread(
            lambda: self._audit.entries(order_number=order_number, limit=limit)
        )
