"""Operator keys and the audit trail, in the store database.

An operator key is shown once, when it is made (`pizza operator add`); the store keeps its
id, its operator's name and a SHA-256 of its secret (the secret is 256 random bits: a slow
hash would add nothing). A key is found by its id, then its hash compared in constant time;
revoking it is immediate for the API and for the page sessions it opened.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Index, String, Text, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from pizza_saga.common.db import Base, as_utc, utcnow

KEY_PREFIX = "pzop"
"""Operator keys read ``pzop_<id>_<secret>``: recognisable in a leak scan, parsed at once."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_REASON = 500
"""What the audit keeps of a reason (the workflow refuses longer ones)."""


class OperatorKeyRow(Base):
    """One operator API key: whose, its secret's hash, whether revoked."""

    __tablename__ = "operator_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    sessions_after: Mapped[datetime | None] = mapped_column(default=None)
    """Page sessions of this key issued before then are over (a logout)."""


class AuditRow(Base):
    """One thing an operator (or a customer, on their order) did."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_order_number", "order_number"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    order_number: Mapped[str | None] = mapped_column(String(40), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(80), default="")
    """Where from: the client's address, or ``cli`` for the operator's own machine."""
    detail: Mapped[str] = mapped_column(Text, default="")


class InvalidOperator(ValueError):
    """An operator name or key that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Operator:
    """An operator, as a key authenticates them."""

    name: str
    key_id: str


@dataclass(frozen=True)
class OperatorKey:
    """An operator key as `pizza operator list` shows it (never its secret)."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail."""

    at: datetime
    actor: str
    action: str
    order_number: str | None
    reason: str
    source: str
    detail: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    """``name`` if it can name an operator; InvalidOperator saying why not."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidOperator(
            "name: 1 to 64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    return name


class OperatorStore:
    """Operator keys: made, listed, revoked, and checked on every request."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, name: str) -> tuple[OperatorKey, str]:
        """A new key for ``name``, and the key itself (shown once, never stored)."""
        check_name(name)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        created = utcnow()
        with self._engine.begin() as conn:
            conn.execute(
                insert(OperatorKeyRow).values(
                    key_id=key_id, name=name, secret_hash=_hash(secret), created_at=created
                )
            )
        key = OperatorKey(key_id=key_id, name=name, created_at=created, revoked_at=None)
        return key, f"{KEY_PREFIX}_{key_id}_{secret}"

    def key(self, key_id: str) -> OperatorKey | None:
        with Session(self._engine) as session:
            row = session.get(OperatorKeyRow, key_id)
            return None if row is None else _key(row)

    def keys(self) -> list[OperatorKey]:
        """Every key ever made, oldest first."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(OperatorKeyRow).order_by(OperatorKeyRow.created_at, OperatorKeyRow.key_id)
            )
            return [_key(row) for row in rows]

    def any_active(self) -> bool:
        """Whether some operator has a key that is not revoked."""
        return any(key.revoked_at is None for key in self.keys())

    def revoke(self, which: str) -> list[OperatorKey]:
        """Revoke the key with id ``which``, or every key of the operator named ``which``;
        the keys revoked now (none: nothing active goes by that name or id)."""
        row = OperatorKeyRow
        with self._engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(row.key_id).where(
                        (row.key_id == which) | (row.name == which), row.revoked_at.is_(None)
                    )
                ).scalars()
            )
            if ids:
                conn.execute(
                    update(row)
                    .where(row.key_id.in_(ids), row.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
        return [key for key_id in ids if (key := self.key(key_id)) is not None]

    def authenticate(self, presented: str) -> Operator | None:
        """The operator whose active key ``presented`` is; None for anything else."""
        parts = presented.split("_", 2) if len(presented) <= 200 else []
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        key_id, secret = parts[1], parts[2]
        with Session(self._engine) as session:
            row = session.get(OperatorKeyRow, key_id)
            if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
                return None
            if row.revoked_at is not None:
                return None
            return Operator(name=row.name, key_id=row.key_id)

    def active(self, key_id: str, *, issued: datetime | None = None) -> Operator | None:
        """The operator of key ``key_id`` if it is not revoked and, for a page session
        ``issued`` then, no logout ended it since."""
        with Session(self._engine) as session:
            row = session.get(OperatorKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return None
            after = row.sessions_after
            if issued is not None and after is not None and issued <= as_utc(after):
                return None
            return Operator(name=row.name, key_id=row.key_id)

    def end_sessions(self, key_id: str) -> None:
        """End every page session of key ``key_id`` issued until now (a logout)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(OperatorKeyRow)
                .where(OperatorKeyRow.key_id == key_id)
                .values(sessions_after=utcnow())
            )


def _key(row: OperatorKeyRow) -> OperatorKey:
    return OperatorKey(
        key_id=row.key_id,
        name=row.name,
        created_at=as_utc(row.created_at),
        revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
    )


class AuditLog:
    """The audit trail: appended to, read per order or most recent first."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        *,
        actor: str,
        action: str,
        order_number: str | None = None,
        reason: str = "",
        source: str = "",
        detail: str = "",
    ) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(AuditRow).values(
                    at=utcnow(),
                    actor=actor[:80],
                    action=action,
                    order_number=order_number,
                    reason=reason[:MAX_REASON],
                    source=source[:80],
                    detail=detail,
                )
            )

    def entries(self, *, order_number: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The trail of ``order_number`` (oldest first), or the latest ``limit`` entries."""
        query = select(AuditRow)
        if order_number is not None:
            query = query.where(AuditRow.order_number == order_number).order_by(AuditRow.id)
        else:
            query = query.order_by(AuditRow.id.desc())
        with Session(self._engine) as session:
            rows = list(session.scalars(query.limit(limit)))
        return [
            AuditEntry(
                at=as_utc(row.at),
                actor=row.actor,
                action=row.action,
                order_number=row.order_number,
                reason=row.reason,
                source=row.source,
                detail=row.detail,
            )
            for row in rows
        ]
