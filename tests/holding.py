"""Hold a store call at an exact statement inside its transaction, for overlap tests.

A SQLAlchemy event hook of the test (nothing in the product): the first thread that is about
to execute a statement starting with a given text waits there until the test releases it, so
another call can run on another connection at exactly that moment.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event, text

HOLD_TIMEOUT = 30.0


class StatementHold:
    """Holds the first execution of a statement beginning with ``prefix`` on ``engine``."""

    def __init__(self, engine: Engine, prefix: str) -> None:
        self._engine = engine
        self._prefix = prefix.upper()
        self._armed = True
        self._lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()

    def _before_execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(self._prefix):
            return
        with self._lock:
            if not self._armed:
                return
            self._armed = False
        self.reached.set()
        if not self.release.wait(HOLD_TIMEOUT):
            raise TimeoutError(f"held at {self._prefix!r} and never released")

    @contextlib.contextmanager
    def installed(self) -> Iterator[StatementHold]:
        event.listen(self._engine, "before_cursor_execute", self._before_execute)
        try:
            yield self
        finally:
            self.release.set()
            event.remove(self._engine, "before_cursor_execute", self._before_execute)


def wait_until_blocked(engine: Engine, *, waiting: int = 1) -> None:
    """On PostgreSQL, return once ``waiting`` sessions wait for a lock in this database.

    On SQLite there is nothing to observe: its writers queue on the database lock.
    """
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + HOLD_TIMEOUT
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:
        # Polls a real condition (the server's own view of who waits), not a guessed delay.
        while (conn.execute(query).scalar() or 0) < waiting:
            conn.rollback()
            if time.monotonic() > deadline:
                raise TimeoutError("no session started waiting for the held one")
            time.sleep(0.01)
