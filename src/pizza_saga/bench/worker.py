"""The bench's worker process: the order worker (also one in the SDK's sandbox) and the
engine-limit worker.

    python -m pizza_saga.bench.worker

Run apart from the driver, so its CPU time and peak memory are the worker's alone.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.worker import Worker

from pizza_saga.app import (
    build_worker,
    build_worker_for,
    connect_client,
    open_stores,
    prepare_namespace,
)
from pizza_saga.bench.baseline import (
    BASELINE_TASK_QUEUE,
    BaselineWorkflow,
    fail,
    noop,
    sandboxed_queue,
)
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import worker_client
from pizza_saga.runtime import host_worker, run_until_signal


async def main(stop: asyncio.Event) -> None:
    settings = Settings.from_env()
    client = await connect_client(settings)
    await prepare_namespace(client)
    stores = open_stores(settings)
    orders = build_worker_for(client, stores, settings)
    # The same orders in the SDK's sandbox, as the engine's workflows (and the seed's) run.
    sandboxed = build_worker(
        client, stores, task_queue=sandboxed_queue(settings.task_queue), sandboxed=True
    )
    # The SDK's defaults, as the seed's worker has them (its sandbox included).
    baseline = Worker(
        worker_client(client),
        task_queue=BASELINE_TASK_QUEUE,
        workflows=[BaselineWorkflow],
        activities=[noop, fail],
    )
    async with sandboxed, baseline:  # the other two run beside, and stop with it
        await host_worker(orders, stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    run_until_signal(main)
