"""The worker: hosts PizzaOrderWorkflow and its activities on the pizza-tasks queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from pizza_saga import TASK_QUEUE
from pizza_saga.billing.activities import BillingActivities
from pizza_saga.billing.store import PaymentStore
from pizza_saga.common.arguments import WorkflowArgumentCheck
from pizza_saga.common.db import open_database
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import ensure_search_attributes, worker_client
from pizza_saga.inventory.activities import InventoryActivities
from pizza_saga.inventory.store import InventoryStore
from pizza_saga.order.activities import get_distance, notify_delivery_driver
from pizza_saga.order.menu import MENU
from pizza_saga.order.workflow import PizzaOrderWorkflow
from pizza_saga.saga import NEEDS_OPERATOR_ATTRIBUTE

SEARCH_ATTRIBUTES = (NEEDS_OPERATOR_ATTRIBUTE,)
"""Search attributes the order workflow sets; registered by `pizza server` and the worker."""

INITIAL_STOCK = 100
"""Pizzas of each menu item on hand when a store database is first created."""


@dataclass(frozen=True)
class Stores:
    """The stores the activities write to."""

    inventory: InventoryStore
    payments: PaymentStore


def open_stores(settings: Settings) -> Stores:
    """Open the store database, stocking every menu item it does not know yet."""
    engine = open_database(settings.store_url)
    inventory = InventoryStore(engine)
    inventory.stock_up(dict.fromkeys(MENU, INITIAL_STOCK))
    return Stores(inventory=inventory, payments=PaymentStore(engine))


async def prepare_namespace(client: Client) -> None:
    """Register the search attributes the order workflow sets, if they are missing."""
    await ensure_search_attributes(client, SEARCH_ATTRIBUTES)


def build_worker(
    client: Client, stores: Stores, *, interceptors: Sequence[Interceptor] = ()
) -> Worker:
    """A worker for the order workflow and every activity it calls.

    It reads payloads strictly (only what the product's codec encrypted, see
    `worker_client`) and fails a run started with the wrong number of arguments at once.
    """
    inventory = InventoryActivities(stores.inventory)
    billing = BillingActivities(stores.payments)
    return Worker(
        worker_client(client),
        task_queue=TASK_QUEUE,
        workflows=[PizzaOrderWorkflow],
        activities=[
            get_distance,
            notify_delivery_driver,
            inventory.update_inventory,
            inventory.revert_inventory,
            billing.process_credit_card,
            billing.refund_customer,
            billing.send_bill,
        ],
        interceptors=[WorkflowArgumentCheck(), *interceptors],
    )
