"""The virtual queue on trio's autojump clock; nothing faked."""

import pytest
import trio
import trio.testing

from nexusd.pipeline.queueing import QueueFull, VirtualQueue


async def test_priority_lane_goes_first() -> None:
    queue: VirtualQueue[str] = VirtualQueue(10)
    for name in ("new-1", "new-2"):
        queue.reserve_nowait().put(name)
    queue.put_priority("recovered")
    assert [await queue.get() for _ in range(3)] == ["recovered", "new-1", "new-2"]


async def test_full_queue_refuses_before_anything_is_written() -> None:
    queue: VirtualQueue[str] = VirtualQueue(2)
    first = queue.reserve_nowait()
    queue.reserve_nowait().put("b")
    with pytest.raises(QueueFull):
        queue.reserve_nowait()
    first.cancel()  # the intake failed: the room comes back
    queue.reserve_nowait().put("c")
    assert queue.statistics().queued == 2


async def test_priority_items_are_not_counted_against_new_ones() -> None:
    """The lanes have bounds of their own (tests/pipeline/test_priority_lane.py)."""
    queue: VirtualQueue[int] = VirtualQueue(1, priority_capacity=5)
    for n in range(5):
        assert queue.put_priority(n + 1)
    queue.reserve_nowait().put(0)
    assert len(queue) == 6


async def test_consumer_waits_for_an_item(autojump_clock: trio.testing.MockClock) -> None:
    queue: VirtualQueue[str] = VirtualQueue(4)
    got: list[str] = []

    async def consume() -> None:
        got.append(await queue.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.sleep(5)
        assert got == []
        queue.reserve_nowait().put("x")
    assert got == ["x"]


async def test_statistics_report_oldest_age(autojump_clock: trio.testing.MockClock) -> None:
    queue: VirtualQueue[str] = VirtualQueue(4)
    queue.reserve_nowait().put("a")
    await trio.sleep(3)
    queue.put_priority("b")
    stats = queue.statistics()
    assert (stats.queued, stats.priority_queued, stats.reserved) == (2, 1, 0)
    assert stats.oldest_age == pytest.approx(3)


async def test_reservation_is_used_once() -> None:
    queue: VirtualQueue[str] = VirtualQueue(4)
    reservation = queue.reserve_nowait()
    reservation.put("a")
    with pytest.raises(RuntimeError):
        reservation.put("b")


async def test_delayed_items_wait_for_their_time_then_jump_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: VirtualQueue[str] = VirtualQueue(10)
    start = trio.current_time()
    queue.put_priority("retry", not_before=start + 5)
    queue.reserve_nowait().put("new-1")
    assert await queue.get() == "new-1"  # the retry is not due yet
    queue.reserve_nowait().put("new-2")
    await trio.sleep(5)
    assert await queue.get() == "retry"  # due: ahead of new-2
    assert await queue.get() == "new-2"


async def test_a_waiting_consumer_wakes_when_a_delayed_item_is_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: VirtualQueue[str] = VirtualQueue(10)
    start = trio.current_time()
    queue.put_priority("later", not_before=start + 2)
    assert await queue.get() == "later"
    assert trio.current_time() - start == pytest.approx(2)
