"""Keyset paging of the maintainer's `stale` scan over many runs, in every checkpoint store
(memory, SQLite on a file, PostgreSQL on a throwaway server; conftest.py's `store`): the
non-terminal scans the partial index serves and the other stage sets answer alike."""

from __future__ import annotations

import datetime as dt
import random
from typing import TYPE_CHECKING

import pytest

from nexusd.core.lifecycle import Stage
from nexusd.core.records import NewRun
from nexusd.stores.checkpoints import StaleCursor

if TYPE_CHECKING:
    from tests.stores.conftest import MakeRun

    from nexusd.core.clock import ManualClock
    from nexusd.core.records import Checkpoint
    from nexusd.stores.checkpoints import CheckpointStore

LIVE = {Stage.NEW, Stage.BUFFERED, Stage.RUNNING}


async def _scan(
    store: CheckpointStore, stages: set[Stage], before: dt.datetime, limit: int
) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    cursor = None
    while True:
        page = await store.stale(stages=stages, modified_before=before, limit=limit, after=cursor)
        assert len(page) <= limit
        found += page
        if len(page) < limit:
            return found
        cursor = StaleCursor.after(page[-1])


@pytest.mark.parametrize(
    "stages",
    [LIVE, {Stage.NEW, Stage.BUFFERED}, {Stage.RUNNING}, {Stage.BUFFERED, Stage.COMPLETED}],
    ids=["live", "new-buffered", "running", "mixed"],
)
async def test_pages_cover_every_matching_run_once_in_order(
    store: CheckpointStore, clock: ManualClock, make_run: MakeRun, stages: set[Stage]
) -> None:
    rng = random.Random(11)
    base = clock.now()
    runs = [
        make_run(
            rng.choice(list(Stage)),
            algorithm=rng.choice(["a", "B", "b", "a-2"]),
            # few distinct times, so pages end inside runs of equal timestamps
            last_modified=base + dt.timedelta(microseconds=rng.randrange(12)),
        )
        for _ in range(150)
    ]
    await store.create_many(runs=[NewRun(checkpoint=run, submission=None) for run in runs])
    before = base + dt.timedelta(microseconds=10)
    expected = sorted(
        (run for run in runs if run.lifecycle_stage in stages and run.last_modified < before),
        key=lambda run: (run.last_modified, run.algorithm, run.id),
    )
    assert expected

    for limit in (1, 7, 1000):
        assert await _scan(store, stages, before, limit) == expected, limit
