"""The card vault: tokens made at the edge, charged once by their own order, then destroyed.

The vault on a real database (SQLite and PostgreSQL), and the order saga on the
time-skipping test server with real stores: a token that cannot be charged (unknown,
another order's, expired, destroyed) fails the charge step with CardTokenError, and the
order rolls back with nothing charged and its pizzas back on the shelf.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker, vault_key_ring
from pizza_saga.billing import cards
from pizza_saga.billing.models import CardToken
from pizza_saga.billing.vault import CardTokenError, CardVault, VaultEntry
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.db import utcnow
from pizza_saga.common.settings import Settings
from pizza_saga.order.example import GOOD_CARD
from pizza_saga.order.models import OrderRequest, PizzaOrder
from pizza_saga.order.workflow import PizzaOrderWorkflow, workflow_id_for
from tests.orders import (
    RESULT_TIMEOUT,
    OrderHandle,
    fail_of,
    history_has,
    net_money,
    new_order,
    result_of,
)
from tests.pausing import PausePoint

TEST_CARDS = [GOOD_CARD, cards.DECLINED_CARD, cards.FLAKY_CARD, cards.REFUND_FAILING_CARD]


class Clock:
    """The vault's clock in these tests: wall time, moved on by the test when it says so."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.ahead


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vault(stores: Stores, settings: Settings, clock: Clock) -> CardVault:
    ring = vault_key_ring(settings, shared=stores.engine.dialect.name != "sqlite")
    return CardVault(stores.engine, ring, clock=clock)


def sealed_rows(stores: Stores, order_number: str) -> list[bytes | None]:
    with stores.engine.connect() as conn:
        query = select(VaultEntry.sealed).where(VaultEntry.order_number == order_number)
        return list(conn.scalars(query))


# --- The vault itself ---------------------------------------------------------------------------


def test_a_token_says_nothing_about_the_card_but_its_brand_and_last_four(
    vault: CardVault, stores: Stores
) -> None:
    card = vault.tokenize(GOOD_CARD, order_number="A1")

    assert card.token.startswith("tok_") and len(card.token) == 36
    assert GOOD_CARD not in card.token
    assert (card.brand, card.last4) == ("visa", "4242")
    assert timedelta(minutes=14) < card.expires_at - utcnow() <= timedelta(minutes=15)
    [sealed] = sealed_rows(stores, "A1")
    assert sealed is not None and GOOD_CARD.encode() not in sealed
    assert vault.detokenize(card.token, order_number="A1") == GOOD_CARD


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda vault, card, clock: None, "belongs to another order"),
        (lambda vault, card, clock: vault.destroy(order_number="A1"), "was destroyed"),
        (lambda vault, card, clock: setattr(clock, "ahead", timedelta(minutes=16)), "expired"),
    ],
    ids=["another-order", "destroyed", "expired"],
)
def test_a_token_cannot_be_charged_by_another_order_after_destruction_or_expiry(
    vault: CardVault, clock: Clock, spoil: object, why: str
) -> None:
    card = vault.tokenize(GOOD_CARD, order_number="A1")
    spoil(vault, card, clock)  # type: ignore[operator]
    order = "B2" if why == "belongs to another order" else "A1"

    with pytest.raises(CardTokenError, match=why) as refused:
        vault.detokenize(card.token, order_number=order)
    assert GOOD_CARD not in str(refused.value)


def test_an_unknown_token_is_refused(vault: CardVault) -> None:
    with pytest.raises(CardTokenError, match="unknown"):
        vault.detokenize("tok_" + "x" * 32, order_number="A1")


def test_a_token_made_under_key_1_is_charged_after_key_2_becomes_primary(
    stores: Stores,
) -> None:
    first = KeyRing.generate("vault-1")
    rotated = first.with_new_primary("vault-2")
    card = CardVault(stores.engine, first).tokenize(GOOD_CARD, order_number="A1")

    assert CardVault(stores.engine, rotated).detokenize(card.token, order_number="A1") == GOOD_CARD
    with pytest.raises(CardTokenError, match="not configured"):
        only_new = KeyRing(primary="vault-2", keys={"vault-2": rotated.keys["vault-2"]})
        CardVault(stores.engine, only_new).detokenize(card.token, order_number="A1")


