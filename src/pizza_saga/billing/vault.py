"""The card vault: card numbers exchanged for tokens at the edge.

The edge (the order service, behind `pizza order`, the API and the order form) calls
`tokenize` before an order's workflow starts, so Temporal, its Web UI and every activity but
one see only ``tok_...`` and the last four digits. The charging activity alone calls
`detokenize`, for the order the token was made for. The number is kept AES-GCM encrypted
under the vault's own keys (not the payload codec's), bound to its token and order, and is
destroyed once the order is charged or rolled back, or when the token expires.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Connection,
    Engine,
    Index,
    LargeBinary,
    String,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from pizza_saga.billing.cards import last4
from pizza_saga.billing.models import CardToken
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.db import Base, as_utc, utcnow

TOKEN_PREFIX = "tok_"
TOKEN_PATTERN = r"^tok_[A-Za-z0-9_-]{32}$"
NONCE_BYTES = 12
DEFAULT_TTL = timedelta(minutes=15)


class CardTokenError(Exception):
    """The token cannot be charged: unknown, expired, another order's, or destroyed."""


class VaultEntry(Base):
    """One tokenized card: its number sealed, until charged, rolled back or expired."""

    __tablename__ = "card_vault"

    token: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_number: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(100))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Nonce and ciphertext of the number; None once destroyed."""
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    destroyed_at: Mapped[datetime | None]

    # The purge looks only at numbers still kept (migration 0004).
    __table_args__ = (
        Index(
            "ix_card_vault_kept_expiry",
            "expires_at",
            sqlite_where=text("sealed IS NOT NULL"),
            postgresql_where=text("sealed IS NOT NULL"),
        ),
    )


def brand_of(number: str) -> str:
    """The card network, from the number's first digits (what a receipt shows)."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number.startswith("6"):
        return "discover"
    return "card"


@dataclass(frozen=True)
class _Sealed:
    key_id: str
    sealed: bytes | None
    order_number: str
    expires_at: datetime
    destroyed_at: datetime | None


_ADD = insert(VaultEntry)
_FIND = select(
    VaultEntry.key_id,
    VaultEntry.sealed,
    VaultEntry.order_number,
    VaultEntry.expires_at,
    VaultEntry.destroyed_at,
).where(VaultEntry.token == bindparam("token"))
_DESTROY = (
    update(VaultEntry)
    .where(VaultEntry.order_number == bindparam("order"), VaultEntry.sealed.is_not(None))
    .values(sealed=None, destroyed_at=bindparam("now"))
)
_DISCARD = (
    update(VaultEntry)
    .where(VaultEntry.token == bindparam("discarded"))
    .values(sealed=None, destroyed_at=bindparam("now"))
)
_PURGE = (
    update(VaultEntry)
    .where(VaultEntry.expires_at < bindparam("now"), VaultEntry.sealed.is_not(None))
    .values(sealed=None, destroyed_at=bindparam("now"))
)
_KEPT = (
    select(VaultEntry.token)
    .where(VaultEntry.order_number == bindparam("order"), VaultEntry.sealed.is_not(None))
    .limit(1)
)
_KEYS_IN_USE = select(VaultEntry.key_id).where(VaultEntry.sealed.is_not(None)).distinct()
_FORGET = delete(VaultEntry).where(VaultEntry.destroyed_at < bindparam("before"))


