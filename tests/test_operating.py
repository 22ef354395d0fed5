"""Operating the service for real: metrics, JSON logs and the dashboard, on real processes.

One private dev server, one `pizza worker` process (metrics on, JSON logs) and one
`pizza api` process (metrics on) serve the module. Orders of every kind run through the
worker; its /metrics page is scraped before and after, and every counter must have moved
by exactly what those orders did, as their ledgers and the payments store say.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE, StepState
from temporalio.client import Client

from pizza_saga.app import open_stores
from pizza_saga.billing import cards
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import (
    OrderOutcome,
    OrderStatus,
    cancel_order,
    order_outcome,
    order_request,
    place_order,
)
from pizza_saga.order.menu import MENU
from pizza_saga.order.models import PizzaOrder
from pizza_saga.order.workflow import workflow_id_for
from tests.metrics_text import Scrape, scrape, scrape_when
from tests.orders import new_order, placed, terminate
from tests.processes import Deployment, Process, deployment
from tests.test_alert_rules import DASHBOARD, metric_names, rule_expressions

pytestmark = pytest.mark.devserver

WAIT = 90.0


@dataclass
class Stack:
    """A dev server, a worker and an API process sharing one environment, and their metrics."""

    live: Deployment
    worker_metrics: str
    api_metrics: str
    api_url: str

    @property
    def env(self) -> dict[str, str]:
        return self.live.env

    @property
    def settings(self) -> Settings:
        return self.live.settings

    @property
    def task_queue(self) -> str:
        return self.live.task_queue

    def spawn(self, name: str, *args: str, **env: str) -> Process:
        """Start `pizza ARGS`: stdout to NAME.out, stderr (the log) to NAME.log."""
        return self.live.spawn(name, *args, stdout=f"{name}.out", **env)

    def log(self, name: str) -> str:
        return (self.live.log_dir / f"{name}.log").read_text()

    async def pizza(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await self.pizza_with({}, *args)

    async def pizza_with(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """Run `pizza ARGS` to its end with ``env`` on top of the stack's environment."""
        return await asyncio.to_thread(self.live.run, *args, **env)


def polling(page: Scrape, task_queue: str) -> bool:
    return page.total("temporal_num_pollers", task_queue=task_queue) > 0


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    home = tmp_path_factory.mktemp("operating")
    worker_metrics, api_metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    api_port = free_port()
    async with deployment(
        home,
        pizza_home=home / "pizza-home",
        queue="ops",
        PIZZA_COMPENSATION_BACKOFF_SECONDS="0.05",
        PIZZA_LOG_FORMAT="json",
    ) as live:
        stack = Stack(live, worker_metrics, api_metrics, f"http://127.0.0.1:{api_port}")
        stack.spawn("worker", "worker", PIZZA_METRICS_ADDRESS=worker_metrics)
        stack.spawn("api", "api", "--port", str(api_port), PIZZA_METRICS_ADDRESS=api_metrics)
        await asyncio.to_thread(
            scrape_when, worker_metrics, lambda page: polling(page, stack.task_queue)
        )
        yield stack


