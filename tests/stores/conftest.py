"""Fixtures for the store tests: a manual clock, run builders, and every checkpoint store.

`store` is parametrised over every `CheckpointStore` implementation, each real: the memory
store, the SQLite store on a file in the test's tmp_path (FULL sync, like production), and the
PostgreSQL store on a fresh database of a throwaway cluster (tests/servers/postgres.py), started
once per session on first use. Without PostgreSQL binaries the postgres cases FAIL, not skip.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from nexusd.core.clock import ManualClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.postgres import open_postgres_store
from nexusd.stores.sqlite import open_sqlite_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from nexusd.stores.checkpoints import CheckpointStore

    StoreOpener = Callable[[], AbstractAsyncContextManager[CheckpointStore]]


class MakeRun(Protocol):
    def __call__(self, stage: Stage = ..., **fields: Any) -> Checkpoint: ...


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC))


@pytest.fixture
def make_run(clock: ManualClock) -> MakeRun:
    """Build a checkpoint with a fresh id, received and last modified now."""
    ids = itertools.count(1)

    def make(stage: Stage = Stage.BUFFERED, **fields: Any) -> Checkpoint:
        values: dict[str, Any] = {
            "algorithm": "demo-algorithm",
            "id": f"run-{next(ids):04d}",
            "lifecycle_stage": stage,
            "received_at": clock.now(),
            "last_modified": clock.now(),
            "received_by_host": "scheduler-0",
        }
        values.update(fields)
        return Checkpoint(**values)

    return make


def _submission_for(checkpoint: Checkpoint) -> SubmissionEntry:
    return SubmissionEntry(
        algorithm=checkpoint.algorithm,
        id=checkpoint.id,
        cluster="shard-a",
        template={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": checkpoint.id}},
    )


@pytest.fixture
def make_submission() -> Callable[[Checkpoint], SubmissionEntry]:
    """Build the submission entry (Job manifest + shard) of a run."""
    return _submission_for


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> StoreOpener:
    """A function opening the parametrised store (the same database each time it is called)."""
    if request.param == "memory":
        return lambda: MemoryCheckpointStore(clock=clock)
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return lambda: open_postgres_store(dsn=dsn, clock=clock, min_size=1, migrate=True)
    return lambda: open_sqlite_store(path=tmp_path / "checkpoints.db", clock=clock)


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[CheckpointStore]:
    async with open_store() as opened:
        yield opened
