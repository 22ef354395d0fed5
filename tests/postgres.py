"""The tests' side of the private PostgreSQL cluster (pizza_saga/common/pgcluster.py).

A session starts one cluster; each test that needs it gets a fresh database. Where this
machine cannot run PostgreSQL, the PostgreSQL tests skip, or fail under CI=true.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from pizza_saga.common.pgcluster import (
    INSTALL_HINT,
    NO_SERVER,
    PostgresCluster,
    PostgresUnavailable,
    find_bindir,
)

SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
"""Mark for a test (or `pytestmark` of a module) whose stores stay on SQLite only."""


def unavailable(reason: str) -> NoReturn:
    """Skip the Postgres tests, or fail them in CI (CI=true), where Postgres must be there."""
    message = f"PostgreSQL tests need a PostgreSQL server: {reason} ({INSTALL_HINT})"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def start_cluster() -> PostgresCluster:
    """A running cluster, or the tests skip (fail in CI) saying why there can be none."""
    bindir = find_bindir()
    if bindir is None:
        unavailable(NO_SERVER)
    try:
        return PostgresCluster.start(bindir)
    except PostgresUnavailable as e:
        unavailable(str(e))
