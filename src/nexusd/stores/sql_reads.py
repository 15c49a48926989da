"""What both SQL stores share: upstream's column list, and the point and index reads.

SQLite and PostgreSQL differ in their placeholder (`?` / `%s`), in how they run a query (the
SQLite read pool, the PostgreSQL connection pool) and in how a row decodes (text timestamps vs
`timestamptz`); the queries and their ordering are the same, and so must their answers be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from nexusd.core.lifecycle import Stage
from nexusd.core.records import HeldLease, IdempotencyKey, KeyedRun, PendingSubmission
from nexusd.stores.checkpoints import DEFAULT_PAGE, Heartbeat, QueueReport
from nexusd.stores.validation import check_aware, check_holder, check_limit

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from nexusd.core.records import Checkpoint, SubmissionEntry
    from nexusd.stores.checkpoints import HostCursor


#: upstream's `checkpoints` columns (contract §4.1) plus `cluster`, in the order the row
#: decoders expect
COLUMNS = (
    "algorithm",
    "id",
    "lifecycle_stage",
    "payload_uri",
    "result_uri",
    "algorithm_failure_cause",
    "algorithm_failure_details",
    "received_by_host",
    "received_at",
    "sent_at",
    "applied_configuration",
    "configuration_overrides",
    "content_hash",
    "last_modified",
    "tag",
    "api_version",
    "job_uid",
    "parent",
    "payload_valid_for",
    "cluster",
    # warm pools (schema version 7 in both stores)
    "warm",
    "attempt",
    "lease_holder",
    "lease_expires",
)
COLUMN_LIST = ", ".join(COLUMNS)
#: The idempotency key a request's first run holds (schema version 6 in both stores): written
#: by the run's insert, read only by `by_idempotency_key`, so not part of the `Checkpoint`.
KEY_COLUMNS = ("idempotency_key", "idempotency_fingerprint", "idempotency_answer")
#: The columns a new run's checkpoint row is inserted with.
INSERT_COLUMN_LIST = ", ".join((*COLUMNS, *KEY_COLUMNS))
#: The name of the unique index over `(algorithm, idempotency_key)` (non-empty keys only).
KEY_INDEX = "checkpoints_idempotency_key"
#: The holder of a key: a point read of that index, whose WHERE (`<> ''`) it repeats so the
#: planner may use it (`{mark}` is the driver's placeholder).
KEY_QUERY = (
    "SELECT id, idempotency_fingerprint, idempotency_answer FROM checkpoints "
    "WHERE algorithm = {mark} AND idempotency_key = {mark} AND idempotency_key <> ''"
)
#: The stages of a run still under way, and the WHERE term of the partial index over them
#: (`checkpoints_live_modified`, schema version 5 in both stores). Spelled out: the index is
#: released schema, and a query can use it only when its own WHERE repeats this term exactly
#: (SQLite matches the text; PostgreSQL must prove it at plan time, so never as a parameter).
LIVE_STAGES = frozenset({Stage.NEW, Stage.BUFFERED, Stage.RUNNING})
LIVE_CONDITION = "lifecycle_stage IN ('NEW', 'BUFFERED', 'RUNNING')"
#: The WHERE terms of the lease indexes (schema version 7 in both stores): `checkpoints_leases`
#: and `checkpoints_lease_holder` hold leased runs only, `checkpoints_warm_waiting` the BUFFERED
#: warm runs. A query repeats them exactly, so the planner may use the partial index.
LEASED_CONDITION = "lease_holder <> ''"
WAITING_CONDITION = "warm AND lifecycle_stage = 'BUFFERED'"
#: The columns of a `HeldLease`, in its field order.
LEASE_COLUMN_LIST = "algorithm, id, attempt, lease_holder, lease_expires"
#: The warm-pool reads; `{source}` is the table read through the query's partial index
#: (`SqlReads.SOURCE`), `{mark}` the driver's placeholder, `{order}` its `KEY_ORDER` over the
#: query's time column.
EXPIRED_LEASES_QUERY = (
    f"SELECT {LEASE_COLUMN_LIST} FROM {{source}} WHERE {LEASED_CONDITION} "
    "AND lease_expires < {mark} AND lifecycle_stage = 'RUNNING' ORDER BY {order} LIMIT {mark}"
)
LEASES_OF_QUERY = (
    f"SELECT {LEASE_COLUMN_LIST} FROM {{source}} WHERE {LEASED_CONDITION} "
    "AND lease_holder = {mark} AND lifecycle_stage = 'RUNNING' ORDER BY {order} LIMIT {mark}"
)
WAITING_QUERY = (
    f"SELECT {COLUMN_LIST} FROM {{source}} WHERE {WAITING_CONDITION} "
    "AND algorithm = {mark} AND last_modified < {mark} ORDER BY {order} LIMIT {mark}"
)
#: What to do when a host name is taken (the end of `hold_identity`'s message).
IDENTITY_HINT = (
    "two live processes under one name would both take its runs; give each process its own "
    "node.host_name (NEXUS__NODE__HOST_NAME), or stop the other one"
)


def heartbeat_row(queues: QueueReport | None) -> tuple[Any, Any, Any]:
    """The queue report's columns `(queued, oldest_queued_age, last_taken_age)`."""
    if queues is None:
        return (None, None, None)
    return (queues.queued, queues.oldest_queued_age, queues.last_taken_age)