def test_a_shared_store_needs_its_vault_key_configured(tmp_path: object) -> None:
    from pizza_saga.common.crypto import KeyRingError

    settings = Settings.model_validate({"PIZZA_HOME": tmp_path})
    with pytest.raises(KeyRingError, match="PIZZA_VAULT_KEY_FILE or PIZZA_VAULT_KEYS"):
        vault_key_ring(settings, shared=True)


# --- Orders whose token cannot be charged ---------------------------------------------------------


@pytest.fixture
def pause() -> PausePoint:
    return PausePoint()


@pytest.fixture
async def client(
    time_skipping_env: WorkflowEnvironment,
    stores: Stores,
    vault: CardVault,
    task_queue: str,
    pause: PausePoint,
) -> AsyncIterator[Client]:
    """A worker whose vault has the test's clock (and which ``pause`` can hold)."""
    with_clock = dataclasses.replace(stores, vault=vault)
    async with build_worker(
        time_skipping_env.client, with_clock, task_queue=task_queue, interceptors=[pause]
    ):
        yield time_skipping_env.client


async def start_with(
    client: Client, order: PizzaOrder, card: CardToken, *, task_queue: str
) -> OrderHandle:
    return await client.start_workflow(
        PizzaOrderWorkflow.run,
        OrderRequest(order=order.placed(card)),
        id=workflow_id_for(order.order_number),
        task_queue=task_queue,
    )


async def assert_rolled_back_for(
    handle: OrderHandle, stores: Stores, order: PizzaOrder, before: dict[str, int], why: str
) -> None:
    error = await fail_of(handle)
    assert (error.type, error.non_retryable) == ("CardTokenError", True), error
    assert why in error.message
    assert stores.payments.payments(order_number=order.order_number) == [], "nothing charged"
    assert stores.inventory.on_hand() == before


async def test_a_token_reused_by_a_second_order_rolls_it_back(
    client: Client, stores: Stores, vault: CardVault, task_queue: str
) -> None:
    first, second = new_order(), new_order()
    card = vault.tokenize(GOOD_CARD, order_number=first.order_number)
    before = stores.inventory.on_hand()

    handle = await start_with(client, second, card, task_queue=task_queue)

    await assert_rolled_back_for(handle, stores, second, before, "belongs to another order")


async def test_an_expired_token_rolls_the_order_back(
    client: Client, stores: Stores, vault: CardVault, clock: Clock, task_queue: str
) -> None:
    order = new_order()
    card = vault.tokenize(GOOD_CARD, order_number=order.order_number)
    before = stores.inventory.on_hand()
    clock.ahead = timedelta(minutes=16)  # the order reached its charge too late

    handle = await start_with(client, order, card, task_queue=task_queue)

    await assert_rolled_back_for(handle, stores, order, before, "expired")


async def test_a_destroyed_or_unknown_token_rolls_the_order_back(
    client: Client, stores: Stores, vault: CardVault, task_queue: str
) -> None:
    destroyed, unknown = new_order(), new_order()
    card = vault.tokenize(GOOD_CARD, order_number=destroyed.order_number)
    vault.destroy(order_number=destroyed.order_number)
    before = stores.inventory.on_hand()

    first = await start_with(client, destroyed, card, task_queue=task_queue)
    await assert_rolled_back_for(first, stores, destroyed, before, "was destroyed")

    fake = dataclasses.replace(card, token="tok_" + "y" * 32)
    second = await start_with(client, unknown, fake, task_queue=task_queue)
    await assert_rolled_back_for(second, stores, unknown, before, "unknown")


async def test_the_number_is_destroyed_once_the_order_is_charged_or_rolled_back(
    client: Client, stores: Stores, vault: CardVault, task_queue: str
) -> None:
    charged = new_order()
    declined = new_order(credit_card_info__number=cards.DECLINED_CARD)
    tokens = {
        order.order_number: vault.tokenize(
            order.credit_card_info.number, order_number=order.order_number
        )
        for order in (charged, declined)
    }

    done = await start_with(client, charged, tokens[charged.order_number], task_queue=task_queue)
    await result_of(done)
    refused = await start_with(
        client, declined, tokens[declined.order_number], task_queue=task_queue
    )
    assert (await fail_of(refused)).type == "CardDeclinedError"

    for order in (charged, declined):
        assert sealed_rows(stores, order.order_number) == [None], order.order_number
        with pytest.raises(CardTokenError, match="was destroyed"):
            vault.detokenize(tokens[order.order_number].token, order_number=order.order_number)
    assert net_money(stores, charged.order_number) == 3500


