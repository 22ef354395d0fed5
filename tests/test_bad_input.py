"""Orders started by other clients with input the worker cannot or must not read.

Each run must end Failed within seconds (not retry its workflow task forever), with a
non-retryable error naming the problem, and nothing reserved or charged. The clients here
are what another program would use: a plain temporalio Client (default converter, no codec),
a client encrypting with a key the worker does not have, and hand-built payloads.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker
from pizza_saga.billing.models import CardToken
from pizza_saga.common.crypto import EncryptionCodec, KeyRing
from pizza_saga.common.temporal import data_converter
from pizza_saga.order.models import OrderRequest
from pizza_saga.order.workflow import workflow_id_for
from tests.orders import new_order, placed

FAIL_WITHIN = 15  # seconds; a run still open by then is retrying its workflow task forever

TASK_QUEUE = f"bad-input-{uuid.uuid4().hex}"
UNUSED_CARD = CardToken(
    token="tok_" + "0" * 32, brand="visa", last4="4242", expires_at=datetime.now(UTC)
)
"""A token no vault knows: never charged, since each of these runs must fail first."""
"""This module's own task queue: no other test's worker takes its runs."""


@dataclass(frozen=True)
class Clients:
    """The product's client (its codec, the worker's key) and a plain one (no codec)."""

    product: Client
    plain: Client
    codec: EncryptionCodec


@pytest.fixture(params=[True, False], ids=["sandboxed", "unsandboxed"])
async def clients(
    time_skipping_env: WorkflowEnvironment, stores: Stores, request: pytest.FixtureRequest
) -> AsyncIterator[Clients]:
    """A real worker serving orders, the product's client, and a plain client.

    The worker runs the workflow in the SDK's sandbox, and outside it as deployed workers do
    (PIZZA_WORKFLOW_SANDBOX): bad input must fail the run at once either way.
    """
    product = time_skipping_env.client
    codec = product.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec)
    plain = await Client.connect(
        product.service_client.config.target_host, namespace=product.namespace
    )
    async with build_worker(product, stores, task_queue=TASK_QUEUE, sandboxed=request.param):
        yield Clients(product=product, plain=plain, codec=codec)


def good_request() -> OrderRequest:
    """A good order request, its card a token (these runs must fail before any charge)."""
    return OrderRequest(order=new_order().placed(UNUSED_CARD))


def order_json() -> dict[str, Any]:
    """A good-looking order as plain JSON, card number and all, as another program would
    write it without the product's client."""
    return {"order": new_order().model_dump(mode="json")}


def plain_payload(encoding: bytes, data: bytes) -> Payload:
    return Payload(metadata={"encoding": encoding}, data=data)


async def start(client: Client, *args: Any) -> str:
    """Start PizzaOrderWorkflow by name with ``args``; its workflow id."""
    workflow_id = workflow_id_for(f"T{uuid.uuid4().hex[:10]}")
    await client.start_workflow(
        "PizzaOrderWorkflow", args=list(args), id=workflow_id, task_queue=TASK_QUEUE
    )
    return workflow_id


async def failure_of(clients: Clients, workflow_id: str) -> ApplicationError:
    """The application error the run failed with; a run still open after FAIL_WITHIN fails."""
    handle = clients.product.get_workflow_handle(workflow_id)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), FAIL_WITHIN)
    error: BaseException | None = failure.value.cause
    while error is not None and not isinstance(error, ApplicationError):
        error = error.__cause__
    assert isinstance(error, ApplicationError), failure.value
    history = await handle.fetch_history()
    assert not any(e.HasField("activity_task_scheduled_event_attributes") for e in history.events)
    return error


async def no_input(c: Clients) -> str:
    return await start(c.plain)


async def two_inputs(c: Clients) -> str:
    request = good_request()
    return await start(c.product, request, request)


async def two_plain_inputs(c: Clients) -> str:
    return await start(c.plain, order_json(), order_json())


async def null_plain(c: Clients) -> str:
    return await start(c.plain, None)


async def null_encrypted(c: Clients) -> str:
    return await start(c.product, None)


