"""The token bucket on trio's autojump clock (virtual time: exact durations); nothing faked."""

import pytest
import trio
import trio.testing

from nexusd.pipeline.throttling import TokenBucket


async def test_burst_is_free_then_rate_applies(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=10, burst=5)
    start = trio.current_time()
    for _ in range(5):
        await bucket.acquire()
    assert trio.current_time() == start
    for _ in range(20):
        await bucket.acquire()
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_concurrent_acquirers_share_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=50, burst=1)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(101):
            nursery.start_soon(bucket.acquire)
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_penalise_holds_everyone_back(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=100, burst=100)
    start = trio.current_time()
    bucket.penalise(3.0)
    await bucket.acquire()
    # the pause, then one token's worth at the rate: no burst right after a 429
    assert trio.current_time() - start == pytest.approx(3.01)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1)
