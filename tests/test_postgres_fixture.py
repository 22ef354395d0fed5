"""The PostgreSQL fixture: each test has an empty database of its own, dropped afterwards."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from pizza_saga.common.pgcluster import PostgresCluster


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_database_of_its_own(postgres_url: str, turn: str) -> None:
    # Whichever turn runs second would find the other's table if they shared a database.
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            assert inspect(connection).get_table_names() == []
            connection.execute(text("CREATE TABLE marks (turn text)"))
            connection.execute(text("INSERT INTO marks VALUES (:turn)"), {"turn": turn})
    finally:
        engine.dispose()


def test_a_database_is_dropped_even_with_connections_open(
    postgres_cluster: PostgresCluster,
) -> None:
    with postgres_cluster.database() as url:
        engine = create_engine(url)
        held = engine.connect()
        held.execute(text("SELECT 1"))
    postgres_cluster.wait_for_drops()
    admin = create_engine(postgres_cluster.url("postgres"))
    try:
        with admin.connect() as connection:
            names = connection.execute(text("SELECT datname FROM pg_database")).scalars().all()
        assert make_url(url).database not in names
    finally:
        admin.dispose()
        held.invalidate()
        engine.dispose()