class CardVault:
    """Tokenize card numbers and give them back to the charge, for their order only."""

    def __init__(
        self,
        engine: Engine,
        ring: KeyRing,
        *,
        ttl: timedelta = DEFAULT_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._ring = ring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}
        self._ttl = ttl
        self._clock = clock

    def tokenize(
        self, number: str, *, order_number: str, ttl: timedelta | None = None
    ) -> CardToken:
        """A new token for ``number``, usable by ``order_number``'s charge until it expires
        (after ``ttl``; default: the vault's)."""
        now = self._clock()
        token = TOKEN_PREFIX + secrets.token_urlsafe(24)
        key_id = self._ring.primary
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._ciphers[key_id].encrypt(
            nonce, number.encode(), _bound(token, order_number, key_id)
        )
        card = CardToken(
            token=token,
            brand=brand_of(number),
            last4=last4(number),
            expires_at=now + (ttl or self._ttl),
        )
        with self._engine.begin() as conn:
            conn.execute(_PURGE, {"now": now})
            conn.execute(
                _ADD,
                {
                    "token": token,
                    "order_number": order_number,
                    "key_id": key_id,
                    "sealed": sealed,
                    "brand": card.brand,
                    "last4": card.last4,
                    "created_at": now,
                    "expires_at": card.expires_at,
                    "destroyed_at": None,
                },
            )
        return card

    def detokenize(self, token: str, *, order_number: str) -> str:
        """The card number behind ``token``, for ``order_number``'s charge, now.

        Raises CardTokenError saying why not: unknown, another order's, expired, destroyed.
        Expiry is by the vault's clock (wall time), the same that set it.
        """
        now = self._clock()
        with self._engine.connect() as conn:
            row = conn.execute(_FIND, {"token": token}).first()
        if row is None:
            raise CardTokenError(f"card token {_shown(token)} is unknown to the vault")
        entry = _Sealed(*row)
        if entry.order_number != order_number:
            raise CardTokenError(
                f"card token {_shown(token)} belongs to another order, not {order_number}"
            )
        if as_utc(entry.expires_at) <= as_utc(now):
            raise CardTokenError(
                f"card token {_shown(token)} expired at {as_utc(entry.expires_at):%H:%M:%S} UTC"
            )
        if entry.sealed is None:
            raise CardTokenError(
                f"card token {_shown(token)} was destroyed: order {order_number} was already "
                "charged or rolled back"
            )
        cipher = self._ciphers.get(entry.key_id)
        if cipher is None:
            raise CardTokenError(
                f"card token {_shown(token)} is sealed under vault key {entry.key_id!r}, "
                "which is not configured"
            )
        nonce, ciphertext = entry.sealed[:NONCE_BYTES], entry.sealed[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, ciphertext, _bound(token, order_number, entry.key_id))
        except InvalidTag:
            raise CardTokenError(f"card token {_shown(token)} does not decrypt") from None
        return plain.decode()

    def destroy(self, *, order_number: str, conn: Connection | None = None) -> None:
        """Destroy every card number kept for the order: it was charged or rolled back.

        With ``conn``, inside its transaction: the number goes with the change that made it
        useless, or stays if that change rolls back.
        """
        if conn is None:
            with self._engine.begin() as own:
                self.destroy(order_number=order_number, conn=own)
            return
        conn.execute(_DESTROY, {"order": order_number, "now": self._clock()})

    def keeps(self, *, order_number: str) -> bool:
        """Whether a card number is still kept for the order."""
        with self._engine.connect() as conn:
            return conn.scalar(_KEPT, {"order": order_number}) is not None

    def discard(self, card: CardToken) -> None:
        """Destroy one token's number: the edge made it, then could not place the order."""
        with self._engine.begin() as conn:
            conn.execute(_DISCARD, {"discarded": card.token, "now": self._clock()})

    def missing_keys(self) -> set[str]:
        """Ids of keys that sealed numbers still kept but that this vault's ring lacks."""
        with self._engine.connect() as conn:
            used = set(conn.scalars(_KEYS_IN_USE))
        return used - set(self._ciphers)

    def purge(self, *, forget_after: timedelta = timedelta(days=30)) -> None:
        """Destroy expired numbers, and forget tokens destroyed longer than ``forget_after``."""
        now = self._clock()
        with self._engine.begin() as conn:
            conn.execute(_PURGE, {"now": now})
            conn.execute(_FORGET, {"before": now - forget_after})


def _bound(token: str, order_number: str, key_id: str) -> bytes:
    """What the ciphertext is bound to: it decrypts for this token, order and key only."""
    return f"{token}\x00{order_number}\x00{key_id}".encode()


def _shown(token: str) -> str:
    """A token as error messages show it: enough to find it, not enough to use it."""
    return token[:10] + "..."
