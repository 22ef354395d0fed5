"""Side effects done once per (key, step), serialized with their compensations.

Activity-side code, for any SQLAlchemy project (the ``sqlalchemy`` extra). A saga step that
changes the world (reserve stock, charge a card) and the compensation that undoes it both
write the same row of the effects table, keyed on the business key (an order number) and the
step, in the same transaction as the change itself. The first of the two to arrive creates
the row; the second waits for that transaction (a row lock on PostgreSQL, the write lock on
SQLite) and then reads what the first did:

- forward first, then compensation: the compensation finds the row done and undoes it;
- compensation first (a step that timed out and is still running somewhere): it leaves the
  row undone with nothing in it, and the late forward attempt is refused;
- the same forward step again (a retry): it finds its own row and returns what was recorded.

Each row also names the execution that made it (``owner``: `Saga.execution`, stable across
retries, resets and continue-as-new, new for every new start). Another execution of the same
key is refused: a key's effect is made at most once, ever, and only its own execution undoes
it. Supported databases: SQLite and PostgreSQL.

Create the table with ``effects_table(metadata)`` in your own metadata (and your migrations),
or with `create_effects_table`; `ddl` gives its ``CREATE TABLE`` statement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    CursorResult,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.dml import Insert

Detail = dict[str, Any]
"""What a step recorded about its change (items taken, amount charged...), as JSON."""

DEFAULT_TABLE = "saga_effects"


class EffectState(StrEnum):
    """Whether an effect stands or was undone."""

    DONE = "done"
    UNDONE = "undone"


def effects_table(metadata: MetaData, name: str = DEFAULT_TABLE) -> Table:
    """The effects table, defined in ``metadata`` under ``name``."""
    return Table(
        name,
        metadata,
        Column("key", String(100), primary_key=True),
        Column("step", String(100), primary_key=True),
        Column("owner", String(300), nullable=False),
        Column("state", String(10), nullable=False),
        Column("detail", JSON, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


def create_effects_table(engine: Engine, name: str = DEFAULT_TABLE) -> Table:
    """Create the effects table in ``engine``'s database if it is missing; returns it."""
    table = effects_table(MetaData(), name)
    table.create(engine, checkfirst=True)
    return table


def ddl(dialect: str = "postgresql", name: str = DEFAULT_TABLE) -> str:
    """The table's ``CREATE TABLE`` statement for ``dialect`` (postgresql or sqlite)."""
    dialects: dict[str, Callable[[], Dialect]] = {
        "postgresql": postgresql.dialect,
        "sqlite": sqlite.dialect,
    }
    if dialect not in dialects:
        raise ValueError(f"the effect log supports postgresql and sqlite, not {dialect}")
    make: Callable[[], Dialect] = dialects[dialect]
    statement = CreateTable(effects_table(MetaData(), name)).compile(dialect=make())
    return f"{str(statement).strip()};"


@dataclass(frozen=True)
class EffectKey:
    """Which effect: the business key, the saga step, and the execution asking."""

    key: str
    step: str
    owner: str


class EffectRefused(Exception):
    """The step must not take effect now; retrying will not change that.

    Report it from the activity as a non-retryable ApplicationError of type `error_type`.
    """

    error_type: ClassVar[str] = "EffectRefusedError"


class AlreadyUndone(EffectRefused):
    """The step's compensation ran first: doing it now would leave it undone by nobody."""

    error_type = "AlreadyRolledBackError"


class OwnedByAnotherExecution(EffectRefused):
    """Another execution (another run or workflow id) made or rolled back this effect."""

    error_type = "ProcessedByAnotherRunError"


def insert_if_absent(engine: Engine, table: Table | type[Any], *key_columns: str) -> Insert:
    """``INSERT ... ON CONFLICT (key_columns) DO NOTHING`` in the engine's dialect."""
    dialects: dict[str, Callable[..., Any]] = {
        "postgresql": postgresql.insert,
        "sqlite": sqlite.insert,
    }
    build = dialects.get(engine.dialect.name)
    if build is None:
        raise ValueError(f"supported databases: SQLite and PostgreSQL, not {engine.dialect.name}")
    statement: Insert = build(table).on_conflict_do_nothing(index_elements=list(key_columns))
    return statement