def key_row(idempotency: IdempotencyKey | None) -> tuple[str, str, Any]:
    """A new run's `KEY_COLUMNS` values, the answer still a Python value ('' = no key)."""
    if idempotency is None:
        return ("", "", None)
    return (idempotency.key, idempotency.fingerprint, idempotency.answer)


class SqlReads:
    """Mixin: `heartbeats`, `heartbeat_reports`, `get`, `get_submission`,
    `pending_submission`, `get_payload`, `by_tag`, `by_host_and_stage`,
    `by_idempotency_key`, and the warm-pool reads `expired_leases`, `leases_of`, `waiting`
    over `_select`."""

    #: the driver's placeholder
    MARK: ClassVar[str]
    #: how a (time, algorithm, id) key orders, in code-point order like Python's
    KEY_ORDER: ClassVar[str]
    #: `checkpoints` read through the partial index `{index}` (SQLite's planner, without
    #: statistics, prefers the stage index unless told)
    SOURCE: ClassVar[str] = "checkpoints"

    @staticmethod
    def _decode_checkpoint(row: Sequence[Any]) -> Checkpoint:
        raise NotImplementedError

    @staticmethod
    def _decode_submission(row: Sequence[Any]) -> SubmissionEntry:
        raise NotImplementedError

    @staticmethod
    def _decode_time(value: Any) -> dt.datetime:
        raise NotImplementedError

    @staticmethod
    def _decode_json(value: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def _encode_time(value: dt.datetime) -> Any:
        raise NotImplementedError

    async def _select(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def heartbeats(self) -> dict[str, dt.datetime]:
        rows = await self._select("SELECT host, last_seen FROM scheduler_heartbeats", ())
        return {host: self._decode_time(last_seen) for host, last_seen in rows}

    async def heartbeat_reports(self) -> dict[str, Heartbeat]:
        rows = await self._select(
            "SELECT host, last_seen, queued, oldest_queued_age, last_taken_age "
            "FROM scheduler_heartbeats",
            (),
        )
        beats = {}
        for host, last_seen, queued, oldest, taken in rows:
            report = None
            if queued is not None:
                report = QueueReport(
                    queued=int(queued),
                    oldest_queued_age=float(oldest or 0.0),
                    last_taken_age=None if taken is None else float(taken),
                )
            beats[host] = Heartbeat(
                host=host, last_seen=self._decode_time(last_seen), queues=report
            )
        return beats

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint | None:
        rows = await self._select(
            f"SELECT {COLUMN_LIST} FROM checkpoints WHERE algorithm = {self.MARK} "
            f"AND id = {self.MARK}",
            (algorithm, request_id),
        )
        return self._decode_checkpoint(rows[0]) if rows else None

    async def by_idempotency_key(self, *, algorithm: str, key: str) -> KeyedRun | None:
        """A point read of the unique index (`key` is never empty: '' means "no key")."""
        if not key:
            return None
        rows = await self._select(KEY_QUERY.format(mark=self.MARK), (algorithm, key))
        if not rows:
            return None
        request_id, fingerprint, answer = rows[0]
        return KeyedRun(
            request_id=request_id,
            idempotency=IdempotencyKey(
                key=key,
                fingerprint=fingerprint,
                answer=None if answer is None else self._decode_json(answer),
            ),
        )

    async def get_submission(self, *, algorithm: str, request_id: str) -> SubmissionEntry | None:
        rows = await self._select(
            "SELECT algorithm, id, cluster, template FROM submission_buffer "
            f"WHERE algorithm = {self.MARK} AND id = {self.MARK}",
            (algorithm, request_id),
        )
        return self._decode_submission(rows[0]) if rows else None

    async def pending_submission(
        self, *, algorithm: str, request_id: str
    ) -> PendingSubmission | None:
        mark = self.MARK
        rows = await self._select(
            "SELECT c.lifecycle_stage, c.received_by_host, s.cluster, s.template "
            "FROM checkpoints c JOIN submission_buffer s ON s.algorithm = c.algorithm "
            f"AND s.id = c.id WHERE c.algorithm = {mark} AND c.id = {mark}",
            (algorithm, request_id),
        )
        if not rows:
            return None
        stage, host, cluster, template = rows[0]
        return PendingSubmission(
            stage=Stage(stage),
            received_by_host=host,
            cluster=cluster,
            template=self._decode_json(template),
        )

    async def get_payload(self, *, algorithm: str, request_id: str) -> bytes | None:
        rows = await self._select(
            f"SELECT data FROM payloads WHERE algorithm = {self.MARK} AND id = {self.MARK}",
            (algorithm, request_id),
        )
        return bytes(rows[0][0]) if rows else None

    async def by_tag(self, *, tag: str) -> list[Checkpoint]:
        rows = await self._select(
            f"SELECT {COLUMN_LIST} FROM checkpoints WHERE tag = {self.MARK} "
            "ORDER BY received_at, algorithm, id",
            (tag,),
        )
        return [self._decode_checkpoint(row) for row in rows]

    async def by_host_and_stage(
        self,
        *,
        host: str,
        stage: Stage,
        limit: int = DEFAULT_PAGE,
        after: HostCursor | None = None,
    ) -> list[Checkpoint]:
        mark = self.MARK
        conditions = f"received_by_host = {mark} AND lifecycle_stage = {mark}"
        params: tuple[Any, ...] = (host, str(Stage(stage)))
        if after is not None:
            check_aware("after.received_at", after.received_at)
            start = self._encode_time(after.received_at)
            # The plain bound lets the index range start at the cursor; the row value breaks
            # ties between runs received in the same microsecond.
            order = self.KEY_ORDER.format(time="received_at")
            conditions += f" AND received_at >= {mark} AND ({order}) > ({mark}, {mark}, {mark})"
            params += (start, start, after.algorithm, after.id)
        rows = await self._select(
            f"SELECT {COLUMN_LIST} FROM checkpoints WHERE {conditions} "
            f"ORDER BY {self.KEY_ORDER.format(time='received_at')} LIMIT {mark}",
            (*params, check_limit(limit)),
        )
        return [self._decode_checkpoint(row) for row in rows]

    async def expired_leases(
        self, *, before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[HeldLease]:
        """A range of `checkpoints_leases`, which holds only leased (so live) runs."""
        check_aware("before", before)
        order = self.KEY_ORDER.format(time="lease_expires")
        rows = await self._select(
            EXPIRED_LEASES_QUERY.format(
                source=self.SOURCE.format(index="checkpoints_leases"), mark=self.MARK, order=order
            ),
            (self._encode_time(before), check_limit(limit)),
        )
        return [self._held_lease(row) for row in rows]

    async def leases_of(self, *, holder: str, limit: int = DEFAULT_PAGE) -> list[HeldLease]:
        """A point range of `checkpoints_lease_holder` (a worker holds a handful)."""
        check_holder(holder)
        order = self.KEY_ORDER.format(time="lease_expires")
        rows = await self._select(
            LEASES_OF_QUERY.format(
                source=self.SOURCE.format(index="checkpoints_lease_holder"),
                mark=self.MARK,
                order=order,
            ),
            (holder, check_limit(limit)),
        )
        return [self._held_lease(row) for row in rows]

    async def waiting(
        self, *, algorithm: str, modified_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[Checkpoint]:
        """A range of `checkpoints_warm_waiting` (algorithm, then oldest first)."""
        check_aware("modified_before", modified_before)
        order = self.KEY_ORDER.format(time="last_modified")
        rows = await self._select(
            WAITING_QUERY.format(
                source=self.SOURCE.format(index="checkpoints_warm_waiting"),
                mark=self.MARK,
                order=order,
            ),
            (algorithm, self._encode_time(modified_before), check_limit(limit)),
        )
        return [self._decode_checkpoint(row) for row in rows]

    def _held_lease(self, row: Sequence[Any]) -> HeldLease:
        algorithm, request_id, attempt, holder, expires = row
        return HeldLease(
            algorithm=algorithm,
            request_id=request_id,
            attempt=int(attempt),
            holder=holder,
            expires=self._decode_time(expires),
        )
