"""Idempotency keys in the store database, on a real SQLite file and a real PostgreSQL database:
one key, one request, whoever sends it and however often, at once or later.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from pizza_saga.app import Stores
from pizza_saga.common.crypto import KeyRing
from pizza_saga.order.example import GOOD_CARD, example_order
from pizza_saga.order.idempotency import IdempotencyKeyRow, IdempotencyStore, KeyState

THREADS = 8
RING = KeyRing.generate("k1")
BODY = example_order(order_number="XD001").model_dump_json().encode()
OTHER_BODY = example_order(order_number="XD002").model_dump_json().encode()


def test_a_new_key_is_claimed_then_found_pending_then_placed(stores: Stores) -> None:
    keys = IdempotencyStore(stores.engine, RING)

    first = keys.claim("key-1", body=BODY, order_number="XD001")
    again = keys.claim("key-1", body=BODY, order_number="XD001")
    keys.placed("key-1", first.claim)
    later = keys.claim("key-1", body=BODY, order_number="XD001")

    assert first.state is KeyState.CLAIMED
    assert (again.state, again.claim) == (KeyState.PENDING, first.claim)
    assert (later.state, later.order_number) == (KeyState.PLACED, "XD001")


def test_a_key_sent_with_another_body_is_refused(stores: Stores) -> None:
    keys = IdempotencyStore(stores.engine, RING)
    keys.placed("key-1", keys.claim("key-1", body=BODY, order_number="XD001").claim)

    other = keys.claim("key-1", body=OTHER_BODY, order_number="XD002")

    assert (other.state, other.order_number) == (KeyState.REUSED, "XD001")


def test_only_the_holder_releases_a_key_and_never_a_placed_one(stores: Stores) -> None:
    keys = IdempotencyStore(stores.engine, RING)
    held = keys.claim("key-1", body=BODY, order_number="XD001")

    assert not keys.release("key-1", "not-the-holder")
    assert keys.release("key-1", held.claim)
    again = keys.claim("key-1", body=BODY, order_number="XD001")
    keys.placed("key-1", again.claim)
    assert not keys.release("key-1", again.claim)
    assert keys.claim("key-1", body=BODY, order_number="XD001").state is KeyState.PLACED


def test_requests_at_once_with_one_key_let_exactly_one_place(stores: Stores) -> None:
    keys = IdempotencyStore(stores.engine, RING)
    start = threading.Barrier(THREADS)

    def claim(_: int) -> KeyState:
        start.wait()
        return keys.claim("key-1", body=BODY, order_number="XD001").state

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        states = list(pool.map(claim, range(THREADS)))

    assert sorted(states) == sorted([KeyState.CLAIMED] + [KeyState.PENDING] * (THREADS - 1))


def test_the_stored_hash_keeps_no_card_number_and_survives_key_rotation(stores: Stores) -> None:
    keys = IdempotencyStore(stores.engine, RING)
    keys.claim("key-1", body=BODY, order_number="XD001")
    rotated = IdempotencyStore(stores.engine, RING.with_new_primary("k2"))

    with stores.engine.connect() as conn:
        stored = conn.scalar(select(IdempotencyKeyRow.body_hash))
    assert stored is not None and GOOD_CARD not in stored
    assert stored.startswith("k1:")
    assert rotated.claim("key-1", body=BODY, order_number="XD001").state is KeyState.PENDING
    assert (
        IdempotencyStore(stores.engine, KeyRing.generate("k1"))
        .claim("key-1", body=BODY, order_number="XD001")
        .state
        is KeyState.REUSED
    ), "a hash under another secret must not match"
