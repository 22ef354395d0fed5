"""Deploying new code while orders are in flight, on the real dev server.

Build N runs today's order workflow; build N+1 changes it (tests/next_version.py: a step
added, a step's arguments changed). Orders are pinned to the build that started them: each
finishes on its own build's workers, through a deploy, a rollback, and a build whose
workers stopped too early (named by `pizza doctor`, finished once they are back).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporal_saga import StepRecord
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Worker

from pizza_saga.app import Stores, build_worker, order_activities
from pizza_saga.common.sandbox import sandbox_runner
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import worker_client
from pizza_saga.common.versioning import adopt, deployment_config
from pizza_saga.deploys import deploy_status, promote
from pizza_saga.doctor import Context, builds
from pizza_saga.order.workflow import PizzaOrderWorkflow
from tests.next_version import (
    ANNOUNCE_STEP,
    NextPizzaOrderWorkflow,
    announce_order,
    notify_driver_with_pizzas,
)
from tests.orders import RESULT_TIMEOUT, OrderHandle, net_money, new_order, start
from tests.processes import run_pizza

N, NEXT = "1.0.0", "1.1.0"


class Gate(Interceptor):
    """Holds every run of one activity before it starts, until opened."""

    def __init__(self, activity_type: str) -> None:
        self.activity_type = activity_type
        self.held: set[str] = set()
        """Workflow ids of the runs held so far."""
        self._arrived = asyncio.Condition()
        self.opened = asyncio.Event()

    async def holding(self, count: int) -> None:
        """Wait until ``count`` runs are held."""
        async with asyncio.timeout(RESULT_TIMEOUT), self._arrived:
            await self._arrived.wait_for(lambda: len(self.held) >= count)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Held(next, self)


class _Held(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, gate: Gate) -> None:
        super().__init__(next)
        self._gate = gate

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == self._gate.activity_type and not self._gate.opened.is_set():
            async with self._gate._arrived:
                self._gate.held.add(info.workflow_id or "")
                self._gate._arrived.notify_all()
            await self._gate.opened.wait()
        return await super().execute_activity(input)


def worker_of(
    client: Client, stores: Stores, task_queue: str, build: str, deployment: str, gate: Gate
) -> Worker:
    """A worker of build ``build``: today's code for N, the next build's for NEXT."""
    version = WorkerDeploymentVersion(deployment, build)
    if build == N:
        return build_worker(
            client, stores, task_queue=task_queue, version=version, interceptors=[gate]
        )
    activities = [
        a
        for a in order_activities(client, stores, task_queue=task_queue)
        if getattr(a, "__name__", "") != "notify_delivery_driver"
    ]
    workflows = [NextPizzaOrderWorkflow]
    return Worker(
        worker_client(client),
        task_queue=task_queue,
        workflows=workflows,
        activities=[*activities, announce_order, notify_driver_with_pizzas],
        interceptors=[gate],
        workflow_runner=sandbox_runner(workflows),
        deployment_config=deployment_config(version),
    )


@pytest.fixture
def shop(settings: Settings, task_queue: str) -> Settings:
    """The deployment's settings: its own deployment name, so no other test's build mixes in."""
    return settings.model_copy(
        update={"task_queue": task_queue, "deployment": f"shop-{uuid.uuid4().hex[:8]}"}
    )


@pytest.fixture
async def client(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    yield dev_env.client


async def orders_on(
    client: Client, stores: Stores, shop: Settings, count: int
) -> list[OrderHandle]:
    return [
        await start(client, new_order(), task_queue=shop.task_queue, vault=stores.vault)
        for _ in range(count)
    ]


async def build_of(handle: OrderHandle) -> str:
    """The build that ran the order, as the Web UI shows it (its versioning info)."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id


