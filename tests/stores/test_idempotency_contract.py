"""The idempotency-key part of the `CheckpointStore` contract, run against every implementation.

Everything is real (see conftest `store`): the memory store, the SQLite store on a file and the
PostgreSQL store on a throwaway server; the race between schedulers is two store instances on one
SQLite file or one PostgreSQL database, as two processes would hold them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from nexusd.core.errors import AlreadyExists
from nexusd.core.lifecycle import Stage
from nexusd.core.records import IdempotencyKey, KeyedRun, NewRun
from nexusd.stores.checkpoints import KeyTaken
from nexusd.stores.memory import MemoryCheckpointStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from nexusd.core.clock import ManualClock
    from nexusd.core.records import Checkpoint, SubmissionEntry
    from nexusd.stores.checkpoints import CheckpointStore

    MakeRun = Callable[..., Checkpoint]
    MakeSubmission = Callable[[Checkpoint], SubmissionEntry]
    StoreOpener = Callable[[], AbstractAsyncContextManager[CheckpointStore]]

KEY = IdempotencyKey(key="order-17 retry", fingerprint="f" * 64)
BATCH_KEY = IdempotencyKey(
    key="batch-ü-free-ascii",
    fingerprint="b" * 64,
    answer=[{"requestId": "r-1"}, {"status": 400, "error": "Algorithm payload is invalid: é"}],
)


def keyed(
    run: Checkpoint,
    submission: SubmissionEntry | None,
    key: IdempotencyKey | None = KEY,
    payload: bytes | None = None,
) -> NewRun:
    return NewRun(checkpoint=run, submission=submission, payload=payload, idempotency=key)


async def test_the_key_is_read_back_with_its_run(
    store: CheckpointStore, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    single, first, second = make_run(), make_run(), make_run()
    await store.create_many(runs=[keyed(single, make_submission(single))])
    # a batch: only its first run holds the key, with the whole answer
    await store.create_many(
        runs=[
            keyed(first, make_submission(first), BATCH_KEY),
            keyed(second, make_submission(second), None),
        ]
    )

    found = await store.by_idempotency_key(algorithm=single.algorithm, key=KEY.key)
    assert found == KeyedRun(request_id=single.id, idempotency=KEY)
    assert found.idempotency.answer is None
    batch = await store.by_idempotency_key(algorithm=first.algorithm, key=BATCH_KEY.key)
    assert batch == KeyedRun(request_id=first.id, idempotency=BATCH_KEY)
    assert batch.idempotency.answer == BATCH_KEY.answer
    assert await store.get(algorithm=second.algorithm, request_id=second.id) == second


async def test_unknown_keys_and_the_empty_key_read_as_none(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run()
    await store.create(checkpoint=run, submission=None)  # no key: stored with ''
    assert await store.by_idempotency_key(algorithm=run.algorithm, key="missing") is None
    assert await store.by_idempotency_key(algorithm=run.algorithm, key="") is None


async def test_a_taken_key_stores_nothing_of_the_call(
    store: CheckpointStore, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    holder, loser, sibling = make_run(), make_run(), make_run()
    await store.create_many(runs=[keyed(holder, make_submission(holder))])

    with pytest.raises(KeyTaken):
        await store.create_many(
            runs=[
                keyed(sibling, make_submission(sibling), None, payload=b"{}"),
                keyed(loser, make_submission(loser), payload=b'{"n":1}'),
            ]
        )

    for gone in (loser, sibling):
        assert await store.get(algorithm=gone.algorithm, request_id=gone.id) is None
        assert await store.get_submission(algorithm=gone.algorithm, request_id=gone.id) is None
        assert await store.get_payload(algorithm=gone.algorithm, request_id=gone.id) is None
    found = await store.by_idempotency_key(algorithm=holder.algorithm, key=KEY.key)
    assert found is not None
    assert found.request_id == holder.id


async def test_one_call_cannot_hold_a_key_twice(store: CheckpointStore, make_run: MakeRun) -> None:
    first, second = make_run(), make_run()
    with pytest.raises(KeyTaken):
        await store.create_many(runs=[keyed(first, None), keyed(second, None)])
    assert await store.get(algorithm=first.algorithm, request_id=first.id) is None
    assert await store.by_idempotency_key(algorithm=first.algorithm, key=KEY.key) is None


async def test_keys_are_per_algorithm_and_runs_without_keys_never_collide(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    here, there = make_run(), make_run(algorithm="other-algorithm")
    await store.create_many(runs=[keyed(here, None), keyed(there, None)])
    plain = [make_run() for _ in range(3)]
    await store.create_many(runs=[keyed(run, None, None) for run in plain])
    found = await store.by_idempotency_key(algorithm="other-algorithm", key=KEY.key)
    assert found is not None
    assert found.request_id == there.id


async def test_a_duplicate_run_id_is_still_already_exists_not_a_taken_key(
    store: CheckpointStore, make_run: MakeRun
) -> None:
    run = make_run()
    await store.create(checkpoint=run, submission=None)
    with pytest.raises(AlreadyExists) as raised:
        await store.create_many(runs=[keyed(run, None)])
    assert not isinstance(raised.value, KeyTaken)
    assert await store.by_idempotency_key(algorithm=run.algorithm, key=KEY.key) is None


async def test_purge_releases_the_key_with_its_run(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun
) -> None:
    done = make_run(Stage.COMPLETED)
    await store.create_many(runs=[keyed(done, None)])
    clock.advance(3600)
    assert await store.purge(finished_before=clock.now()) == [(done.algorithm, done.id)]

    assert await store.by_idempotency_key(algorithm=done.algorithm, key=KEY.key) is None
    again = make_run()
    await store.create_many(runs=[keyed(again, None)])
    found = await store.by_idempotency_key(algorithm=again.algorithm, key=KEY.key)
    assert found is not None
    assert found.request_id == again.id


async def test_of_concurrent_creates_with_one_key_exactly_one_stores(
    open_store: StoreOpener, make_run: MakeRun, make_submission: MakeSubmission
) -> None:
    """Two store instances on one database (two schedulers; the memory store has only one
    process, so both are the same instance there): one wins, every other call raises KeyTaken
    and, right after, reads the winner through either instance."""
    async with open_store() as one:
        second = open_store() if not isinstance(one, MemoryCheckpointStore) else None
        async with second if second is not None else _same(one) as two:
            runs = [make_run() for _ in range(8)]
            outcomes: dict[str, str] = {}

            async def create(store: CheckpointStore, run: Checkpoint) -> None:
                try:
                    await store.create_many(runs=[keyed(run, make_submission(run))])
                except KeyTaken:
                    outcomes[run.id] = "taken"
                    found = await store.by_idempotency_key(algorithm=run.algorithm, key=KEY.key)
                    assert found is not None, "the loser must see the winner"
                    outcomes[run.id] += f"->{found.request_id}"
                else:
                    outcomes[run.id] = "stored"

            async with trio.open_nursery() as nursery:
                for n, run in enumerate(runs):
                    nursery.start_soon(create, one if n % 2 else two, run)

            [winner] = [run_id for run_id, outcome in outcomes.items() if outcome == "stored"]
            assert sorted(outcomes.values()) == sorted(
                ["stored", *[f"taken->{winner}"] * (len(runs) - 1)]
            )
            for run in runs:
                stored = await one.get(algorithm=run.algorithm, request_id=run.id)
                assert (stored is not None) == (run.id == winner)


class _same:
    """An async context manager that hands out an already open store and leaves it open."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    async def __aenter__(self) -> CheckpointStore:
        return self.store

    async def __aexit__(self, *exc_info: object) -> None:
        return None
