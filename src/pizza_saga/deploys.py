"""Deploys with orders in flight: which build takes new orders, which builds still run
orders, and whether a worker serves each (`pizza deploy status`, `pizza deploy promote`,
`pizza doctor`).

Orders are pinned: each runs to its end on the build that started it. Deploying is starting
workers of the new build beside the old ones, checking it (`pizza replay-check`), promoting
it, and stopping the old workers once no order runs on their build. Rolling back is
promoting the old build again; orders the new one started finish on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion

from pizza_saga.app import deployment_version
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import serving_builds
from pizza_saga.common.versioning import REGISTER_WAIT, PromotionError, make_current, routing
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX

SERVED_WITHIN = timedelta(seconds=70)
"""A build counts as served if one of its workers polled within this (a long poll lasts a
minute) and has not said it is stopping."""
LISTED = 1000
"""At most this many running orders are named per build."""


@dataclass(frozen=True)
class Build:
    """One build of the deployment and the orders running on it."""

    build_id: str
    current: bool
    running: tuple[str, ...]
    """Numbers of its running orders (at most LISTED)."""
    served: bool | None
    """A worker of this build polls the shop's task queue; None: Temporal cannot tell."""


@dataclass(frozen=True)
class DeployStatus:
    """The deployment as Temporal routes it."""

    deployment: str
    this_build: str
    """The build this code declares."""
    current: str | None
    """The build new orders go to; None: none yet (new orders wait for a worker)."""
    builds: tuple[Build, ...]
    versioned: bool = True
    """False: PIZZA_WORKER_VERSIONING is off, or Temporal knows no Worker Versioning."""

    @property
    def stranded(self) -> dict[str, tuple[str, ...]]:
        """Running orders, by build, of the builds no worker serves: they wait until one does."""
        return {b.build_id: b.running for b in self.builds if b.running and b.served is False}


class DeployError(Exception):
    """A deploy command could not be carried out; the message says why."""


async def deploy_status(client: Client, settings: Settings) -> DeployStatus:
    """Where new orders go, and each build's running orders and whether a worker serves it."""
    this = deployment_version(settings)
    found = await routing(client, settings.deployment) if settings.worker_versioning else None
    if found is None:
        return DeployStatus(
            deployment=settings.deployment,
            this_build=this.build_id,
            current=None,
            builds=(),
            versioned=False,
        )
    served = await serving_builds(client, settings.task_queue, fresh=SERVED_WITHIN)
    builds = []
    for build_id in found.builds:
        running = await _running_orders(client, settings, build_id)
        builds.append(
            Build(
                build_id=build_id,
                current=build_id == found.current,
                running=running,
                served=None if served is None else build_id in served,
            )
        )
    return DeployStatus(
        deployment=settings.deployment,
        this_build=this.build_id,
        current=found.current,
        builds=tuple(builds),
    )


async def promote(
    client: Client, settings: Settings, build_id: str | None = None, *, force: bool = False
) -> DeployStatus:
    """Send new orders to ``build_id`` (default: this code's build). DeployError if no
    worker of it serves the shop's task queue (new orders would wait), or Temporal refuses
    (``force``: even if it does not poll every task queue of the current build)."""
    if not settings.worker_versioning:
        raise DeployError("worker versioning is off (PIZZA_WORKER_VERSIONING=false)")
    build = build_id or deployment_version(settings).build_id
    if not force and not await _known_soon(client, settings.deployment, build):
        found = await routing(client, settings.deployment)
        known = ", ".join(found.builds) if found is not None and found.builds else "none"
        raise DeployError(
            f"build {build!r}: no worker of it has polled deployment {settings.deployment} "
            f"(builds it knows: {known}); start one (`PIZZA_BUILD_ID={build} pizza worker`)"
        )
    if not force and not await _served_soon(client, settings.task_queue, build):
        raise DeployError(
            f"no worker of build {build} polls task queue {settings.task_queue}: start one "
            "(`PIZZA_BUILD_ID=... pizza worker`) before sending it new orders"
        )
    try:
        await make_current(client, WorkerDeploymentVersion(settings.deployment, build), force=force)
    except PromotionError as err:
        raise DeployError(str(err)) from err
    return await deploy_status(client, settings)


KNOWN_WAIT = timedelta(seconds=5)
"""How long a promotion waits for a build Temporal has not seen (a worker starting)."""


async def _known_soon(client: Client, deployment: str, build: str) -> bool:
    """Whether the deployment knows ``build``, waiting a little for a worker just started."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KNOWN_WAIT.total_seconds()
    while True:
        found = await routing(client, deployment)
        if found is not None and build in found.builds:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.2)


async def _served_soon(client: Client, task_queue: str, build: str) -> bool:
    """Whether a worker of ``build`` polls ``task_queue``, waiting a little for workers that
    have just started (True if Temporal cannot tell)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REGISTER_WAIT.total_seconds()
    while True:
        served = await serving_builds(client, task_queue, fresh=SERVED_WITHIN)
        if served is None or build in served:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.2)


async def _running_orders(client: Client, settings: Settings, build_id: str) -> tuple[str, ...]:
    version = f"{settings.deployment}:{build_id}"
    query = (
        f"WorkflowType = 'PizzaOrderWorkflow' AND ExecutionStatus = 'Running' AND "
        f"TaskQueue = '{settings.task_queue}' AND TemporalWorkerDeploymentVersion = '{version}'"
    )
    numbers = []
    async for listed in client.list_workflows(query, limit=LISTED):
        numbers.append(listed.id.removeprefix(WORKFLOW_ID_PREFIX))
    return tuple(sorted(numbers))
