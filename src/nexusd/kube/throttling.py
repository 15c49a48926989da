"""Request-rate normalisation: what each shard's API server accepts, and no more.

Every mutating call to a shard (Job create, Job delete) goes through that shard's
`ShardThrottle`:

- a token bucket spreads calls out to `rate` per second, with bursts of up to `burst`;
- a `trio.CapacityLimiter` caps the calls in flight, so a slow API server is not also flooded
  with parallel requests;
- the rate adapts like TCP's congestion window (AIMD): a 429 cuts it multiplicatively
  (`decrease`), successes raise it additively (`increase` calls/s per second) back towards
  the configured ceiling. Under an API server that accepts 50 writes/s the rate saws between
  35 and 50 instead of bouncing off the limit with a storm of retries.

The bucket and its rate are a `RateBudget`. `LocalBudget` is this process's own, in memory;
pipeline/budgets.py has the one every process sharing the checkpoint store draws from, so nine
schedulers send a shard `rate` calls per second between them, not nine times that. Either way
the throttle talks to its budget in batches:

- the first caller waiting (the others queue behind it, FIFO) asks for as many tokens as there
  are callers waiting, no more: one call of the budget serves the whole batch; but while the
  rate is below this process's ceiling (a 429 cut it), a batch is at most what the rate earns
  in `BATCH_WINDOW` (or what the bucket holds already), so a shard that is refusing calls gets
  them one or two at a time, spread out, rather than saved up and sent together into an API
  server that has just refused a burst;
- every answer says how many tokens the bucket has left and its rate, so when a batch got
  fewer tokens than it asked for, the next ask waits until the bucket should hold what is
  missing (at most a burst) instead of asking again at once; when other processes keep taking
  those tokens first, it waits longer (up to the time the bucket takes to fill), so sharing
  processes take turns instead of all asking at once and mostly coming back empty;
- successes are counted here and reported with the next ask, which folds them into the rate;
  a 429 is reported at once (`throttled`), so every process slows down together.

The in-flight cap is always this process's own. The 429's Retry-After is honoured by the caller
for the call that got it (it retries no sooner); the shard as a whole only slows down through
the rate cut. Time is `trio.current_time()`, so tests run this on the autojump clock.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

#: Float refill can land a hair under a whole token; this much counts as the whole token.
_EPSILON = 1e-9
#: The most `ShardThrottle._patience` grows to (waits are also capped by the bucket's size).
_MOST_PATIENCE = 64.0
#: Seconds a throttle waits at most between asks, unless its own rate needs longer.
_LONGEST_WAIT = 5.0
#: Seconds of the rate one ask gathers at most (beyond the tokens the bucket holds already):
#: at 400 calls/s batches of 20, 20 asks a second; below 20 calls/s one token per ask.
BATCH_WINDOW = 0.05


@attrs.frozen
class RateLimits:
    """One process's configuration of a shard's budget."""

    #: the ceiling the adaptive rate never exceeds (calls per second)
    rate: float
    #: tokens the bucket holds at most
    burst: int
    #: what a 429 multiplies the rate by
    decrease: float = 0.7
    #: calls per second the rate regains per second of successes
    increase: float = 5.0
    #: the lowest rate a cut goes to (never above `rate`)
    floor: float = 0.5

    def __attrs_post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("rate must be > 0, burst and max_in_flight >= 1")
        if not 0 < self.decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        if self.increase < 0 or not self.floor > 0:
            raise ValueError("increase must not be negative, floor must be above 0")


@attrs.frozen
class Grant:
    """A budget's answer: tokens granted now, and the bucket as the budget left it."""

    granted: int
    #: the budget's rate now (calls per second)
    rate: float
    #: tokens left in the bucket, refilling at `rate` from the moment of the answer
    tokens: float


class RateBudget(Protocol):
    """Where a shard's tokens come from (this module's `LocalBudget`, or pipeline/budgets.py)."""

    @property
    def shared(self) -> bool:
        """Whether the tokens come from a budget shared with other processes right now."""
        ...

    async def grant(self, *, wanted: int, successes: int) -> Grant:
        """Fold `successes` (calls that went through since the last grant) into the rate,
        then grant up to `wanted` tokens, never more than the bucket holds."""
        ...

    async def cut(self) -> Grant:
        """A 429: multiply the rate by `decrease` (not below the floor), empty the bucket."""
        ...


class LocalBudget:
    """This process's own bucket, in memory: tests, and the fallback of a shared budget."""

    shared = False

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits
        self._floor = min(limits.floor, limits.rate)
        self.rate = limits.rate
        self._tokens = float(limits.burst)
        self._stamp = trio.current_time()

    def adopt(self, rate: float) -> None:
        """Go on at `rate` (a shared budget's last), within this process's floor and ceiling."""
        self.rate = min(self._limits.rate, max(self._floor, rate))

    async def grant(self, *, wanted: int, successes: int) -> Grant:
        await trio.lowlevel.checkpoint()
        self._refill()
        if successes:
            self.rate = min(
                self._limits.rate, self.rate + successes * self._limits.increase / self.rate
            )
        granted = min(wanted, math.floor(self._tokens + _EPSILON))
        self._tokens = max(0.0, self._tokens - granted)
        return Grant(granted=granted, rate=self.rate, tokens=self._tokens)

    async def cut(self) -> Grant:
        await trio.lowlevel.checkpoint()
        self._refill()
        self.rate = max(self._floor, self.rate * self._limits.decrease)
        self._tokens = 0.0
        return Grant(granted=0, rate=self.rate, tokens=0.0)

    def _refill(self) -> None:
        now = trio.current_time()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self._limits.burst), self._tokens + elapsed * self.rate)
        self._stamp = max(now, self._stamp)


