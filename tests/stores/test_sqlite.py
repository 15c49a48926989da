"""SQLite-specific behaviour: persistence, group commit, WAL, batch isolation, shutdown.

Everything is real (apsw on a file in tmp_path, the writer thread, the read pool). To make
batching deterministic, tests hold the writer thread inside one operation (`writer_paused`) while
writes queue up behind it, then release it: no sleeps, no timing assumptions.
"""

from __future__ import annotations

import functools
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import apsw
import attrs
import pytest
import trio
import trio.testing

from nexusd.core.errors import AlreadyExists, NotFound, StoreError
from nexusd.core.lifecycle import Stage
from nexusd.stores.sql_reads import COLUMNS
from nexusd.stores.sqlite import SqliteCheckpointStore, open_sqlite_store
from nexusd.stores.sqlite_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    encode_checkpoint,
    encode_submission,
)
from nexusd.stores.sqlite_writer import WriterStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from nexusd.core.clock import ManualClock
    from nexusd.core.records import Checkpoint, SubmissionEntry

    MakeRun = Callable[..., Checkpoint]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nexusd.db"


@pytest.fixture
async def sqlite_store(db_path: Path, clock: ManualClock) -> AsyncIterator[SqliteCheckpointStore]:
    async with open_sqlite_store(path=db_path, clock=clock) as store:
        yield store


@asynccontextmanager
async def writer_paused(store: SqliteCheckpointStore) -> AsyncIterator[None]:
    """Hold the writer thread inside one operation until the block exits."""
    entered, release = threading.Event(), threading.Event()

    def hold(connection: apsw.Connection) -> None:
        entered.set()
        release.wait(timeout=60)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._writer.run, hold)
        await trio.to_thread.run_sync(entered.wait)
        try:
            yield
        finally:
            release.set()


async def capture(results: dict[str, object], key: str, call: Awaitable[object]) -> None:
    try:
        results[key] = await call
    except Exception as exc:
        results[key] = exc


async def test_runs_survive_close_and_reopen(
    db_path: Path,
    clock: ManualClock,
    make_run: MakeRun,
    make_submission: Callable[[Checkpoint], SubmissionEntry],
) -> None:
    run = make_run(Stage.BUFFERED, tag="t")
    async with open_sqlite_store(path=db_path, clock=clock) as store:
        await store.create(checkpoint=run, submission=make_submission(run))
        clock.advance(3)
        await store.transition(
            algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING, changes={"job_uid": "u"}
        )
    moved = attrs.evolve(run, lifecycle_stage=Stage.RUNNING, job_uid="u", last_modified=clock.now())

    store = await SqliteCheckpointStore.open(path=db_path, clock=clock)
    try:
        assert await store.get(algorithm=run.algorithm, request_id=run.id) == moved
        assert await store.get_submission(
            algorithm=run.algorithm, request_id=run.id
        ) == make_submission(run)
        assert await store.by_tag(tag="t") == [moved]
    finally:
        await store.aclose()


async def test_group_commit_puts_queued_writes_in_one_transaction(
    sqlite_store: SqliteCheckpointStore, make_run: MakeRun
) -> None:
    """500 creates queued behind a busy writer commit in ceil(500 / 256) transactions."""
    runs = [make_run() for _ in range(500)]
    before = sqlite_store.statistics()

    async with trio.open_nursery() as nursery, writer_paused(sqlite_store):
        for run in runs:
            create = functools.partial(sqlite_store.create, checkpoint=run, submission=None)
            nursery.start_soon(create)
        await trio.testing.wait_all_tasks_blocked()
        assert sqlite_store.statistics().pending == before.pending + 501

    after = sqlite_store.statistics()
    assert after.commits - before.commits == 1 + 2  # the holding operation, then 256 + 244
    assert after.operations - before.operations == 501
    assert after.largest_batch == 256
    assert after.pending == 0
    assert after.failed_operations == after.failed_commits == 0
    for run in runs[::50]:
        assert await sqlite_store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_a_failing_operation_does_not_fail_its_batch(
    sqlite_store: SqliteCheckpointStore, make_run: MakeRun
) -> None:
    existing, first, last = make_run(), make_run(), make_run()
    await sqlite_store.create(checkpoint=existing, submission=None)
    results: dict[str, object] = {}
    before = sqlite_store.statistics()

    async with trio.open_nursery() as nursery, writer_paused(sqlite_store):
        calls = {
            "first": sqlite_store.create(checkpoint=first, submission=None),
            "duplicate": sqlite_store.create(checkpoint=existing, submission=None),
            "unknown": sqlite_store.transition(
                algorithm="a", request_id="missing", to=Stage.RUNNING
            ),
            "last": sqlite_store.create(checkpoint=last, submission=None),
        }
        for key, call in calls.items():
            nursery.start_soon(capture, results, key, call)
            await trio.testing.wait_all_tasks_blocked()  # queue them in this order

    assert results["first"] is None
    assert isinstance(results["duplicate"], AlreadyExists)
    assert isinstance(results["unknown"], NotFound)
    assert results["last"] is None
    after = sqlite_store.statistics()
    assert after.commits - before.commits == 2  # the holding operation, then the four
    assert after.failed_operations - before.failed_operations == 2
    for run in (existing, first, last):
        assert await sqlite_store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_reads_do_not_wait_for_the_writer(
    sqlite_store: SqliteCheckpointStore, make_run: MakeRun
) -> None:
    run = make_run()
    await sqlite_store.create(checkpoint=run, submission=None)
    async with writer_paused(sqlite_store):
        assert await sqlite_store.get(algorithm=run.algorithm, request_id=run.id) == run
        assert await sqlite_store.by_host_and_stage(
            host=run.received_by_host, stage=run.lifecycle_stage
        )


