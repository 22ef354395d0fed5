"""The effect log (temporal_saga.effects) on a real SQLite file and a real PostgreSQL database.

A toy step takes dough from a stock table and its compensation puts it back, each in the
transaction that writes the effect row, as an activity would.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from postgres import Cluster, cluster
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError

from temporal_saga.effects import (
    AlreadyUndone,
    Detail,
    EffectKey,
    EffectLog,
    OwnedByAnotherExecution,
    claimed,
    create_effects_table,
    ddl,
    effects_table,
    insert_if_absent,
)

TIMEOUT = 10.0
"""Seconds a test waits for another thread (or the server) before it fails."""

STOCK_METADATA = MetaData()
STOCK = Table(
    "stock",
    STOCK_METADATA,
    Column("item", String(50), primary_key=True),
    Column("count", Integer, nullable=False),
)
DOUGH = 10
ORDER = EffectKey("order-1", "reserve", "run-1")
INTRUDER = EffectKey("order-1", "reserve", "run-2")
"""The same key and step, from another execution (another run or workflow id)."""
TAKE: Detail = {"item": "dough", "count": 2}


class Boom(Exception):
    pass


class Shop:
    """The toy step (reserve dough) and its compensation (release it) on one effect log.

    ``pause`` runs in the middle of each change, after the stock update: a test holds the
    transaction open there.
    """

    def __init__(
        self, engine: Engine, log: EffectLog | None = None, pause: Callable[[], None] = lambda: None
    ) -> None:
        self.engine, self.log, self.pause = engine, log or EffectLog(engine), pause
        self.reverts: list[Detail] = []

    def reserve(self, conn: Connection, effect: EffectKey, detail: Detail = TAKE) -> Detail | None:
        recorded = self.log.do(conn, effect, detail)
        if recorded is None:
            self._add(conn, -detail["count"])
            self.pause()
        return recorded

    def release(self, conn: Connection, effect: EffectKey) -> Detail | None:
        return self.log.undo(conn, effect, lambda detail: self._revert(conn, detail))

    def _revert(self, conn: Connection, detail: Detail) -> None:
        self.reverts.append(detail)
        self._add(conn, detail["count"])
        self.pause()

    def _add(self, conn: Connection, count: int) -> None:
        conn.execute(
            update(STOCK).where(STOCK.c.item == "dough").values(count=STOCK.c.count + count)
        )

    def dough(self) -> int:
        with self.engine.connect() as conn:
            count: int = conn.execute(select(STOCK.c.count)).scalar_one()
            return count

    def done(self, effect: EffectKey) -> Detail | None:
        with self.engine.connect() as conn:
            return self.log.done(conn, effect)

    def rows(self) -> list[tuple[str, str, str, str]]:
        c = self.log.table.c
        with self.engine.connect() as conn:
            found = conn.execute(select(c.key, c.step, c.owner, c.state)).all()
            return [(key, step, owner, state) for key, step, owner, state in found]


@pytest.fixture(scope="session")
def pg() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a database of the session's cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'effects.db'}"
        return
    pg: Cluster = request.getfixturevalue("pg")
    with pg.database() as database:
        yield database


@pytest.fixture
def store(url: str) -> Iterator[Engine]:
    """The database with the stock table (DOUGH dough) and no effects table yet."""
    options = {"isolation_level": "READ COMMITTED"} if url.startswith("postgresql") else {}
    engine = create_engine(url, **options)
    STOCK_METADATA.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(STOCK).values(item="dough", count=DOUGH))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(store: Engine) -> Engine:
    """The database with the stock table and the effects table (create_effects_table)."""
    create_effects_table(store)
    return store


@pytest.fixture
def shop(engine: Engine) -> Shop:
    return Shop(engine)


def test_a_retry_by_the_same_execution_gets_the_recorded_detail_and_changes_nothing(
    shop: Shop,
) -> None:
    with shop.engine.begin() as conn:
        assert shop.reserve(conn, ORDER) is None
    with shop.engine.begin() as conn:
        assert shop.reserve(conn, ORDER, {"item": "dough", "count": 5}) == TAKE
    assert shop.dough() == DOUGH - 2
    assert shop.rows() == [("order-1", "reserve", "run-1", "done")]


def test_another_execution_is_refused_and_its_undo_changes_nothing(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    with pytest.raises(OwnedByAnotherExecution) as refused, shop.engine.begin() as conn:
        shop.reserve(conn, INTRUDER)
    assert refused.value.error_type == "ProcessedByAnotherRunError"
    with shop.engine.begin() as conn:
        assert shop.release(conn, INTRUDER) is None
    assert shop.reverts == []
    assert shop.dough() == DOUGH - 2
    assert shop.done(ORDER) == TAKE
    assert shop.done(INTRUDER) is None
    assert shop.rows() == [("order-1", "reserve", "run-1", "done")]


def test_undo_after_do_reverts_exactly_once_even_when_called_twice(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    for _ in range(2):
        with shop.engine.begin() as conn:
            assert shop.release(conn, ORDER) == TAKE
    assert shop.reverts == [TAKE]
    assert shop.dough() == DOUGH
    assert shop.done(ORDER) is None
    assert shop.rows() == [("order-1", "reserve", "run-1", "undone")]


def test_undo_first_leaves_a_marker_so_a_late_do_is_refused_and_nothing_reverts(
    shop: Shop,
) -> None:
    with shop.engine.begin() as conn:
        assert shop.release(conn, ORDER) is None
    with pytest.raises(AlreadyUndone) as refused, shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    assert refused.value.error_type == "AlreadyRolledBackError"
    with shop.engine.begin() as conn:
        assert shop.release(conn, ORDER) is None
    assert shop.reverts == []
    assert shop.dough() == DOUGH
    assert shop.rows() == [("order-1", "reserve", "run-1", "undone")]


def test_after_an_undo_another_execution_is_still_refused(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    with shop.engine.begin() as conn:
        shop.release(conn, ORDER)
    with pytest.raises(OwnedByAnotherExecution), shop.engine.begin() as conn:
        shop.reserve(conn, INTRUDER)
    assert shop.dough() == DOUGH


def test_done_reads_what_this_execution_did_and_claims_nothing(shop: Shop) -> None:
    assert shop.done(ORDER) is None
    assert shop.rows() == []
    with shop.engine.begin() as conn:
        assert shop.reserve(conn, ORDER) is None
    assert shop.done(ORDER) == TAKE
    assert shop.done(INTRUDER) is None
    assert shop.done(EffectKey("order-1", "charge", "run-1")) is None
    with shop.engine.begin() as conn:
        shop.release(conn, ORDER)
    assert shop.done(ORDER) is None


def test_a_revised_effect_is_undone_as_revised(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    with shop.engine.begin() as conn:  # a later step put one back
        revised = shop.log.revise(conn, ORDER, lambda d: {**d, "count": d["count"] - 1})
        shop._add(conn, 1)
    assert revised == {**TAKE, "count": 1}
    assert shop.done(ORDER) == revised
    with shop.engine.begin() as conn:
        assert shop.release(conn, ORDER) == revised
    assert shop.dough() == DOUGH


def test_revise_refuses_what_is_undone_never_done_or_another_executions(shop: Shop) -> None:
    with pytest.raises(LookupError), shop.engine.begin() as conn:
        shop.log.revise(conn, ORDER, dict)
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    with pytest.raises(OwnedByAnotherExecution), shop.engine.begin() as conn:
        shop.log.revise(conn, INTRUDER, lambda d: {**d, "count": 0})
    with shop.engine.begin() as conn:
        shop.release(conn, ORDER)
    with pytest.raises(AlreadyUndone), shop.engine.begin() as conn:
        shop.log.revise(conn, ORDER, lambda d: {**d, "count": 0})
    assert shop.dough() == DOUGH


def test_standing_lists_what_an_execution_did_and_did_not_undo(shop: Shop) -> None:
    second = EffectKey("order-1", "reserve-more", "run-1")
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
        shop.reserve(conn, second, {"item": "dough", "count": 1})
        shop.reserve(conn, EffectKey("order-2", "reserve", "run-1"))
    with shop.engine.begin() as conn:
        assert shop.log.standing(conn, "order-1", "run-1") == {
            "reserve": TAKE,
            "reserve-more": {"item": "dough", "count": 1},
        }
        shop.release(conn, ORDER)
        assert shop.log.standing(conn, "order-1", "run-1") == {
            "reserve-more": {"item": "dough", "count": 1}
        }
        assert shop.log.standing(conn, "order-1", "run-2") == {}


def test_the_claim_rolls_back_with_the_change_so_a_retry_claims_again(shop: Shop) -> None:
    with pytest.raises(Boom), shop.engine.begin() as conn:
        assert shop.reserve(conn, ORDER) is None
        raise Boom
    assert shop.dough() == DOUGH
    assert shop.done(ORDER) is None
    with shop.engine.begin() as conn:
        assert shop.reserve(conn, ORDER) is None
    assert shop.dough() == DOUGH - 2
    assert shop.done(ORDER) == TAKE


def test_the_undone_mark_rolls_back_with_the_revert_so_a_retry_reverts_again(
    shop: Shop,
) -> None:
    with shop.engine.begin() as conn:
        shop.reserve(conn, ORDER)
    with pytest.raises(Boom), shop.engine.begin() as conn:
        assert shop.release(conn, ORDER) == TAKE
        raise Boom
    assert shop.dough() == DOUGH - 2
    assert shop.done(ORDER) == TAKE
    with shop.engine.begin() as conn:
        assert shop.release(conn, ORDER) == TAKE
    assert shop.reverts == [TAKE, TAKE]
    assert shop.dough() == DOUGH


Outcome = Detail | type[Exception] | None
"""What a step's transaction gave: its step's return value, or the type of what it raised."""


def _outcome(run: Callable[[], Detail | None]) -> Outcome:
    try:
        return run()
    except Exception as e:
        return type(e)


def _steps(shop: Shop) -> dict[str, Callable[[Connection], Detail | None]]:
    return {
        "forward": lambda conn: shop.reserve(conn, ORDER),
        "compensation": lambda conn: shop.release(conn, ORDER),
    }


RACES = [
    pytest.param(False, "forward", False, "compensation", (None, TAKE), [TAKE], id="do-undo"),
    pytest.param(False, "forward", True, "compensation", (Boom, None), [], id="failed-do-undo"),
    pytest.param(False, "compensation", False, "forward", (None, AlreadyUndone), [], id="undo-do"),
    pytest.param(True, "forward", False, "compensation", (TAKE, TAKE), [TAKE], id="retry-undo"),
    pytest.param(True, "compensation", False, "compensation", (TAKE, TAKE), [TAKE], id="undo-undo"),
]
"""(done before, first step, first fails, second step, their outcomes, reverts in all).

