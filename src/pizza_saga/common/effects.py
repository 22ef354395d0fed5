"""Side effects done once per (key, step), serialized with their compensations.

A saga step that changes the world (reserve stock, charge a card) and the compensation that
undoes it both write the same row of the ``effects`` table, keyed on the business key (the
order number) and the step, in the same transaction as the change itself. The first of the
two to arrive creates the row; the second waits for that transaction (a row lock on
Postgres, the write lock on SQLite) and then reads what the first did:

- forward first, then compensation: the compensation finds the row done and undoes it;
- compensation first (a step that timed out and is still running somewhere): it leaves the
  row undone with nothing in it, and the late forward attempt is refused;
- the same forward step again (a retry): it finds its own row and returns what was recorded.

Each row also names the execution that made it (``owner``: the workflow id and the first run
id of its chain, stable across retries, resets and continue-as-new, new for every new start).
Another execution of the same key, under any workflow id, is refused: a key's effect is made
at most once, ever, and only its own execution undoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, Connection, CursorResult, Engine, String, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.dml import Insert

from pizza_saga.common.db import Base, utcnow

Detail = dict[str, Any]
"""What a step recorded about its change (items taken, amount charged...), as JSON."""


class EffectState(StrEnum):
    DONE = "done"
    UNDONE = "undone"


class EffectRow(Base):
    """One step's side effect for one key, and whether it was undone."""

    __tablename__ = "effects"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    step: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(10))
    detail: Mapped[Detail | None] = mapped_column(JSON)
    """What the step did; None for a compensation that found nothing to undo."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class EffectKey:
    """Which effect: the business key, the saga step, and the execution asking."""

    key: str
    step: str
    owner: str


class EffectRefused(Exception):
    """The step must not take effect now; retrying will not change that."""

    error_type: ClassVar[str] = "EffectRefusedError"
    """The type of the non-retryable ApplicationError an activity reports it as."""


class AlreadyUndone(EffectRefused):
    """The step's compensation ran first: doing it now would leave it undone by nobody."""

    error_type = "AlreadyRolledBackError"


class OwnedByAnotherExecution(EffectRefused):
    """Another execution (another run or workflow id) made or rolled back this effect."""

    error_type = "ProcessedByAnotherRunError"


def insert_if_absent(engine: Engine, table: type[Base], *key_columns: str) -> Insert:
    """``INSERT ... ON CONFLICT (key_columns) DO NOTHING`` in the engine's dialect."""
    dialects: dict[str, Callable[..., Any]] = {
        "postgresql": postgresql.insert,
        "sqlite": sqlite.insert,
    }
    build = dialects.get(engine.dialect.name)
    if build is None:
        raise ValueError(f"the stores support SQLite and PostgreSQL, not {engine.dialect.name}")
    statement: Insert = build(table).on_conflict_do_nothing(index_elements=list(key_columns))
    return statement


def claimed(result: CursorResult[Any]) -> bool:
    """Whether an ``insert_if_absent(...).returning(...)`` inserted its row.

    RETURNING, not rowcount: drivers disagree on the rowcount of ``ON CONFLICT DO NOTHING``.
    """
    return result.first() is not None


class EffectLog:
    """Does and undoes effects once per (key, step), on connections the caller's change uses."""

    def __init__(self, engine: Engine) -> None:
        self._claim = insert_if_absent(engine, EffectRow, "key", "step").returning(EffectRow.key)
        self._read = (
            select(EffectRow.owner, EffectRow.state, EffectRow.detail)
            .where(EffectRow.key == bindparam("k"), EffectRow.step == bindparam("s"))
            .with_for_update()
        )
        self._peek = select(EffectRow.owner, EffectRow.state, EffectRow.detail).where(
            EffectRow.key == bindparam("k"), EffectRow.step == bindparam("s")
        )
        self._mark_undone = (
            update(EffectRow)
            .where(EffectRow.key == bindparam("k"), EffectRow.step == bindparam("s"))
            .values(state=EffectState.UNDONE.value, updated_at=bindparam("now"))
        )

    def do(self, conn: Connection, effect: EffectKey, detail: Detail) -> Detail | None:
        """Claim the effect for ``effect.owner`` with ``detail``, inside the caller's transaction.

        Returns None when the claim is new: the caller makes its change now, in the same
        transaction. Returns the recorded detail when this execution did it before (a retry:
        change nothing). Raises AlreadyUndone or OwnedByAnotherExecution otherwise.
        """
        if self._insert(conn, effect, EffectState.DONE, detail):
            return None
        owner, state, recorded = self._locked(conn, effect)
        if owner != effect.owner:
            raise OwnedByAnotherExecution(
                f"{effect.step} of {effect.key} was already done or rolled back by another "
                f"run ({owner}); each one is processed once, ever"
            )
        if state == EffectState.UNDONE:
            raise AlreadyUndone(f"{effect.step} of {effect.key} was already rolled back")
        assert recorded is not None
        return recorded

    def done(self, conn: Connection, effect: EffectKey) -> Detail | None:
        """What ``effect.owner`` recorded for this effect, if it is done (a read; no lock)."""
        row = conn.execute(self._peek, {"k": effect.key, "s": effect.step}).first()
        if row is None:
            return None
        owner, state, detail = row
        return detail if owner == effect.owner and state == EffectState.DONE else None

    def undo(
        self, conn: Connection, effect: EffectKey, revert: Callable[[Detail], None]
    ) -> Detail | None:
        """Undo this execution's effect once, inside the caller's transaction.

        Calls ``revert(detail)`` when the effect is done and not yet undone, then marks it
        undone. Returns what was (now or earlier) undone; None when there was nothing: no
        effect (a marker is left so a late forward attempt is refused), or another
        execution's, which only that execution undoes.
        """
        if self._insert(conn, effect, EffectState.UNDONE, None):
            return None
        owner, state, recorded = self._locked(conn, effect)
        if owner != effect.owner:
            return None
        if state == EffectState.DONE:
            assert recorded is not None
            revert(recorded)
            conn.execute(self._mark_undone, {"k": effect.key, "s": effect.step, "now": utcnow()})
        return recorded

    def _insert(
        self, conn: Connection, effect: EffectKey, state: EffectState, detail: Detail | None
    ) -> bool:
        now = utcnow()
        return claimed(
            conn.execute(
                self._claim,
                {
                    "key": effect.key,
                    "step": effect.step,
                    "owner": effect.owner,
                    "state": state.value,
                    "detail": detail,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        )

    def _locked(self, conn: Connection, effect: EffectKey) -> tuple[str, str, Detail | None]:
        owner, state, detail = conn.execute(self._read, {"k": effect.key, "s": effect.step}).one()
        return owner, state, detail