def claimed(result: CursorResult[Any]) -> bool:
    """Whether an ``insert_if_absent(...).returning(...)`` inserted its row.

    RETURNING, not rowcount: drivers disagree on the rowcount of ``ON CONFLICT DO NOTHING``.
    """
    return result.first() is not None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EffectLog:
    """Does and undoes effects once per (key, step), on the connection the change uses.

    ``table`` is the effects table (`effects_table`); by default one named
    ``saga_effects``. Every call takes the caller's connection inside its transaction.
    """

    def __init__(self, engine: Engine, table: Table | None = None) -> None:
        self.table = table if table is not None else effects_table(MetaData())
        c = self.table.c
        self._claim = insert_if_absent(engine, self.table, "key", "step").returning(c.key)
        where = (c.key == bindparam("k"), c.step == bindparam("s"))
        self._read = select(c.owner, c.state, c.detail).where(*where).with_for_update()
        self._peek = select(c.owner, c.state, c.detail).where(*where)
        self._mark_undone = (
            update(self.table)
            .where(*where)
            .values(state=EffectState.UNDONE.value, updated_at=bindparam("now"))
        )
        self._revise = (
            update(self.table)
            .where(*where)
            .values(detail=bindparam("detail"), updated_at=bindparam("now"))
        )

    def do(self, conn: Connection, effect: EffectKey, detail: Detail) -> Detail | None:
        """Claim the effect for ``effect.owner`` with ``detail``, in the caller's transaction.

        Returns None when the claim is new: make the change now, in the same transaction.
        Returns the recorded detail when this execution did it before (a retry: change
        nothing). Raises AlreadyUndone or OwnedByAnotherExecution otherwise.
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

    def standing(self, conn: Connection, key: str, owner: str) -> dict[str, Detail]:
        """Every effect ``owner`` made for ``key`` that stands (done, not undone): step ->
        detail, oldest first. What a reconciler undoes for a run that ended half-way."""
        c = self.table.c
        rows = conn.execute(
            select(c.step, c.detail)
            .where(c.key == key, c.owner == owner, c.state == EffectState.DONE.value)
            .order_by(c.created_at, c.step)
        )
        return {step: detail for step, detail in rows}

    def undo(
        self, conn: Connection, effect: EffectKey, revert: Callable[[Detail], None]
    ) -> Detail | None:
        """Undo this execution's effect once, in the caller's transaction.

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
            conn.execute(self._mark_undone, {"k": effect.key, "s": effect.step, "now": _utcnow()})
        return recorded

    def revise(
        self, conn: Connection, effect: EffectKey, change: Callable[[Detail], Detail]
    ) -> Detail:
        """Replace what this execution's standing effect records with ``change(detail)``.

        For a step partly undone by a later one (some of an order's pizzas put back): its
        compensation then undoes only what is left. Locks the row, in the caller's
        transaction; returns the new detail. Raises AlreadyUndone if the effect was undone,
        OwnedByAnotherExecution if it is another execution's, LookupError if it was never done.
        """
        row = conn.execute(self._read, {"k": effect.key, "s": effect.step}).first()
        if row is None:
            raise LookupError(f"{effect.step} of {effect.key} was never done")
        owner, state, recorded = row
        if owner != effect.owner:
            raise OwnedByAnotherExecution(
                f"{effect.step} of {effect.key} belongs to another run ({owner})"
            )
        if state != EffectState.DONE:
            raise AlreadyUndone(f"{effect.step} of {effect.key} was already rolled back")
        revised = change(dict(recorded))
        conn.execute(
            self._revise,
            {"k": effect.key, "s": effect.step, "detail": revised, "now": _utcnow()},
        )
        return revised

    def _insert(
        self, conn: Connection, effect: EffectKey, state: EffectState, detail: Detail | None
    ) -> bool:
        now = _utcnow()
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
