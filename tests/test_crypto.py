"""Payload encryption, key rotation and log masking, without Temporal."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from pizza_saga.common.crypto import (
    ENCODING,
    KEY_ID,
    REJECTED_ENCODING,
    EncryptionCodec,
    KeyRing,
    KeyRingError,
    load_or_create_key_file,
    rejection_reason,
)
from pizza_saga.common.logmask import install_card_masking, mask_card_numbers

CARD = "4242424242424242"


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def test_encrypted_payload_hides_the_data_and_round_trips() -> None:
    codec = EncryptionCodec(KeyRing.generate("k1"))
    original = plain(f"card {CARD}")

    [sealed] = await codec.encode([original])
    [opened] = await codec.decode([sealed])

    assert CARD.encode() not in sealed.SerializeToString()
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"k1"
    assert opened == original


async def test_rotated_ring_reads_old_payloads_and_writes_with_the_new_key() -> None:
    old = KeyRing.generate("k1")
    new = old.with_new_primary("k2")
    [under_k1] = await EncryptionCodec(old).encode([plain("order")])

    [read] = await EncryptionCodec(new).decode([under_k1])
    [under_k2] = await EncryptionCodec(new).encode([plain("order")])

    assert read == plain("order")
    assert under_k2.metadata[KEY_ID] == b"k2"
    with pytest.raises(KeyRingError, match="key 'k2', which is not configured"):
        await EncryptionCodec(old).decode([under_k2])


async def test_tampered_payload_is_refused() -> None:
    codec = EncryptionCodec(KeyRing.generate("k1"))
    [sealed] = await codec.encode([plain("order")])
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])

    with pytest.raises(KeyRingError, match="tampered or a wrong key"):
        await codec.decode([sealed])


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = EncryptionCodec(KeyRing.generate())
    assert await codec.decode([plain("old")]) == [plain("old")]


async def test_strict_codec_replaces_what_it_cannot_read_by_a_marker_without_the_data() -> None:
    ring = KeyRing.generate("k1")
    strict = EncryptionCodec(ring, strict=True)
    [stranger] = await EncryptionCodec(KeyRing.generate("k9")).encode([plain(CARD)])
    [tampered] = await EncryptionCodec(ring).encode([plain(CARD)])
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    [good] = await EncryptionCodec(ring).encode([plain(CARD)])

    decoded = await strict.decode([plain(CARD), stranger, tampered, good])

    assert [p.metadata["encoding"] for p in decoded] == [REJECTED_ENCODING] * 3 + [b"json/plain"]
    assert [rejection_reason(p).split(":")[0] for p in decoded[:3]] == [
        "the payload was not encrypted (encoding 'json/plain')",
        "payload encrypted with key 'k9', which this worker does not have",
        "payload under key 'k1' does not decrypt",
    ]
    assert all(p.data == b"" and CARD.encode() not in p.SerializeToString() for p in decoded[:3])
    assert decoded[3] == plain(CARD)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not a key ring"),
        ('{"primary": "a", "keys": {"a": "!!!"}}', "not a key ring"),
        ('{"primary": "a", "keys": {"a": "AAAA"}}', "key 'a' is 3 bytes, not 32"),
        ('{"primary": "b", "keys": {}}', "primary key 'b' is not in the key ring"),
    ],
)
def test_bad_key_rings_are_reported_with_their_source(text: str, reason: str) -> None:
    with pytest.raises(KeyRingError, match=reason) as err:
        KeyRing.from_json(text, "PIZZA_ENCRYPTION_KEYS")
    assert str(err.value).startswith("PIZZA_ENCRYPTION_KEYS: ")


def test_key_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "home" / "encryption-keys.json"

    first = load_or_create_key_file(path)
    second = load_or_create_key_file(path)

    assert first == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_masking_keeps_only_the_first_six_and_last_four_digits() -> None:
    assert mask_card_numbers(f"card {CARD}.") == "card 424242******4242."
    assert mask_card_numbers("4242 4242 4242 4242") == "424242******4242"
    assert mask_card_numbers("order 12983, phone 415-555-7418") == "order 12983, phone 415-555-7418"


def test_log_lines_and_tracebacks_are_masked(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    logger = logging.getLogger("test-masking")
    logger.propagate = False
    handler = logging.FileHandler(log)
    logger.addHandler(handler)
    install_card_masking(logger)
    try:
        logger.info("charging %s", CARD)
        try:
            raise ValueError(f"bad card {CARD}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()

    text = log.read_text()
    assert CARD not in text
    assert "424242******4242" in text and "ValueError: bad card 424242******4242" in text
