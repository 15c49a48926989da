"""One shard's rate budget, shared by every process that uses the store: the arithmetic.

A budget is a token bucket with an adaptive rate, one row per shard:

- `tokens` refill at `rate` per second of the store's clock since `stamp`, up to the asking
  caller's `burst`; a grant takes up to the number of tokens asked for, never more than the
  bucket holds, so the tokens granted by all callers over any interval never exceed
  `burst + rate x elapsed`.
- Every answer says how many tokens are left and the rate they refill at, so a caller that got
  fewer than it asked for knows how long until the bucket holds what it still misses: it waits
  that long instead of asking again at once, and gets a batch of tokens per round trip.
- `rate` follows AIMD: `cut` (a 429) multiplies it by `decrease` (not below `floor`) and
  empties the bucket; the successes a caller reports with a grant raise it by `increase / rate`
  each (so `increase` calls/s per second of successes), never above the ceiling.
- The ceiling is the smallest one a caller configured within the last `CEILING_HOLD` seconds:
  a process started with a lower `submission.rate` lowers the shared rate at once, and a higher
  one takes over only once no process with the lower one has asked for that long, or at once
  when the caller that set it (`ceiling_by`, its `node.host_name`: one live process each)
  asks with another (a restart with a new rate). When the ceiling changes, the rate
  moves with it in proportion: a budget at its ceiling stays at the new one, a budget cut to
  70% of the old ceiling goes on at 70% of the new one.

The memory and SQLite stores run this module's functions on the stored state inside one atomic
operation; PostgreSQL runs the same steps as server-side functions (postgres_schema.py, version
4) on the server's clock. tests/stores/test_rate_budget_contract.py holds all three to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

#: Seconds a ceiling keeps the budget after the last call that configured it: longer than a
#: busy process goes between asks, short enough for a restart with a higher rate.
CEILING_HOLD = 10.0
#: Float refill can land a hair under a whole token; this much counts as the whole token.
EPSILON = 1e-9


@attrs.frozen
class TokenGrant:
    """The answer of `grant_tokens` and `cut_rate`."""

    #: tokens granted now, 0..wanted
    granted: int
    #: the shared rate after this call (calls per second)
    rate: float
    #: tokens left in the shared bucket after this call
    tokens: float


@attrs.frozen
class BudgetState:
    """One shard's stored budget; times are seconds on the store's clock."""

    tokens: float
    stamp: float
    rate: float
    ceiling: float
    ceiling_until: float
    #: the caller whose ceiling this is
    ceiling_by: str


def check_grant(
    *, wanted: int, burst: int, ceiling: float, increase: float, successes: int
) -> None:
    """Refuse nonsense before anything is written (ValueError), in every store alike."""
    if wanted < 0 or successes < 0 or increase < 0:
        raise ValueError("wanted, successes and increase must not be negative")
    check_limits(burst=burst, ceiling=ceiling)


def check_cut(*, burst: int, ceiling: float, decrease: float, floor: float) -> None:
    check_limits(burst=burst, ceiling=ceiling)
    if not 0 < decrease < 1 or floor <= 0:
        raise ValueError("decrease must be between 0 and 1, floor above 0")


def check_limits(*, burst: int, ceiling: float) -> None:
    if burst < 1 or not ceiling > 0:
        raise ValueError("burst must be at least 1 and the ceiling above 0")


def refilled(
    state: BudgetState | None, *, now: float, burst: int, ceiling: float, caller: str
) -> BudgetState:
    """The state at `now`: tokens earned since the stamp at the old rate (capped at `burst`),
    and the ceiling of the strictest caller of the last `CEILING_HOLD` seconds."""
    if state is None:  # a new budget starts full, at its ceiling
        state = BudgetState(
            tokens=float(burst),
            stamp=now,
            rate=ceiling,
            ceiling=ceiling,
            ceiling_until=now,
            ceiling_by=caller,
        )
    held, until, by = state.ceiling, state.ceiling_until, state.ceiling_by
    if ceiling <= held or now >= until or caller == by:
        held, until, by = ceiling, now + CEILING_HOLD, caller
    elapsed = max(0.0, now - state.stamp)  # a clock stepped back earns nothing
    return BudgetState(
        tokens=min(float(burst), state.tokens + elapsed * state.rate),
        stamp=now,  # even when stepped back: refill resumes from the clock as it is now
        rate=min(held, state.rate * held / state.ceiling),
        ceiling=held,
        ceiling_until=until,
        ceiling_by=by,
    )


def grant(
    state: BudgetState | None,
    *,
    now: float,
    wanted: int,
    burst: int,
    ceiling: float,
    caller: str,
    increase: float,
    successes: int,
) -> tuple[BudgetState, TokenGrant]:
    """Fold `successes` into the rate, then take up to `wanted` tokens."""
    state = refilled(state, now=now, burst=burst, ceiling=ceiling, caller=caller)
    rate = state.rate
    if successes:
        rate = min(state.ceiling, rate + successes * increase / rate)
    granted = min(wanted, math.floor(state.tokens + EPSILON))
    tokens = max(0.0, state.tokens - granted)
    state = attrs.evolve(state, tokens=tokens, rate=rate)
    return state, TokenGrant(granted=granted, rate=rate, tokens=tokens)


def cut(
    state: BudgetState | None,
    *,
    now: float,
    burst: int,
    ceiling: float,
    caller: str,
    decrease: float,
    floor: float,
) -> tuple[BudgetState, TokenGrant]:
    """A 429: multiply the rate by `decrease` (not below `floor`) and empty the bucket, so
    the calls every process has queued do not burst into an API server that is refusing."""
    state = refilled(state, now=now, burst=burst, ceiling=ceiling, caller=caller)
    rate = max(min(floor, state.ceiling), state.rate * decrease)
    state = attrs.evolve(state, tokens=0.0, rate=rate)
    return state, TokenGrant(granted=0, rate=rate, tokens=0.0)


#: One atomic step on a shard's stored budget: (state or None, now) -> (new state, answer).
Step = Callable[[BudgetState | None, float], tuple[BudgetState, TokenGrant]]


class StepBudgets:
    """Mixin for the stores that run these steps in Python (memory, SQLite): `grant_tokens`
    and `cut_rate` check their arguments and hand the step to `_update`, which applies it to
    the stored state in one atomic operation at the store clock's `now`."""

    async def _update(self, shard: str, step: Step) -> TokenGrant:
        raise NotImplementedError

    async def grant_tokens(
        self,
        *,
        shard: str,
        wanted: int,
        burst: int,
        ceiling: float,
        caller: str,
        increase: float,
        successes: int = 0,
    ) -> TokenGrant:
        check_grant(
            wanted=wanted, burst=burst, ceiling=ceiling, increase=increase, successes=successes
        )
        return await self._update(
            shard,
            lambda state, now: grant(
                state,
                now=now,
                wanted=wanted,
                burst=burst,
                ceiling=ceiling,
                caller=caller,
                increase=increase,
                successes=successes,
            ),
        )

    async def cut_rate(
        self,
        *,
        shard: str,
        burst: int,
        ceiling: float,
        caller: str,
        decrease: float,
        floor: float,
    ) -> TokenGrant:
        check_cut(burst=burst, ceiling=ceiling, decrease=decrease, floor=floor)
        return await self._update(
            shard,
            lambda state, now: cut(
                state,
                now=now,
                burst=burst,
                ceiling=ceiling,
                caller=caller,
                decrease=decrease,
                floor=floor,
            ),
        )