async def steps_of(handle: OrderHandle) -> list[str]:
    ledger: list[StepRecord] = await handle.query(PizzaOrderWorkflow.ledger)
    return [record.step for record in ledger]


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check`` holds (visibility is eventually consistent)."""
    async with asyncio.timeout(RESULT_TIMEOUT):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def running_on(client: Client, shop: Settings, build: str) -> tuple[str, ...]:
    status = await deploy_status(client, shop)
    return next((b.running for b in status.builds if b.build_id == build), ())


async def test_orders_finish_on_their_own_build_through_a_deploy_and_a_rollback(
    client: Client, stores: Stores, shop: Settings
) -> None:
    before = stores.inventory.on_hand()
    at_n, at_next = Gate("notify_delivery_driver"), Gate("notify_delivery_driver")
    worker_n = worker_of(client, stores, shop.task_queue, N, shop.deployment, at_n)
    worker_next = worker_of(client, stores, shop.task_queue, NEXT, shop.deployment, at_next)
    async with worker_n:
        # The deployment's first worker makes its build current.
        assert (
            await adopt(client, WorkerDeploymentVersion(shop.deployment, N), take_over=False) == N
        )
        old = await orders_on(client, stores, shop, 3)
        await at_n.holding(3)

        async with worker_next:
            status = await promote(client, shop, NEXT)  # the deploy
            assert status.current == NEXT
            new = await orders_on(client, stores, shop, 2)
            await at_next.holding(2)
            await until(lambda: _equal(running_on(client, shop, N), _numbers(old)))

            at_n.opened.set()
            for handle in old:
                assert (await handle.result()).status == "SUCCESS"
                assert await build_of(handle) == N
                assert ANNOUNCE_STEP not in await steps_of(handle)
            await until(lambda: _equal(running_on(client, shop, N), ()))

            # A rollback with the next build's orders in flight: new orders go to N again.
            status = await promote(client, shop, N)
            assert status.current == N
            again = await orders_on(client, stores, shop, 2)
            for handle in again:
                assert (await handle.result()).status == "SUCCESS"
                assert await build_of(handle) == N

            at_next.opened.set()
            for handle in new:
                assert (await handle.result()).status == "SUCCESS"
                assert await build_of(handle) == NEXT
                assert ANNOUNCE_STEP in await steps_of(handle)
            await until(lambda: _equal(running_on(client, shop, NEXT), ()))

    every = [*old, *new, *again]
    for handle in every:
        number = handle.id.removeprefix("pizza-workflow-order-")
        assert net_money(stores, number) == 3500
    after = stores.inventory.on_hand()
    assert sum(before.values()) - sum(after.values()) == 3 * len(every)


async def test_orders_of_a_build_whose_workers_stopped_wait_named_until_one_is_back(
    client: Client, stores: Stores, shop: Settings
) -> None:
    at_n, at_next = Gate("notify_delivery_driver"), Gate("notify_delivery_driver")
    at_next.opened.set()
    worker_next = worker_of(client, stores, shop.task_queue, NEXT, shop.deployment, at_next)
    async with worker_of(client, stores, shop.task_queue, N, shop.deployment, at_n):
        await adopt(client, WorkerDeploymentVersion(shop.deployment, N), take_over=False)
        [waiting] = await orders_on(client, stores, shop, 1)
        await at_n.holding(1)
        await worker_next.__aenter__()
        await promote(client, shop, NEXT)
    # Build N's workers stopped with its order unfinished: it waits, and doctor names it.
    number = waiting.id.removeprefix("pizza-workflow-order-")
    context = Context(shop, client=client)
    await until(lambda: _failed(builds(context)))
    check = await builds(context)
    assert f"build {N}: {number}" in check.detail

    try:
        async with worker_of(client, stores, shop.task_queue, N, shop.deployment, Gate("none")):
            confirmation = await asyncio.wait_for(waiting.result(), RESULT_TIMEOUT)
    finally:
        await worker_next.__aexit__(None, None, None)
    assert confirmation.status == "SUCCESS"
    assert await build_of(waiting) == N
    assert net_money(stores, number) == 3500


def _numbers(handles: list[OrderHandle]) -> tuple[str, ...]:
    return tuple(sorted(h.id.removeprefix("pizza-workflow-order-") for h in handles))


async def _equal(found: Awaitable[tuple[str, ...]], expected: tuple[str, ...]) -> bool:
    return await found == expected


async def _failed(check: Awaitable[Any]) -> bool:
    return not (await check).ok


async def test_the_deploy_commands_show_the_builds_and_refuse_an_unknown_one(
    client: Client, stores: Stores, shop: Settings, tmp_path: Path
) -> None:
    env = {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "PIZZA_TASK_QUEUE": shop.task_queue,
        "PIZZA_DEPLOYMENT": shop.deployment,
        "PIZZA_BUILD_ID": N,
    }

    def pizza(*args: str) -> subprocess.CompletedProcess[str]:
        return run_pizza(tmp_path, *args, **env)

    async with worker_of(client, stores, shop.task_queue, N, shop.deployment, Gate("none")):
        promoted = await asyncio.to_thread(pizza, "deploy", "promote")  # this code's build
        assert promoted.returncode == 0, promoted.stderr
        assert f"New orders go to build {N}" in promoted.stdout

        shown = await asyncio.to_thread(pizza, "deploy", "status", "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        assert status["current"] == N
        assert [(b["build_id"], b["served"]) for b in status["builds"]] == [(N, True)]

        typo = await asyncio.to_thread(pizza, "deploy", "promote", "1.0.O")
        assert typo.returncode == 2, typo.stdout + typo.stderr
        assert "build '1.0.O'" in typo.stderr and f"builds it knows: {N}" in typo.stderr
        assert "Traceback" not in typo.stderr
        assert (await deploy_status(client, shop)).current == N  # nothing changed
