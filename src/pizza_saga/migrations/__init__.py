"""Schema migrations of the store database (Alembic), run by `pizza db upgrade`.

The embedded SQLite default upgrades itself on first use; a shared database (PostgreSQL) is
upgraded once by an operator, and processes refuse to start on a schema they do not know.
Concurrent upgrades wait for each other: a file lock beside a SQLite file, an advisory lock
on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from pizza_saga.common.db import StoreError

_HERE = Path(__file__).parent
_ADVISORY_LOCK_KEY = 0x70697A7A61  # "pizza"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this version of the product needs."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never upgraded."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to this version's revision; (revision before, revision after)."""
    with _upgrade_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and inspect(conn).has_table("stock"):
            raise StoreError(
                "the store database was made by a version of pizza-saga without migrations; "
                "move it away (or set PIZZA_HOME / PIZZA_DATABASE_URL to a new one)"
            )
        command.upgrade(_config(conn), "head")
    return before, head()


def check_current(engine: Engine) -> None:
    """StoreError saying what to run unless the schema is at this version's revision."""
    at, wanted = current(engine), head()
    if at != wanted:
        state = "has no schema yet" if at is None else f"is at schema revision {at}"
        raise StoreError(
            f"the store database {state}, this version needs {wanted}: run `pizza db upgrade`"
        )


@contextlib.contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[None]:
    """Across processes on this machine, for a SQLite file (PostgreSQL locks in-database)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