async def unknown_encoding_plain(c: Clients) -> str:
    return await start(c.plain, RawValue(plain_payload(b"binary/x-pizza", b"\x01\x02")))


async def unknown_encoding_encrypted(c: Clients) -> str:
    [sealed] = await c.codec.encode([plain_payload(b"binary/x-pizza", b"\x01\x02")])
    return await start(c.plain, RawValue(sealed))


async def unknown_key(c: Clients) -> str:
    config = c.product.config()
    config["data_converter"] = data_converter(KeyRing.generate("x"))
    return await start(Client(**config), good_request())


async def tampered(c: Clients) -> str:
    json_payload = plain_payload(b"json/plain", json.dumps(order_json()).encode())
    [sealed] = await c.codec.encode([json_payload])
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    return await start(c.plain, RawValue(sealed))


async def plaintext_order(c: Clients) -> str:
    return await start(c.plain, order_json())


async def raw_card_number(c: Clients) -> str:
    """Encrypted with the product's codec, but the card number was never tokenized."""
    return await start(c.product, order_json())


NOT_ENCRYPTED = "was not encrypted"
Case = Callable[[Clients], Awaitable[str]]


@pytest.mark.parametrize(
    ("start_run", "error_type", "expected"),
    [
        (
            no_input,
            "WorkflowArgumentError",
            "PizzaOrderWorkflow takes 1 argument (request: OrderRequest); it was started with 0",
        ),
        (two_inputs, "WorkflowArgumentError", "it was started with 2"),
        (two_plain_inputs, "RejectedPayloadError", NOT_ENCRYPTED),
        (null_plain, "RejectedPayloadError", f"{NOT_ENCRYPTED} (encoding 'binary/null')"),
        (null_encrypted, "WorkflowArgumentError", "needs an order request, not null"),
        (unknown_encoding_plain, "RejectedPayloadError", NOT_ENCRYPTED),
        (unknown_encoding_encrypted, "RejectedPayloadError", "encoding 'binary/x-pizza'"),
        (unknown_key, "RejectedPayloadError", "key 'x', which this worker does not have"),
        (tampered, "RejectedPayloadError", "does not decrypt"),
        (plaintext_order, "RejectedPayloadError", "encrypt with the product's codec"),
        (raw_card_number, "ValidationError", "must never be sent to the order workflow"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_unreadable_input_fails_the_run_at_once_changing_nothing(
    clients: Clients, stores: Stores, start_run: Case, error_type: str, expected: str
) -> None:
    stock, payments = stores.inventory.on_hand(), stores.payments.payments()

    error = await failure_of(clients, await start_run(clients))

    assert (error.type, error.non_retryable) == (error_type, True)
    assert expected in error.message
    assert stores.inventory.on_hand() == stock
    assert stores.payments.payments() == payments


async def test_a_plaintext_order_leaves_no_card_number_in_the_failure(clients: Clients) -> None:
    request = order_json()
    card = request["order"]["credit_card_info"]["number"]

    error = await failure_of(clients, await start(clients.plain, request))

    assert card not in error.message
    assert json.dumps(request) not in error.message


async def test_what_the_platform_writes_unencrypted_is_still_served(
    clients: Clients, stores: Stores
) -> None:
    # An encrypted order with a plain memo (as `temporal workflow start --memo` writes it),
    # then the SDK's built-in stack-trace query (the Web UI's), which takes no payload.
    request = OrderRequest(order=placed(new_order(), stores.vault))
    [sealed] = await clients.product.data_converter.encode([request])
    handle = await clients.plain.start_workflow(
        "PizzaOrderWorkflow",
        RawValue(sealed),
        id=workflow_id_for(request.order.order_number),
        task_queue=TASK_QUEUE,
        memo={"note": "from another client"},
    )
    product = clients.product.get_workflow_handle(handle.id)

    result = await asyncio.wait_for(product.result(), FAIL_WITHIN)

    assert result["status"] == "SUCCESS"
    assert isinstance(await product.query("__stack_trace"), str)
