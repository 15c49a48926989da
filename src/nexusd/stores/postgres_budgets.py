"""The shared rate budgets of a PostgreSQL store: one function call, one round trip.

The arithmetic runs on the server (`nexusd_grant_tokens`, `nexusd_cut_rate`; postgres_schema.py,
version 4) under the budget row's lock, timed by the server's `clock_timestamp()`: schedulers
on machines whose clocks disagree still share one budget, and concurrent grants from any number
of processes queue on the row lock, so none sees another's tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from nexusd.stores import rate_budgets
from nexusd.stores.rate_budgets import TokenGrant

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.stores.postgres_admin import Connection

_T = TypeVar("_T")

# Casts, so that the function resolves whatever types psycopg picks for Python numbers.
_I, _F = "%s::integer", "%s::double precision"
_GRANT = f"SELECT * FROM nexusd_grant_tokens(%s, {_I}, {_I}, {_F}, %s, {_F}, {_I}, {_F})"
_CUT = f"SELECT * FROM nexusd_cut_rate(%s, {_I}, {_F}, %s, {_F}, {_F}, {_F})"


class PostgresBudgets:
    """Mixin: `grant_tokens` and `cut_rate` over `_run`."""

    async def _run(self, fn: Callable[[Connection], _T]) -> _T:
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
        rate_budgets.check_grant(
            wanted=wanted, burst=burst, ceiling=ceiling, increase=increase, successes=successes
        )
        hold = rate_budgets.CEILING_HOLD
        params = (shard, wanted, burst, ceiling, caller, increase, successes, hold)

        def call(connection: Connection) -> TokenGrant:
            row = connection.execute(_GRANT, params).fetchone()
            assert row is not None  # a function call always returns its row
            granted, rate, tokens = cast("tuple[int, float, float]", row)
            return TokenGrant(granted=granted, rate=rate, tokens=tokens)

        return await self._run(call)

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
        rate_budgets.check_cut(burst=burst, ceiling=ceiling, decrease=decrease, floor=floor)
        params = (shard, burst, ceiling, caller, decrease, floor, rate_budgets.CEILING_HOLD)

        def call(connection: Connection) -> TokenGrant:
            row = connection.execute(_CUT, params).fetchone()
            assert row is not None  # a function call always returns its row
            rate = cast("float", row[0])
            return TokenGrant(granted=0, rate=rate, tokens=0.0)

        return await self._run(call)
