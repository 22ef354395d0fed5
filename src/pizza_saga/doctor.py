"""`pizza doctor`: can this deployment take orders? One check per line, each saying what
to do when it fails.

Checks, against the configured Temporal (TEMPORAL_* variables or profile: embedded, a
cluster, or Temporal Cloud) and the configured store: the connection and namespace, the
search attribute the saga sets, a worker polling the task queue, the encryption keys (they
must decrypt a recent order of the task queue), the store's reachability and schema, and the
card vault's keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.app import (
    SEARCH_ATTRIBUTES,
    connect_client,
    open_stores,
    order_number_of,
    vault_key_ring,
)
from pizza_saga.billing.vault import CardVault
from pizza_saga.common.crypto import ENCODING, EncryptionCodec, KeyRingError
from pizza_saga.common.db import StoreError, open_engine, shown
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect_config, key_ring, polling_workers
from pizza_saga.deploys import deploy_status
from pizza_saga.migrations import check_current, current
from pizza_saga.order.reconcile import abandoned_orders
from pizza_saga.order.service import POLLER_FRESH

CONNECT_TIMEOUT_SECONDS = 10.0
WORKFLOW_TYPE = "PizzaOrderWorkflow"
"""The order workflow's type name (its @workflow.defn name)."""


@dataclass(frozen=True)
class Check:
    """One check's verdict: what was found, or what is wrong and what to do."""

    name: str
    ok: bool
    detail: str


@dataclass
class Context:
    """What the checks find out and share: the settings and, once reached, Temporal."""

    settings: Settings
    address: str = "?"
    client: Client | None = None


CheckFn = Callable[[Context], Awaitable[Check]]


async def temporal(ctx: Context) -> Check:
    """Temporal answers at the configured address, and the namespace exists."""
    name = "Temporal"
    try:
        config: dict[str, Any] = connect_config()
    except Exception as err:  # the SDK's config loader reports bad TEMPORAL_* values
        return Check(name, False, f"Temporal client configuration: {err}")
    ctx.address, namespace = str(config["target_host"]), str(config["namespace"])
    try:
        # Payloads as stored: the encryption check below decodes them with the keys itself.
        client = await asyncio.wait_for(
            connect_client(ctx.settings, encrypted=False), CONNECT_TIMEOUT_SECONDS
        )
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except (RuntimeError, TimeoutError) as err:
        return Check(
            name,
            False,
            f"cannot reach Temporal at {ctx.address} ({' '.join(str(err).split())[:200]}): "
            "start it with `pizza server`, or set TEMPORAL_ADDRESS (or a TEMPORAL_PROFILE)",
        )
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return Check(
                name,
                False,
                f"namespace {namespace!r} does not exist at {ctx.address}: "
                "set TEMPORAL_NAMESPACE to one that does",
            )
        return Check(name, False, f"Temporal at {ctx.address} refused: {err.message}")
    ctx.client = client
    return Check(name, True, f"reached {ctx.address}, namespace {namespace}")


async def search_attribute(ctx: Context) -> Check:
    """The search attribute that lists orders waiting for an operator is registered."""
    name = "Search attribute"
    if ctx.client is None:
        return Check(name, False, "not checked: Temporal is not reachable")
    listed = await ctx.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=ctx.client.namespace)
    )
    missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in listed.custom_attributes]
    if missing:
        return Check(
            name,
            False,
            f"{', '.join(missing)} is not registered in namespace {ctx.client.namespace}: start "
            "`pizza worker` (it registers it) or run `temporal operator search-attribute "
            f"create --name {missing[0]} --type Bool`",
        )
    return Check(name, True, ", ".join(key.name for key in SEARCH_ATTRIBUTES) + " registered")


async def worker(ctx: Context) -> Check:
    """A running worker polls the task queue."""
    name, queue = "Worker", ctx.settings.task_queue
    if ctx.client is None:
        return Check(name, False, "not checked: Temporal is not reachable")
    workers = await polling_workers(ctx.client, queue, fresh=POLLER_FRESH)
    if workers is None:
        return Check(name, True, f"this Temporal cannot tell who polls {queue}")
    if not workers:
        return Check(
            name,
            False,
            f"no worker polls task queue {queue}: orders would wait; start `pizza worker` "
            f"with PIZZA_TASK_QUEUE={queue}",
        )
    return Check(name, True, f"{len(workers)} polling {queue} ({', '.join(workers)})")


async def encryption_keys(ctx: Context) -> Check:
    """The key ring loads and decrypts the input of the task queue's most recent order."""
    name = "Encryption keys"
    try:
        ring = key_ring(ctx.settings, ctx.address)
    except KeyRingError as err:
        return Check(name, False, str(err))
    if ctx.client is None:
        return Check(
            name,
            False,
            f"key ring loaded (primary {ring.primary}); not tried: Temporal is not reachable",
        )
    query = f"TaskQueue = '{ctx.settings.task_queue}' AND WorkflowType = '{WORKFLOW_TYPE}'"
    recent = [execution async for execution in ctx.client.list_workflows(query, limit=1)]
    if not recent:
        return Check(
            name, True, f"key ring loaded (primary {ring.primary}); no order yet to decrypt"
        )
    execution = recent[0]
    order = order_number_of(execution.id) or execution.id
    history = await ctx.client.get_workflow_handle(
        execution.id, run_id=execution.run_id
    ).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    payloads = list(started.input.payloads)
    if any(p.metadata.get("encoding") != ENCODING for p in payloads):
        return Check(
            name,
            False,
            f"order {order}'s input is not encrypted: a client without "
            "the product's codec started it (docs/card-data.md)",
        )
    try:
        await EncryptionCodec(ring).decode(payloads)
    except KeyRingError as err:
        return Check(
            name,
            False,
            f"cannot decrypt order {order}: {err}; give this process the key ring the workers "
            "use (PIZZA_ENCRYPTION_KEYS or PIZZA_KEY_FILE), old keys included",
        )
    return Check(name, True, f"key ring (primary {ring.primary}) decrypts order {order}")


