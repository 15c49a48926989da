"""Heartbeat rows with queue reports, and their collection: the contract every checkpoint store
keeps (memory, SQLite on a file, PostgreSQL on a throwaway server; conftest.py's `store`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from nexusd.stores.checkpoints import Heartbeat, QueueReport

if TYPE_CHECKING:
    from nexusd.core.clock import ManualClock
    from nexusd.stores.checkpoints import CheckpointStore


async def test_queue_reports_round_trip_and_are_overwritten(
    store: CheckpointStore, clock: ManualClock
) -> None:
    throttled = QueueReport(queued=1234, oldest_queued_age=250.5, last_taken_age=0.25)
    await store.record_heartbeat(host="scheduler-0", at=clock.now(), queues=throttled)
    await store.record_heartbeat(host="maintainer-0", at=clock.now())
    idle = QueueReport(queued=0, oldest_queued_age=0.0)
    await store.record_heartbeat(host="scheduler-1", at=clock.now(), queues=idle)

    assert await store.heartbeat_reports() == {
        "scheduler-0": Heartbeat(host="scheduler-0", last_seen=clock.now(), queues=throttled),
        "maintainer-0": Heartbeat(host="maintainer-0", last_seen=clock.now(), queues=None),
        "scheduler-1": Heartbeat(host="scheduler-1", last_seen=clock.now(), queues=idle),
    }
    assert await store.heartbeats() == dict.fromkeys(
        ("scheduler-0", "maintainer-0", "scheduler-1"), clock.now()
    )

    # The whole row is the latest beat's: a beat without a report clears the old one.
    later = clock.now() + dt.timedelta(seconds=5)
    await store.record_heartbeat(host="scheduler-0", at=later)
    beat = (await store.heartbeat_reports())["scheduler-0"]
    assert beat == Heartbeat(host="scheduler-0", last_seen=later, queues=None)
    assert beat.last_seen.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "report",
    [
        QueueReport(queued=-1, oldest_queued_age=0.0),
        QueueReport(queued=1, oldest_queued_age=-0.5),
        QueueReport(queued=1, oldest_queued_age=1.0, last_taken_age=-1.0),
        QueueReport(queued=1, oldest_queued_age=float("nan")),
    ],
)
async def test_impossible_reports_are_refused(
    store: CheckpointStore, clock: ManualClock, report: QueueReport
) -> None:
    with pytest.raises(ValueError, match="negative"):
        await store.record_heartbeat(host="scheduler-0", at=clock.now(), queues=report)
    assert await store.heartbeat_reports() == {}


async def test_forget_heartbeats_deletes_only_rows_older_than_the_cutoff(
    store: CheckpointStore, clock: ManualClock
) -> None:
    start = clock.now()
    for n, host in enumerate(("gone-0", "gone-1", "edge", "alive")):
        report = QueueReport(queued=n, oldest_queued_age=float(n))
        await store.record_heartbeat(host=host, at=start + dt.timedelta(seconds=n), queues=report)
    cutoff = start + dt.timedelta(seconds=2)  # exclusive: "edge" was seen at the cutoff

    assert await store.forget_heartbeats(seen_before=cutoff) == 2
    assert sorted(await store.heartbeat_reports()) == ["alive", "edge"]
    assert await store.forget_heartbeats(seen_before=cutoff) == 0
    # A forgotten host that beats again is simply back.
    await store.record_heartbeat(host="gone-0", at=clock.now())
    assert sorted(await store.heartbeats()) == ["alive", "edge", "gone-0"]
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.forget_heartbeats(seen_before=dt.datetime(2026, 1, 1))
