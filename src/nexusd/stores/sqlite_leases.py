"""The warm-pool writes of a SQLite store: `lease`, `renew`, `requeue`, each ONE writer operation.

Every run's change is one conditional ``UPDATE ... WHERE <the lease's condition>``, so the
compare-and-set holds against other processes sharing the file too (the writer's transaction
holds the database's write lock); a `lease` or `renew` of many runs is one operation, so one
savepoint: all of its changes commit together. The reads live in sql_reads.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from nexusd.core.lifecycle import Stage
from nexusd.core.records import LeaseKey
from nexusd.stores.sqlite_schema import encode_time
from nexusd.stores.validation import (
    check_attempt,
    check_aware,
    check_holder,
    check_leases,
    unique_runs,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    import apsw

    from nexusd.core.clock import Clock
    from nexusd.stores.sqlite_writer import GroupCommitWriter

_LEASE = (
    "UPDATE checkpoints SET lifecycle_stage = 'RUNNING', lease_holder = ?, lease_expires = ?, "
    "sent_at = ?, last_modified = ? WHERE algorithm = ? AND id = ? "
    "AND lifecycle_stage = 'BUFFERED' AND warm AND lease_holder = '' RETURNING attempt"
)
_RENEW = (
    "UPDATE checkpoints SET lease_expires = ? WHERE algorithm = ? AND id = ? "
    "AND lifecycle_stage = 'RUNNING' AND lease_holder = ? AND attempt = ?"
)
_SELECT_STAGE = "SELECT lifecycle_stage FROM checkpoints WHERE algorithm = ? AND id = ?"
_REQUEUE = (
    "UPDATE checkpoints SET lifecycle_stage = 'BUFFERED', attempt = attempt + 1, "
    "lease_holder = '', lease_expires = NULL, last_modified = ? "
    "WHERE algorithm = ? AND id = ? AND lifecycle_stage = 'RUNNING' AND lease_holder <> '' "
    "AND attempt = ?"
)


class SqliteLeases:
    """Mixin: `lease`, `renew`, `requeue` over `_writer` and `_clock`."""

    _writer: GroupCommitWriter
    _clock: Clock

    async def lease(
        self, *, runs: Sequence[tuple[str, str]], holder: str, expires: dt.datetime
    ) -> list[LeaseKey]:
        check_holder(holder)
        check_aware("expires", expires)
        keys = unique_runs(runs)
        now = encode_time(self._clock.now())
        stamps = (holder, encode_time(expires), now, now)

        def apply(connection: apsw.Connection) -> list[LeaseKey]:
            leased = []
            for algorithm, request_id in keys:
                rows = connection.execute(_LEASE, (*stamps, algorithm, request_id)).fetchall()
                if rows:
                    attempt = int(cast("int", rows[0][0]))
                    leased.append(
                        LeaseKey(algorithm=algorithm, request_id=request_id, attempt=attempt)
                    )
            return leased

        result: list[LeaseKey] = await self._writer.run(apply)
        return result

    async def renew(
        self, *, holder: str, leases: Sequence[LeaseKey], expires: dt.datetime
    ) -> dict[tuple[str, str], Stage | None]:
        check_holder(holder)
        check_aware("expires", expires)
        checked = check_leases(leases)
        until = encode_time(expires)

        def apply(connection: apsw.Connection) -> dict[tuple[str, str], Stage | None]:
            refused: dict[tuple[str, str], Stage | None] = {}
            for lease in checked:
                key = (lease.algorithm, lease.request_id)
                connection.execute(_RENEW, (until, *key, holder, lease.attempt))
                if connection.changes():
                    continue
                rows = connection.execute(_SELECT_STAGE, key).fetchall()
                refused[key] = Stage(str(rows[0][0])) if rows else None
            return refused

        result: dict[tuple[str, str], Stage | None] = await self._writer.run(apply)
        return result

    async def requeue(
        self,
        *,
        lease: LeaseKey,
        holder: str | None = None,
        expired_before: dt.datetime | None = None,
    ) -> bool:
        check_attempt(lease.attempt)
        update = _REQUEUE
        bindings: tuple[Any, ...] = (
            encode_time(self._clock.now()),
            lease.algorithm,
            lease.request_id,
            lease.attempt,
        )
        if holder is not None:
            update += " AND lease_holder = ?"
            bindings += (check_holder(holder),)
        if expired_before is not None:
            check_aware("expired_before", expired_before)
            update += " AND lease_expires < ?"
            bindings += (encode_time(expired_before),)

        def apply(connection: apsw.Connection) -> bool:
            connection.execute(update, bindings)
            return bool(connection.changes())

        result: bool = await self._writer.run(apply)
        return result
