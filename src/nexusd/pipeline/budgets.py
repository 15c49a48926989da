"""Shared rate budgets: one token bucket per shard for every process that shares the store.

Input: the asks of one process's `ShardThrottle` for a shard (kube/throttling.py): "grant up to
N tokens, and here are the successes since my last ask", and "a 429: cut the rate".
Output: the answer of the checkpoint store's budget for that shard (`grant_tokens`,
`cut_rate`; stores/rate_budgets.py), which every scheduler and maintainer using the store draws
from, so the shard sees `submission.rate` calls per second in all, however many replicas run.
Cost: one store write per ask; a throttle asks once per batch of waiting calls.
Failure: a store that fails or does not answer within `STORE_TIMEOUT` must not stall submission.
The budget falls back to a bucket of this process's own (starting at the shared rate last
heard, so a cut is not forgotten), warns (at most every `WARNING_INTERVAL`), tries the store
again after `RETRY_AFTER` (backing off while it keeps failing), and says so when it is back.
While it is down, each process keeps to its own `submission.rate`, as before budgets were
shared.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from nexusd.core.errors import StoreError
from nexusd.kube.throttling import Grant, LocalBudget

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nexusd.kube.throttling import RateLimits
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.rate_budgets import TokenGrant

logger = logging.getLogger(__name__)

#: Seconds a budget call may take before this process goes on with its own bucket: a grant
#: is one short write, so a store this slow is failing.
STORE_TIMEOUT = 2.0
#: Seconds on this process's own bucket before the store is tried again, doubling with each
#: failure in a row up to `RETRY_MOST` (a store call that hangs costs its caller up to
#: `STORE_TIMEOUT`, and a PostgreSQL statement then waits for its cancel, so retries are rare).
RETRY_AFTER = 5.0
RETRY_MOST = 60.0
#: Seconds between two warnings about the same outage.
WARNING_INTERVAL = 60.0


class StoreBudget:
    """A shard's budget in the checkpoint store; this process's own while the store fails."""

    def __init__(
        self, limits: RateLimits, *, store: CheckpointStore, shard: str, caller: str
    ) -> None:
        """`caller` is this process's `node.host_name`: its own earlier ceiling, from before
        a restart with another `submission.rate`, is replaced at once."""
        self._limits = limits
        self._store = store
        self._shard = shard
        self._caller = caller
        self._local = LocalBudget(limits)
        self._last_rate = limits.rate
        self._retry_at = -math.inf  # while in the future, the local bucket serves
        self._failures = 0  # in a row
        self._warned_at = -math.inf

    @property
    def shared(self) -> bool:
        return trio.current_time() >= self._retry_at

    async def grant(self, *, wanted: int, successes: int) -> Grant:
        limits = self._limits
        return await self._call(
            lambda: self._store.grant_tokens(
                shard=self._shard,
                wanted=wanted,
                burst=limits.burst,
                ceiling=limits.rate,
                caller=self._caller,
                increase=limits.increase,
                successes=successes,
            ),
            lambda: self._local.grant(wanted=wanted, successes=successes),
        )

    async def cut(self) -> Grant:
        limits = self._limits
        return await self._call(
            lambda: self._store.cut_rate(
                shard=self._shard,
                burst=limits.burst,
                ceiling=limits.rate,
                caller=self._caller,
                decrease=limits.decrease,
                floor=limits.floor,
            ),
            self._local.cut,
        )

    async def _call(
        self,
        shared: Callable[[], Awaitable[TokenGrant]],
        local: Callable[[], Awaitable[Grant]],
    ) -> Grant:
        if not self.shared:
            return await local()
        try:
            with trio.fail_after(STORE_TIMEOUT):
                answer = await shared()
        except (StoreError, trio.TooSlowError) as exc:
            self._fall_back(exc)
            return await local()
        if self._failures:
            self._failures = 0
            logger.info("shard %s: the shared rate budget answers again", self._shard)
        self._last_rate = answer.rate
        return Grant(granted=answer.granted, rate=answer.rate, tokens=answer.tokens)

    def _fall_back(self, exc: Exception) -> None:
        now = trio.current_time()
        self._retry_at = now + min(RETRY_MOST, RETRY_AFTER * 2.0**self._failures)
        if not self._failures:
            self._local.adopt(self._last_rate)
        self._failures += 1
        if now - self._warned_at >= WARNING_INTERVAL:
            self._warned_at = now
            logger.warning(
                "shard %s: the shared rate budget failed (%s); this process keeps to its own "
                "submission.rate until the store answers again (next try in %gs)",
                self._shard,
                str(exc) or type(exc).__name__,
                self._retry_at - now,
            )
