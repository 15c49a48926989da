"""The warm-pool part of the `CheckpointStore` contract, run against every implementation.

Everything is real (see conftest `store`): the memory store, the SQLite store on a file and the
PostgreSQL store on a throwaway server; a race between schedulers is two store instances on one
SQLite file or one PostgreSQL database, as two processes would hold them (the memory store has
one process, so both are one instance there). Only wall-clock time is fixed, through
`ManualClock`. The last tests open databases written by schema version 6.
"""

from __future__ import annotations

import datetime as dt
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import apsw
import attrs
import psycopg
import pytest
import trio

from nexusd.core.errors import NotFound
from nexusd.core.lifecycle import Stage
from nexusd.core.records import HeldLease, LeaseKey, NewRun
from nexusd.stores import postgres_schema, sqlite_schema
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.postgres import PostgresCheckpointStore, open_postgres_store
from nexusd.stores.postgres_admin import migrate
from nexusd.stores.sql_reads import (
    COLUMNS,
    EXPIRED_LEASES_QUERY,
    LEASES_OF_QUERY,
    WAITING_QUERY,
)
from nexusd.stores.sqlite import SqliteCheckpointStore, open_sqlite_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from nexusd.core.clock import ManualClock
    from nexusd.core.records import Checkpoint, SubmissionEntry
    from nexusd.stores.checkpoints import CheckpointStore

    MakeRun = Callable[..., Checkpoint]
    MakeSubmission = Callable[[Checkpoint], SubmissionEntry]
    StoreOpener = Callable[[], AbstractAsyncContextManager[CheckpointStore]]

POD = "pool-demo-7c9f-abcde"


def key(run: Checkpoint) -> tuple[str, str]:
    return (run.algorithm, run.id)


def lease_of(run: Checkpoint, attempt: int = 1) -> LeaseKey:
    return LeaseKey(algorithm=run.algorithm, request_id=run.id, attempt=attempt)


async def stored(store: CheckpointStore, run: Checkpoint) -> Checkpoint:
    found = await store.get(algorithm=run.algorithm, request_id=run.id)
    assert found is not None
    return found


async def created(store: CheckpointStore, *runs: Checkpoint) -> None:
    for run in runs:
        await store.create(checkpoint=run, submission=None)


@asynccontextmanager
async def two_instances(open_store: StoreOpener) -> AsyncIterator[tuple[CheckpointStore, ...]]:
    """Two stores on one database (two schedulers); one instance for the memory store."""
    async with open_store() as one:
        if isinstance(one, MemoryCheckpointStore):
            yield one, one
            return
        async with open_store() as two:
            yield one, two


# --- lease ---------------------------------------------------------------------------------


async def test_lease_applies_only_to_buffered_warm_unleased_runs(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    first = make_run(warm=True)
    retried = make_run(warm=True, attempt=3)
    job_run = make_run()
    running = make_run(Stage.RUNNING, warm=True)
    new = make_run(Stage.NEW, warm=True)
    done = make_run(Stage.COMPLETED, warm=True)
    await created(store, first, retried, job_run, running, new, done)
    clock.advance(5)
    expires = clock.now() + dt.timedelta(seconds=30)

    leased = await store.lease(
        runs=[
            *(key(retried), key(job_run), key(first), ("demo-algorithm", "unknown")),
            *(key(running), key(new), key(done), key(first)),
        ],
        holder=POD,
        expires=expires,
    )

    assert leased == [lease_of(retried, 3), lease_of(first)]  # input order, each once
    assert await stored(store, first) == attrs.evolve(
        first,
        lifecycle_stage=Stage.RUNNING,
        lease_holder=POD,
        lease_expires=expires,
        sent_at=clock.now(),
        last_modified=clock.now(),
    )
    assert (await stored(store, retried)).attempt == 3
    for untouched in (job_run, running, new, done):
        assert await stored(store, untouched) == untouched
    # leased already: a second pool (or scheduler) gets nothing
    assert await store.lease(runs=[key(first)], holder="other-pod", expires=expires) == []
    assert (await stored(store, first)).lease_holder == POD


async def test_lease_refuses_bad_arguments(store: CheckpointStore, make_run: MakeRun) -> None:
    run = make_run(warm=True)
    await created(store, run)
    aware = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="lease holder"):
        await store.lease(runs=[key(run)], holder="", expires=aware)
    with pytest.raises(ValueError, match="expires must be a timezone-aware"):
        await store.lease(runs=[key(run)], holder=POD, expires=aware.replace(tzinfo=None))
    assert await stored(store, run) == run
    assert await store.lease(runs=[], holder=POD, expires=aware) == []


