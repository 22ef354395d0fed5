"""Idempotency keys of order requests: one key and one body, one order, however often sent.

A request that carries a key claims it with ``INSERT ... ON CONFLICT DO NOTHING`` (of two
requests at once, in any processes, exactly one claims it), recording a hash of its body and
the order's number. The claimer places the order and marks the key placed, or releases the
key when placing failed, so that the request can be sent again. A request finding the key
taken compares bodies: another body is refused; the same body gets the same order.

The body hash is an HMAC under a key of the encryption key ring, whose id is kept with it:
the body holds a card number, and a plain hash of it could be matched by trying numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Engine, String, bindparam, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column
from temporal_saga.effects import claimed, insert_if_absent

from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.db import Base, as_utc, utcnow

MAX_KEY_LENGTH = 255
KEY_LIFE = timedelta(days=1)
"""How long a key is remembered: a request sent again within it gets its first order back;
later, the order's number (one number, one order, ever) still refuses a second charge."""


class IdempotencyKeyRow(Base):
    """One idempotency key: the request it was first sent with, and its order."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(200))
    """``<key id>:<hex HMAC-SHA256>`` of the request's order."""
    order_number: Mapped[str] = mapped_column(String(40))
    claim: Mapped[str] = mapped_column(String(32))
    """Which request holds the key: only it marks the key placed or releases it."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    placed_at: Mapped[datetime | None] = mapped_column(default=None)
    """When the order was placed; None while its request is still placing it."""


class KeyState(StrEnum):
    """What a request finds when it claims a key."""

    CLAIMED = "claimed"
    """The key is new: this request places the order."""
    PLACED = "placed"
    """The same body placed its order under this key before."""
    PENDING = "pending"
    """Another request with the same body holds the key and is placing the order."""
    REUSED = "reused"
    """The key was sent with another body."""


@dataclass(frozen=True)
class KeyClaim:
    """The outcome of claiming a key, and the key's record."""

    state: KeyState
    order_number: str
    claim: str
    """The token of the request holding the key (this one's when CLAIMED)."""
    created_at: datetime


class IdempotencyStore:
    """Claims, marks and releases idempotency keys in the store database."""

    def __init__(self, engine: Engine, ring: KeyRing) -> None:
        self._engine = engine
        self._ring = ring
        self._insert = insert_if_absent(engine, IdempotencyKeyRow, "key").returning(
            IdempotencyKeyRow.key
        )
        self._read = select(
            IdempotencyKeyRow.body_hash,
            IdempotencyKeyRow.order_number,
            IdempotencyKeyRow.claim,
            IdempotencyKeyRow.created_at,
            IdempotencyKeyRow.placed_at,
        ).where(IdempotencyKeyRow.key == bindparam("k"))
        self._held = (IdempotencyKeyRow.key == bindparam("k")) & (
            IdempotencyKeyRow.claim == bindparam("c")
        )

    def fingerprint(self, body: bytes, *, key_id: str | None = None) -> str:
        """The body's keyed hash, under ``key_id`` (default: the ring's primary key); the
        service also signs its page tokens with it."""
        key_id = key_id or self._ring.primary
        digest = hmac.new(self._ring.keys[key_id], body, hashlib.sha256).hexdigest()
        return f"{key_id}:{digest}"

    def same_body(self, body: bytes, recorded: str) -> bool:
        """Whether ``body`` is the body whose hash is ``recorded``."""
        key_id, _, _ = recorded.partition(":")
        if key_id not in self._ring.keys:  # a key dropped from the ring: cannot tell
            return False
        return hmac.compare_digest(self.fingerprint(body, key_id=key_id), recorded)

    def claim(self, key: str, *, body: bytes, order_number: str) -> KeyClaim:
        """Claim ``key`` for a request with ``body`` placing ``order_number``."""
        token = uuid.uuid4().hex
        while True:
            with self._engine.begin() as conn:
                now = utcnow()
                inserted = conn.execute(
                    self._insert,
                    {
                        "key": key,
                        "body_hash": self.fingerprint(body),
                        "order_number": order_number,
                        "claim": token,
                        "created_at": now,
                        "placed_at": None,
                    },
                )
                if claimed(inserted):
                    return KeyClaim(KeyState.CLAIMED, order_number, token, now)
                row = conn.execute(self._read, {"k": key}).one_or_none()
            if row is None:  # released between the two statements: claim it again
                continue
            body_hash, number, holder, created_at, placed_at = row
            if not self.same_body(body, body_hash):
                state = KeyState.REUSED
            else:
                state = KeyState.PENDING if placed_at is None else KeyState.PLACED
            return KeyClaim(state, number, holder, as_utc(created_at))

    def placed(self, key: str, claim: str) -> None:
        """Record that the request holding ``claim`` placed its order."""
        with self._engine.begin() as conn:
            conn.execute(
                update(IdempotencyKeyRow).where(self._held).values(placed_at=utcnow()),
                {"k": key, "c": claim},
            )

    def purge(self, *, older_than: timedelta = KEY_LIFE) -> int:
        """Forget keys claimed longer than ``older_than`` ago; how many were forgotten."""
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.created_at < utcnow() - older_than
                )
            )
            return result.rowcount

    def forget_old(self) -> None:
        """`purge` with the keys' usual life (the worker's hourly housekeeping)."""
        self.purge()

    def release(self, key: str, claim: str) -> bool:
        """Free a key whose order was not placed, if ``claim`` still holds it."""
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(IdempotencyKeyRow)
                .where(self._held, IdempotencyKeyRow.placed_at.is_(None))
                .returning(IdempotencyKeyRow.key),
                {"k": key, "c": claim},
            )
            return claimed(result)
