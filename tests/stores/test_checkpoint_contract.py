"""The `CheckpointStore` contract, run against every implementation (see conftest `store`).

Everything is real: the memory store, and the SQLite store on a file (writer thread, group
commit, read pool). Only wall-clock time is fixed, through `ManualClock`.
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
from nexusd.core.records import MUTABLE_FIELDS, Checkpoint, ParentRef, SubmissionEntry

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
    assert outcome.checkpoint == expected
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
    assert outcome.checkpoint == run  # neither the stage, the changes nor last_modified moved
    assert await store.get(algorithm=run.algorithm, request_id=run.id) == run


async def test_expected_narrows_the_sources(store: CheckpointStore, make_run: MakeRun) -> None:
    run = make_run(Stage.BUFFERED)
    await store.create(checkpoint=run, submission=None)
    key: dict[str, Any] = {"algorithm": run.algorithm, "request_id": run.id}

    refused = await store.transition(**key, to=Stage.FAILED, expected={Stage.RUNNING})
    assert not refused.applied
    assert refused.checkpoint.lifecycle_stage is Stage.BUFFERED

    applied = await store.transition(
        **key, to=Stage.FAILED, expected=[Stage.RUNNING, Stage.BUFFERED]
    )
    assert applied.applied
    assert applied.checkpoint.lifecycle_stage is Stage.FAILED


async def test_expected_cannot_widen_to_an_illegal_move(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run(Stage.COMPLETED)
    await store.create(checkpoint=run, submission=None)
    outcome = await store.transition(
        algorithm=run.algorithm, request_id=run.id, to=Stage.RUNNING, expected={Stage.COMPLETED}
    )
    assert not outcome.applied
    assert outcome.checkpoint.lifecycle_stage is Stage.COMPLETED


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
    for field in ("algorithm", "id", "received_at", "lifecycle_stage", "parent", "bogus"):
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
    assert outcome.checkpoint == attrs.evolve(run, lifecycle_stage=Stage.COMPLETED, **changes)


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
            assert outcome.checkpoint.lifecycle_stage is to

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
    moved = await store.transition(
        algorithm=runs[1].algorithm, request_id=runs[1].id, to=Stage.RUNNING
    )
    runs[1] = moved.checkpoint

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
    outcome = await store.transition(
        algorithm=mine[0].algorithm, request_id=mine[0].id, to=Stage.SCHEDULING_FAILED
    )

    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.NEW) == [mine[1]]
    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.SCHEDULING_FAILED) == [
        outcome.checkpoint
    ]
    assert await store.by_host_and_stage(host="scheduler-0", stage=Stage.BUFFERED) == [mine[2]]
    assert await store.by_host_and_stage(host="scheduler-1", stage=Stage.NEW) == [theirs]
    assert await store.by_host_and_stage(host="nobody", stage=Stage.NEW) == []


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
                assert outcome.checkpoint.lifecycle_stage is current

    trio.run(check)
