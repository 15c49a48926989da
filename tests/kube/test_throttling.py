"""The per-shard throttle on trio's autojump clock (virtual time: exact durations); nothing
faked."""

import pytest
import trio
import trio.testing

from nexusd.kube.throttling import ShardThrottle


async def take(throttle: ShardThrottle, n: int) -> None:
    for _ in range(n):
        async with throttle.mutating():
            pass


async def test_burst_is_free_then_rate_applies(autojump_clock: trio.testing.MockClock) -> None:
    throttle = ShardThrottle(rate=10, burst=5)
    start = trio.current_time()
    await take(throttle, 5)
    assert trio.current_time() == start
    await take(throttle, 20)
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_concurrent_callers_share_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    throttle = ShardThrottle(rate=50, burst=1)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(101):
            nursery.start_soon(take, throttle, 1)
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_in_flight_calls_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    throttle = ShardThrottle(rate=1000, burst=1000, max_in_flight=3)
    peak = 0

    async def slow_call() -> None:
        nonlocal peak
        async with throttle.mutating():
            peak = max(peak, throttle.statistics().in_flight)
            await trio.sleep(1)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(9):
            nursery.start_soon(slow_call)
    assert peak == 3
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_a_429_cuts_the_rate_and_successes_bring_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = ShardThrottle(rate=100, burst=1, decrease=0.5, increase=10)
    throttle.throttled()
    throttle.throttled()
    assert throttle.rate == pytest.approx(25)
    # additive increase: +10 calls/s per second of successes at the current rate
    start = trio.current_time()
    while throttle.rate < 35:
        await take(throttle, 1)
        throttle.succeeded()
    assert trio.current_time() - start == pytest.approx(1.0, rel=0.1)
    for _ in range(10_000):
        throttle.succeeded()
    assert throttle.rate == 100  # never above the configured ceiling
    assert throttle.statistics().throttled == 2


async def test_the_rate_never_drops_below_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = ShardThrottle(rate=4, burst=1, floor=1)
    for _ in range(10):
        throttle.throttled()
    assert throttle.rate == 1


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        ShardThrottle(rate=0, burst=1)
