"""A placed order's card token lives as long as its order can wait to be charged: a worker
away longer than PIZZA_CARD_TOKEN_TTL_SECONDS does not fail every order queued meanwhile."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_service
from pizza_saga.billing.vault import VaultEntry
from pizza_saga.common.db import as_utc
from pizza_saga.common.settings import Settings
from tests.orders import new_order


async def test_a_placed_orders_token_outlives_the_short_ttl_until_its_deadline(
    time_skipping_env: WorkflowEnvironment, stores: Stores, settings: Settings
) -> None:
    patient = settings.model_copy(
        update={
            "card_token_ttl_seconds": 60.0,
            "order_deadline_seconds": 7200.0,
            "task_queue": f"token-life-{uuid.uuid4().hex}",
        }
    )
    service = build_service(time_skipping_env.client, stores, patient)
    order = new_order()
    before = datetime.now(UTC)

    await service.place(order)  # no worker polls this queue: the order waits, as in an outage

    with stores.engine.connect() as conn:
        [expires_at] = conn.execute(
            select(VaultEntry.expires_at).where(VaultEntry.order_number == order.order_number)
        ).scalars()
    assert as_utc(expires_at) >= before + timedelta(seconds=7200)
