"""Worker Versioning: which build of the code a worker is, and which build new runs go to.

A worker declares a deployment version (deployment name and build id). Temporal sends a new
run to the deployment's current version; a pinned run stays on the version that started it,
activities included, until it ends, so an old run never meets new code. Promoting a version
makes it current; rolling back is promoting the previous one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

log = logging.getLogger(__name__)

REGISTER_WAIT = timedelta(seconds=30)
"""How long a promotion waits for a version whose workers have just started polling."""


class PromotionError(Exception):
    """Temporal refused to make a version current; the message says why."""


@dataclass(frozen=True)
class Routing:
    """Where a deployment sends new runs, and the versions it knows."""

    current: str | None
    """The current version's build id; None: no version is current (new runs wait)."""
    ramping: str | None
    builds: tuple[str, ...]
    """Build ids of every version the deployment has seen, oldest first."""


def deployment_config(version: WorkerDeploymentVersion) -> WorkerDeploymentConfig:
    """A worker's versioning options: it serves ``version`` only, and every run it starts is
    pinned to it: it runs to its end, activities included, on the build that started it.

    Pinned is the worker's default rather than each workflow's own setting: Temporal refuses
    a workflow's versioning behavior from an unversioned worker (PIZZA_WORKER_VERSIONING=false).
    The reconciler's passes are pinned too; each lasts moments and the next one starts on
    the current build.
    """
    return WorkerDeploymentConfig(
        version=version,
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


async def routing(client: Client, deployment: str) -> Routing | None:
    """The deployment's routing; None if Temporal has never seen it (no versioned worker has
    polled) or does not know Worker Versioning."""
    try:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.UNIMPLEMENTED):
            return None
        raise
    info = described.worker_deployment_info
    config = info.routing_config
    summaries = sorted(info.version_summaries, key=lambda s: s.create_time.ToDatetime())
    return Routing(
        current=config.current_deployment_version.build_id or None,
        ramping=config.ramping_deployment_version.build_id or None,
        builds=tuple(s.deployment_version.build_id for s in summaries),
    )


async def make_current(
    client: Client,
    version: WorkerDeploymentVersion,
    *,
    force: bool = False,
    wait: timedelta = REGISTER_WAIT,
) -> None:
    """Send new runs to ``version``. Waits up to ``wait`` for a version whose workers have
    only just started polling to be registered. Temporal refuses a version that does not
    poll every task queue of the current one (new runs there would find no worker) unless
    ``force``. PromotionError if refused."""
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace,
        deployment_name=version.deployment_name,
        build_id=version.build_id,
        identity=client.identity,
        ignore_missing_task_queues=force,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait.total_seconds()
    pause = 0.1
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
            return
        except RPCError as err:
            # A worker just started registers its version, then each of its task queues'
            # pollers (workflow, activity) one by one: wait for them.
            unknown = err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)
            missing = "missing" in err.message.lower() and "task queue" in err.message.lower()
            if missing and loop.time() >= deadline:
                raise PromotionError(
                    f"build {version.build_id} does not poll every task queue of the current "
                    f"version ({err.message}); start its workers on them, or force it"
                ) from err
            if not (unknown or missing) or loop.time() >= deadline:
                raise PromotionError(
                    f"cannot make build {version.build_id} current: {err.message}"
                ) from err
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def adopt(client: Client, version: WorkerDeploymentVersion, *, take_over: bool) -> str:
    """Make ``version`` current if no version is (a deployment's first worker), or always
    with ``take_over`` (a one-box shop replacing its only worker). The build id current
    afterwards."""
    found = await routing(client, version.deployment_name)
    current = found.current if found is not None else None
    if current is None or (take_over and current != version.build_id):
        await make_current(client, version, force=take_over)
        return version.build_id
    return current