async def test_aclose_commits_writes_whose_callers_were_cancelled(
    db_path: Path, clock: ManualClock, make_run: MakeRun
) -> None:
    """Cancelling a queued write does not withdraw it; aclose commits it before stopping."""
    runs = [make_run() for _ in range(100)]
    store = await SqliteCheckpointStore.open(path=db_path, clock=clock)
    async with writer_paused(store):
        with trio.CancelScope() as creates:
            async with trio.open_nursery() as nursery:
                for run in runs:
                    create = functools.partial(store.create, checkpoint=run, submission=None)
                    nursery.start_soon(create)
                await trio.testing.wait_all_tasks_blocked()
                creates.cancel()
        assert store.statistics().pending == 101
    await store.aclose()
    await store.aclose()  # idempotent

    stats = store.statistics()
    assert stats.pending == 0
    assert not stats.running
    with pytest.raises(StoreError, match="closed"):
        await store.create(checkpoint=make_run(), submission=None)
    async with open_sqlite_store(path=db_path, clock=clock) as reopened:
        for run in runs:
            assert await reopened.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_database_is_in_wal_mode(sqlite_store: SqliteCheckpointStore) -> None:
    connection = apsw.Connection(str(sqlite_store.path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert connection.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        connection.close()


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_synchronous_level_is_applied(
    db_path: Path, clock: ManualClock, synchronous: str, level: int
) -> None:
    def read_level(connection: apsw.Connection) -> object:
        return connection.execute("PRAGMA synchronous").fetchall()[0][0]

    async with open_sqlite_store(path=db_path, clock=clock, synchronous=synchronous) as store:  # type: ignore[arg-type]
        assert await store._writer.run(read_level) == level


async def test_open_refuses_a_newer_schema(db_path: Path, clock: ManualClock) -> None:
    connection = apsw.Connection(str(db_path))
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        await SqliteCheckpointStore.open(path=db_path, clock=clock)


async def test_a_version_1_database_upgrades_on_open_and_keeps_its_rows(
    db_path: Path,
    clock: ManualClock,
    make_run: MakeRun,
    make_submission: Callable[[Checkpoint], SubmissionEntry],
) -> None:
    """A file written by the first release (schema 1: no heartbeats, no `cluster` column) is
    migrated on open; the run's shard is taken from its submission entry."""
    run = make_run(Stage.BUFFERED, received_by_host="old-scheduler")
    connection = apsw.Connection(str(db_path))
    connection.execute(MIGRATIONS[0])
    connection.execute("PRAGMA user_version = 1")
    first_release = COLUMNS[: COLUMNS.index("cluster")]
    marks = ", ".join("?" * len(first_release))
    connection.execute(
        f"INSERT INTO checkpoints ({', '.join(first_release)}) VALUES ({marks})",
        encode_checkpoint(run)[: len(first_release)],
    )
    connection.execute(
        "INSERT INTO submission_buffer VALUES (?, ?, ?, ?)", encode_submission(make_submission(run))
    )
    connection.close()

    async with open_sqlite_store(path=db_path, clock=clock) as store:
        migrated = attrs.evolve(run, cluster=make_submission(run).cluster)
        assert await store.get(algorithm=run.algorithm, request_id=run.id) == migrated
        assert await store.get_submission(
            algorithm=run.algorithm, request_id=run.id
        ) == make_submission(run)
        await store.record_heartbeat(host="h", at=clock.now())
        assert await store.heartbeats() == {"h": clock.now()}

    check = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert check.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
        assert SCHEMA_VERSION == 7
    finally:
        check.close()


async def test_stale_scans_use_the_stage_index(
    sqlite_store: SqliteCheckpointStore, clock: ManualClock
) -> None:
    """The maintainer's scans must not read the whole table: EXPLAIN shows the index."""
    plans = []
    for sql in (
        "SELECT id FROM checkpoints WHERE lifecycle_stage IN ('NEW', 'BUFFERED') "
        "AND last_modified < 'x' AND last_modified >= 'a' "
        "AND (last_modified, algorithm, id) > ('a', 'b', 'c') "
        "ORDER BY last_modified, algorithm, id LIMIT 10",
        "SELECT algorithm, id FROM checkpoints WHERE lifecycle_stage IN ('COMPLETED', 'FAILED') "
        "AND last_modified < 'x' ORDER BY last_modified, algorithm, id LIMIT 10",
    ):

        def explain(connection: apsw.Connection, sql: str = sql) -> str:
            rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            return " | ".join(str(row[-1]) for row in rows)

        plans.append(await sqlite_store._readers.run(explain))
    for plan in plans:
        assert "USING INDEX checkpoints_stage_modified" in plan, plan


async def test_open_reports_an_unopenable_path(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        await SqliteCheckpointStore.open(path=tmp_path / "missing-dir" / "x.db", clock=clock)


def test_statistics_is_a_frozen_snapshot() -> None:
    stats = WriterStatistics(
        commits=1,
        operations=2,
        failed_operations=0,
        failed_commits=0,
        largest_batch=2,
        pending=0,
        running=True,
    )
    with pytest.raises(AttributeError):
        stats.commits = 5  # type: ignore[misc]
