"""Signed values the API hands out: a customer's access token to one order, an operator's
page session, and the CSRF token of a form.

Each is an HMAC under a key derived (per purpose) from a key of the stores' key ring, whose
id it carries: every API process over one store signs and checks alike, with no state, and
a rotated ring keeps old tokens valid while their key stays in it. Comparisons are constant
time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from pizza_saga.common.crypto import KeyRing

ORDER_TOKEN_BYTES = 24
"""An order token's MAC length (192 bits: not to be guessed)."""
SESSION_SECONDS = 8 * 3600
"""How long an operator's page session lasts after login."""
MAX_TOKEN_LENGTH = 200
"""Longer presented values are refused unread."""


@dataclass(frozen=True)
class Session:
    """What a valid session cookie says: whose key logged in, and when."""

    key_id: str
    issued_ms: int
    """Unix time of the login, in milliseconds (a logout ends the sessions issued before)."""

    @property
    def expires(self) -> float:
        return self.issued_ms / 1000 + SESSION_SECONDS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AccessTokens:
    """Signs and checks order tokens, sessions and CSRF tokens with one key ring."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def _key(self, key_id: str, purpose: bytes) -> bytes | None:
        key = self._ring.keys.get(key_id)
        if key is None:
            return None
        return hmac.new(key, b"pizza-saga access:" + purpose, hashlib.sha256).digest()

    def _sign(self, purpose: bytes, message: str, *, key_id: str | None = None) -> str | None:
        key_id = key_id or self._ring.primary
        key = self._key(key_id, purpose)
        if key is None:
            return None
        mac = hmac.new(key, message.encode(), hashlib.sha256).digest()[:ORDER_TOKEN_BYTES]
        return f"{key_id}.{_b64(mac)}"

    def _verify(self, purpose: bytes, message: str, presented: str) -> bool:
        if not presented or len(presented) > MAX_TOKEN_LENGTH or "." not in presented:
            return False
        key_id = presented.rsplit(".", 1)[0]
        expected = self._sign(purpose, message, key_id=key_id)
        return expected is not None and hmac.compare_digest(expected, presented)

    # --- a customer's token to one order ---------------------------------------------------

    def order_token(self, order_number: str) -> str:
        """The token that opens ``order_number`` to its customer (the same every time)."""
        token = self._sign(b"order", order_number)
        assert token is not None  # the primary key is always in the ring
        return token

    def opens_order(self, token: str, order_number: str) -> bool:
        """Whether ``token`` is ``order_number``'s (not whether that order exists)."""
        return self._verify(b"order", order_number, token)

    # --- an operator's page session ----------------------------------------------------------

    def session(self, key_id: str, *, now: float | None = None) -> str:
        """A session cookie for the operator key ``key_id``, valid SESSION_SECONDS."""
        issued_ms = int((now if now is not None else time.time()) * 1000)
        claims = f"{key_id}.{issued_ms}"
        signature = self._sign(b"session", claims)
        return f"{claims}.{signature}"

    def session_of(self, cookie: str, *, now: float | None = None) -> Session | None:
        """What ``cookie`` says if it is a valid, unexpired session; else None."""
        parts = cookie.split(".", 2) if 0 < len(cookie) <= MAX_TOKEN_LENGTH else []
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        key_id, issued_ms, signature = parts[0], int(parts[1]), parts[2]
        if not self._verify(b"session", f"{key_id}.{issued_ms}", signature):
            return None
        session = Session(key_id=key_id, issued_ms=issued_ms)
        if session.expires <= (now if now is not None else time.time()):
            return None
        return session

    # --- a form's CSRF token -----------------------------------------------------------------

    def csrf_token(self, seed: str) -> str:
        """The token a form must send back, bound to the browser's ``seed`` cookie."""
        token = self._sign(b"csrf", seed)
        assert token is not None
        return token

    def csrf_matches(self, seed: str, token: str) -> bool:
        return bool(seed) and self._verify(b"csrf", seed, token)
