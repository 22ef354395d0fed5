"""Operator keys, customers' order tokens, page sessions and the audit trail, on the real
stores (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from pizza_saga.access.store import AuditLog, InvalidOperator, OperatorStore
from pizza_saga.access.tokens import SESSION_SECONDS, AccessTokens
from pizza_saga.app import Stores
from pizza_saga.common.crypto import KeyRing


@pytest.fixture
def engine(stores: Stores) -> Engine:
    """The test's store database (SQLite or PostgreSQL), migrated."""
    return stores.engine


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate("k1")


def test_an_order_token_opens_its_order_and_no_other(ring: KeyRing) -> None:
    tokens = AccessTokens(ring)
    token = tokens.order_token("A100")

    assert tokens.order_token("A100") == token  # the same every time (replayed placements)
    assert tokens.opens_order(token, "A100")
    assert not tokens.opens_order(token, "A101")
    assert not tokens.opens_order(token[:-1] + ("A" if token[-1] != "A" else "B"), "A100")
    assert not tokens.opens_order("", "A100")
    assert not tokens.opens_order("x" * 10_000, "A100")
    assert not AccessTokens(KeyRing.generate("k1")).opens_order(token, "A100")  # other keys


def test_order_tokens_outlive_a_rotation_while_their_key_stays_in_the_ring(ring: KeyRing) -> None:
    old = AccessTokens(ring).order_token("A100")
    rotated = AccessTokens(ring.with_new_primary("k2"))

    assert rotated.opens_order(old, "A100")
    assert rotated.order_token("A100").startswith("k2.")
    assert not AccessTokens(KeyRing.generate("k2")).opens_order(old, "A100")  # k1 dropped


def test_a_session_is_valid_until_it_expires_and_cannot_be_forged(ring: KeyRing) -> None:
    tokens = AccessTokens(ring)
    cookie = tokens.session("abcd", now=1_000)

    session = tokens.session_of(cookie, now=1_001)
    assert session is not None and session.key_id == "abcd"
    assert tokens.session_of(cookie, now=1_000 + SESSION_SECONDS) is None
    key_id, issued, signature = cookie.split(".", 2)
    assert tokens.session_of(f"{key_id}.{int(issued) + 3600_000}.{signature}", now=1_001) is None
    assert tokens.session_of(f"other.{issued}.{signature}", now=1_001) is None
    assert tokens.session_of("", now=1_001) is None


def test_a_csrf_token_is_bound_to_its_browser(ring: KeyRing) -> None:
    tokens = AccessTokens(ring)
    token = tokens.csrf_token("seed-1")

    assert tokens.csrf_matches("seed-1", token)
    assert not tokens.csrf_matches("seed-2", token)
    assert not tokens.csrf_matches("", token)


def test_operator_keys_authenticate_until_revoked(engine: Engine) -> None:
    store = OperatorStore(engine)
    alice, alice_secret = store.add("alice")
    _, second_secret = store.add("alice")  # several keys at once
    bob, bob_secret = store.add("bob")

    operator = store.authenticate(alice_secret)
    assert operator is not None and operator.name == "alice"
    assert store.authenticate(bob_secret) is not None
    assert store.authenticate(alice_secret[:-2]) is None
    assert store.authenticate(f"pzop_{bob.key_id}_{alice_secret.split('_', 2)[2]}") is None
    assert store.authenticate("not a key") is None

    assert [k.key_id for k in store.revoke(alice.key_id)] == [alice.key_id]
    assert store.authenticate(alice_secret) is None
    assert store.authenticate(second_secret) is not None
    assert store.active(alice.key_id) is None
    assert len(store.revoke("alice")) == 1  # the other one
    assert store.authenticate(second_secret) is None
    assert store.revoke("alice") == []
    assert store.any_active()  # bob
    store.revoke("bob")
    assert not store.any_active()


def test_a_logout_ends_the_sessions_issued_before_it(engine: Engine) -> None:
    store = OperatorStore(engine)
    key, _ = store.add("dana")
    before = datetime.now(UTC) - timedelta(seconds=1)

    assert store.active(key.key_id, issued=before) is not None
    store.end_sessions(key.key_id)

    assert store.active(key.key_id, issued=before) is None
    assert store.active(key.key_id, issued=datetime.now(UTC) + timedelta(seconds=1)) is not None
    assert store.active(key.key_id) is not None  # the key itself still works


def test_the_store_keeps_no_secret(engine: Engine) -> None:
    _, secret = OperatorStore(engine).add("carol")

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM operator_keys")).all()
    assert rows and all(secret.split("_", 2)[2] not in str(row) for row in rows)


@pytest.mark.parametrize("name", ["", " alice", "a" * 65, "al ice", "-x", "alice\n"])
def test_an_operator_name_must_be_a_plain_name(engine: Engine, name: str) -> None:
    with pytest.raises(InvalidOperator, match=r"^name: "):
        OperatorStore(engine).add(name)
    assert OperatorStore(engine).keys() == []


def test_the_audit_trail_lists_an_orders_entries_in_order(engine: Engine) -> None:
    audit = AuditLog(engine)
    audit.record(actor="alice", action="retry", order_number="A1", source="10.0.0.1")
    audit.record(actor="bob", action="restock", detail='{"margherita": 5}', source="cli")
    audit.record(actor="alice", action="skip", order_number="A1", reason="refunded by hand")

    entries = audit.entries(order_number="A1")
    assert [(e.actor, e.action, e.reason) for e in entries] == [
        ("alice", "retry", ""),
        ("alice", "skip", "refunded by hand"),
    ]
    assert entries[0].source == "10.0.0.1"
    assert [e.action for e in audit.entries(limit=2)] == ["skip", "restock"]  # latest first
