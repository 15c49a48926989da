"""Intake with an Idempotency-Key: what a replay costs, a replay refused before its insert, and
a replay cancelled at every point it can be.

Real: `Intake` with the SQLite store (writer thread, group commit) or the memory store, and the
filesystem payload store on disk, as tests/pipeline/test_intake_cancellation.py builds them
(no Kubernetes: no parent runs here; no HTTP: tests/api/test_idempotency.py covers it). The
cost test counts the store calls of a memory store subclass that records them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest

from nexusd.core.clock import SystemClock
from nexusd.pipeline.idempotency import KeyConflict, accept_once, key_for
from nexusd.pipeline.intake import IntakeError, parse_request
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.pipeline.test_intake_cancellation import (
    BODY,
    accept_cancelled_after,
    make_intake,
    stored,
)

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.pipeline.intake import Intake


class Counting(MemoryCheckpointStore):
    """A memory store counting its inserts (each one durable write in the SQL stores) and
    key reads."""

    def __init__(self) -> None:
        super().__init__(clock=SystemClock())
        self.writes = 0
        self.reads = 0

    async def create_many(self, *, runs: Any) -> None:
        self.writes += 1
        await super().create_many(runs=runs)

    async def by_idempotency_key(self, *, algorithm: str, key: str) -> Any:
        self.reads += 1
        return await super().by_idempotency_key(algorithm=algorithm, key=key)


async def keyed_accept(intake: Intake, body: bytes = BODY, key: str = "k") -> tuple[str, bool]:
    request = parse_request(body, default_valid_for=3600, max_valid_for=7200)
    idempotency = await key_for(intake, key, body, route="run", dry_run=False)
    return await accept_once(
        intake, algorithm="algo", request=request, dry_run=False, idempotency=idempotency
    )


def counts(store: Counting) -> tuple[int, int]:
    counted = (store.writes, store.reads)
    store.writes = store.reads = 0
    return counted


async def test_a_first_request_is_one_write_and_a_replay_one_failed_write_and_one_read(
    tmp_path: Path,
) -> None:
    store = Counting()
    intake = make_intake(store, tmp_path, inline_max=1024)
    request_id, replayed = await keyed_accept(intake)
    assert not replayed
    assert counts(store) == (1, 0)
    assert await keyed_accept(intake) == (request_id, True)
    assert counts(store) == (1, 1)  # the insert failed on the key: nothing stored
    with pytest.raises(KeyConflict):
        await keyed_accept(intake, body=b'{"algorithmParameters": {"n": 2}}')
    assert counts(store) == (1, 1)
    assert len(intake.queues["dev"]) == 1  # only the first run was queued
    assert intake.queues["dev"].statistics().reserved == 0


async def test_a_retry_refused_for_a_full_queue_still_answers_its_run(tmp_path: Path) -> None:
    store = Counting()
    intake = attrs.evolve(
        make_intake(store, tmp_path, inline_max=1024), queues={"dev": VirtualQueue(1)}
    )
    request_id, _ = await keyed_accept(intake)
    counts(store)
    # the queue is full now: a new run is a 429, the retry of the accepted one its answer
    assert await keyed_accept(intake) == (request_id, True)
    assert counts(store) == (0, 1)
    with pytest.raises(IntakeError) as full:
        await keyed_accept(intake, key="another")
    assert full.value.status == 429
    with pytest.raises(KeyConflict):
        await keyed_accept(intake, body=b'{"algorithmParameters": {"n": 2}}')


async def test_a_replay_cancelled_anywhere_stores_and_queues_nothing(tmp_path: Path) -> None:
    async with await SqliteCheckpointStore.open(
        path=tmp_path / "c.sqlite3", clock=SystemClock()
    ) as store:
        intake = make_intake(store, tmp_path, inline_max=0)
        queue = intake.queues["dev"]
        original, _ = await keyed_accept(intake, key="same")
        await queue.get()
        answered = False
        for steps in range(1, 300):
            request_id = await accept_cancelled_after(intake, steps, dry_run=False, key="same")
            assert [run.id for run in await stored(store)] == [original]
            assert len(queue) == 0
            assert queue.statistics().reserved == 0
            if request_id is not None:
                assert request_id == original
                answered = True
                break
        assert answered