The first transaction holds in the middle of its change (the stock update, the revert) or,
when it changes nothing, once its step returns; the second runs meanwhile.
"""
RACE_ARGUMENTS = ("done_before", "first", "first_fails", "second", "outcomes", "reverts")


def _blocked_by(engine: Engine, waiter: int, holder: int, waiting: Future[Detail | None]) -> None:
    """Return once backend ``waiter`` waits for a lock ``holder`` holds; fail if it never does."""
    deadline = time.monotonic() + TIMEOUT
    query = text("SELECT CAST(:holder AS integer) = ANY(pg_blocking_pids(:waiter))")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while not conn.execute(query, {"holder": holder, "waiter": waiter}).scalar_one():
            if waiting.done():
                pytest.fail(f"the second transaction did not wait: {_outcome(waiting.result)!r}")
            if time.monotonic() > deadline:
                pytest.fail(f"the second transaction was not blocked within {TIMEOUT} s")


def _backend(conn: Connection) -> int:
    pid: int = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


@pytest.mark.parametrize("url", ["postgres"], indirect=True)
@pytest.mark.parametrize(RACE_ARGUMENTS, RACES)
def test_concurrent_transactions_on_one_effect_serialize_on_its_row(
    shop: Shop,
    done_before: bool,
    first: str,
    first_fails: bool,
    second: str,
    outcomes: tuple[Outcome, Outcome],
    reverts: list[Detail],
) -> None:
    """PostgreSQL only (READ COMMITTED): on SQLite nothing shows the second one waiting."""
    if done_before:
        with shop.engine.begin() as conn:
            shop.reserve(conn, ORDER)
    holding, release = threading.Event(), threading.Event()
    pids: queue.Queue[int] = queue.Queue()

    def hold() -> None:
        holding.set()
        assert release.wait(TIMEOUT)

    holder = Shop(shop.engine, pause=hold)

    def first_transaction() -> Detail | None:
        with shop.engine.begin() as conn:
            pids.put(_backend(conn))
            result = _steps(holder)[first](conn)
            if not holding.is_set():
                hold()
            if first_fails:
                raise Boom
            return result

    def second_transaction() -> Detail | None:
        with shop.engine.begin() as conn:
            pids.put(_backend(conn))
            return _steps(shop)[second](conn)

    with ThreadPoolExecutor(max_workers=2) as threads:
        try:
            earlier = threads.submit(first_transaction)
            holder_pid = pids.get(timeout=TIMEOUT)
            assert holding.wait(TIMEOUT)
            later = threads.submit(second_transaction)
            _blocked_by(shop.engine, pids.get(timeout=TIMEOUT), holder_pid, later)
        finally:
            release.set()
        got = (_outcome(lambda: earlier.result(TIMEOUT)), _outcome(lambda: later.result(TIMEOUT)))
    assert got == outcomes
    assert holder.reverts + shop.reverts == reverts
    assert shop.dough() == DOUGH
    assert shop.rows() == [("order-1", "reserve", "run-1", "undone")]


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(RACE_ARGUMENTS, RACES)
def test_on_sqlite_an_open_effect_transaction_locks_out_the_other_until_it_ends(
    shop: Shop,
    url: str,
    done_before: bool,
    first: str,
    first_fails: bool,
    second: str,
    outcomes: tuple[Outcome, Outcome],
    reverts: list[Detail],
) -> None:
    """SQLite's write lock, taken by the claim even when the row exists, keeps the other out."""
    if done_before:
        with shop.engine.begin() as conn:
            shop.reserve(conn, ORDER)
    impatient = create_engine(url, connect_args={"timeout": 0})
    other = Shop(impatient)
    attempts: list[Outcome] = []

    def try_the_other() -> None:
        with impatient.begin() as conn:
            attempts.append(_outcome(lambda: _steps(other)[second](conn)))

    holder = Shop(shop.engine, pause=try_the_other)

    def first_transaction() -> Detail | None:
        with shop.engine.begin() as conn:
            result = _steps(holder)[first](conn)
            if not attempts:
                try_the_other()
            if first_fails:
                raise Boom
            return result

    try:
        earlier = _outcome(first_transaction)
        with impatient.begin() as conn:
            later = _outcome(lambda: _steps(other)[second](conn))
    finally:
        impatient.dispose()
    assert attempts == [OperationalError]
    assert (earlier, later) == outcomes
    assert holder.reverts + other.reverts == reverts
    assert shop.dough() == DOUGH
    assert shop.rows() == [("order-1", "reserve", "run-1", "undone")]