@attrs.frozen
class ThrottleStatistics:
    rate: float
    ceiling: float
    burst: int
    #: tokens the budget had left at its last answer
    tokens: float
    waiting: int
    in_flight: int
    throttled: int
    succeeded: int
    #: calls of the budget (store round trips, with a shared one)
    asks: int
    #: whether the budget is shared with other processes right now
    shared: bool


class ShardThrottle:
    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_in_flight: int = 16,
        decrease: float = 0.7,
        increase: float = 5.0,
        floor: float = 0.5,
        budget: Callable[[RateLimits], RateBudget] = LocalBudget,
    ) -> None:
        """`rate`, `burst`, `decrease`, `increase` and `floor` are this process's `RateLimits`;
        `budget` makes the budget they configure (this process's own unless told otherwise)."""
        if max_in_flight < 1:
            raise ValueError("rate must be > 0, burst and max_in_flight >= 1")
        limits = RateLimits(
            rate=rate, burst=burst, decrease=decrease, increase=increase, floor=floor
        )
        self._budget = budget(limits)
        self.ceiling = rate
        self.burst = burst
        #: the budget's rate as of its last answer
        self.rate = rate
        self._tokens = float(burst)  # the budget's tokens as of its last answer...
        self._heard_at = trio.current_time()  # ... given at this time
        self._granted = 0  # tokens granted to the callers waiting here and not yet taken
        self._unreported = 0  # successes not yet folded into the budget's rate
        self._lock = trio.Lock()  # FIFO: waiters get tokens in arrival order
        self._waiting = 0
        self._in_flight = trio.CapacityLimiter(max_in_flight)
        self._throttled = 0
        self._succeeded = 0
        self._asks = 0
        # How many times longer than the last answer says to wait before asking again. It
        # doubles whenever an ask brings back less than that answer promised (other processes
        # draw from the same budget) and halves when it brings back the promise, so processes
        # sharing a budget take turns rather than all asking the moment a batch is due and
        # mostly coming back empty, which would cost a store write each.
        self._patience = 1.0

    async def _take_token(self) -> None:
        self._waiting += 1
        try:
            async with self._lock:
                while self._granted < 1:
                    batch = self._waiting
                    if self.rate < self.ceiling:
                        batch = min(batch, max(1, math.floor(self.rate * BATCH_WINDOW)))
                    await trio.sleep_until(self._due(batch))
                    saved = math.floor(self._promised() + _EPSILON)
                    await self._ask(min(self._waiting, max(batch, saved)))
                self._granted -= 1
        finally:
            self._waiting -= 1

    def _due(self, wanted: int) -> float:
        """When to ask for `wanted` tokens: once the bucket should hold them (at most a burst),
        judging by the last answer (asking sooner would only bring back fewer, at the cost of
        a round trip), stretched by `_patience`, but never past the time the bucket is full
        (tokens no one takes then are lost), nor longer than `_LONGEST_WAIT` unless this
        process's own rate needs longer."""
        missing = max(0.0, min(wanted, self.burst) - self._tokens)
        room = self.burst - self._tokens
        wait = min(self._patience * missing, room) / self.rate
        # A shared rate far below this process's own (another process's lower ceiling) may be
        # raised any time: look again now and then rather than sleep on it.
        return self._heard_at + min(wait, max(_LONGEST_WAIT, missing / self.ceiling))

    async def _ask(self, wanted: int) -> None:
        successes, self._unreported = self._unreported, 0
        promised = min(wanted, self._promised())
        self._asks += 1
        grant = await self._budget.grant(wanted=wanted, successes=successes)
        # Short of the promise at an unchanged rate: another process drew from the budget
        # meanwhile (at a lower rate, another process's 429 emptied it: no reason to wait).
        if grant.granted + 1 <= promised and grant.rate >= self.rate:
            self._patience = min(_MOST_PATIENCE, self._patience * 2)
        else:
            self._patience = max(1.0, self._patience / 2)
        self._granted += grant.granted
        self._heard(grant)

    def _promised(self) -> float:
        """The tokens the last answer says the bucket holds now, if no one else took any."""
        refilled = self._tokens + (trio.current_time() - self._heard_at) * self.rate
        return min(float(self.burst), refilled)

    def _heard(self, grant: Grant) -> None:
        self.rate, self._tokens, self._heard_at = grant.rate, grant.tokens, trio.current_time()

    @contextlib.asynccontextmanager
    async def mutating(self) -> AsyncIterator[None]:
        """Hold a token and an in-flight slot for one mutating call."""
        await self._take_token()
        async with self._in_flight:
            yield

    async def throttled(self) -> None:
        """The server answered 429: slow the whole shard down multiplicatively, at once."""
        self._throttled += 1
        self._unreported = 0  # successes before the 429 must not undo the cut
        # Start again from an empty bucket: the calls already queued must not burst.
        self._granted = 0
        self._heard(await self._budget.cut())

    def succeeded(self) -> None:
        """A call went through: the next ask regains rate additively, up to the ceiling."""
        self._succeeded += 1
        if self.rate < self.ceiling:
            self._unreported += 1

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(
            rate=self.rate,
            ceiling=self.ceiling,
            burst=self.burst,
            tokens=self._tokens,
            waiting=self._waiting,
            in_flight=int(self._in_flight.borrowed_tokens),
            throttled=self._throttled,
            succeeded=self._succeeded,
            asks=self._asks,
            shared=self._budget.shared,
        )
