"""Crash tests on the real dev server: kill -9 the worker mid-order, start a new one.

A `pizza worker` started as `python -m tests.faults activity:before|after` SIGKILLs itself at
that point of that activity (before its effect, or after the effect is committed but before
Temporal hears of it). A second, healthy worker then takes over. Each order must end as if
nothing happened: one charge (or a net zero), stock consistent, one bill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporal_saga.effects import EffectState

from pizza_saga.app import SEARCH_ATTRIBUTES, open_stores
from pizza_saga.common.devserver import DevServerConfig, running_dev_server
from pizza_saga.common.effects import EffectRow
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect
from pizza_saga.order.client import OrderStatus, order_outcome, order_request, place_order
from tests.orders import new_order, placed

pytestmark = pytest.mark.devserver

OUTCOME_TIMEOUT = 120.0


@dataclass
class Cluster:
    """A dev server and the environment its workers and clients share."""

    address: str
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def worker(
        self, log: Path, *, crash_at: str | None = None, **extra_env: str
    ) -> subprocess.Popen[bytes]:
        """`pizza worker`, or with ``crash_at`` one that kills itself there (tests/faults.py)."""
        command = ["-m", "tests.faults", crash_at] if crash_at else ["-m", "pizza_saga", "worker"]
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, *command],
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    home = tmp_path_factory.mktemp("crash-home")
    config = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
    env = {
        **os.environ,
        "PIZZA_HOME": str(home),
        "TEMPORAL_ADDRESS": config.address,
        "PIZZA_PREP_SECONDS": "0",
        "PIZZA_DRIVER_SECONDS": "0",
        "PIZZA_COMPENSATION_BACKOFF_SECONDS": "0.1",
    }
    async with running_dev_server(config, home / "server.log"):
        yield Cluster(config.address, env)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def bills_of(settings: Settings, order_number: str) -> int:
    with open_stores(settings).engine.connect() as conn:
        count = conn.scalar(
            select(func.count()).where(
                EffectRow.key == order_number,
                EffectRow.step == "send_bill",
                EffectRow.state == EffectState.DONE,
            )
        )
        return int(count or 0)


@pytest.mark.parametrize(
    ("crash_at", "changes", "expected"),
    [
        # The charge is committed, its result never reaches Temporal: the retry must not
        # charge again.
        ("process_credit_card:after", {}, OrderStatus.COMPLETED),
        # Stock taken, result lost: taken once.
        ("update_inventory:after", {}, OrderStatus.COMPLETED),
        # During the bill, before and after it is recorded: billed once, charged once.
        ("send_bill:before", {}, OrderStatus.COMPLETED),
        ("send_bill:after", {}, OrderStatus.COMPLETED),
        # In the middle of the compensations: refund done, stock not yet back.
        (
            "refund_customer:after",
            {"customer__email": "bounce@example.com"},
            OrderStatus.FAILED,
        ),
    ],
)
async def test_order_survives_a_worker_killed_mid_step(
    cluster: Cluster,
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    task_queue: str,
    crash_at: str,
    changes: dict[str, object],
    expected: OrderStatus,
) -> None:
    settings = cluster.settings
    stores = open_stores(settings)
    before = stores.inventory.on_hand()
    order = new_order(**changes)
    client = await connect(settings, cluster.address)

    workers.append(
        cluster.worker(tmp_path / "crashing.log", crash_at=crash_at, PIZZA_TASK_QUEUE=task_queue)
    )
    await place_order(
        client, order_request(placed(order, stores.vault), settings), task_queue=task_queue
    )
    code = await asyncio.to_thread(workers[0].wait, OUTCOME_TIMEOUT)
    assert code == -signal.SIGKILL, (tmp_path / "crashing.log").read_text()

    workers.append(cluster.worker(tmp_path / "healthy.log", PIZZA_TASK_QUEUE=task_queue))
    outcome = await asyncio.wait_for(order_outcome(client, order.order_number), OUTCOME_TIMEOUT)

    assert outcome.status is expected, outcome
    charges = [p for p in stores.payments.payments() if p.order_number == order.order_number]
    after = stores.inventory.on_hand()
    if expected is OrderStatus.COMPLETED:
        assert [(p.kind, p.amount) for p in charges] == [("charge", 3500)]
        assert {item: before[item] - after[item] for item in before} == dict.fromkeys(before, 1)
        assert bills_of(settings, order.order_number) == 1
    else:
        assert [(p.kind, p.amount) for p in charges] == [("charge", 3500), ("refund", 3500)]
        assert after == before
