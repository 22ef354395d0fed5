"""The store database: one SQLAlchemy engine, SQLite by default or PostgreSQL.

SQLite files under PIZZA_HOME by default; PostgreSQL through PIZZA_DATABASE_URL
(``postgresql+psycopg://user@host/db``, extra ``pizza-saga[postgres]``). Tables are created
and changed by migrations (pizza_saga.migrations), never by whichever process starts first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
POOL_OVERFLOW = 5
"""Connections beyond the pool's size a burst may open (CLI reads beside the activities)."""


class Base(DeclarativeBase):
    """Declarative base of every store table."""


class StoreError(Exception):
    """The store database cannot be used as configured; the message says why and what to do."""


def utcnow() -> datetime:
    """Now, in UTC, for created_at columns."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite hands them back naive)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def shown(url: URL) -> str:
    """The URL as it may be printed: without its password."""
    return url.render_as_string(hide_password=True)


def parse_url(url: str) -> URL:
    """The store URL, checked: StoreError naming PIZZA_DATABASE_URL if it cannot be used."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            "PIZZA_DATABASE_URL: not a database URL; expected sqlite:///path/to/file.db "
            "or postgresql+psycopg://user@host:5432/database"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreError(
            f"PIZZA_DATABASE_URL: unsupported database {parsed.get_backend_name()!r}; "
            "use sqlite:///... or postgresql+psycopg://..."
        )
    return parsed


def open_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for the store database at ``url``, its pool sized for ``pool_size`` users.

    Checks that the database answers; StoreError (one line: what is wrong, what to do) if not.
    """
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                parsed,
                connect_args={"timeout": 30},
                pool_size=pool_size,
                max_overflow=POOL_OVERFLOW,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(
                parsed, pool_size=pool_size, max_overflow=POOL_OVERFLOW, pool_pre_ping=True
            )
    except NoSuchModuleError:
        raise StoreError(
            f"PIZZA_DATABASE_URL: no driver {parsed.drivername!r}; for PostgreSQL use "
            "postgresql+psycopg://... and install pizza-saga[postgres]"
        ) from None
    except ImportError as err:
        raise StoreError(
            f"PIZZA_DATABASE_URL: the driver for {parsed.drivername} is not installed "
            f"({err.name}); install pizza-saga[postgres]"
        ) from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as err:
        engine.dispose()
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise StoreError(f"cannot reach the store database {shown(parsed)}: {reason}") from None
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers (pizza inventory) run while a worker writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
