"""Manual refunds: after an operator skips an order's refund, an operator records the money a
person gave back; it shows in the order's payments and net charge, and in the audit trail.

Real workflow, worker, stores (SQLite and PostgreSQL) on the time-skipping test server; the
service as the CLI calls it, and the JSON API and the order page in process.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from temporal_saga import CompensationState, OperatorAction
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from pizza_saga.access.service import Actor
from pizza_saga.app import Stores, build_api, build_service, build_worker
from pizza_saga.billing import cards
from pizza_saga.billing.store import net_charged
from pizza_saga.common.settings import Settings
from pizza_saga.order.service import (
    InvalidInput,
    NotAllowed,
    OrderNotFound,
    OrderService,
    RefundNotSkipped,
)
from pizza_saga.order.workflow import PizzaOrderWorkflow
from tests.orders import RESULT_TIMEOUT, OrderHandle, fail_of, new_order, start

ANA = Actor.operator("ana", source="127.0.0.1")


@dataclass
class Shop:
    client: Client
    service: OrderService
    stores: Stores
    web: FastAPI
    task_queue: str
    key: str
    """ana's operator key."""


@pytest.fixture
async def shop(
    time_skipping_env: WorkflowEnvironment, stores: Stores, settings: Settings, task_queue: str
) -> AsyncIterator[Shop]:
    settings = settings.model_copy(update={"task_queue": task_queue})
    service = build_service(time_skipping_env.client, stores, settings)
    _, key = await service.access.add_operator("ana", by=ANA)
    web = build_api(service, ui_url="http://ui", namespace="default")
    async with build_worker(time_skipping_env.client, stores, task_queue=task_queue):
        yield Shop(time_skipping_env.client, service, stores, web, task_queue, key)


async def compensation_is(handle: OrderHandle, state: CompensationState) -> None:
    """Wait until the charge's compensation (the refund) is in ``state``."""
    async with asyncio.timeout(RESULT_TIMEOUT):
        while True:
            for record in await handle.query(PizzaOrderWorkflow.ledger):
                if record.step == "process_credit_card" and record.compensation_state is state:
                    return
            await asyncio.sleep(0.02)


async def order_whose_refund_was_skipped(shop: Shop) -> str:
    """A $35.00 order whose bill bounced and whose refund an operator skipped; it has ended."""
    order = new_order(
        customer__email="bounce@example.com", credit_card_info__number=cards.REFUND_FAILING_CARD
    )
    handle = await start(
        shop.client,
        order,
        task_queue=shop.task_queue,
        vault=shop.stores.vault,
        policy={"compensation_backoff_seconds": 0.01},
    )
    await compensation_is(handle, CompensationState.NEEDS_OPERATOR)
    await shop.service.resolve(
        order.order_number, action=OperatorAction.SKIP, reason="refund by bank", by=ANA
    )
    await fail_of(handle)
    outcome = await shop.service.wait(order.order_number, within=RESULT_TIMEOUT, ledger=False)
    assert outcome.error is not None and outcome.error.type == "SagaCompensationError"
    return order.order_number


async def order_refunded_by_the_product(shop: Shop) -> str:
    """A $35.00 order whose bill bounced: the product refunded it itself."""
    order = new_order(customer__email="bounce@example.com")
    handle = await start(
        shop.client,
        order,
        task_queue=shop.task_queue,
        vault=shop.stores.vault,
    )
    assert (await fail_of(handle)).type == "BillDeliveryError"
    return order.order_number


def operator_http(shop: Shop, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=shop.web),
        base_url="http://127.0.0.1",
        headers=headers,
    )


async def test_an_operator_records_a_manual_refund_after_skipping_the_refund(shop: Shop) -> None:
    number = await order_whose_refund_was_skipped(shop)
    assert net_charged(shop.service.payments(order_number=number)) == 3500

    first = await shop.service.record_manual_refund(
        number, amount=2000, reference="BANK-2026-0001", by=ANA
    )
    again = await shop.service.record_manual_refund(
        number, amount=2000, reference=" BANK-2026-0001 ", by=ANA
    )
    rest = await shop.service.record_manual_refund(
        number, amount=1500, reference="BANK-2026-0002", by=ANA
    )

    assert (first.now, again.now, rest.now) == (True, False, True)
    assert again.entry == first.entry
    payments = shop.service.payments(order_number=number)
    assert [(p.kind, p.amount, p.reference, p.operator) for p in payments] == [
        ("charge", 3500, None, None),
        ("manual_refund", 2000, "BANK-2026-0001", "ana"),
        ("manual_refund", 1500, "BANK-2026-0002", "ana"),
    ]
    assert net_charged(payments) == 0
    audit = await shop.service.access.audit(order_number=number)
    recorded = [(e.action, e.actor, e.detail) for e in audit if e.action == "manual_refund"]
    assert recorded == [  # once each: the repeat recorded nothing
        ("manual_refund", "ana", "$20.00 reference BANK-2026-0001"),
        ("manual_refund", "ana", "$15.00 reference BANK-2026-0002"),
    ]


