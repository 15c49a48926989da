"""The `CheckpointStore` contract, run against every implementation (see conftest `store`).

Everything is real: the memory store, the SQLite store on a file (writer thread, group commit,
read pool) and the PostgreSQL store on a throwaway server. Only wall-clock time is fixed, through
`ManualClock`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexusd.core.errors import AlreadyExists, NotFound
from nexusd.core.lifecycle import TERMINAL, Stage, is_legal
from nexusd.core.records import (
    MUTABLE_FIELDS,
    Checkpoint,
    NewRun,
    ParentRef,
    PendingSubmission,
    SubmissionEntry,
)
from nexusd.stores.checkpoints import HostCursor, StaleCursor

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from nexusd.core.clock import ManualClock
    from nexusd.stores.checkpoints import CheckpointStore

    MakeSubmission = Callable[[Checkpoint], SubmissionEntry]
    MakeRun = Callable[..., Checkpoint]
    StoreOpener = Callable[[], AbstractAsyncContextManager[CheckpointStore]]


def full_run(clock: ManualClock) -> Checkpoint:
    """A run with every field set to something non-default, unicode included."""
    return Checkpoint(
        algorithm="ünï-algo",
        id=str(uuid.uuid4()),
        lifecycle_stage=Stage.RUNNING,
        received_at=dt.datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        last_modified=clock.now(),
        payload_uri="https://example.test/p?x=1&y=é",
        result_uri="https://example.test/r",
        algorithm_failure_cause="Ошибка",
        algorithm_failure_details="détails 🚀\nline two",
        received_by_host="scheduler-7",
        sent_at=dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
        applied_configuration={"container": {"image": "a:1"}, "args": ["--x=%s", 3], "f": 1.5},
        configuration_overrides={"workgroupRef": {"name": "wg"}, "nested": {"emoji": "🙂"}},
        content_hash="abcd1234",
        tag="tag-ü",
        api_version="1.2",
        job_uid="3f1c0c7e-uid",
        parent=ParentRef(request_id="parent-id", algorithm_name="parent-algo"),
        payload_valid_for=dt.timedelta(hours=6, microseconds=250),
        cluster="shard-ü",
        warm=True,
        attempt=3,
        lease_holder="pool-ü-pod",
        lease_expires=dt.datetime(2026, 1, 1, 0, 0, 30, 7, tzinfo=dt.UTC),
    )


# --- create / get ------------------------------------------------------------------------


async def test_every_field_round_trips(
    store: CheckpointStore, clock: ManualClock, make_submission: MakeSubmission
) -> None:
    run = full_run(clock)
    entry = make_submission(run)
    await store.create(checkpoint=run, submission=entry)

    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run
    assert await store.get_submission(algorithm=run.algorithm, request_id=run.id) == entry
    stored = await store.get(algorithm=run.algorithm, request_id=run.id)
    assert stored is not None
    assert stored.received_at.tzinfo is not None
    assert stored.received_at.utcoffset() == dt.timedelta(0)


async def test_defaults_round_trip(store: CheckpointStore, make_run: MakeRun) -> None:
    """None stays None (overrides, sent_at, parent), and an empty dict stays an empty dict."""
    bare = make_run(Stage.NEW)
    empty_overrides = make_run(Stage.NEW, configuration_overrides={})
    for run in (bare, empty_overrides):
        await store.create(checkpoint=run, submission=None)
        assert await store.get(algorithm=run.algorithm, request_id=run.id) == run
    stored = await store.get(algorithm=bare.algorithm, request_id=bare.id)
    assert stored is not None
    assert stored.configuration_overrides is None
    assert stored.sent_at is None
    assert stored.parent is None
    assert await store.get_submission(algorithm=bare.algorithm, request_id=bare.id) is None


async def test_unknown_run_reads_as_none(store: CheckpointStore) -> None:
    assert await store.get(algorithm="a", request_id="missing") is None
    assert await store.get_submission(algorithm="a", request_id="missing") is None


async def test_duplicate_create_raises_and_keeps_the_original(
    store: CheckpointStore, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    run = make_run()
    await store.create(checkpoint=run, submission=make_submission(run))
    duplicate = attrs.evolve(run, tag="other", lifecycle_stage=Stage.NEW)

    with pytest.raises(AlreadyExists):
        await store.create(checkpoint=duplicate, submission=None)

    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run
    assert await store.get_submission(algorithm=run.algorithm, request_id=run.id) is not None


async def test_same_id_under_another_algorithm_is_another_run(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run()
    other = attrs.evolve(run, algorithm="another-algorithm")
    await store.create(checkpoint=run, submission=None)
    await store.create(checkpoint=other, submission=None)
    assert await store.get(algorithm="another-algorithm", request_id=run.id) == other


async def test_submission_of_another_run_is_refused(
    store: CheckpointStore, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    run, other = make_run(), make_run()
    with pytest.raises(ValueError, match="does not belong"):
        await store.create(checkpoint=run, submission=make_submission(other))
    assert await store.get(algorithm=run.algorithm, request_id=run.id) is None


async def test_naive_timestamps_are_refused(store: CheckpointStore, make_run: MakeRun) -> None:
    run = make_run(received_at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create(checkpoint=run, submission=None)


async def test_create_many_stores_every_run_in_one_transaction(
    store: CheckpointStore, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    runs = [make_run(), make_run(), make_run()]
    news = [
        NewRun(checkpoint=runs[0], submission=make_submission(runs[0]), payload=b'{"n": 0}'),
        NewRun(checkpoint=runs[1], submission=None, payload=None),
        NewRun(checkpoint=runs[2], submission=make_submission(runs[2]), payload=b"\x00\xff"),
    ]
    await store.create_many(runs=news)
    for new in news:
        key = {"algorithm": new.checkpoint.algorithm, "request_id": new.checkpoint.id}
        assert await store.get(**key) == new.checkpoint
        assert await store.get_submission(**key) == new.submission
        assert await store.get_payload(**key) == new.payload


async def test_create_many_is_all_or_nothing(store: CheckpointStore, make_run: MakeRun) -> None:
    existing, fresh = make_run(), make_run()
    await store.create(checkpoint=existing, submission=None)
    duplicate = attrs.evolve(existing, tag="again")
    with pytest.raises(AlreadyExists):
        await store.create_many(
            runs=[
                NewRun(checkpoint=fresh, submission=None, payload=b"{}"),
                NewRun(checkpoint=duplicate, submission=None),
            ]
        )
    assert await store.get(algorithm=fresh.algorithm, request_id=fresh.id) is None
    assert await store.get_payload(algorithm=fresh.algorithm, request_id=fresh.id) is None
    assert await store.get(algorithm=existing.algorithm, request_id=existing.id) == existing


async def test_pending_submission_reads_stage_holder_shard_and_manifest_at_once(
    store: CheckpointStore, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    run = make_run(Stage.BUFFERED)
    entry = make_submission(run)
    await store.create(checkpoint=run, submission=entry)
    key: dict[str, Any] = {"algorithm": run.algorithm, "request_id": run.id}
    assert await store.pending_submission(**key) == PendingSubmission(
        stage=Stage.BUFFERED,
        received_by_host=run.received_by_host,
        cluster=entry.cluster,
        template=entry.template,
    )
    await store.transition(**key, to=Stage.RUNNING)
    pending = await store.pending_submission(**key)
    assert pending is not None
    assert pending.stage is Stage.RUNNING
    bare = make_run(Stage.BUFFERED)
    await store.create(checkpoint=bare, submission=None)
    assert await store.pending_submission(algorithm=bare.algorithm, request_id=bare.id) is None
    assert await store.pending_submission(algorithm="a", request_id="missing") is None


async def test_inline_payloads_go_after_their_retention_and_with_their_runs(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    old = make_run(Stage.COMPLETED, received_at=clock.now())
    clock.advance(3600)
    new = make_run(Stage.COMPLETED, received_at=clock.now(), last_modified=clock.now())
    for run in (old, new):
        await store.create(checkpoint=run, submission=None, payload=f'"{run.id}"'.encode())
    assert await store.purge_payloads(written_before=clock.now(), limit=5) == 1
    assert await store.get_payload(algorithm=old.algorithm, request_id=old.id) is None
    assert await store.get(algorithm=old.algorithm, request_id=old.id) == old  # the run stays
    assert await store.get_payload(algorithm=new.algorithm, request_id=new.id) is not None
    assert await store.purge_payloads(written_before=clock.now(), limit=5) == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.purge_payloads(written_before=dt.datetime(2026, 1, 1))
    clock.advance(1)
    assert await store.purge(finished_before=clock.now()) == sorted(
        [(old.algorithm, old.id), (new.algorithm, new.id)]
    )
    assert await store.get_payload(algorithm=new.algorithm, request_id=new.id) is None


# --- transitions ------------------------------------------------------------------------


async def test_legal_transition_applies_and_stamps_last_modified(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(Stage.BUFFERED)
    await store.create(checkpoint=run, submission=None)
    clock.advance(42.000001)
    sent = clock.now() - dt.timedelta(seconds=1)

    outcome = await store.transition(
        algorithm=run.algorithm,
        request_id=run.id,
        to=Stage.RUNNING,
        changes={"job_uid": "uid-1", "sent_at": sent},
    )

    expected = attrs.evolve(
        run, lifecycle_stage=Stage.RUNNING, job_uid="uid-1", sent_at=sent, last_modified=clock.now()
    )
    assert outcome.applied
    assert outcome.stage is Stage.RUNNING
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == expected


async def test_illegal_transition_reports_the_current_run(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(Stage.RUNNING)
    await store.create(checkpoint=run, submission=None)
    clock.advance(10)

    outcome = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.BUFFERED, changes={"tag": "x"}
    )

    assert not outcome.applied
    assert outcome.stage is Stage.RUNNING  # the stage that refused the move
    # neither the stage, the changes nor last_modified moved
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_expected_narrows_the_sources(store: CheckpointStore, make_run: MakeRun) -> None:
    run = make_run(Stage.BUFFERED)
    await store.create(checkpoint=run, submission=None)
    key: dict[str, Any] = {"algorithm": run.algorithm, "request_id": run.id}

    refused = await store.transition(**key, to=Stage.FAILED, expected={Stage.RUNNING})
    assert not refused.applied
    assert refused.stage is Stage.BUFFERED

    applied = await store.transition(
        **key, to=Stage.FAILED, expected=[Stage.RUNNING, Stage.BUFFERED]
    )
    assert applied.applied
    assert applied.stage is Stage.FAILED


async def test_expected_cannot_widen_to_an_illegal_move(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run(Stage.COMPLETED)
    await store.create(checkpoint=run, submission=None)
    outcome = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING, expected={Stage.COMPLETED}
    )
    assert not outcome.applied
    assert outcome.stage is Stage.COMPLETED


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
async def test_a_terminal_stage_is_never_left(
    store: CheckpointStore, make_run: MakeRun, terminal: Stage
) -> None:
    run = make_run(terminal)
    await store.create(checkpoint=run, submission=None)
    for to in Stage:
        outcome = await store.transition(algorithm=run.algorithm, request_id=run.id, to=to)
        assert not outcome.applied
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_transition_of_an_unknown_run_raises_not_found(store: CheckpointStore) -> None:
    with pytest.raises(NotFound):
        await store.transition(algorithm="a", request_id="missing", to=Stage.RUNNING)
    with pytest.raises(NotFound):  # even when no source stage could match
        await store.transition(algorithm="a", request_id="missing", to=Stage.NEW)


async def test_changes_are_limited_to_mutable_fields(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run(Stage.BUFFERED)
    await store.create(checkpoint=run, submission=None)
    # received_by_host changes only through `claim`.
    fixed = ("algorithm", "id", "received_at", "lifecycle_stage", "parent", "received_by_host")
    for field in (*fixed, "bogus"):
        assert field not in MUTABLE_FIELDS
        with pytest.raises(ValueError, match=field):
            await store.transition(
                algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING, changes={field: "x"}
            )
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_every_mutable_field_can_change(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(Stage.RUNNING)
    await store.create(checkpoint=run, submission=None)
    changes: dict[str, Any] = {name: f"new {name} ✓" for name in MUTABLE_FIELDS}
    changes["sent_at"] = clock.now() + dt.timedelta(microseconds=7)

    outcome = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.COMPLETED, changes=changes
    )

    assert outcome.applied
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == attrs.evolve(
        run, lifecycle_stage=Stage.COMPLETED, last_modified=clock.now(), **changes
    )


async def test_racing_transitions_keep_a_legal_history(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    """50 tasks race RUNNING (submitter) against COMPLETED (receiver) on one BUFFERED run."""
    run = make_run(Stage.BUFFERED)
    await store.create(checkpoint=run, submission=None)
    applied: list[Stage] = []

    async def attempt(to: Stage) -> None:
        outcome = await store.transition(algorithm=run.algorithm, request_id=run.id, to=to)
        if outcome.applied:
            applied.append(to)
            assert outcome.stage is to

    async with trio.open_nursery() as nursery:
        for index in range(50):
            nursery.start_soon(attempt, Stage.RUNNING if index % 2 else Stage.COMPLETED)

    # Wake-up order is trio's (randomised), not commit order: compare as multisets. The order
    # is pinned by the final stage: had RUNNING committed after COMPLETED, it would show.
    assert sorted(applied) in ([Stage.COMPLETED], sorted([Stage.RUNNING, Stage.COMPLETED]))
    final = await store.get(algorithm=run.algorithm, request_id=run.id)
    assert final is not None
    assert final.lifecycle_stage is Stage.COMPLETED


# --- tags and hosts -----------------------------------------------------------------------


async def test_update_tag_retags_in_any_stage(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(Stage.COMPLETED, tag="old")
    await store.create(checkpoint=run, submission=None)
    clock.advance(1)

    tagged = await store.update_tag(algorithm=run.algorithm, request_id=run.id, tag="new")

    assert tagged == attrs.evolve(run, tag="new", last_modified=clock.now())
    assert await store.by_tag(tag="old") == []
    assert await store.by_tag(tag="new") == [tagged]
    assert await store.update_tag(algorithm=run.algorithm, request_id="missing", tag="x") is None


async def test_by_tag_finds_every_run_oldest_first(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    runs = []
    for algorithm in ("b-algo", "a-algo", "b-algo"):
        runs.append(make_run(algorithm=algorithm, tag="batch-1", received_at=clock.now()))
        clock.advance(1)
    other = make_run(tag="batch-2")
    for run in [*runs, other]:
        await store.create(checkpoint=run, submission=None)
    await store.transition(algorithm=runs[1].algorithm, request_id=runs[1].id, to=Stage.RUNNING)
    moved = await store.get(algorithm=runs[1].algorithm, request_id=runs[1].id)
    assert moved is not None
    runs[1] = moved

    assert await store.by_tag(tag="batch-1") == runs
    assert await store.by_tag(tag="batch-2") == [other]
    assert await store.by_tag(tag="none") == []


async def test_by_host_and_stage_follows_transitions(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    mine = [make_run(Stage.NEW), make_run(Stage.NEW), make_run(Stage.BUFFERED)]
    theirs = make_run(Stage.NEW, received_by_host="scheduler-1")
    for run in [*mine, theirs]:
        await store.create(checkpoint=run, submission=None)

    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.NEW) == mine[:2]
    await store.transition(
        algorithm=mine[0].algorithm, request_id=mine[0].id, to=Stage.SCHEDULING_FAILED
    )
    failed = await store.get(algorithm=mine[0].algorithm, request_id=mine[0].id)

    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.NEW) == [mine[1]]
    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.SCHEDULING_FAILED) == [
        failed
    ]
    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.BUFFERED) == [mine[2]]
    assert await store.by_host_and_stage(host="scheduler-1", stage=Stage.NEW) == [theirs]
    assert await store.by_host_and_stage(host="nobody", stage=Stage.NEW) == []


async def test_by_host_and_stage_pages_in_order_across_equal_timestamps(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    received = [clock.now(), clock.now(), clock.now() + dt.timedelta(microseconds=1)]
    runs = [
        make_run(Stage.BUFFERED, algorithm=algorithm, received_at=at)
        for at in received
        for algorithm in ("b", "a", "B")
    ]
    for run in runs:
        await store.create(checkpoint=run, submission=None)
    expected = sorted(runs, key=lambda run: (run.received_at, run.algorithm, run.id))
    seen: list[Checkpoint] = []
    cursor = None
    while True:
        page = await store.by_host_and_stage(
            host="scheduler-0", stage=Stage.BUFFERED, limit=2, after=cursor
        )
        seen += page
        if len(page) < 2:
            break
        cursor = HostCursor.after(page[-1])
    assert seen == expected


async def test_returned_records_do_not_alias_the_store(
    store: CheckpointStore, clock: ManualClock
) -> None:
    run = full_run(clock)
    await store.create(checkpoint=run, submission=None)
    run.applied_configuration["container"]["image"] = "mutated"
    stored = await store.get(algorithm=run.algorithm, request_id=run.id)
    assert stored is not None
    stored.applied_configuration["args"].append("mutated")
    again = await store.get(algorithm=run.algorithm, request_id=run.id)
    assert again is not None
    assert again.applied_configuration == full_run(clock).applied_configuration


# --- heartbeats ---------------------------------------------------------------------------

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


async def test_heartbeats_upsert_and_read_back_exactly(
    store: CheckpointStore, clock: ManualClock
) -> None:
    assert await store.heartbeats() == {}
    first = dt.datetime(2026, 3, 1, 17, 30, 0, 1, tzinfo=IST)  # 12:00:00.000001 UTC
    await store.record_heartbeat(host="scheduler-0", at=first)
    await store.record_heartbeat(host="scheduler-1", at=clock.now())
    later = clock.now() + dt.timedelta(seconds=5, microseconds=999999)
    await store.record_heartbeat(host="scheduler-0", at=later)

    seen = await store.heartbeats()

    assert seen == {"scheduler-0": later, "scheduler-1": clock.now()}
    for value in seen.values():
        assert value.tzinfo is not None
        assert value.utcoffset() == dt.timedelta(0)
    # Going back in time is an upsert like any other: the last write wins.
    await store.record_heartbeat(host="scheduler-0", at=first)
    assert (await store.heartbeats())["scheduler-0"] == first.astimezone(dt.UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.record_heartbeat(host="scheduler-0", at=dt.datetime(2026, 1, 1))


# --- stale scans ------------------------------------------------------------------------


async def _create_all(store: CheckpointStore, runs: list[Checkpoint]) -> None:
    for run in runs:
        await store.create(checkpoint=run, submission=None)


async def _all_pages(
    store: CheckpointStore, *, stages: set[Stage], before: dt.datetime, limit: int
) -> list[list[Checkpoint]]:
    pages: list[list[Checkpoint]] = []
    cursor: StaleCursor | None = None
    while True:
        page = await store.stale(stages=stages, modified_before=before, limit=limit, after=cursor)
        pages.append(page)
        if len(page) < limit:
            return pages
        cursor = StaleCursor.after(page[-1])


async def test_stale_pages_in_order_across_equal_timestamps(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    t0 = clock.now()
    t1 = t0 + dt.timedelta(microseconds=1)
    # Seven runs share t0: ties break on (algorithm, id) in code-point order ('B' < 'a').
    tied = [
        make_run(Stage.BUFFERED, algorithm=algorithm, id=run_id, last_modified=t0)
        for algorithm in ("b-algo", "B-algo", "a-algo")
        for run_id in ("r2", "r1")
    ]
    tied.append(make_run(Stage.RUNNING, algorithm="a-algo", id="r0", last_modified=t0))
    later = make_run(Stage.RUNNING, algorithm="0-first", last_modified=t1)
    earliest = make_run(Stage.BUFFERED, algorithm="z-algo", last_modified=t0 - dt.timedelta(1))
    too_new = make_run(Stage.BUFFERED, last_modified=t1 + dt.timedelta(microseconds=1))
    other_stages = [
        make_run(stage, last_modified=t0)
        for stage in Stage
        if stage not in (Stage.BUFFERED, Stage.RUNNING)
    ]
    await _create_all(store, [*tied, later, earliest, too_new, *other_stages])
    expected = [
        earliest,
        *sorted(tied, key=lambda cp: (cp.algorithm, cp.id)),
        later,
    ]

    for limit in (1, 2, 3, len(expected), 100):
        pages = await _all_pages(
            store, stages={Stage.BUFFERED, Stage.RUNNING}, before=too_new.last_modified, limit=limit
        )
        assert [cp for page in pages for cp in page] == expected, limit
        assert all(len(page) == limit for page in pages[:-1])

    # The cutoff is exclusive.
    cut = await store.stale(stages={Stage.BUFFERED, Stage.RUNNING}, modified_before=t1)
    assert cut == expected[:-1]


async def test_stale_never_returns_other_stages(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    runs = {stage: make_run(stage) for stage in Stage}
    await _create_all(store, list(runs.values()))
    before = clock.now() + dt.timedelta(seconds=1)

    for stage, run in runs.items():
        assert await store.stale(stages=[stage], modified_before=before) == [run]
    non_terminal = {Stage.NEW, Stage.BUFFERED, Stage.RUNNING}
    found = await store.stale(stages=non_terminal, modified_before=before)
    assert {cp.lifecycle_stage for cp in found} == non_terminal
    assert await store.stale(stages=(), modified_before=before) == []
    assert await store.stale(stages=list(Stage), modified_before=clock.now()) == []


async def test_a_run_modified_during_a_scan_is_not_seen_twice(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    runs = [make_run(Stage.BUFFERED) for _ in range(4)]
    await _create_all(store, runs)
    before = clock.now() + dt.timedelta(seconds=1)
    first = await store.stale(stages={Stage.BUFFERED}, modified_before=before, limit=2)
    assert first == runs[:2]
    clock.advance(10)  # past the scan's cutoff
    await store.update_tag(algorithm=runs[0].algorithm, request_id=runs[0].id, tag="seen")
    await store.update_tag(algorithm=runs[3].algorithm, request_id=runs[3].id, tag="moved")

    rest = await store.stale(
        stages={Stage.BUFFERED}, modified_before=before, after=StaleCursor.after(first[-1])
    )

    assert rest == [runs[2]]


async def test_stale_and_purge_refuse_bad_bounds(
    store: CheckpointStore, clock: ManualClock
) -> None:
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await store.stale(stages={Stage.NEW}, modified_before=clock.now(), limit=limit)
        with pytest.raises(ValueError, match="limit"):
            await store.purge(finished_before=clock.now(), limit=limit)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.stale(stages={Stage.NEW}, modified_before=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.purge(finished_before=dt.datetime(2026, 1, 1))


# --- claims -----------------------------------------------------------------------------


async def test_claim_moves_the_run_to_the_new_host(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    run = make_run(Stage.BUFFERED, received_by_host="dead-scheduler")
    await store.create(checkpoint=run, submission=None)
    clock.advance(3.5)

    claimed = await store.claim(
        algorithm=run.algorithm, request_id=run.id, from_host="dead-scheduler", to_host="alive"
    )

    expected = attrs.evolve(run, received_by_host="alive", last_modified=clock.now())
    assert claimed == expected
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == expected
    assert await store.by_host_and_stage(host="alive", stage=Stage.BUFFERED) == [expected]
    assert await store.by_host_and_stage(host="dead-scheduler", stage=Stage.BUFFERED) == []
    again = await store.claim(
        algorithm=run.algorithm, request_id=run.id, from_host="dead-scheduler", to_host="other"
    )
    assert again is None
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == expected


async def test_concurrent_claims_apply_exactly_once(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run(Stage.BUFFERED, received_by_host="dead-scheduler")
    await store.create(checkpoint=run, submission=None)
    winners: list[Checkpoint] = []

    async def claim(index: int) -> None:
        claimed = await store.claim(
            algorithm=run.algorithm,
            request_id=run.id,
            from_host="dead-scheduler",
            to_host=f"maintainer-{index}",
        )
        if claimed is not None:
            winners.append(claimed)

    async with trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(claim, index)

    assert len(winners) == 1
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == winners[0]


@pytest.mark.parametrize("stage", [stage for stage in Stage if stage is not Stage.BUFFERED])
async def test_claim_is_refused_outside_buffered(
    store: CheckpointStore, make_run: MakeRun, stage: Stage
) -> None:
    run = make_run(stage)
    await store.create(checkpoint=run, submission=None)
    claimed = await store.claim(
        algorithm=run.algorithm, request_id=run.id, from_host=run.received_by_host, to_host="x"
    )
    assert claimed is None
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_claim_is_refused_once_the_run_left_buffered(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run(Stage.BUFFERED)
    await store.create(checkpoint=run, submission=None)
    await store.transition(algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING)
    key: dict[str, Any] = {"algorithm": run.algorithm, "request_id": run.id}
    moved = await store.get(**key)

    assert await store.claim(**key, from_host=run.received_by_host, to_host="x") is None
    assert await store.get(**key) == moved
    assert (
        await store.claim(algorithm="a", request_id="missing", from_host="h", to_host="x") is None
    )
    with pytest.raises(ValueError, match="must change the host"):
        await store.claim(**key, from_host="same", to_host="same")


# --- purge ------------------------------------------------------------------------------


async def test_purge_deletes_only_old_terminal_runs_with_their_entries(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    old = clock.now() - dt.timedelta(days=30)
    cutoff = clock.now() - dt.timedelta(days=7)
    doomed = [
        make_run(stage, last_modified=old + dt.timedelta(seconds=index))
        for index, stage in enumerate(sorted(TERMINAL))
    ]
    kept = [
        *(make_run(stage, last_modified=old) for stage in Stage if stage not in TERMINAL),
        make_run(Stage.COMPLETED, last_modified=cutoff),  # the cutoff is exclusive
        make_run(Stage.FAILED),
    ]
    for run in [*doomed, *kept]:
        await store.create(checkpoint=run, submission=make_submission(run))

    first = await store.purge(finished_before=cutoff, limit=2)
    assert first == sorted((cp.algorithm, cp.id) for cp in doomed[:2])  # oldest first
    rest = await store.purge(finished_before=cutoff, limit=100)
    assert rest == sorted((cp.algorithm, cp.id) for cp in doomed[2:])
    assert await store.purge(finished_before=cutoff) == []

    for run in doomed:
        assert await store.get(algorithm=run.algorithm, request_id=run.id) is None
        assert await store.get_submission(algorithm=run.algorithm, request_id=run.id) is None
    for run in kept:
        assert await store.get(algorithm=run.algorithm, request_id=run.id) == run
        assert await store.get_submission(algorithm=run.algorithm, request_id=run.id) is not None
    assert await store.by_tag(tag="") == sorted(kept, key=lambda cp: cp.id)
    # A purged key may be used again.
    await store.create(checkpoint=doomed[0], submission=None)
    assert (
        await store.get_submission(algorithm=doomed[0].algorithm, request_id=doomed[0].id) is None
    )


# --- property: the store behaves like the transition table --------------------------------

_moves = st.lists(
    st.tuples(
        st.sampled_from(list(Stage)),
        st.none() | st.sets(st.sampled_from(list(Stage))),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.sampled_from(list(Stage)), moves=_moves)
def test_transitions_follow_the_lifecycle_table(
    open_store: StoreOpener,
    clock: ManualClock,
    start: Stage,
    moves: list[tuple[Stage, set[Stage] | None]],
) -> None:
    """Any sequence of moves: applied exactly when legal and expected; terminal is final."""

    async def check() -> None:
        async with open_store() as store:
            run = Checkpoint(
                algorithm="prop",
                id=str(uuid.uuid4()),
                lifecycle_stage=start,
                received_at=clock.now(),
                last_modified=clock.now(),
            )
            await store.create(checkpoint=run, submission=None)
            current = start
            for to, expected in moves:
                outcome = await store.transition(
                    algorithm="prop", request_id=run.id, to=to, expected=expected
                )
                should_apply = is_legal(current, to) and (expected is None or current in expected)
                assert outcome.applied == should_apply
                if should_apply:
                    assert current not in TERMINAL
                    current = to
                assert outcome.stage is current

    trio.run(check)