async def until_described(client: Client, number: str, done: Any) -> None:
    """Poll the order's workflow description (the server's view, no query) until ``done``."""
    handle = client.get_workflow_handle(workflow_id_for(number))
    async with asyncio.timeout(WAIT):
        while not done(await handle.describe()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@dataclass
class Ran:
    """What the orders did, by the service's own records, and the scrapes around them."""

    before: Scrape
    after: Scrape
    outcomes: dict[str, OrderOutcome]
    orders: dict[str, PizzaOrder]
    charged: int
    refunded: int
    short_item: str


@pytest.fixture(scope="module")
async def ran(stack: Stack) -> Ran:
    """A completed, a declined, a cancelled, an operator-resolved, a terminated (then
    reconciled) and an out-of-stock order."""
    settings = stack.settings
    client = await connect(settings, stack.live.address)
    before = await asyncio.to_thread(scrape, stack.worker_metrics)
    orders = {
        "completed": new_order(),
        "declined": new_order(credit_card_info__number=cards.DECLINED_CARD),
        "cancelled": new_order(),
        "operator": new_order(
            credit_card_info__number=cards.REFUND_FAILING_CARD,
            customer__email="bounce@example.com",
        ),
        "terminated": new_order(),
    }
    slow_driver = settings.model_copy(update={"driver_seconds": 60.0})
    vault = open_stores(settings).vault
    for kind, order in orders.items():
        request = order_request(
            placed(order, vault), slow_driver if kind in ("cancelled", "terminated") else settings
        )
        await place_order(client, request, task_queue=stack.task_queue)

    cancelled, operator = orders["cancelled"].order_number, orders["operator"].order_number
    await until_described(
        client,
        cancelled,
        lambda d: any(
            p.activity_type.name == "notify_delivery_driver"
            for p in d.raw_description.pending_activities
        ),
    )
    await cancel_order(client, cancelled)
    terminated = orders["terminated"].order_number
    await until_described(
        client,
        terminated,
        lambda d: any(
            p.activity_type.name == "notify_delivery_driver"
            for p in d.raw_description.pending_activities
        ),
    )
    await terminate(client, workflow_id_for(terminated), "by hand")
    reconciled = await stack.pizza("reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    # By this command, or by the workers' schedule if its minute came first: either way, once.
    assert (
        f"Order {terminated} (terminated): 3 pizzas back, 35.00 refunded" in reconciled.stdout
        or "Nothing to reconcile" in reconciled.stdout
    ), reconciled.stdout
    await until_described(
        client, operator, lambda d: d.typed_search_attributes.get(NEEDS_OPERATOR_ATTRIBUTE)
    )
    resolved = await stack.pizza("resolve", operator, "--retry")
    assert resolved.returncode == 0, resolved.stderr

    outcomes = {
        kind: await asyncio.wait_for(order_outcome(client, order.order_number), WAIT)
        for kind, order in orders.items()
    }
    # Last, alone: an order for an item the shop has run out of.
    stores = open_stores(settings)
    short_item = sorted(MENU)[0]
    stock = stores.inventory.on_hand()
    stores.inventory.stock_up({short_item: 0}, overwrite=True)
    orders["out_of_stock"] = new_order()
    await place_order(
        client,
        order_request(placed(orders["out_of_stock"], stores.vault), settings),
        task_queue=stack.task_queue,
    )
    outcomes["out_of_stock"] = await asyncio.wait_for(
        order_outcome(client, orders["out_of_stock"].order_number), WAIT
    )
    stores.inventory.stock_up({short_item: stock[short_item]}, overwrite=True)

    numbers = {order.order_number for order in orders.values()}
    payments = [p for p in stores.payments.payments() if p.order_number in numbers]
    after = await asyncio.to_thread(
        scrape_when,
        stack.worker_metrics,
        lambda page: (
            page.total("pizza_orders_total") - before.total("pizza_orders_total") >= 5
            and page.total("pizza_orders_reconciled_total") >= 1
        ),
    )
    return Ran(
        before=before,
        after=after,
        outcomes=outcomes,
        orders=orders,
        charged=sum(p.amount for p in payments if p.kind == "charge"),
        refunded=sum(p.amount for p in payments if p.kind == "refund"),
        short_item=short_item,
    )


def moved(ran: Ran, name: str, *, keep: tuple[str, ...], task_queue: str) -> dict[Any, float]:
    """How much each series of ``name`` (summed by ``keep``) grew between the scrapes."""
    after = ran.after.series(name, keep=keep, task_queue=task_queue)
    before = ran.before.series(name, keep=keep, task_queue=task_queue)
    grown = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v for k, v in grown.items() if v}


def by(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


async def test_worker_metrics_move_by_exactly_what_the_orders_did(stack: Stack, ran: Ran) -> None:
    queue = stack.task_queue
    assert {kind: o.status for kind, o in ran.outcomes.items()} == {
        "completed": OrderStatus.COMPLETED,
        "declined": OrderStatus.FAILED,
        "cancelled": OrderStatus.CANCELLED,
        "operator": OrderStatus.FAILED,
        "terminated": OrderStatus.TERMINATED,
        "out_of_stock": OrderStatus.FAILED,
    }

    assert moved(ran, "pizza_orders_total", keep=("outcome", "error"), task_queue=queue) == {
        by(outcome="completed", error=""): 1,
        by(outcome="failed", error="CardDeclinedError"): 1,
        by(outcome="cancelled", error=""): 1,
        by(outcome="failed", error="BillDeliveryError"): 1,
        by(outcome="failed", error="OutOfStockError"): 1,
    }
    # Money as the payments store recorded it: charged four times, refunded three times (the
    # terminated order by the reconciler).
    assert ran.charged == 4 * 3500 and ran.refunded == 3 * 3500
    assert moved(ran, "pizza_orders_reconciled_total", keep=("status",), task_queue=queue) == {
        by(status="TERMINATED"): 1
    }
    assert moved(ran, "pizza_money_charged_cents_total", keep=(), task_queue=queue) == {
        by(): ran.charged
    }
    assert moved(ran, "pizza_money_refunded_cents_total", keep=(), task_queue=queue) == {
        by(): ran.refunded
    }
    assert moved(ran, "pizza_out_of_stock_total", keep=("item",), task_queue=queue) == {
        by(item=ran.short_item): 1
    }

    # Saga steps and compensation attempts as the orders' ledgers show them.
    steps: Counter[frozenset[tuple[str, str]]] = Counter()
    attempts: Counter[frozenset[tuple[str, str]]] = Counter()
    for outcome in ran.outcomes.values():
        assert outcome.ledger is not None
        for record in outcome.ledger:
            if record.state is StepState.RUNNING:  # the terminated order's driver, cut off
                continue
            steps[by(step=record.step, outcome=record.state.value.lower())] += 1
            if record.compensation_attempts:
                attempts[by(step=record.step)] += record.compensation_attempts
    assert moved(ran, "saga_steps_total", keep=("step", "outcome"), task_queue=queue) == steps
    assert attempts == {by(step="process_credit_card"): 8, by(step="update_inventory"): 4}
    assert (
        moved(ran, "saga_compensation_attempts_total", keep=("step",), task_queue=queue) == attempts
    )
    assert moved(ran, "saga_compensations_total", keep=("step", "result"), task_queue=queue) == {
        # declined, cancelled, operator (after the operator's retry)
        by(step="process_credit_card", result="compensated"): 3,
        # the refund-failing card: attempts 1-4 retried, the 5th leaves it to an operator
        by(step="process_credit_card", result="retried"): 4,
        by(step="process_credit_card", result="needs_operator"): 1,
        by(step="update_inventory", result="compensated"): 4,
    }
    assert moved(ran, "saga_rollbacks_total", keep=("reason",), task_queue=queue) == {
        by(reason="failure"): 3,
        by(reason="cancellation"): 1,
    }
    assert moved(
        ran, "saga_rollback_duration_seconds_count", keep=("reason",), task_queue=queue
    ) == {by(reason="failure"): 3, by(reason="cancellation"): 1}
    for name in ("saga_steps_total", "pizza_orders_total"):
        assert {
            dict(labels).get("workflow_type") for n, labels in ran.after.samples if n == name
        } == {"PizzaOrderWorkflow"}

    # The SDK's own metrics are served by the same endpoint.
    sdk = {
        "temporal_workflow_completed_total",
        "temporal_workflow_failed_total",
        "temporal_workflow_canceled_total",
        "temporal_activity_execution_latency_seconds_bucket",
        "temporal_workflow_task_schedule_to_start_latency_seconds_bucket",
        "temporal_worker_task_slots_available",
        "temporal_num_pollers",
    }
    assert sdk <= ran.after.names, sdk - ran.after.names
    assert ran.after.total("pizza_orders_needing_operator", task_queue=queue) == 0


async def test_worker_logs_are_json_lines_naming_order_step_and_attempt(
    stack: Stack, ran: Ran
) -> None:
    text = stack.log("worker")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    operator = ran.orders["operator"].order_number
    failures = [
        line
        for line in lines
        if line.get("order_number") == operator and line.get("step") == "process_credit_card"
    ]
    # The saga's own line for each failed refund attempt, from the workflow...
    assert {line["attempt"] for line in failures if line["logger"] == "temporalio.workflow"} >= {
        1,
        2,
        3,
        4,
        5,
    }
    # ...and the activity's line for the refund that went through, on attempt 6 of the step's
    # compensation (activity id process_credit_card:compensation:6).
    refunds = [
        line
        for line in failures
        if line.get("activity_type") == "refund_customer" and "Refunded" in line["message"]
    ]
    assert [line["activity_id"] for line in refunds] == ["process_credit_card:compensation:6"]
    assert refunds[0]["workflow_id"] == workflow_id_for(operator)
    for card in (cards.REFUND_FAILING_CARD, cards.DECLINED_CARD):
        assert card not in text


async def test_api_serves_request_metrics_by_route_template_on_its_metrics_endpoint(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
        await answering(http)
        before = await asyncio.to_thread(scrape, stack.api_metrics)
        for _ in range(3):
            assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/no/such/page")).status_code == 404
    after = await asyncio.to_thread(scrape, stack.api_metrics)

    def grew(**labels: str) -> float:
        name = "pizza_http_requests_total"
        return after.total(name, **labels) - before.total(name, **labels)

    assert grew(method="GET", route="/readyz", status="200") == 3
    assert grew(route="unmatched", status="404") == 1
    assert not [labels for n, labels in after.samples if ("route", "/no/such/page") in labels]
    duration = "pizza_http_request_duration_seconds_count"
    assert after.total(duration, route="/readyz") - before.total(duration, route="/readyz") == 3
    # The API's client reports through the same runtime: the SDK's metrics are there too.
    assert "temporal_request_total" in after.names


def dashboard_queries() -> Iterator[str]:
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


async def answering(http: httpx.AsyncClient) -> None:
    """Wait until the API answers its health check."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def test_every_dashboard_and_alert_query_names_a_metric_the_product_exports(
    stack: Stack, ran: Ran
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
        await answering(http)
        assert (await http.get("/readyz")).status_code == 200  # the request counters exist
    exported = ran.after.names | (await asyncio.to_thread(scrape, stack.api_metrics)).names
    queries = list(dashboard_queries()) + rule_expressions()
    assert len(queries) >= 20
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exported, f"{query!r} names {names - exported}, not exported"


async def test_doctor_passes_on_a_healthy_stack_and_names_each_problem(stack: Stack) -> None:
    queue = f"doctor-{uuid.uuid4().hex}"
    env = {"PIZZA_TASK_QUEUE": queue}
    worker = stack.spawn("doctor-worker", "worker", **env)
    settings = stack.settings.model_copy(update={"task_queue": queue})
    client = await connect(settings, stack.live.address)
    service_stores = open_stores(settings)
    await stack.live.worker_polls(watching=[worker], **env)
    order = new_order(credit_card_info__number=cards.DECLINED_CARD)
    await place_order(
        client, order_request(placed(order, service_stores.vault), settings), task_queue=queue
    )
    await asyncio.wait_for(order_outcome(client, order.order_number), WAIT)

    healthy = await stack.pizza_with(env, "doctor")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "✓ Temporal",
        "✓ Search attribute",
        "✓ Worker",
        "✓ Encryption keys",
        "✓ Store",
        "✓ Vault key",
        "✓ Abandoned orders",
        "✓ Builds",
    ]
    assert f"decrypts order {order.order_number}" in healthy.stdout

    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    wrong_keys = KeyRing.generate("not-the-workers").to_json()
    broken = await stack.pizza_with(
        {
            **env,
            "PIZZA_ENCRYPTION_KEYS": wrong_keys,
            "PIZZA_DATABASE_URL": "postgresql+psycopg://pizza@127.0.0.1:1/pizza",
        },
        "doctor",
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    verdicts = {line[2:].split(":")[0]: line for line in broken.stdout.splitlines()[:-1]}
    assert verdicts["Temporal"].startswith("✓")
    assert verdicts["Search attribute"].startswith("✓")
    assert (
        verdicts["Worker"].startswith("✗")
        and f"no worker polls task queue {queue}" in (verdicts["Worker"])
    )
    assert verdicts["Encryption keys"].startswith("✗")
    assert f"cannot decrypt order {order.order_number}" in verdicts["Encryption keys"]
    assert (
        verdicts["Store"].startswith("✗")
        and "cannot reach the store database" in (verdicts["Store"])
    )
    assert verdicts["Vault key"].startswith("✗")  # its store is unreachable: not checked
    assert verdicts["Abandoned orders"].startswith("✗")  # no store to look in: not checked
    assert verdicts["Builds"].startswith("✓")  # its order finished: nothing waits
    assert "5 of 8 checks failed" in broken.stdout

    # Numbers kept under a vault key the deployment no longer has: named.
    stores = open_stores(Settings.from_env({**stack.env, **env}))
    stores.vault.tokenize(cards.DECLINED_CARD, order_number=f"V{uuid.uuid4().hex[:8]}")
    lost = await stack.pizza_with({**env, "PIZZA_VAULT_KEYS": wrong_keys}, "doctor")
    [vault_line] = [line for line in lost.stdout.splitlines() if line[2:].startswith("Vault key")]
    assert vault_line.startswith("✗") and "cannot be charged" in vault_line, lost.stdout
