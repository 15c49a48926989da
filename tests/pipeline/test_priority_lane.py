"""The virtual queue's priority lane: bounded, and each run in it once. Real `VirtualQueue`
under trio's autojump clock; nothing is faked."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from nexusd.pipeline.intake import RunRef
from nexusd.pipeline.queueing import VirtualQueue


async def test_a_run_already_in_the_lane_is_not_added_again() -> None:
    queue: VirtualQueue[RunRef] = VirtualQueue(10)
    assert queue.put_priority(RunRef(algorithm="a", request_id="r1"))
    # Every recovery sweep during a shard outage offers the same runs again; a retry of the
    # same run (another attempt count) is the same run too.
    for _ in range(5):
        assert not queue.put_priority(RunRef(algorithm="a", request_id="r1"))
    assert not queue.put_priority(RunRef(algorithm="a", request_id="r1", attempt=3))
    assert queue.put_priority(RunRef(algorithm="b", request_id="r1"))
    assert len(queue) == 2
    assert queue.statistics().priority_queued == 2

    taken = await queue.get()
    assert (taken.algorithm, taken.request_id, taken.attempt) == ("a", "r1", 0)
    # Once taken (a worker holds it), the run may come back, e.g. as a retry.
    assert queue.put_priority(RunRef(algorithm="a", request_id="r1", attempt=1))


async def test_the_lane_is_bounded_and_a_discarded_run_frees_its_place() -> None:
    queue: VirtualQueue[str] = VirtualQueue(100, priority_capacity=3)
    assert [queue.put_priority(item) for item in "abcd"] == [True, True, True, False]
    assert queue.priority_full()
    assert queue.discard(lambda item: item == "b") == 1
    assert not queue.priority_full()
    assert queue.put_priority("b")  # its key left with it
    assert not queue.put_priority("a")
    # The normal lane keeps its own bound, whatever the priority lane holds.
    for _ in range(100):
        queue.reserve_nowait().put("new")
    assert len(queue) == 103


async def test_the_default_priority_bound_is_the_queue_capacity() -> None:
    queue: VirtualQueue[int] = VirtualQueue(4)
    assert sum(queue.put_priority(n) for n in range(10)) == 4
    assert queue.statistics().priority_capacity == 4
    with pytest.raises(ValueError, match="priority_capacity"):
        VirtualQueue(4, priority_capacity=0)


async def test_statistics_tell_how_long_since_a_run_was_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: VirtualQueue[str] = VirtualQueue(4)
    assert queue.statistics().last_taken_age is None
    queue.put_priority("a")
    queue.reserve_nowait().put("b")
    await trio.sleep(5)
    assert queue.statistics().oldest_age == pytest.approx(5)
    await queue.get()
    await trio.sleep(2)
    stats = queue.statistics()
    assert stats.last_taken_age == pytest.approx(2)
    assert (stats.queued, stats.oldest_age) == (1, pytest.approx(7))
