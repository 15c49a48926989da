"""The query plans of the maintainer's `stale` scan, read from the real databases (SQLite on a
file, PostgreSQL on a throwaway server): a non-terminal scan reads the partial index
`checkpoints_live_modified` in order, with no sort of every live run first. An idempotency
key's holder is one read of the unique index `checkpoints_idempotency_key`."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import apsw
import psycopg
import pytest

from nexusd.core.lifecycle import Stage
from nexusd.stores import postgres, sqlite
from nexusd.stores.postgres import open_postgres_store
from nexusd.stores.sql_reads import KEY_INDEX, KEY_QUERY
from nexusd.stores.sqlite import open_sqlite_store

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

    from nexusd.core.clock import ManualClock

LIVE = {Stage.NEW, Stage.BUFFERED, Stage.RUNNING}
#: what the maintainer asks for: the sweep (every live stage) and recovery (NEW and BUFFERED)
SCANS = [LIVE, {Stage.NEW, Stage.BUFFERED}, {Stage.BUFFERED}]


def _sqlite_bindings(stages: Collection[Stage], resumed: bool) -> tuple[Any, ...]:
    time = "2026-01-01T00:00:00.000000+00:00"
    cursor = (time, time, "a", "r") if resumed else ()
    return (*sorted(map(str, stages)), time, *cursor, 1000)


@pytest.mark.parametrize("stages", SCANS, ids=lambda stages: "-".join(sorted(stages)))
@pytest.mark.parametrize("resumed", [False, True], ids=["first-page", "resumed"])
async def test_sqlite_stale_reads_the_live_index_without_a_temp_b_tree(
    tmp_path: Path, clock: ManualClock, stages: set[Stage], resumed: bool
) -> None:
    async with open_sqlite_store(path=tmp_path / "plans.db", clock=clock):
        pass  # creates and migrates the database
    sql = sqlite.stale_query(stages, resumed=resumed)
    connection = apsw.Connection(str(tmp_path / "plans.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = connection.execute(
            f"EXPLAIN QUERY PLAN {sql}", _sqlite_bindings(stages, resumed)
        ).fetchall()
    finally:
        connection.close()
    plan = " | ".join(str(row[-1]) for row in rows)
    assert "checkpoints_live_modified" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    if resumed:
        assert "last_modified>?" in plan.replace(" ", ""), plan  # a range, not a full scan


async def test_sqlite_terminal_scans_keep_the_stage_index(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with open_sqlite_store(path=tmp_path / "plans.db", clock=clock):
        pass
    stages = {Stage.COMPLETED, Stage.FAILED}
    connection = apsw.Connection(str(tmp_path / "plans.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        sql = sqlite.stale_query(stages, resumed=False)
        rows = connection.execute(
            f"EXPLAIN QUERY PLAN {sql}", _sqlite_bindings(stages, False)
        ).fetchall()
    finally:
        connection.close()
    plan = " | ".join(str(row[-1]) for row in rows)
    assert "checkpoints_stage_modified" in plan, plan


@pytest.mark.parametrize("stages", SCANS, ids=lambda stages: "-".join(sorted(stages)))
@pytest.mark.parametrize("resumed", [False, True], ids=["first-page", "resumed"])
async def test_postgres_stale_order_matches_the_live_index(
    postgres_dsn: str, clock: ManualClock, stages: set[Stage], resumed: bool
) -> None:
    """With sequential scans priced out, a plan still sorting would show a Sort node: the
    ORDER BY (collations included) and the WHERE must both match the partial index."""
    async with open_postgres_store(dsn=postgres_dsn, clock=clock, min_size=1, migrate=True):
        pass
    time = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cursor = (time, time, "a", "r") if resumed else ()
    params = (sorted(map(str, stages)), time, *cursor, 1000)
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("SET enable_seqscan = off")
        connection.execute("SET plan_cache_mode = force_generic_plan")
        rows = connection.execute(
            f"EXPLAIN {postgres.stale_query(stages, resumed=resumed)}", params
        ).fetchall()
    plan = "\n".join(str(row[0]) for row in rows)
    assert "checkpoints_live_modified" in plan, plan
    assert "Sort" not in plan, plan


async def test_sqlite_reads_a_key_through_its_unique_index(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with open_sqlite_store(path=tmp_path / "plans.db", clock=clock):
        pass
    connection = apsw.Connection(str(tmp_path / "plans.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = connection.execute(
            f"EXPLAIN QUERY PLAN {KEY_QUERY.format(mark='?')}", ("algo", "key")
        ).fetchall()
    finally:
        connection.close()
    plan = " | ".join(str(row[-1]) for row in rows)
    assert f"SEARCH checkpoints USING INDEX {KEY_INDEX}" in plan, plan


async def test_postgres_reads_a_key_through_its_unique_index(
    postgres_dsn: str, clock: ManualClock
) -> None:
    async with open_postgres_store(dsn=postgres_dsn, clock=clock, min_size=1, migrate=True):
        pass
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("SET enable_seqscan = off")
        connection.execute("SET plan_cache_mode = force_generic_plan")
        rows = connection.execute(
            f"EXPLAIN {KEY_QUERY.format(mark='%s')}", ("algo", "key")
        ).fetchall()
    plan = "\n".join(str(row[0]) for row in rows)
    assert KEY_INDEX in plan, plan