async def test_bad_manual_refunds_name_the_field_and_change_nothing(shop: Shop) -> None:
    number = await order_whose_refund_was_skipped(shop)
    refunded = await order_refunded_by_the_product(shop)
    await shop.service.record_manual_refund(number, amount=3000, reference="BANK-1", by=ANA)
    payments = shop.service.payments()
    audit = await shop.service.access.audit()

    async def refused(order_number: str, amount: int, reference: str) -> Exception:
        with pytest.raises(Exception) as refusal:
            await shop.service.record_manual_refund(
                order_number, amount=amount, reference=reference, by=ANA
            )
        return refusal.value

    cases = {
        "zero": await refused(number, 0, "BANK-2"),
        "negative": await refused(number, -500, "BANK-2"),
        "over the net": await refused(number, 501, "BANK-2"),
        "reference reused": await refused(number, 500, "BANK-1"),
        "no reference": await refused(number, 500, "  "),
        "card number": await refused(number, 500, "4242 4242 4242 4242"),
        "odd characters": await refused(number, 500, "<script>"),
    }
    for what, error in cases.items():
        assert isinstance(error, InvalidInput), (what, error)
    assert {what: e.field for what, e in cases.items() if isinstance(e, InvalidInput)} == {
        "zero": "amount",
        "negative": "amount",
        "over the net": "amount",
        "reference reused": "reference",
        "no reference": "reference",
        "card number": "reference",
        "odd characters": "reference",
    }
    assert "at most $5.00" in str(cases["over the net"])
    assert "4242" not in str(cases["card number"])
    not_skipped = await refused(refunded, 100, "BANK-3")
    assert isinstance(not_skipped, RefundNotSkipped)
    assert "refund COMPENSATED" in str(not_skipped)
    assert isinstance(await refused("NO-SUCH-ORDER", 100, "BANK-4"), OrderNotFound)
    with pytest.raises(NotAllowed):
        await shop.service.record_manual_refund(
            number, amount=100, reference="BANK-5", by=Actor.customer(source="127.0.0.1")
        )

    assert shop.service.payments() == payments
    assert await shop.service.access.audit() == audit


async def test_the_api_records_a_manual_refund_for_operators_only(shop: Shop) -> None:
    number = await order_whose_refund_was_skipped(shop)
    url = f"/api/orders/{number}/manual-refunds"
    body = {"amount": 3500, "reference": "BANK-API-1"}
    token = shop.service.access.order_token(number)

    async with operator_http(shop, shop.key) as operator, operator_http(shop) as anyone:
        anonymous = await anyone.post(url, json=body)
        customer = await anyone.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        negative = await operator.post(url, json={**body, "amount": -1})
        text_amount = await operator.post(url, json={**body, "amount": "35.00"})
        unknown = await operator.post("/api/orders/NOPE/manual-refunds", json=body)
        created = await operator.post(url, json=body)
        replayed = await operator.post(url, json=body)
        over = await operator.post(url, json={**body, "reference": "BANK-API-2"})
        listed = await anyone.get(f"/api/orders/{number}/payments", params={"token": token})
        page = await anyone.get(f"/orders/{number}", params={"token": token})

    assert (anonymous.status_code, customer.status_code) == (401, 403)
    assert negative.status_code == 422 and "/amount" in negative.text, negative.text
    assert text_amount.status_code == 422 and "amount" in text_amount.text, text_amount.text
    assert unknown.status_code == 404, unknown.text
    assert created.status_code == 201, created.text
    assert replayed.status_code == 200 and replayed.json() == created.json()
    assert over.status_code == 422 and "/amount" in over.text and "$0.00" in over.text
    record = created.json()
    assert {k: record[k] for k in ("kind", "amount", "reference", "operator", "card_last4")} == {
        "kind": "manual_refund",
        "amount": 3500,
        "reference": "BANK-API-1",
        "operator": "ana",
        "card_last4": "",
    }
    assert [(p["kind"], p["amount"]) for p in listed.json()] == [
        ("charge", 3500),
        ("manual_refund", 3500),
    ]
    assert page.status_code == 200
    assert "transfer BANK-API-1 (by ana)" in page.text
    net = re.search(r'id="order-net">([^<]*)<', page.text)
    assert net is not None and net.group(1) == "$0.00"


async def test_an_order_refunded_by_the_product_takes_no_manual_refund_over_the_api(
    shop: Shop,
) -> None:
    number = await order_refunded_by_the_product(shop)

    async with operator_http(shop, shop.key) as operator:
        refused = await operator.post(
            f"/api/orders/{number}/manual-refunds", json={"amount": 100, "reference": "B-1"}
        )

    assert refused.status_code == 409
    assert "was not skipped" in refused.json()["detail"]
    assert net_charged(shop.service.payments(order_number=number)) == 0
