"""The composition root: builds the stores, the worker, the order service and the API.

Every process (`pizza worker`, `pizza api`, `pizza up`, the demo, the bench) composes itself
from these functions and the settings; nothing else wires stores, activities or workflows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, make_url
from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE
from temporal_saga.metrics import HISTOGRAM_BUCKETS as SAGA_HISTOGRAM_BUCKETS
from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.common import MetricMeter, WorkerDeploymentVersion
from temporalio.runtime import Runtime
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker

from pizza_saga.access.service import AccessService
from pizza_saga.access.store import AuditLog, OperatorStore
from pizza_saga.access.tokens import AccessTokens
from pizza_saga.billing.activities import BillingActivities
from pizza_saga.billing.store import PaymentStore
from pizza_saga.billing.vault import CardVault
from pizza_saga.common.arguments import WorkflowArgumentCheck
from pizza_saga.common.crypto import KeyRing, KeyRingError, load_or_create_key_file, read_key_file
from pizza_saga.common.db import open_engine
from pizza_saga.common.logs import configure_logging
from pizza_saga.common.sandbox import sandbox_runner
from pizza_saga.common.settings import Settings
from pizza_saga.common.telemetry import process_runtime, tracer_provider_from_env
from pizza_saga.common.temporal import connect, ensure_search_attributes, worker_client
from pizza_saga.common.versioning import PromotionError, adopt, deployment_config
from pizza_saga.inventory.activities import InventoryActivities
from pizza_saga.inventory.store import InventoryStore
from pizza_saga.migrations import check_current, upgrade
from pizza_saga.order.activities import get_distance, notify_delivery_driver
from pizza_saga.order.idempotency import IdempotencyStore
from pizza_saga.order.menu import MENU
from pizza_saga.order.reconcile import ReconcileActivities, ensure_reconcile_schedule
from pizza_saga.order.reconciler import ReconcileOrdersWorkflow
from pizza_saga.order.service import OrderService
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, PizzaOrderWorkflow
from pizza_saga.runtime import PURGE_EVERY, repeat

if TYPE_CHECKING:  # the web framework and tracing SDK only where they are used
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

    from pizza_saga.order.compat import CodeTypes
    from pizza_saga.order.service import ReplayCheck

SEARCH_ATTRIBUTES = (NEEDS_OPERATOR_ATTRIBUTE,)
"""Search attributes the order workflow sets; registered by `pizza server` and the worker."""

INITIAL_STOCK = 100
"""Pizzas of each menu item on hand when a store database is first created."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Telemetry:
    """A process's metrics runtime and tracer, both optional, for its clients and API."""

    runtime: Runtime | None = None
    """The process's SDK runtime (serving /metrics if configured); None: the SDK default."""
    tracer_provider: TracerProvider | None = None
    """Where spans go; None: no tracing."""
    interceptors: Sequence[ClientInterceptor] = field(default_factory=tuple)
    """Client interceptors (tracing); workers made from the client use them too."""

    @property
    def meter(self) -> MetricMeter:
        """The meter whose metrics the process's endpoint serves (a no-op one without)."""
        return self.runtime.metric_meter if self.runtime else MetricMeter.noop

    def flush(self) -> None:
        """Send the spans still buffered (before the process exits)."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()


def start_telemetry(settings: Settings, *, service_name: str, http: bool = False) -> Telemetry:
    """The process's SDK runtime, with metrics on PIZZA_METRICS_ADDRESS and spans to the
    OTEL_EXPORTER_OTLP_* endpoint, each only if configured; ``http`` for a process serving
    the API (its request metrics).

    Raises MetricsUnavailable if the address cannot be served.
    """
    buckets: dict[str, Sequence[float]] = dict(SAGA_HISTOGRAM_BUCKETS)
    if http:
        from pizza_saga.api.metrics import HISTOGRAM_BUCKETS as HTTP_BUCKETS

        buckets.update(HTTP_BUCKETS)
    runtime = process_runtime(settings.metrics_address, histogram_buckets=buckets)
    return traced(runtime, tracer_provider_from_env(service_name))


def traced(runtime: Runtime | None, provider: TracerProvider | None) -> Telemetry:
    """Telemetry on ``runtime`` whose clients (and their workers) trace to ``provider``,
    their spans scrubbed of failure messages (common/spans.py)."""
    if provider is None:
        return Telemetry(runtime=runtime)
    from temporalio.contrib.opentelemetry import TracingInterceptor

    from pizza_saga.common.spans import ScrubbedTracerProvider

    tracer = ScrubbedTracerProvider(provider).get_tracer("pizza_saga")
    return Telemetry(
        runtime=runtime, tracer_provider=provider, interceptors=(TracingInterceptor(tracer),)
    )


async def connect_client(
    settings: Settings,
    telemetry: Telemetry | None = None,
    *,
    target_host: str | None = None,
    encrypted: bool = True,
) -> Client:
    """A client of the configured Temporal, reporting through ``telemetry`` if given
    (not ``encrypted``: reading payloads as stored, see common.temporal.connect)."""
    telemetry = telemetry or Telemetry()
    return await connect(
        settings,
        target_host,
        runtime=telemetry.runtime,
        interceptors=telemetry.interceptors,
        encrypted=encrypted,
    )


def order_number_of(workflow_id: str) -> str | None:
    """The order number a workflow id stands for; None for a workflow that is no order."""
    if workflow_id.startswith(WORKFLOW_ID_PREFIX):
        return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
    return None


def set_up_logging(settings: Settings) -> None:
    """Logging as PIZZA_LOG_FORMAT says, with order numbers in JSON lines, cards masked."""
    configure_logging(settings.log_format, business_key=order_number_of, key_name="order_number")


@dataclass(frozen=True)
class Stores:
    """The stores the activities write to, on one database engine."""

    engine: Engine
    inventory: InventoryStore
    payments: PaymentStore
    vault: CardVault
    idempotency: IdempotencyStore
    operators: OperatorStore
    audit: AuditLog
    tokens: AccessTokens
    """Signs customers' order tokens and operators' page sessions (the vault's keys)."""


def open_stores(settings: Settings) -> Stores:
    """Open the store database; StoreError (one line) if it cannot be used.

    A SQLite database sets itself up on first use (`upgrade_stores`); a PostgreSQL one must
    have been upgraded by `pizza db upgrade` to this version's schema.
    """
    engine = open_engine(settings.store_url, pool_size=settings.activity_slots)
    if engine.dialect.name == "sqlite":
        upgrade_stores(engine)
    else:
        check_current(engine)
    # The vault's keys also key the hashes of idempotent requests (which hold card numbers).
    ring = vault_key_ring(settings, shared=engine.dialect.name != "sqlite")
    return Stores(
        engine=engine,
        inventory=InventoryStore(engine),
        payments=PaymentStore(engine),
        vault=CardVault(engine, ring, ttl=timedelta(seconds=settings.card_token_ttl_seconds)),
        idempotency=IdempotencyStore(engine, ring),
        operators=OperatorStore(engine),
        audit=AuditLog(engine),
        tokens=AccessTokens(ring),
    )


def check_store_keys(settings: Settings) -> None:
    """Raise KeyRingError now if the stores' keys are missing, before anything connects."""
    vault_key_ring(settings, shared=make_url(settings.store_url).get_backend_name() != "sqlite")


def vault_key_ring(settings: Settings, *, shared: bool) -> KeyRing:
    """The card vault's keys: PIZZA_VAULT_KEYS, else PIZZA_VAULT_KEY_FILE, else (for a store
    on this machine only) a ring generated once into PIZZA_HOME. KeyRingError says why not.
    """
    if settings.vault_keys:
        return KeyRing.from_json(settings.vault_keys, "PIZZA_VAULT_KEYS")
    if settings.vault_key_file is not None:
        return read_key_file(settings.vault_key_file, "PIZZA_VAULT_KEY_FILE")
    if shared:
        raise KeyRingError(
            "no card vault key configured for a shared store database: set "
            "PIZZA_VAULT_KEY_FILE or PIZZA_VAULT_KEYS, the same for every process "
            "(docs/card-data.md)"
        )
    return load_or_create_key_file(settings.default_vault_key_file)


def upgrade_stores(engine: Engine) -> tuple[str | None, str]:
    """Migrate the schema to this version and stock menu items the database does not know.

    Returns the schema revision before and after. Safe to run from several processes at once.
    """
    revisions = upgrade(engine)
    InventoryStore(engine).stock_up(dict.fromkeys(MENU, INITIAL_STOCK))
    return revisions


async def prepare_namespace(client: Client) -> None:
    """Register the search attributes the order workflow sets, if they are missing."""
    await ensure_search_attributes(client, SEARCH_ATTRIBUTES)


WORKFLOWS = (PizzaOrderWorkflow, ReconcileOrdersWorkflow)
"""Every workflow a worker of this version runs (and `pizza replay-check` replays)."""


def build_worker(
    client: Client,
    stores: Stores,
    *,
    task_queue: str,
    activity_slots: int | None = None,
    workflow_slots: int | None = None,
    graceful_shutdown_timeout: timedelta = timedelta(),
    interceptors: Sequence[Interceptor] = (),
    sandboxed: bool = True,
    max_cached_workflows: int = 1000,
    version: WorkerDeploymentVersion | None = None,
) -> Worker:
    """A worker for the order workflow and every activity it calls, polling ``task_queue``.

    It reads payloads strictly (only what the product's codec encrypted, see `worker_client`)
    and fails a run started with the wrong number of arguments at once. Slots left None take
    the SDK's default; ``graceful_shutdown_timeout`` is how long running activities may go on
    after ``shutdown()`` before they are cancelled. ``sandboxed``: workflows run in the SDK's
    sandbox, which refuses non-deterministic calls (the tests' workers keep it on).
    ``max_cached_workflows``: runs kept in memory between tasks (the SDK's default); 0
    replays every run's history for each task. ``version``: the deployment version it
    serves (Worker Versioning); None: unversioned.
    """
    workflows = list(WORKFLOWS)
    return Worker(
        worker_client(client),
        task_queue=task_queue,
        workflows=workflows,
        activities=order_activities(client, stores, task_queue=task_queue),
        max_concurrent_activities=activity_slots,
        max_concurrent_workflow_tasks=workflow_slots,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        interceptors=[WorkflowArgumentCheck(), *interceptors],
        workflow_runner=sandbox_runner(workflows) if sandboxed else UnsandboxedWorkflowRunner(),
        max_cached_workflows=max_cached_workflows,
        deployment_config=deployment_config(version) if version is not None else None,
    )


def order_activities(
    client: Client, stores: Stores, *, task_queue: str
) -> list[Callable[..., Any]]:
    """Every activity the order and reconciler workflows call, over ``stores``."""
    inventory = InventoryActivities(stores.inventory)
    billing = BillingActivities(stores.payments, stores.vault)
    reconciler = ReconcileActivities(
        client,
        task_queue=task_queue,
        inventory=stores.inventory,
        payments=stores.payments,
        vault=stores.vault,
        access=build_access(stores),
    )
    return [
        get_distance,
        notify_delivery_driver,
        inventory.update_inventory,
        inventory.revert_inventory,
        inventory.release_removed_pizzas,
        billing.process_credit_card,
        billing.charge_difference,
        billing.refund_customer,
        billing.refund_difference,
        billing.send_bill,
        billing.discard_card,
        reconciler.find_abandoned_orders,
        reconciler.report_reconciled,
    ]


def housekeeping(stores: Stores) -> list[Coroutine[Any, Any, None]]:
    """What a worker process does on the side while it runs, hourly: the card vault's purge
    (expired numbers destroyed, tokens destroyed 30 days ago forgotten) and the idempotency
    keys' (keys older than a day forgotten)."""
    return [
        repeat(stores.vault.purge, every=PURGE_EVERY, what="purge the card vault"),
        repeat(stores.idempotency.forget_old, every=PURGE_EVERY, what="purge idempotency keys"),
    ]


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """The schedules a deployment runs, created by its workers unless they exist: the
    reconciler's passes (order/reconcile.py)."""
    if not await ensure_reconcile_schedule(client, task_queue=settings.task_queue):
        log.warning("this Temporal has no schedules: run `pizza reconcile` to reconcile orders")


def build_worker_for(
    client: Client,
    stores: Stores,
    settings: Settings,
    *,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """The worker as a deployment configures it: its task queue, slots, grace period and
    sandbox (on unless PIZZA_WORKFLOW_SANDBOX=false)."""
    return build_worker(
        client,
        stores,
        task_queue=settings.task_queue,
        activity_slots=settings.activity_slots,
        workflow_slots=settings.workflow_slots,
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
        interceptors=interceptors,
        sandboxed=settings.workflow_sandbox,
        version=deployment_version(settings) if settings.worker_versioning else None,
    )


def deployment_version(settings: Settings) -> WorkerDeploymentVersion:
    """The deployment version this code's workers declare (PIZZA_DEPLOYMENT, PIZZA_BUILD_ID)."""
    return WorkerDeploymentVersion(settings.deployment, settings.worker_build_id)


async def adopt_version(client: Client, settings: Settings, *, take_over: bool = False) -> None:
    """Beside a versioned worker: make its version current if none is (the deployment's first
    worker), or always with ``take_over`` (`pizza up`, the demo: the only worker); else say
    which version new orders go to."""
    if not settings.worker_versioning:
        return
    version = deployment_version(settings)
    try:
        current = await adopt(client, version, take_over=take_over)
    except PromotionError as err:
        log.warning("%s", err)
        return
    if current == version.build_id:
        log.info(
            "new orders go to this build, %s (deployment %s)", current, version.deployment_name
        )
    else:
        log.warning(
            "this worker serves build %s: it finishes that build's orders; new orders go to "
            "build %s until `pizza deploy promote` makes this one current",
            version.build_id,
            current,
        )


def build_access(stores: Stores) -> AccessService:
    """Operators, credentials and the audit trail over ``stores``."""
    return AccessService(operators=stores.operators, audit=stores.audit, tokens=stores.tokens)


def build_service(client: Client | None, stores: Stores, settings: Settings) -> OrderService:
    """The order service over this client and these stores (no client: stock and payments only)."""
    return OrderService(
        client=client,
        inventory=stores.inventory,
        payments=stores.payments,
        vault=stores.vault,
        idempotency=stores.idempotency,
        access=build_access(stores),
        settings=settings,
    )


def api_hosts(host: str, settings: Settings) -> tuple[str, ...]:
    """The names the API answers to besides loopback's: PIZZA_ALLOWED_HOSTS, and the address
    it listens on when that is one address (not all of them)."""
    listening = () if host in ("0.0.0.0", "::", "") else (host,)
    return (*settings.api_host_names, *listening)


def build_api(
    service: OrderService,
    *,
    ui_url: str,
    namespace: str,
    telemetry: Telemetry | None = None,
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """The HTTP API and pages over ``service``, linking orders to the Web UI at ``ui_url``,
    answering requests for loopback's names and ``allowed_hosts``.

    With ``telemetry``: each request counted and timed on its metrics endpoint, and traced
    (a request's span is the parent of the workflow it starts, failure messages and
    credentials left out) when it has a tracer.
    """
    from pizza_saga.api import create_app
    from pizza_saga.api.app import Links
    from pizza_saga.api.metrics import RequestMetrics

    web = create_app(
        service, links=Links(ui_url=ui_url, namespace=namespace), allowed_hosts=allowed_hosts
    )
    if telemetry is not None:
        web.add_middleware(RequestMetrics, meter=telemetry.meter)
        if telemetry.tracer_provider is not None:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            from pizza_saga.api.access import scrub_trace
            from pizza_saga.common.spans import ScrubbedTracerProvider

            FastAPIInstrumentor.instrument_app(
                web,
                tracer_provider=ScrubbedTracerProvider(telemetry.tracer_provider),
                server_request_hook=scrub_trace,
            )
    return web


def code_types() -> CodeTypes:
    """What this version reads payloads as: the types of the workflows and activities that
    `build_worker` registers (tests/test_payload_compat.py holds the two lists alike)."""
    from pizza_saga.order.compat import CodeTypes, WorkflowTypes
    from pizza_saga.order.reconcile import RECONCILER_WORKFLOW
    from pizza_saga.order.workflow import WORKFLOW_TYPE

    return CodeTypes(
        workflows={
            WORKFLOW_TYPE: WorkflowTypes.of(
                PizzaOrderWorkflow.run, PizzaOrderWorkflow.resolve, PizzaOrderWorkflow.amend
            ),
            RECONCILER_WORKFLOW: WorkflowTypes.of(ReconcileOrdersWorkflow.run),
        },
        activities=CodeTypes.activities_of(
            [
                get_distance,
                notify_delivery_driver,
                InventoryActivities.update_inventory,
                InventoryActivities.revert_inventory,
                InventoryActivities.release_removed_pizzas,
                BillingActivities.process_credit_card,
                BillingActivities.charge_difference,
                BillingActivities.refund_customer,
                BillingActivities.refund_difference,
                BillingActivities.send_bill,
                BillingActivities.discard_card,
                ReconcileActivities.find_abandoned_orders,
                ReconcileActivities.report_reconciled,
            ]
        ),
    )


def build_replay_check(settings: Settings, client: Client | None) -> ReplayCheck:
    """`pizza replay-check`: this version's workflows replayed as this deployment's workers
    run them (the strict data converter, the sandbox unless PIZZA_WORKFLOW_SANDBOX=false,
    the argument check), against the orders on PIZZA_TASK_QUEUE of ``client``'s Temporal,
    decrypted with its key ring; without a client, against history files, decrypted with
    the configured ring (KeyRingError if there is none)."""
    from temporalio.runtime import TelemetryConfig
    from temporalio.worker import Replayer

    from pizza_saga.common.crypto import EncryptionCodec
    from pizza_saga.common.temporal import data_converter, existing_key_ring
    from pizza_saga.order.service import ReplayCheck

    codec = client.data_converter.payload_codec if client is not None else None
    ring = codec.ring if isinstance(codec, EncryptionCodec) else existing_key_ring(settings)
    converter = data_converter(ring, strict=True)
    workflows = list(WORKFLOWS)
    replayer = Replayer(
        workflows=workflows,
        data_converter=converter,
        workflow_runner=(
            sandbox_runner(workflows) if settings.workflow_sandbox else UnsandboxedWorkflowRunner()
        ),
        interceptors=[WorkflowArgumentCheck()],
        # The SDK core logs each failed workflow task; here each is a verdict, reported.
        runtime=Runtime(telemetry=TelemetryConfig(logging=None, metrics=None)),
    )
    return ReplayCheck(
        replayer=replayer,
        converter=converter,
        types=code_types(),
        client=client,
        task_queue=settings.task_queue,
    )
