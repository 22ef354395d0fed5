"""The bench's worker process: the order worker and the baseline worker, same settings.

    python -m pizza_saga.bench.worker

Run apart from the driver, so its CPU time and peak memory are the worker's alone.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.worker import Worker

from pizza_saga.app import build_worker_for, open_stores, prepare_namespace
from pizza_saga.bench.baseline import BASELINE_TASK_QUEUE, BaselineWorkflow, fail, noop
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect, worker_client


async def main() -> None:
    settings = Settings.from_env()
    client = await connect(settings)
    await prepare_namespace(client)
    orders = build_worker_for(client, open_stores(settings), settings)
    baseline = Worker(
        worker_client(client),
        task_queue=BASELINE_TASK_QUEUE,
        workflows=[BaselineWorkflow],
        activities=[noop, fail],
    )
    await asyncio.gather(orders.run(), baseline.run())


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main())