async def test_an_order_that_ends_before_its_charge_destroys_its_number(
    client: Client, stores: Stores, vault: CardVault, task_queue: str, pause: PausePoint
) -> None:
    far = new_order(address__line1="A street whose name goes on and on for many kilometres")
    short = new_order()
    stores.inventory.stock_up({"Small, with pepperoni": 0}, overwrite=True)
    cancelled = new_order()  # cancelled while its distance is asked, before any charge
    orders = {"far": far, "out of stock": short, "cancelled": cancelled}
    tokens = {
        name: vault.tokenize(GOOD_CARD, order_number=order.order_number)
        for name, order in orders.items()
    }

    errors = {}
    for name in ("far", "out of stock"):
        handle = await start_with(client, orders[name], tokens[name], task_queue=task_queue)
        errors[name] = (await fail_of(handle)).type
    pause.arm("get_distance", "before")
    waiting = await client.start_workflow(
        PizzaOrderWorkflow.run,
        OrderRequest(order=cancelled.placed(tokens["cancelled"])),
        id=workflow_id_for(cancelled.order_number),
        task_queue=task_queue,
    )
    await asyncio.wait_for(pause.reached.wait(), RESULT_TIMEOUT)
    await waiting.cancel()
    await history_has(waiting, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED)
    pause.release.set()
    with pytest.raises(WorkflowFailureError) as cancel:
        await waiting.result()

    assert errors == {"far": "OutsideServiceAreaError", "out of stock": "OutOfStockError"}
    assert isinstance(cancel.value.cause, CancelledError)
    for name, order in orders.items():
        assert sealed_rows(stores, order.order_number) == [None], name
        with pytest.raises(CardTokenError, match="was destroyed"):
            vault.detokenize(tokens[name].token, order_number=order.order_number)


def test_a_token_discarded_by_the_edge_cannot_be_charged(vault: CardVault, stores: Stores) -> None:
    # The edge made a token, then could not place the order (its number was taken, say).
    kept = vault.tokenize(GOOD_CARD, order_number="A1")
    discarded = vault.tokenize(GOOD_CARD, order_number="A1")

    vault.discard(discarded)

    with pytest.raises(CardTokenError, match="was destroyed"):
        vault.detokenize(discarded.token, order_number="A1")
    assert vault.detokenize(kept.token, order_number="A1") == GOOD_CARD


def test_the_purge_each_tokenize_runs_reads_only_the_numbers_still_kept(stores: Stores) -> None:
    """Tokens are remembered for 30 days after their number is destroyed; the purge of
    expired numbers that every tokenize runs must not read them all (an index of kept
    numbers by expiry, migration 0004), or tokenizing slows down as the vault grows."""
    purge_rows = "FROM card_vault WHERE expires_at < :now AND sealed IS NOT NULL"
    with stores.engine.connect() as conn:
        if stores.engine.dialect.name == "sqlite":
            plan = conn.execute(
                text(f"EXPLAIN QUERY PLAN SELECT token {purge_rows}"), {"now": utcnow()}
            )
            shown = " ".join(str(row[-1]) for row in plan)
        else:
            conn.execute(text("SET enable_seqscan = off"))  # an empty table: ask what it can use
            plan = conn.execute(text(f"EXPLAIN SELECT token {purge_rows}"), {"now": utcnow()})
            shown = " ".join(str(row[0]) for row in plan)
    assert "ix_card_vault_kept_expiry" in shown, shown


async def test_a_worker_forgets_destroyed_numbers_after_30_days_on_its_own(
    stores: Stores, vault: CardVault, clock: Clock
) -> None:
    from pizza_saga.app import housekeeping

    vault.tokenize(GOOD_CARD, order_number="HK1")
    vault.destroy(order_number="HK1")
    vault.tokenize(GOOD_CARD, order_number="HK2")  # expires, is not destroyed yet
    clock.ahead = timedelta(days=31)

    jobs = [
        asyncio.create_task(job) for job in housekeeping(dataclasses.replace(stores, vault=vault))
    ]
    try:
        async with asyncio.timeout(30):
            # The purge runs on a thread of its own: poll the table (no sleep guessing when).
            while sealed_rows(stores, "HK1") or sealed_rows(stores, "HK2") != [None]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        for job in jobs:
            job.cancel()