async def test_create_stores_warm_and_attempt_and_refuses_bad_ones(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run(warm=True, attempt=4)
    await created(store, run)
    assert await stored(store, run) == run
    for bad, message in (
        (make_run(attempt=0), "attempt"),
        (make_run(lease_expires=dt.datetime(2026, 1, 1)), "lease_expires must be"),
    ):
        with pytest.raises(ValueError, match=message):
            await created(store, bad)
        assert await store.get(algorithm=bad.algorithm, request_id=bad.id) is None


async def test_of_concurrent_leases_of_one_run_exactly_one_applies(
    open_store: StoreOpener, clock: ManualClock, make_run: MakeRun
) -> None:
    """Two store instances, 16 workers each leasing all of 12 runs, each in its own order
    (PostgreSQL must neither let two win nor deadlock on the row locks)."""
    runs = [make_run(warm=True) for _ in range(12)]
    expires = clock.now() + dt.timedelta(seconds=30)
    winners: dict[tuple[str, str], list[str]] = {key(run): [] for run in runs}
    async with two_instances(open_store) as (one, two):
        await created(one, *runs)

        async def lease(store: CheckpointStore, holder: str, order: list[Checkpoint]) -> None:
            for leased in await store.lease(
                runs=[key(run) for run in order], holder=holder, expires=expires
            ):
                assert leased.attempt == 1
                winners[(leased.algorithm, leased.request_id)].append(holder)

        shuffle = random.Random(13)
        async with trio.open_nursery() as nursery:
            for index in range(16):
                order = shuffle.sample(runs, len(runs))
                nursery.start_soon(lease, one if index % 2 else two, f"pod-{index}", order)

        for run in runs:
            assert len(winners[key(run)]) == 1, winners[key(run)]
            final = await two.get(algorithm=run.algorithm, request_id=run.id)
            assert final is not None
            assert final.lifecycle_stage is Stage.RUNNING
            assert final.lease_holder == winners[key(run)][0]


# --- renew ---------------------------------------------------------------------------------


async def test_renew_extends_only_the_holders_current_attempt(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    kept, other, cancelled = (make_run(warm=True) for _ in range(3))
    await created(store, kept, other, cancelled)
    first_expiry = clock.now() + dt.timedelta(seconds=30)
    await store.lease(
        runs=[key(kept), key(other), key(cancelled)], holder=POD, expires=first_expiry
    )
    leased_at = clock.now()
    cancel = await store.transition(
        algorithm=cancelled.algorithm, request_id=cancelled.id, to=Stage.CANCELLED
    )
    assert cancel.applied
    clock.advance(10)
    later = clock.now() + dt.timedelta(seconds=30)

    refused = await store.renew(
        holder=POD,
        leases=[
            lease_of(kept),
            lease_of(other, attempt=2),  # not the run's attempt
            lease_of(cancelled),
            LeaseKey(algorithm="demo-algorithm", request_id="unknown", attempt=1),
        ],
        expires=later,
    )

    assert refused == {
        key(other): Stage.RUNNING,
        key(cancelled): Stage.CANCELLED,
        ("demo-algorithm", "unknown"): None,
    }
    renewed = await stored(store, kept)
    assert renewed.lease_expires == later
    assert renewed.last_modified == leased_at  # a renewal is not a change of the run
    assert (await stored(store, other)).lease_expires == first_expiry
    # a cancelled (terminal) run holds no lease any more
    gone = await stored(store, cancelled)
    assert (gone.lease_holder, gone.lease_expires) == ("", None)
    # another holder cannot renew it
    assert await store.renew(holder="thief", leases=[lease_of(kept)], expires=later) == {
        key(kept): Stage.RUNNING
    }
    assert await store.renew(holder=POD, leases=[], expires=later) == {}
    with pytest.raises(ValueError, match="lease holder"):
        await store.renew(holder="", leases=[lease_of(kept)], expires=later)


# --- requeue -------------------------------------------------------------------------------


async def test_requeue_gives_the_run_back_as_its_next_attempt(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(warm=True)
    await created(store, run)
    expires = clock.now() + dt.timedelta(seconds=30)
    await store.lease(runs=[key(run)], holder=POD, expires=expires)
    leased = await stored(store, run)

    assert not await store.requeue(lease=lease_of(run), holder="other-pod")
    assert not await store.requeue(lease=lease_of(run), expired_before=expires)  # not yet expired
    assert not await store.requeue(lease=lease_of(run, attempt=2))
    assert await stored(store, run) == leased

    clock.advance(31)
    assert await store.requeue(
        lease=lease_of(run), holder=POD, expired_before=expires + dt.timedelta(microseconds=1)
    )
    assert await stored(store, run) == attrs.evolve(
        leased,
        lifecycle_stage=Stage.BUFFERED,
        attempt=2,
        lease_holder="",
        lease_expires=None,
        last_modified=clock.now(),
    )
    assert not await store.requeue(lease=lease_of(run))  # once per lost lease
    assert await store.lease(runs=[key(run)], holder="other-pod", expires=expires) == [
        lease_of(run, attempt=2)
    ]


@pytest.mark.parametrize("stage", [Stage.BUFFERED, Stage.RUNNING, Stage.COMPLETED])
async def test_requeue_refuses_a_run_without_a_lease(
    store: CheckpointStore, make_run: MakeRun, stage: Stage
) -> None:
    """A Job run is RUNNING with no lease: only a lease's CAS may move a run back."""
    run = make_run(stage, warm=stage is not Stage.RUNNING)
    await created(store, run)
    assert not await store.requeue(lease=lease_of(run))
    assert not await store.requeue(lease=LeaseKey(algorithm="x", request_id="unknown", attempt=1))
    assert await stored(store, run) == run
    with pytest.raises(ValueError, match="attempt"):
        await store.requeue(lease=lease_of(run, attempt=0))


async def test_of_concurrent_requeues_of_one_attempt_exactly_one_applies(
    open_store: StoreOpener, clock: ManualClock, make_run: MakeRun
) -> None:
    """Every scheduler's reaper sees the same expired lease: the run goes back once."""
    runs = [make_run(warm=True) for _ in range(6)]
    expires = clock.now() + dt.timedelta(seconds=30)
    applied: dict[tuple[str, str], int] = {key(run): 0 for run in runs}
    async with two_instances(open_store) as (one, two):
        await created(one, *runs)
        assert len(await one.lease(runs=[key(r) for r in runs], holder=POD, expires=expires)) == 6
        clock.advance(60)

        async def requeue(store: CheckpointStore, run: Checkpoint) -> None:
            if await store.requeue(lease=lease_of(run), expired_before=clock.now()):
                applied[key(run)] += 1

        async with trio.open_nursery() as nursery:
            for run in runs:
                for index in range(10):
                    nursery.start_soon(requeue, one if index % 2 else two, run)

        assert set(applied.values()) == {1}
        for run in runs:
            final = await two.get(algorithm=run.algorithm, request_id=run.id)
            assert final is not None
            assert (final.lifecycle_stage, final.attempt) == (Stage.BUFFERED, 2)


# --- transition of one attempt -----------------------------------------------------------


async def test_transition_with_an_attempt_refuses_any_other_attempt(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(warm=True)
    await created(store, run)
    expires = clock.now() + dt.timedelta(seconds=30)
    await store.lease(runs=[key(run)], holder=POD, expires=expires)
    assert await store.requeue(lease=lease_of(run))
    await store.lease(runs=[key(run)], holder="second-pod", expires=expires)

    late = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.COMPLETED, attempt=1
    )
    assert (late.applied, late.stage) == (False, Stage.RUNNING)
    assert (await stored(store, run)).lease_holder == "second-pod"

    clock.advance(1)
    done = await store.transition(
        algorithm=run.algorithm,
        request_id=run.id,
        to=Stage.COMPLETED,
        attempt=2,
        changes={"result_uri": "https://example.test/r"},
    )
    assert (done.applied, done.stage) == (True, Stage.COMPLETED)
    final = await stored(store, run)
    assert (final.attempt, final.result_uri, final.last_modified) == (
        2,
        "https://example.test/r",
        clock.now(),
    )
    assert (final.lease_holder, final.lease_expires) == ("", None)
    assert await store.leases_of(holder="second-pod") == []
    with pytest.raises(NotFound):
        await store.transition(algorithm="x", request_id="unknown", to=Stage.FAILED, attempt=1)
    with pytest.raises(ValueError, match="attempt"):
        await store.transition(
            algorithm=run.algorithm, request_id=run.id, to=Stage.FAILED, attempt=0
        )


async def test_a_job_run_is_attempt_one(store: CheckpointStore, make_run: MakeRun) -> None:
    run = make_run()
    await created(store, run)
    assert (run.attempt, run.warm) == (1, False)
    refused = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING, attempt=2
    )
    assert (refused.applied, refused.stage) == (False, Stage.BUFFERED)
    moved = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING, attempt=1
    )
    assert moved.applied


# --- reads ---------------------------------------------------------------------------------


async def test_expired_leases_come_soonest_expiry_first(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    start = clock.now()
    runs = [make_run(warm=True) for _ in range(5)]
    await created(store, *runs)
    # expiries: +20, +5, +10, +5 (a tie, broken by id), +40
    for run, seconds in zip(runs, (20, 5, 10, 5, 40), strict=True):
        await store.lease(
            runs=[key(run)], holder=POD, expires=start + dt.timedelta(seconds=seconds)
        )
    finished = runs[2]
    await store.transition(algorithm=finished.algorithm, request_id=finished.id, to=Stage.FAILED)

    def held(run: Checkpoint, seconds: int) -> HeldLease:
        return HeldLease(
            algorithm=run.algorithm,
            request_id=run.id,
            attempt=1,
            holder=POD,
            expires=start + dt.timedelta(seconds=seconds),
        )

    before = start + dt.timedelta(seconds=30)
    expected = [held(runs[1], 5), held(runs[3], 5), held(runs[0], 20)]
    assert await store.expired_leases(before=before) == expected
    assert await store.expired_leases(before=before, limit=2) == expected[:2]
    assert await store.expired_leases(before=start + dt.timedelta(seconds=5)) == []
    assert expected[0].key == lease_of(runs[1])
    with pytest.raises(ValueError, match="limit"):
        await store.expired_leases(before=before, limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.expired_leases(before=before.replace(tzinfo=None))


async def test_leases_of_names_a_workers_running_leases(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    mine = [make_run(warm=True) for _ in range(3)]
    theirs = make_run(warm=True)
    await created(store, *mine, theirs)
    expires = clock.now() + dt.timedelta(seconds=30)
    await store.lease(runs=[key(run) for run in mine], holder=POD, expires=expires)
    await store.lease(runs=[key(theirs)], holder="other-pod", expires=expires)
    await store.transition(algorithm=mine[0].algorithm, request_id=mine[0].id, to=Stage.COMPLETED)

    held = await store.leases_of(holder=POD)
    assert [lease.key for lease in held] == [lease_of(mine[1]), lease_of(mine[2])]
    assert {lease.holder for lease in held} == {POD}
    assert {lease.expires for lease in held} == {expires}
    assert await store.leases_of(holder=POD, limit=1) == held[:1]
    assert [lease.request_id for lease in await store.leases_of(holder="other-pod")] == [theirs.id]
    assert await store.leases_of(holder="nobody") == []


async def test_waiting_finds_old_buffered_warm_runs_of_one_algorithm(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    oldest = make_run(warm=True)
    clock.advance(1)
    older, job_run, elsewhere, leased = (make_run(warm=True) for _ in range(4))
    job_run = attrs.evolve(job_run, warm=False)
    elsewhere = attrs.evolve(elsewhere, algorithm="other-algorithm")
    clock.advance(1)
    requeued = make_run(warm=True)
    clock.advance(1)
    recent = make_run(warm=True)
    await created(store, recent, older, oldest, job_run, elsewhere, leased, requeued)
    expires = clock.now() + dt.timedelta(seconds=30)
    await store.lease(runs=[key(leased), key(requeued)], holder=POD, expires=expires)
    assert await store.requeue(lease=lease_of(requeued))  # now BUFFERED, modified now
    cutoff = clock.now()

    found = await store.waiting(algorithm="demo-algorithm", modified_before=cutoff)
    assert [cp.id for cp in found] == [oldest.id, older.id]
    assert found[0] == oldest
    later = cutoff + dt.timedelta(microseconds=1)
    again = await store.waiting(algorithm="demo-algorithm", modified_before=later)
    # requeued and recent were modified at the same time: the older id first
    assert [cp.id for cp in again] == [oldest.id, older.id, requeued.id, recent.id]
    assert again[2].attempt == 2
    limited = await store.waiting(algorithm="demo-algorithm", modified_before=later, limit=1)
    assert [cp.id for cp in limited] == [oldest.id]
    assert [
        cp.id for cp in await store.waiting(algorithm="other-algorithm", modified_before=later)
    ] == [elsewhere.id]
    assert await store.waiting(algorithm="unknown", modified_before=later) == []


# --- schema version 6 databases -----------------------------------------------------------


def _v6_row(
    run: Checkpoint, encode: Callable[[Checkpoint], tuple[object, ...]]
) -> tuple[object, ...]:
    return encode(run)[: COLUMNS.index("warm")]


async def test_a_version_6_sqlite_database_reads_old_runs_as_attempt_one(
    tmp_path: Path, clock: ManualClock, make_run: MakeRun
) -> None:
    path = tmp_path / "v6.db"
    run = make_run(Stage.RUNNING, sent_at=clock.now())
    connection = apsw.Connection(str(path))
    for step in sqlite_schema.MIGRATIONS[:6]:
        connection.execute(step)
    connection.execute("PRAGMA user_version = 6")
    old_columns = COLUMNS[: COLUMNS.index("warm")]
    connection.execute(
        f"INSERT INTO checkpoints ({', '.join(old_columns)}) "
        f"VALUES ({', '.join('?' * len(old_columns))})",
        _v6_row(run, sqlite_schema.encode_checkpoint),
    )
    connection.close()

    async with open_sqlite_store(path=path, clock=clock) as store:
        old = await stored(store, run)
        assert old == run
        assert (old.warm, old.attempt, old.lease_holder, old.lease_expires) == (False, 1, "", None)
        assert await store.expired_leases(before=clock.now() + dt.timedelta(days=1)) == []
        assert not await store.requeue(lease=lease_of(run))
        done = await store.transition(
            algorithm=run.algorithm, request_id=run.id, to=Stage.COMPLETED, attempt=1
        )
        assert done.applied


async def test_a_version_6_postgres_database_migrates_and_reads_old_runs_as_attempt_one(
    postgres_dsn: str, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(Stage.RUNNING, sent_at=clock.now())
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(
            f"CREATE TABLE {postgres_schema.VERSION_TABLE} (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for step in postgres_schema.MIGRATIONS[:6]:
            connection.execute(step.sql.encode())
            connection.execute(
                f"INSERT INTO {postgres_schema.VERSION_TABLE} (version, description) "
                "VALUES (%s, %s)",
                (step.version, step.description),
            )
        old_columns = COLUMNS[: COLUMNS.index("warm")]
        connection.execute(
            f"INSERT INTO checkpoints ({', '.join(old_columns)}) "
            f"VALUES ({', '.join(['%s'] * len(old_columns))})",
            _v6_row(run, postgres_schema.encode_checkpoint),
        )

    assert await migrate(postgres_dsn) == (6, postgres_schema.SCHEMA_VERSION)
    async with open_postgres_store(dsn=postgres_dsn, clock=clock) as store:
        old = await stored(store, run)
        assert old == run
        assert (old.warm, old.attempt, old.lease_holder, old.lease_expires) == (False, 1, "", None)
        assert await store.leases_of(holder=POD) == []
        done = await store.transition(
            algorithm=run.algorithm, request_id=run.id, to=Stage.COMPLETED, attempt=1
        )
        assert done.applied


async def test_sqlite_lease_reads_use_their_partial_indexes(
    tmp_path: Path, clock: ManualClock
) -> None:
    """EXPLAIN shows each read on its own index: no scan of every run."""
    async with open_sqlite_store(path=tmp_path / "plans.db", clock=clock) as store:
        assert isinstance(store, SqliteCheckpointStore)
        plans = {}
        for index, query, time in (
            ("checkpoints_leases", EXPIRED_LEASES_QUERY, "lease_expires"),
            ("checkpoints_lease_holder", LEASES_OF_QUERY, "lease_expires"),
            ("checkpoints_warm_waiting", WAITING_QUERY, "last_modified"),
        ):
            sql = query.format(
                source=SqliteCheckpointStore.SOURCE.format(index=index),
                mark="?",
                order=SqliteCheckpointStore.KEY_ORDER.format(time=time),
            )

            def explain(connection: apsw.Connection, sql: str = sql) -> str:
                bindings = ("x",) * sql.count("?")
                rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", bindings).fetchall()
                return " | ".join(str(row[-1]) for row in rows)

            plans[index] = await store._readers.run(explain)
        for index, plan in plans.items():
            assert f"USING INDEX {index}" in plan, plan


async def test_postgres_lease_reads_use_their_partial_indexes(
    postgres_dsn: str, clock: ManualClock, make_run: MakeRun
) -> None:
    """With many Job runs RUNNING and BUFFERED and a few warm ones, the planner reads each
    lease query through a partial index (so the WHEREs prove the indexes' predicates; both
    lease indexes hold only the leased runs, so for `leases_of` either will do)."""
    async with open_postgres_store(dsn=postgres_dsn, clock=clock, migrate=True) as store:
        runs = [make_run(Stage.RUNNING if n % 2 else Stage.BUFFERED) for n in range(3000)]
        warm = [make_run(warm=True) for _ in range(4)]
        await store.create_many(runs=[NewRun(checkpoint=run, submission=None) for run in runs])
        await created(store, *warm)
        expires = clock.now() + dt.timedelta(seconds=30)
        await store.lease(runs=[key(run) for run in warm[:2]], holder=POD, expires=expires)
    order = PostgresCheckpointStore.KEY_ORDER
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("ANALYZE checkpoints")
        leased = {"checkpoints_leases", "checkpoints_lease_holder"}
        for indexes, query, params, time in (
            ({"checkpoints_leases"}, EXPIRED_LEASES_QUERY, (expires, 10), "lease_expires"),
            (leased, LEASES_OF_QUERY, (POD, 10), "lease_expires"),
            (
                {"checkpoints_warm_waiting"},
                WAITING_QUERY,
                ("demo-algorithm", expires, 10),
                "last_modified",
            ),
        ):
            sql = query.format(source="checkpoints", mark="%s", order=order.format(time=time))
            plan = " | ".join(
                str(row[0]) for row in connection.execute(f"EXPLAIN {sql}", params).fetchall()
            )
            assert any(f"using {index} on" in plan for index in indexes), plan
            assert "Seq Scan" not in plan, plan