async def store(ctx: Context) -> Check:
    """The store database answers and its schema is this version's."""
    name = "Store"
    try:
        engine = await asyncio.to_thread(open_engine, ctx.settings.store_url, pool_size=1)
    except StoreError as err:
        return Check(name, False, f"{err}: check PIZZA_DATABASE_URL and that the database runs")
    try:
        await asyncio.to_thread(check_current, engine)
        revision = await asyncio.to_thread(current, engine)
    except StoreError as err:
        return Check(name, False, str(err))
    finally:
        engine.dispose()
    return Check(name, True, f"{shown(engine.url)} at schema {revision}")


async def vault_key(ctx: Context) -> Check:
    """The card vault's key ring is configured and holds every key kept numbers are under."""
    name = "Vault key"
    try:
        engine = await asyncio.to_thread(open_engine, ctx.settings.store_url, pool_size=1)
    except StoreError:
        return Check(name, False, "not checked: the store database is not reachable")
    try:
        shared = engine.dialect.name != "sqlite"
        ring = vault_key_ring(ctx.settings, shared=shared)
        missing = await asyncio.to_thread(CardVault(engine, ring).missing_keys)
    except KeyRingError as err:
        return Check(name, False, str(err))
    except SQLAlchemyError:
        return Check(name, False, "not checked: the store's schema is not current")
    finally:
        engine.dispose()
    if missing:
        return Check(
            name,
            False,
            f"card numbers are kept under vault key(s) {', '.join(sorted(missing))}, not in "
            "PIZZA_VAULT_KEYS / PIZZA_VAULT_KEY_FILE: their orders cannot be charged",
        )
    return Check(name, True, f"vault key ring (primary {ring.primary}) holds every key in use")


async def abandoned(ctx: Context) -> Check:
    """No order's run ended (terminated, timed out) with its effects still in place."""
    name = "Abandoned orders"
    if ctx.client is None:
        return Check(name, False, "not checked: Temporal is not reachable")
    try:
        stores = await asyncio.to_thread(open_stores, ctx.settings)
    except (StoreError, KeyRingError, SQLAlchemyError) as err:
        return Check(name, False, f"not checked: the stores did not open ({err})")
    try:
        found = await abandoned_orders(
            ctx.client,
            task_queue=ctx.settings.task_queue,
            inventory=stores.inventory,
            payments=stores.payments,
            vault=stores.vault,
        )
    finally:
        stores.engine.dispose()
    if found:
        named = ", ".join(f"{o.order_number} ({o.status.lower()})" for o in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        return Check(
            name,
            False,
            f"{len(found)} order(s) ended without rolling back, their effects in place: "
            f"{named}{more}; a worker's reconciler rolls them back within a minute "
            "(`pizza reconcile` does it now)",
        )
    return Check(name, True, "every ended order finished or rolled back")


async def builds(ctx: Context) -> Check:
    """Every build that still runs orders has a worker (orders are pinned to their build)."""
    name = "Builds"
    if ctx.client is None:
        return Check(name, False, "not checked: Temporal is not reachable")
    found = await deploy_status(ctx.client, ctx.settings)
    if not found.versioned:
        return Check(name, True, "unversioned workers: every worker runs every order")
    if found.stranded:
        named = "; ".join(
            f"build {build}: {', '.join(orders[:10])}{' ...' if len(orders) > 10 else ''}"
            for build, orders in found.stranded.items()
        )
        return Check(
            name,
            False,
            f"orders wait on builds no worker serves ({named}): start a worker of that build "
            "(`PIZZA_BUILD_ID=<build> pizza worker`) until they finish",
        )
    return Check(
        name,
        True,
        f"new orders go to build {found.current or 'none yet'}; every build with running "
        "orders has a worker",
    )


CHECKS: tuple[CheckFn, ...] = (
    temporal,
    search_attribute,
    worker,
    encryption_keys,
    store,
    vault_key,
    abandoned,
    builds,
)
"""Every check, in order; a later one may use what an earlier one found (the client)."""


async def examine(settings: Settings, checks: tuple[CheckFn, ...] = CHECKS) -> list[Check]:
    """Run every check; a check that breaks unexpectedly is a failed check, not a crash."""
    ctx = Context(settings)
    verdicts = []
    for check in checks:
        try:
            verdicts.append(await check(ctx))
        except Exception as err:
            title = check.__name__.replace("_", " ").capitalize()
            verdicts.append(Check(title, False, f"the check failed: {type(err).__name__}: {err}"))
    return verdicts
