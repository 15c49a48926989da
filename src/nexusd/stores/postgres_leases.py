"""The warm-pool writes of a PostgreSQL store: `lease`, `renew`, `requeue`, each ONE transaction.

A `lease` (and the update of a `renew`) is one statement over the runs passed as arrays: it
first locks the rows that meet the lease's condition, in key order, then updates exactly those.
Under READ COMMITTED a row another transaction is changing is waited for and its condition
re-checked on the committed row, so of concurrent leases of one run exactly one applies; and
since every multi-row lease call locks in the same order, two of them never deadlock. A
`requeue` is one conditional UPDATE of one row. The reads live in sql_reads.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from nexusd.core.lifecycle import Stage
from nexusd.core.records import LeaseKey
from nexusd.stores.validation import (
    check_attempt,
    check_aware,
    check_holder,
    check_leases,
    unique_runs,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Sequence

    from nexusd.core.clock import Clock
    from nexusd.stores.postgres_admin import Connection

_T = TypeVar("_T")

_LEASE = (
    "WITH picked AS (SELECT c.algorithm, c.id FROM checkpoints c "
    "JOIN unnest(%s::text[], %s::text[]) AS w(algorithm, id) "
    "ON c.algorithm = w.algorithm AND c.id = w.id "
    "WHERE c.lifecycle_stage = 'BUFFERED' AND c.warm AND c.lease_holder = '' "
    "ORDER BY c.algorithm, c.id FOR UPDATE OF c) "
    "UPDATE checkpoints c SET lifecycle_stage = 'RUNNING', lease_holder = %s, "
    "lease_expires = %s, sent_at = %s, last_modified = %s FROM picked p "
    "WHERE c.algorithm = p.algorithm AND c.id = p.id RETURNING c.algorithm, c.id, c.attempt"
)
_RENEW = (
    "WITH held AS (SELECT c.algorithm, c.id FROM checkpoints c "
    "JOIN unnest(%s::text[], %s::text[], %s::integer[]) AS w(algorithm, id, attempt) "
    "ON c.algorithm = w.algorithm AND c.id = w.id AND c.attempt = w.attempt "
    "WHERE c.lifecycle_stage = 'RUNNING' AND c.lease_holder = %s "
    "ORDER BY c.algorithm, c.id FOR UPDATE OF c) "
    "UPDATE checkpoints c SET lease_expires = %s FROM held h "
    "WHERE c.algorithm = h.algorithm AND c.id = h.id RETURNING c.algorithm, c.id"
)
_STAGES = (
    "SELECT c.algorithm, c.id, c.lifecycle_stage FROM checkpoints c "
    "JOIN unnest(%s::text[], %s::text[]) AS w(algorithm, id) "
    "ON c.algorithm = w.algorithm AND c.id = w.id"
)
_REQUEUE = (
    "UPDATE checkpoints SET lifecycle_stage = 'BUFFERED', attempt = attempt + 1, "
    "lease_holder = '', lease_expires = NULL, last_modified = %s "
    "WHERE algorithm = %s AND id = %s AND lifecycle_stage = 'RUNNING' AND lease_holder <> '' "
    "AND attempt = %s"
)


class PostgresLeases:
    """Mixin: `lease`, `renew`, `requeue` over `_run` and `_clock`."""

    _clock: Clock

    async def _run(self, fn: Callable[[Connection], _T]) -> _T:
        raise NotImplementedError

    async def lease(
        self, *, runs: Sequence[tuple[str, str]], holder: str, expires: dt.datetime
    ) -> list[LeaseKey]:
        check_holder(holder)
        check_aware("expires", expires)
        keys = unique_runs(runs)
        if not keys:
            return []
        now = self._clock.now()
        params = ([a for a, _ in keys], [i for _, i in keys], holder, expires, now, now)

        def apply(connection: Connection) -> list[LeaseKey]:
            rows: list[tuple[Any, ...]] = connection.execute(_LEASE, params).fetchall()
            attempts = {(str(a), str(i)): int(n) for a, i, n in rows}
            return [
                LeaseKey(algorithm=key[0], request_id=key[1], attempt=attempts[key])
                for key in keys
                if key in attempts
            ]

        return await self._run(apply)

    async def renew(
        self, *, holder: str, leases: Sequence[LeaseKey], expires: dt.datetime
    ) -> dict[tuple[str, str], Stage | None]:
        check_holder(holder)
        check_aware("expires", expires)
        checked = check_leases(leases)
        if not checked:
            return {}
        columns = (
            [lease.algorithm for lease in checked],
            [lease.request_id for lease in checked],
            [lease.attempt for lease in checked],
        )

        def apply(connection: Connection) -> dict[tuple[str, str], Stage | None]:
            with connection.transaction():
                rows = connection.execute(_RENEW, (*columns, holder, expires)).fetchall()
                renewed = {(str(a), str(i)) for a, i in rows}
                refused = [(lease.algorithm, lease.request_id) for lease in checked]
                refused = [key for key in refused if key not in renewed]
                if not refused:
                    return {}
                found = connection.execute(
                    _STAGES, ([a for a, _ in refused], [i for _, i in refused])
                ).fetchall()
            stages = {(str(a), str(i)): Stage(str(stage)) for a, i, stage in found}
            return {key: stages.get(key) for key in refused}

        return await self._run(apply)

    async def requeue(
        self,
        *,
        lease: LeaseKey,
        holder: str | None = None,
        expired_before: dt.datetime | None = None,
    ) -> bool:
        check_attempt(lease.attempt)
        update = _REQUEUE
        params: tuple[Any, ...] = (
            self._clock.now(),
            lease.algorithm,
            lease.request_id,
            lease.attempt,
        )
        if holder is not None:
            update += " AND lease_holder = %s"
            params += (check_holder(holder),)
        if expired_before is not None:
            check_aware("expired_before", expired_before)
            update += " AND lease_expires < %s"
            params += (expired_before,)

        def apply(connection: Connection) -> bool:
            return bool(connection.execute(update, params).rowcount)

        return await self._run(apply)
