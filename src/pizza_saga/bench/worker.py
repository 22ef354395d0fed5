"""The bench's worker processes: the order worker beside the engine-limit worker.

    python -m pizza_saga.bench.worker                # the deployment's default: sandboxed
    python -m pizza_saga.bench.worker --unsandboxed  # both outside the SDK's sandbox

Run apart from the driver, so their CPU time and peak memory are the workers' alone. Each
process holds one pair on one runner, so that orders and engine compare like for like.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from pizza_saga.app import (
    adopt_version,
    build_worker,
    build_worker_for,
    connect_client,
    deployment_version,
    open_stores,
    prepare_namespace,
)
from pizza_saga.bench.baseline import BaselineWorkflow
from pizza_saga.bench.baseline_steps import BASELINE_TASK_QUEUE, fail, noop, unsandboxed_queue
from pizza_saga.common.sandbox import sandbox_runner
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import worker_client
from pizza_saga.runtime import host_worker, run_until_signal

UNSANDBOXED = "--unsandboxed"


async def main(stop: asyncio.Event) -> None:
    unsandboxed = sys.argv[1:] == [UNSANDBOXED]
    settings = Settings.from_env()
    client = await connect_client(settings)
    await prepare_namespace(client)
    stores = open_stores(settings)
    if unsandboxed:
        orders = build_worker(
            client,
            stores,
            task_queue=unsandboxed_queue(settings.task_queue),
            sandboxed=False,
            version=deployment_version(settings),
        )
    else:
        orders = build_worker_for(client, stores, settings)
    # The SDK's defaults, as the seed's worker has them, on the orders' runner.
    baseline = Worker(
        worker_client(client),
        task_queue=unsandboxed_queue(BASELINE_TASK_QUEUE) if unsandboxed else BASELINE_TASK_QUEUE,
        workflows=[BaselineWorkflow],
        activities=[noop, fail],
        workflow_runner=UnsandboxedWorkflowRunner()
        if unsandboxed
        else sandbox_runner([BaselineWorkflow]),
    )
    async with baseline:  # runs beside the orders' worker, and stops with it
        # The deployment's first workers: their version becomes current, as `pizza worker`'s.
        await host_worker(orders, stop, once=[adopt_version(client, settings)])


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    run_until_signal(main)
