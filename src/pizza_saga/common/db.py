"""The store database: one SQLAlchemy engine for inventory, payments and bills.

SQLite files under PIZZA_HOME by default; any SQLAlchemy URL (Postgres, say) through
PIZZA_DATABASE_URL. Every write that must happen once is keyed by a unique idempotency
key and made in one transaction with the change it records.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every store table."""


def utcnow() -> datetime:
    """Now, in UTC, for created_at columns."""
    return datetime.now(UTC)


T = TypeVar("T")

SETUP_ATTEMPTS = 5


def retry_set_up(setup: Callable[[], T]) -> T:
    """Run an idempotent set-up step that another process may be running at the same time.

    Creating tables or first stock checks for rows, then inserts them: two processes that
    open a new database together (a worker and `pizza inventory`, say) both see nothing and
    one of them fails on the other's rows. Run again, the step finds them and does nothing.
    """
    for _ in range(SETUP_ATTEMPTS - 1):
        try:
            return setup()
        except DatabaseError:
            continue
    return setup()


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite hands them back naive)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_database(url: str) -> Engine:
    """Open (and create, on first use) the store database at ``url``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    # Importing the store modules registers their tables on Base.metadata.
    import pizza_saga.billing.store
    import pizza_saga.inventory.store  # noqa: F401

    retry_set_up(lambda: Base.metadata.create_all(engine))
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers (pizza inventory) run while a worker writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