def test_effects_table_in_your_own_metadata(store: Engine) -> None:
    metadata = MetaData()
    table = effects_table(metadata, name="my_effects")
    metadata.create_all(store)
    shop = Shop(store, EffectLog(store, table))
    with store.begin() as conn:
        assert shop.reserve(conn, ORDER) is None
    with store.begin() as conn:
        assert shop.release(conn, ORDER) == TAKE
    assert shop.rows() == [("order-1", "reserve", "run-1", "undone")]
    assert not inspect(store).has_table("saga_effects")


def test_create_effects_table_keeps_an_existing_table(engine: Engine) -> None:
    shop = Shop(engine)
    with engine.begin() as conn:
        shop.reserve(conn, ORDER)
    create_effects_table(engine)
    assert shop.done(ORDER) == TAKE


def test_ddl_creates_the_table_the_log_works_on(store: Engine) -> None:
    with store.begin() as conn:
        conn.exec_driver_sql(ddl(store.dialect.name))
    model = effects_table(MetaData())
    found = inspect(store)
    assert [column["name"] for column in found.get_columns("saga_effects")] == list(model.c.keys())
    assert found.get_pk_constraint("saga_effects")["constrained_columns"] == ["key", "step"]
    shop = Shop(store)
    with store.begin() as conn:
        assert shop.reserve(conn, ORDER) is None
    with store.begin() as conn:
        assert shop.reserve(conn, ORDER) == TAKE
    with pytest.raises(OwnedByAnotherExecution), store.begin() as conn:
        shop.reserve(conn, INTRUDER)
    with store.begin() as conn:
        assert shop.release(conn, ORDER) == TAKE
    assert shop.dough() == DOUGH
    assert shop.rows() == [("order-1", "reserve", "run-1", "undone")]


def test_ddl_names_the_table() -> None:
    for dialect in ("postgresql", "sqlite"):
        statement = ddl(dialect, name="my_effects")
        assert statement.startswith("CREATE TABLE my_effects (")
        assert statement.endswith(";")


def test_ddl_refuses_other_dialects_by_name() -> None:
    with pytest.raises(ValueError, match="mysql"):
        ddl("mysql")


def test_insert_if_absent_claims_a_row_once(store: Engine) -> None:
    statement = insert_if_absent(store, STOCK, "item").returning(STOCK.c.item)
    with store.begin() as conn:
        assert claimed(conn.execute(statement, {"item": "cheese", "count": 1}))
        assert not claimed(conn.execute(statement, {"item": "cheese", "count": 5}))
        assert not claimed(conn.execute(statement, {"item": "dough", "count": 0}))
    with store.connect() as conn:
        counts = {item: count for item, count in conn.execute(select(STOCK.c.item, STOCK.c.count))}
    assert counts == {"cheese": 1, "dough": DOUGH}
