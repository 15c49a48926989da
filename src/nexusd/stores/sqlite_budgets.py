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
    import apsw

    from nexusd.core.clock import Clock
    from nexusd.stores.rate_budgets import TokenGrant
    from nexusd.stores.sqlite_writer import GroupCommitWriter

_FIELDS = "tokens, stamp, rate, ceiling, ceiling_until, ceiling_by"
_SELECT = f"SELECT {_FIELDS} FROM rate_budgets WHERE shard = ?"
_UPSERT = f"INSERT OR REPLACE INTO rate_budgets (shard, {_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?)"


class SqliteBudgets(rate_budgets.StepBudgets):
    """Mixin: `grant_tokens` and `cut_rate` (rate_budgets.StepBudgets) over `_writer` and
    `_clock`."""

    _writer: GroupCommitWriter
    _clock: Clock

    async def _update(self, shard: str, step: rate_budgets.Step) -> TokenGrant:
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
