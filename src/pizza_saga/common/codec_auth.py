"""Who may ask the codec server to decrypt: a token, and browser sessions made from it.

The CLI and scripts send the token as ``Authorization: Bearer <token>``. A browser logs in
once with the token (the codec server's /login) and gets a session cookie: the expiry and an
HMAC of it under a key derived from the token, so it needs no server-side state, survives a
restart of the codec server and dies when the token changes. Every comparison of a secret
runs in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pizza_saga.common.private_file import create_once
from pizza_saga.common.settings import Settings

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]{16,512}=*")
"""RFC 6750's token68, at least 16 characters: it travels in an Authorization header."""
TOKEN_HINT = (
    "16 to 512 letters, digits or -._~+/ (make one with "
    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
)
SESSION_SECONDS = 12 * 3600
"""How long a browser's login lasts."""
_SESSION_LABEL = b"pizza-saga codec-server session v1"
_EXPIRY = re.compile(r"[0-9]{1,12}")


class TokenError(ValueError):
    """The configured codec token cannot be used; the message says why, never the token."""


@dataclass(frozen=True)
class CodecToken:
    """The token and where it came from (for the instructions printed to the operator)."""

    value: str = field(repr=False)
    source: str
    """``PIZZA_CODEC_TOKEN`` or the file holding it."""
    file: Path | None = None


def codec_token(settings: Settings) -> CodecToken:
    """PIZZA_CODEC_TOKEN, else PIZZA_CODEC_TOKEN_FILE, else a token generated once into
    PIZZA_HOME (mode 0600). TokenError says what is wrong with a configured one."""
    if settings.codec_token is not None:
        value = settings.codec_token.get_secret_value()
        return CodecToken(_checked(value, "PIZZA_CODEC_TOKEN"), "PIZZA_CODEC_TOKEN")
    path = settings.codec_token_file
    source = f"PIZZA_CODEC_TOKEN_FILE {path}"
    if path is None:
        path = settings.default_codec_token_file
        source = str(path)
        create_once(path, secrets.token_urlsafe(32) + "\n")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TokenError(f"{source}: cannot read: {err.strerror}") from None
    return CodecToken(_checked(text.strip(), source), source, path)


def _checked(value: str, source: str) -> str:
    if not TOKEN_PATTERN.fullmatch(value):
        raise TokenError(f"{source}: not a usable codec token; expected {TOKEN_HINT}")
    return value


class Credentials:
    """Checks bearer tokens and session cookies against one token, in constant time."""

    def __init__(
        self,
        token: str,
        *,
        session_seconds: int = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self._session_key = hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).digest()
        self.session_seconds = session_seconds
        self._clock = clock

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the token; digests of equal length are compared in
        constant time, so neither the token's content nor its length shows in the timing."""
        digest = hashlib.sha256(candidate.encode(errors="replace")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def bearer_matches(self, authorization: str) -> bool:
        """Whether an Authorization header value is ``Bearer <the token>``."""
        scheme, _, candidate = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(candidate.strip())

    def new_session(self) -> str:
        """A session cookie value that expires in ``session_seconds``."""
        expires = int(self._clock()) + self.session_seconds
        return f"{expires}.{self._mac(expires)}"

    def session_matches(self, value: str) -> bool:
        """Whether a session cookie value was made by ``new_session`` and has not expired."""
        expires_text, _, mac = value.partition(".")
        if not _EXPIRY.fullmatch(expires_text):
            return False
        expires = int(expires_text)
        authentic = hmac.compare_digest(mac.encode(errors="replace"), self._mac(expires).encode())
        return authentic and self._clock() < expires

    def _mac(self, expires: int) -> str:
        return hmac.new(self._session_key, str(expires).encode(), hashlib.sha256).hexdigest()
