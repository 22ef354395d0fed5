"""Payload encryption: every payload the product sends to Temporal is AES-GCM ciphertext.

Workflow and activity inputs and results, queries, updates and (with the failure converter
set to encode them) failure messages all pass through `EncryptionCodec`, so Temporal's
history, its database and the Web UI (without the codec server) hold no card number.

Keys have ids. The primary key encrypts; every key in the ring decrypts, so a new key can
become primary while orders started under the old one still finish and old histories still
decode. A key ring is JSON: ``{"primary": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}``
with 32-byte (AES-256) keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from pizza_saga.common.private_file import create_once

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
REJECTED_ENCODING = b"binary/rejected"
"""A strict codec's marker in place of a payload it refused (see EncryptionCodec)."""
REJECTED_REASON = "rejected-reason"
MAX_SHOWN = 40
"""Characters of a client-chosen name (an encoding, a key id) quoted in a rejection."""
NONCE_BYTES = 12
KEY_BYTES = 32


class KeyRingError(ValueError):
    """A key ring or an encrypted payload cannot be used; the message says why."""


@dataclass(frozen=True)
class KeyRing:
    """Encryption keys by id, and which one encrypts."""

    primary: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.primary not in self.keys:
            raise KeyRingError(f"primary key {self.primary!r} is not in the key ring")
        for key_id, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise KeyRingError(f"key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")

    @classmethod
    def generate(cls, key_id: str | None = None) -> KeyRing:
        """A ring with one new random key."""
        key_id = key_id or datetime.now(UTC).strftime("key-%Y%m%d-%H%M%S")
        return cls(primary=key_id, keys={key_id: secrets.token_bytes(KEY_BYTES)})

    @classmethod
    def from_json(cls, text: str, source: str) -> KeyRing:
        """Parse a key ring; KeyRingError naming ``source`` and the problem if it is not one."""
        try:
            data = json.loads(text)
            primary = data["primary"]
            keys = {
                str(key_id): base64.b64decode(value, validate=True)
                for key_id, value in data["keys"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
            raise KeyRingError(
                f"{source}: not a key ring ({type(err).__name__}: {err}); expected "
                '{"primary": "id", "keys": {"id": "<base64 of 32 bytes>"}}'
            ) from None
        try:
            return cls(primary=str(primary), keys=keys)
        except KeyRingError as err:
            raise KeyRingError(f"{source}: {err}") from None

    def to_json(self) -> str:
        keys = {key_id: base64.b64encode(key).decode() for key_id, key in self.keys.items()}
        return json.dumps({"primary": self.primary, "keys": keys}, indent=2)

    def with_new_primary(self, key_id: str | None = None) -> KeyRing:
        """This ring plus a new key that becomes primary (key rotation)."""
        new = KeyRing.generate(key_id)
        return KeyRing(primary=new.primary, keys={**self.keys, **new.keys})


def read_key_file(path: Path, setting: str) -> KeyRing:
    """The key ring in ``path``; KeyRingError naming ``setting`` if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise KeyRingError(f"{setting}: cannot read {path}: {err.strerror}") from None
    return KeyRing.from_json(text, f"{setting} {path}")


def load_or_create_key_file(path: Path) -> KeyRing:
    """The key ring in ``path``, created (readable by its owner only) if it does not exist.

    Safe when several processes (server, worker, CLI) start at once: the file appears
    complete or not at all, and every process ends up with the same ring.
    """
    if not path.exists():
        create_once(path, KeyRing.generate().to_json())
    return KeyRing.from_json(path.read_text(encoding="utf-8"), str(path))


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole serialized payloads; the key id travels in the metadata.

    Lenient (clients, the codec server): a payload that is not encrypted passes through
    decode, and a key the ring lacks or a payload that does not decrypt raises KeyRingError.
    Strict (workers): decode never raises, since an error there fails the workflow task and
    Temporal retries it forever; a payload the codec did not encrypt, or cannot decrypt, is
    replaced by a rejection marker (encoding ``binary/rejected``, the reason in its metadata,
    none of the original data), which the data converter turns into a non-retryable error
    where the payload is read.
    """

    def __init__(self, ring: KeyRing, *, strict: bool = False) -> None:
        self.ring = ring
        self.strict = strict
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self.ring.primary
        cipher = self._ciphers[key_id]
        encoded = []
        for payload in payloads:
            nonce = secrets.token_bytes(NONCE_BYTES)
            # The key id is authenticated too: a payload cannot be relabelled to another key.
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode(payload) for payload in payloads]

    def _decode(self, payload: Payload) -> Payload:
        encoding = payload.metadata.get("encoding")
        if encoding != ENCODING:
            if not self.strict:
                return payload  # not ours (e.g. written before encryption)
            shown = _shown(encoding.decode(errors="replace")) if encoding is not None else "none"
            return rejected(
                f"the payload was not encrypted (encoding {shown}): this service reads only "
                "payloads its codec encrypted, so the client must encrypt with the product's "
                "codec: pizza_saga.common.temporal.data_converter with the shared key ring, "
                "or the codec server's /encode (docs/card-data.md)"
            )
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            if self.strict:
                return rejected(
                    f"payload encrypted with key {_shown(key_id)}, which this worker does not have"
                )
            raise KeyRingError(f"payload encrypted with key {key_id!r}, which is not configured")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            return Payload.FromString(cipher.decrypt(nonce, sealed, key_id.encode()))
        except (InvalidTag, DecodeError):
            reason = f"payload under key {_shown(key_id)} does not decrypt: tampered or a wrong key"
            if self.strict:
                return rejected(reason)
            raise KeyRingError(reason) from None


def _shown(name: str) -> str:
    return repr(name[:MAX_SHOWN])


def rejected(reason: str) -> Payload:
    """The marker a strict codec puts in place of a payload it refuses."""
    return Payload(metadata={"encoding": REJECTED_ENCODING, REJECTED_REASON: reason.encode()})


def rejection_reason(payload: Payload) -> str:
    """Why a strict codec refused the payload this marker replaced."""
    return payload.metadata.get(REJECTED_REASON, b"refused by the codec").decode(errors="replace")
