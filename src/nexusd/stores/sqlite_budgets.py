"""The shared rate budgets of a SQLite store: read, compute, write back in one writer operation.

Every write operation runs in the writer's `BEGIN IMMEDIATE` transaction, which holds the
database's write lock: no other process sharing the file can read the budget between this
operation's read and its write, so a grant is atomic across processes without a statement that
does the arithmetic in SQL. Time is the store's `Clock`: every process sharing a SQLite file is
on one machine, so on one wall clock (stores/rate_budgets.py copes with it stepping back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import attrs

from nexusd.stores import rate_budgets

if TYPE_CHECKING:
    from collections.abc import Callable

    import apsw

    from nexusd.core.clock import Clock
    from nexusd.stores.rate_budgets import BudgetState, TokenGrant
    from nexusd.stores.sqlite_writer import GroupCommitWriter

    Step = Callable[[BudgetState | None, float], tuple[BudgetState, TokenGrant]]

_FIELDS = "tokens, stamp, rate, ceiling, ceiling_until, ceiling_by"
_SELECT = f"SELECT {_FIELDS} FROM rate_budgets WHERE shard = ?"
_UPSERT = f"INSERT OR REPLACE INTO rate_budgets (shard, {_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?)"


class SqliteBudgets:
    """Mixin: `grant_tokens` and `cut_rate` over `_writer` and `_clock`."""

    _writer: GroupCommitWriter
    _clock: Clock

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
        return await self._update(
            shard,
            lambda state, now: rate_budgets.grant(
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
        rate_budgets.check_cut(burst=burst, ceiling=ceiling, decrease=decrease, floor=floor)
        return await self._update(
            shard,
            lambda state, now: rate_budgets.cut(
                state,
                now=now,
                burst=burst,
                ceiling=ceiling,
                caller=caller,
                decrease=decrease,
                floor=floor,
            ),
        )

    async def _update(self, shard: str, step: Step) -> TokenGrant:
        clock = self._clock

        def apply(connection: apsw.Connection) -> TokenGrant:
            rows = connection.execute(_SELECT, (shard,)).fetchall()
            stored = None
            if rows:
                stored = rate_budgets.BudgetState(*cast("tuple[Any, ...]", rows[0]))
            # Read the clock under the write lock, so stamps only move forward between writers.
            state, answer = step(stored, clock.now().timestamp())
            connection.execute(_UPSERT, (shard, *attrs.astuple(state)))
            return answer

        granted: TokenGrant = await self._writer.run(apply)
        return granted
