"""PostgreSQL-specific behaviour: migrations, schema checks, secrets, cancellation, two pools.

Everything is real: a throwaway PostgreSQL cluster on loopback (tests/servers/postgres.py), a
fresh database per test, psycopg pools in worker threads. Row locks held by a second, plain
connection make a statement block deterministically; no sleeps decide an outcome.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs
import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from nexusd.core.errors import AlreadyExists, StoreError
from nexusd.core.lifecycle import TERMINAL, Stage
from nexusd.stores.postgres import (
    PostgresCheckpointStore,
    PostgresStatistics,
    open_postgres_store,
)
from nexusd.stores.postgres_admin import init_schema, migrate
from nexusd.stores.postgres_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
    encode_checkpoint,
    encode_submission,
)
from nexusd.stores.sql_reads import COLUMNS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from nexusd.core.clock import ManualClock
    from nexusd.core.records import Checkpoint, SubmissionEntry

    MakeRun = Callable[..., Checkpoint]


def with_dsn(dsn: str, **changes: Any) -> str:
    return make_conninfo(dsn, **changes)


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
async def pg_store(postgres_dsn: str, clock: ManualClock) -> AsyncIterator[PostgresCheckpointStore]:
    async with open_postgres_store(dsn=postgres_dsn, clock=clock, migrate=True) as store:
        yield store


# --- schema and migrations ----------------------------------------------------------------


async def test_init_and_migrate_are_idempotent(postgres_dsn: str) -> None:
    assert await init_schema(postgres_dsn) == SCHEMA_VERSION
    assert await init_schema(postgres_dsn) == SCHEMA_VERSION
    assert await migrate(postgres_dsn) == (SCHEMA_VERSION, SCHEMA_VERSION)
    versions = query(postgres_dsn, f"SELECT version FROM {VERSION_TABLE} ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_migrate_creates_a_missing_schema(postgres_dsn: str) -> None:
    assert await migrate(postgres_dsn) == (0, SCHEMA_VERSION)
    tables = query(
        postgres_dsn,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    assert tables == [
        ("checkpoints",),
        (VERSION_TABLE,),
        ("payloads",),
        ("rate_budgets",),
        ("scheduler_heartbeats",),
        ("submission_buffer",),
    ]
    indexes = {row[0] for row in query(postgres_dsn, "SELECT indexname FROM pg_indexes")}
    assert {
        "checkpoints_tag",
        "checkpoints_host_stage",
        "checkpoints_stage_modified",
        "checkpoints_live_modified",
        "checkpoints_leases",
        "checkpoints_lease_holder",
        "checkpoints_warm_waiting",
        "payloads_written",
    } <= indexes


async def test_concurrent_starts_migrate_once(postgres_dsn: str, clock: ManualClock) -> None:
    """Two `init_schema`, two `migrate` and two auto-migrating stores, all at once."""
    results: list[object] = []

    async def opening() -> None:
        async with open_postgres_store(dsn=postgres_dsn, clock=clock, min_size=1, migrate=True):
            results.append("opened")

    async def record(fn: Callable[[str], Any]) -> None:
        results.append(await fn(postgres_dsn))

    async with trio.open_nursery() as nursery:
        for fn in (init_schema, migrate, init_schema, migrate):
            nursery.start_soon(record, fn)
        nursery.start_soon(opening)
        nursery.start_soon(opening)

    assert results.count(SCHEMA_VERSION) == 2  # init_schema
    assert results.count("opened") == 2
    migrations = [r for r in results if isinstance(r, tuple)]
    assert sorted(migrations) in (
        [(0, SCHEMA_VERSION), (SCHEMA_VERSION, SCHEMA_VERSION)],
        [(SCHEMA_VERSION, SCHEMA_VERSION)] * 2,
    )
    assert query(postgres_dsn, f"SELECT count(*) FROM {VERSION_TABLE}") == [(SCHEMA_VERSION,)]


async def test_open_refuses_a_database_without_schema(
    postgres_dsn: str, clock: ManualClock
) -> None:
    with pytest.raises(StoreError, match=r"no nexusd schema: run `nexusd store init`"):
        await PostgresCheckpointStore.open(dsn=postgres_dsn, clock=clock)
    assert query(postgres_dsn, "SELECT to_regclass('checkpoints')") == [(None,)]

    await init_schema(postgres_dsn)
    async with open_postgres_store(dsn=postgres_dsn, clock=clock) as store:
        assert await store.get(algorithm="a", request_id="b") is None


async def test_open_refuses_an_older_or_newer_schema(postgres_dsn: str, clock: ManualClock) -> None:
    await init_schema(postgres_dsn)
    query(postgres_dsn, f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (99, 'x')")
    with pytest.raises(StoreError, match="newer than this nexusd's"):
        await PostgresCheckpointStore.open(dsn=postgres_dsn, clock=clock)
    with pytest.raises(StoreError, match="upgrade nexusd"):
        await migrate(postgres_dsn)
    assert await init_schema(postgres_dsn) == 99  # init leaves an existing schema alone

    query(postgres_dsn, f"DELETE FROM {VERSION_TABLE}")  # as if written before version 1
    query(postgres_dsn, f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (0, 'x')")
    with pytest.raises(StoreError, match=r"run `nexusd store (init|migrate)`"):
        await PostgresCheckpointStore.open(dsn=postgres_dsn, clock=clock)


async def test_a_version_1_database_migrates_and_keeps_its_rows(
    postgres_dsn: str,
    clock: ManualClock,
    make_run: MakeRun,
    make_submission: Callable[[Checkpoint], SubmissionEntry],
) -> None:
    """A database built by the first release is refused until `migrate`, then upgraded."""
    run = make_run(Stage.BUFFERED, received_by_host="old-scheduler")
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(
            f"CREATE TABLE {VERSION_TABLE} (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        connection.execute(MIGRATIONS[0].sql.encode())
        connection.execute(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (1, 'v1')")
        first_release = COLUMNS[: COLUMNS.index("cluster")]
        marks = ", ".join(["%s"] * len(first_release))
        connection.execute(
            f"INSERT INTO checkpoints ({', '.join(first_release)}) VALUES ({marks})",
            encode_checkpoint(run)[: len(first_release)],
        )
        connection.execute(
            "INSERT INTO submission_buffer VALUES (%s, %s, %s, %s)",
            encode_submission(make_submission(run)),
        )

    with pytest.raises(StoreError, match=r"schema version 1, .* run `nexusd store migrate`"):
        await PostgresCheckpointStore.open(dsn=postgres_dsn, clock=clock)
    assert await init_schema(postgres_dsn) == 1  # init never upgrades
    assert await migrate(postgres_dsn) == (1, 7)
    assert await migrate(postgres_dsn) == (7, 7)
    assert SCHEMA_VERSION == 7

    async with open_postgres_store(dsn=postgres_dsn, clock=clock) as store:
        migrated = attrs.evolve(run, cluster=make_submission(run).cluster)
        assert await store.get(algorithm=run.algorithm, request_id=run.id) == migrated
        assert await store.get_submission(
            algorithm=run.algorithm, request_id=run.id
        ) == make_submission(run)
        await store.record_heartbeat(host="h", at=clock.now())
        assert await store.heartbeats() == {"h": clock.now()}
    versions = query(postgres_dsn, f"SELECT version, description FROM {VERSION_TABLE} ORDER BY 1")
    assert versions == [
        (1, "v1"),
        (2, "scheduler_heartbeats"),
        (3, "checkpoints.cluster, payloads"),
        (4, "rate_budgets"),
        (5, "checkpoints_live_modified, heartbeat queue reports"),
        (6, "idempotency keys"),
        (7, "warm pools: attempts and leases"),
    ]


# --- errors never show the password ---------------------------------------------------------


async def test_wrong_password_is_a_clear_error_without_the_secret(
    postgres_dsn: str, clock: ManualClock
) -> None:
    secret = "S3cr3t-must-not-leak"
    params = conninfo_to_dict(postgres_dsn)
    bad = with_dsn(postgres_dsn, password=secret)
    for attempt in (
        lambda: PostgresCheckpointStore.open(dsn=bad, clock=clock, migrate=True),
        lambda: init_schema(bad),
        lambda: migrate(bad),
    ):
        with pytest.raises(StoreError) as raised:
            await attempt()
        chain = []
        error: BaseException | None = raised.value
        while error is not None:
            chain.append(repr(error) + str(error))
            error = error.__cause__ or error.__context__
        text = "\n".join(chain)
        assert secret not in text
        assert str(params["password"]) not in text
        message = str(raised.value)
        assert f"{params['host']}:{params['port']}/{params['dbname']}" in message
        assert "password authentication failed" in message


async def test_unreachable_server_names_host_and_port(clock: ManualClock) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connection refused
        dsn = make_conninfo(host="127.0.0.1", port=port, dbname="db", password="pw-xyz")
        with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{port}/db") as raised:
            await PostgresCheckpointStore.open(dsn=dsn, clock=clock)
    assert "pw-xyz" not in str(raised.value)


# --- encoding --------------------------------------------------------------------------------


async def test_timestamps_come_back_utc_whatever_the_session_time_zone(
    postgres_dsn: str, clock: ManualClock, make_run: MakeRun
) -> None:
    kolkata = with_dsn(postgres_dsn, options="-c TimeZone=Asia/Kolkata")
    run = make_run(sent_at=dt.datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=dt.UTC))
    async with open_postgres_store(dsn=kolkata, clock=clock, migrate=True) as store:
        await store.create(checkpoint=run, submission=None)
        stored = await store.get(algorithm=run.algorithm, request_id=run.id)
    assert stored == run
    assert stored is not None
    assert stored.sent_at is not None
    assert stored.sent_at.tzinfo is dt.UTC
    assert stored.received_at.tzinfo is dt.UTC


# --- cancellation ----------------------------------------------------------------------------


class RowLock:
    """A plain connection holding `FOR UPDATE` on one run until released."""

    def __init__(self, dsn: str, run: Checkpoint) -> None:
        self._connection = psycopg.connect(dsn)
        self._connection.execute(
            "SELECT 1 FROM checkpoints WHERE algorithm = %s AND id = %s FOR UPDATE",
            (run.algorithm, run.id),
        )

    def release(self) -> None:
        self._connection.rollback()
        self._connection.close()


def lock_waiters(dsn: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "SELECT pid, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )


async def wait_for_lock_waiters(dsn: str, count: int) -> None:
    with trio.fail_after(10):
        while len(await trio.to_thread.run_sync(lock_waiters, dsn)) < count:
            await trio.sleep(0.01)


async def test_cancelling_a_blocked_transition_cancels_it_on_the_server(
    pg_store: PostgresCheckpointStore, postgres_dsn: str, make_run: MakeRun
) -> None:
    run = make_run(Stage.BUFFERED)
    await pg_store.create(checkpoint=run, submission=None)
    lock = await trio.to_thread.run_sync(RowLock, postgres_dsn, run)
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: pg_store.transition(
                        algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING
                    )
                )
                await wait_for_lock_waiters(postgres_dsn, 1)  # the UPDATE waits on the row
                scope.cancel()
        assert scope.cancelled_caught
        # The cancelled call returned only once the server had stopped the statement.
        assert await trio.to_thread.run_sync(lock_waiters, postgres_dsn) == []
    finally:
        await trio.to_thread.run_sync(lock.release)

    stored = await pg_store.get(algorithm=run.algorithm, request_id=run.id)
    assert stored == run  # nothing applied, not even after the lock went away
    stats = pg_store.statistics()
    assert (stats.cancelled, stats.abandoned, stats.failures) == (1, 0, 0)
    assert stats.in_flight == 0


async def test_a_call_cancelled_while_queued_is_never_sent(
    postgres_dsn: str, clock: ManualClock, make_run: MakeRun
) -> None:
    """Pool of one: the second call waits for the connection; cancelled, it never runs."""
    first, second = make_run(Stage.BUFFERED), make_run(Stage.BUFFERED)
    async with open_postgres_store(
        dsn=postgres_dsn, clock=clock, min_size=1, max_size=1, migrate=True
    ) as store:
        for run in (first, second):
            await store.create(checkpoint=run, submission=None)
        lock = await trio.to_thread.run_sync(RowLock, postgres_dsn, first)
        outcomes: list[bool] = []

        async def move(run: Checkpoint) -> None:
            result = await store.transition(
                algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING
            )
            outcomes.append(result.applied)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(move, first)  # holds the only connection, blocked on the lock
            await wait_for_lock_waiters(postgres_dsn, 1)
            with trio.move_on_after(0.2) as queued:  # waits for the connection meanwhile
                await move(second)
            assert queued.cancelled_caught
            await trio.to_thread.run_sync(lock.release)

        assert outcomes == [True]
        moved_second = await store.get(algorithm=second.algorithm, request_id=second.id)
        assert moved_second == second
        assert store.statistics().cancelled == 1


# --- two stores (two scheduler processes) -----------------------------------------------------


async def test_racing_transitions_across_two_pools_keep_a_legal_history(
    postgres_dsn: str, clock: ManualClock, make_run: MakeRun
) -> None:
    """Two stores on one database race submitter, receiver and supervisor writes on 20 runs."""
    runs = [make_run(Stage.BUFFERED) for _ in range(20)]
    targets = [Stage.RUNNING, Stage.COMPLETED, Stage.FAILED, Stage.RUNNING, Stage.CANCELLED]
    applied: dict[str, list[Stage]] = {run.id: [] for run in runs}
    async with (
        open_postgres_store(dsn=postgres_dsn, clock=clock, max_size=8, migrate=True) as one,
        open_postgres_store(dsn=postgres_dsn, clock=clock, max_size=8) as two,
    ):
        for run in runs:
            await one.create(checkpoint=run, submission=None)

        async def attempt(store: PostgresCheckpointStore, run: Checkpoint, to: Stage) -> None:
            outcome = await store.transition(algorithm=run.algorithm, request_id=run.id, to=to)
            if outcome.applied:
                applied[run.id].append(to)

        async with trio.open_nursery() as nursery:
            for run in runs:
                for store in (one, two):
                    for to in targets:
                        nursery.start_soon(attempt, store, run, to)

        for run in runs:
            moves = applied[run.id]
            finished = [stage for stage in moves if stage in TERMINAL]
            assert len(finished) == 1, moves  # exactly one terminal write won
            assert moves.count(Stage.RUNNING) <= 1, moves
            final = await two.get(algorithm=run.algorithm, request_id=run.id)
            assert final is not None
            assert final.lifecycle_stage is finished[0]


async def test_claims_across_two_pools_apply_exactly_once(
    postgres_dsn: str, clock: ManualClock, make_run: MakeRun
) -> None:
    """Two maintainers (two stores) race 20 claims each on every one of 10 dead runs."""
    runs = [make_run(Stage.BUFFERED, received_by_host="dead") for _ in range(10)]
    winners: dict[str, list[str]] = {run.id: [] for run in runs}
    async with (
        open_postgres_store(dsn=postgres_dsn, clock=clock, max_size=8, migrate=True) as one,
        open_postgres_store(dsn=postgres_dsn, clock=clock, max_size=8) as two,
    ):
        for run in runs:
            await one.create(checkpoint=run, submission=None)

        async def claim(store: PostgresCheckpointStore, run: Checkpoint, host: str) -> None:
            claimed = await store.claim(
                algorithm=run.algorithm, request_id=run.id, from_host="dead", to_host=host
            )
            if claimed is not None:
                assert claimed.received_by_host == host
                winners[run.id].append(host)

        async with trio.open_nursery() as nursery:
            for run in runs:
                for index in range(20):
                    for name, store in (("one", one), ("two", two)):
                        nursery.start_soon(claim, store, run, f"{name}-{index}")

        for run in runs:
            assert len(winners[run.id]) == 1, winners[run.id]
            final = await two.get(algorithm=run.algorithm, request_id=run.id)
            assert final is not None
            assert final.received_by_host == winners[run.id][0]


# --- statistics --------------------------------------------------------------------------------


async def test_statistics_count_operations_failures_and_the_pool(
    postgres_dsn: str,
    clock: ManualClock,
    make_run: MakeRun,
    make_submission: Callable[[Checkpoint], SubmissionEntry],
) -> None:
    run = make_run()
    store = await PostgresCheckpointStore.open(
        dsn=postgres_dsn, clock=clock, min_size=2, max_size=5, migrate=True
    )
    try:
        await store.create(checkpoint=run, submission=make_submission(run))
        with pytest.raises(AlreadyExists):
            await store.create(checkpoint=run, submission=None)
        await store.get(algorithm=run.algorithm, request_id=run.id)
        query(postgres_dsn, "ALTER TABLE checkpoints RENAME TO gone")
        with pytest.raises(StoreError, match="UndefinedTable"):
            await store.get(algorithm=run.algorithm, request_id=run.id)
        stats = store.statistics()
    finally:
        await store.aclose()
    assert isinstance(stats, PostgresStatistics)
    assert (stats.operations, stats.failures, stats.cancelled) == (4, 1, 0)
    assert (stats.pool_min, stats.pool_max) == (2, 5)
    assert 2 <= stats.pool_size <= 5
    assert stats.in_flight == 0
    assert stats.open
    assert not store.statistics().open
    with pytest.raises(StoreError, match="closed"):
        await store.get(algorithm=run.algorithm, request_id=run.id)
    await store.aclose()  # idempotent
