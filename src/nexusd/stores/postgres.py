"""`PostgresCheckpointStore`: the shared checkpoint store for several schedulers (psycopg 3, sync).

Open it with ``async with open_postgres_store(dsn=..., clock=...) as store`` or
``store = await PostgresCheckpointStore.open(...)`` followed by ``await store.aclose()``.

Flow of one call::

    trio task --to_thread.run_sync(limiter = pool max_size)--> worker thread
                                                               pool.connection() (autocommit)
                                                               ONE write statement (+ a read)
    trio task <----------------- result ----------------------

psycopg's async API needs asyncio, so synchronous connections from a
`psycopg_pool.ConnectionPool` run in trio worker threads; a `trio.CapacityLimiter` sized to the
pool keeps threads from queueing for connections (postgres_running.py runs and counts the calls).
Every write is ONE autocommitted statement or transaction:

- `create_many` (and `create`): the runs, their manifests and inline payloads in ONE
  transaction, its statements pipelined (one round trip), so they are stored together or not at
  all; a duplicate key is `AlreadyExists`, a taken idempotency key (the unique index
  `checkpoints_idempotency_key`) `KeyTaken`.
- `transition`: ``UPDATE ... WHERE algorithm = %s AND id = %s AND lifecycle_stage = ANY(%s)``:
  a compare-and-set the server applies atomically under its row lock, also across processes.
  Only when it matched no row does a second (read) statement tell "unknown run" (`NotFound`)
  from "refused" (`applied=False` with the stage as now committed).
- `grant_tokens`, `cut_rate`: one call of a server-side function (postgres_budgets.py).
- `lease`, `renew`, `requeue` (warm pools, postgres_leases.py): one statement each over all the
  runs of the call, locking rows in key order, so concurrent leases neither both win nor
  deadlock (`renew` adds a read of the refused runs' stages in the same transaction).

Cancellation (a trio cancel scope around any call):

- not yet running (waiting for a thread or a connection): the statement is never sent.
- running: the trio side sends a PostgreSQL cancel request (`Connection.cancel_safe`) and waits,
  shielded, up to `CANCEL_GRACE_S` for the thread to finish. The connection is then closed
  rather than reused, so a late cancel can never hit another caller's statement.

  - If the server cancelled the statement, it was rolled back: the call raises `trio.Cancelled`
    and NOTHING was written.
  - If the statement had already finished (the cancel arrived too late), the write IS applied
    and the call returns its result normally; the enclosing scope raises `Cancelled` at its next
    checkpoint.

  So a `Cancelled` out of a write means "not applied". The one exception: if the server does not
  answer within `CANCEL_GRACE_S` (network partition), the call stops waiting and raises
  `Cancelled` with the outcome unknown (counted in `statistics().abandoned`); re-read the run.

Schema: `open` refuses a database whose schema is missing or older than this code, telling the
operator to run ``nexusd store migrate`` (or ``nexusd store init`` on a new database); pass
`migrate=True` (dev, tests) to migrate instead. `init_schema` and `migrate` are what the CLI calls.

Errors: psycopg errors become `StoreError` (`AlreadyExists` for a duplicate run). Messages name
host, port, database and user, never the password.
"""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import trio
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from nexusd.core import metrics
from nexusd.core.errors import AlreadyExists, NotFound, StoreError
from nexusd.core.lifecycle import TERMINAL, Stage
from nexusd.core.records import NewRun, Transition
from nexusd.stores.checkpoints import DEFAULT_PAGE, OPERATIONS, KeyTaken
from nexusd.stores.postgres_admin import (
    CONNECT_TIMEOUT_S,
    Connection,
    check_schema,
    describe_dsn,
    translate,
)
from nexusd.stores.postgres_budgets import PostgresBudgets
from nexusd.stores.postgres_identity import lock_identity
from nexusd.stores.postgres_leases import PostgresLeases
from nexusd.stores.postgres_running import CallRunner, PostgresStatistics
from nexusd.stores.postgres_schema import (
    decode_checkpoint,
    decode_submission,
    decode_time,
    encode_checkpoint,
    encode_json,
    encode_submission,
    encode_value,
)
from nexusd.stores.sql_reads import (
    COLUMN_LIST,
    COLUMNS,
    IDENTITY_HINT,
    INSERT_COLUMN_LIST,
    KEY_COLUMNS,
    KEY_INDEX,
    LIVE_CONDITION,
    LIVE_STAGES,
    SqlReads,
    heartbeat_row,
    key_row,
)
from nexusd.stores.validation import (
    allowed_sources,
    check_attempt,
    check_aware,
    check_changes,
    check_claim,
    check_limit,
    check_queue_report,
    check_submission,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator, Callable, Collection, Sequence

    from nexusd.core.clock import Clock
    from nexusd.core.records import Checkpoint, SubmissionEntry
    from nexusd.stores.checkpoints import QueueReport, StaleCursor

_T = TypeVar("_T")

#: Connections kept open while idle, and the most the pool opens (= concurrent statements).
DEFAULT_MIN_SIZE = 2
DEFAULT_MAX_SIZE = 16
#: Seconds a call waits for a free connection before failing with StoreError.
DEFAULT_POOL_TIMEOUT_S = 30.0

_INSERT_CHECKPOINT = (
    f"INSERT INTO checkpoints ({INSERT_COLUMN_LIST}) "
    f"VALUES ({', '.join(['%s'] * (len(COLUMNS) + len(KEY_COLUMNS)))})"
)
# The run's key was just inserted into `checkpoints`, so a row here can only be a leftover.
_INSERT_SUBMISSION = (
    "INSERT INTO submission_buffer (algorithm, id, cluster, template) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (algorithm, id) DO UPDATE "
    "SET cluster = EXCLUDED.cluster, template = EXCLUDED.template"
)
_INSERT_PAYLOAD = (
    "INSERT INTO payloads (algorithm, id, written_at, data) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (algorithm, id) DO UPDATE SET written_at = EXCLUDED.written_at, data = "
    "EXCLUDED.data"
)
_SELECT_STAGE = "SELECT lifecycle_stage FROM checkpoints WHERE algorithm = %s AND id = %s"
_UPSERT_HEARTBEAT = (
    "INSERT INTO scheduler_heartbeats (host, last_seen, queued, oldest_queued_age, "
    "last_taken_age) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (host) DO UPDATE SET "
    "last_seen = EXCLUDED.last_seen, queued = EXCLUDED.queued, "
    "oldest_queued_age = EXCLUDED.oldest_queued_age, last_taken_age = EXCLUDED.last_taken_age"
)
_FORGET_HEARTBEATS = "DELETE FROM scheduler_heartbeats WHERE last_seen < %s"
# A concurrent claim waits for the row lock, then re-checks the WHERE on the committed row
# (READ COMMITTED): the host has changed, so it matches nothing. Exactly one claim applies.
_CLAIM = (
    "UPDATE checkpoints SET received_by_host = %s, last_modified = %s "
    "WHERE algorithm = %s AND id = %s AND lifecycle_stage = %s AND received_by_host = %s "
    f"RETURNING {COLUMN_LIST}"
)
# Keys compare in code-point order (COLLATE "C"), as in SQLite and Python, whatever the
# database's collation: the cursor condition and the ORDER BY must agree.
_KEY_ORDER = '{time}, algorithm COLLATE "C", id COLLATE "C"'
_STALE_ORDER = _KEY_ORDER.format(time="last_modified")
# `{live}` is LIVE_CONDITION when every stage asked for is non-terminal: it lets the planner
# prove the partial index `checkpoints_live_modified` applies (a parameter cannot), and that
# index's columns are the ORDER BY's, collations included, so a page is an index range read.
_STALE = (
    f"SELECT {COLUMN_LIST} FROM checkpoints "
    "WHERE {live}lifecycle_stage = ANY(%s) AND last_modified < %s {after}"
    f"ORDER BY {_STALE_ORDER} LIMIT %s"
)
_STALE_AFTER = f"AND last_modified >= %s AND ({_STALE_ORDER}) > (%s, %s, %s) "
# One statement: pick, delete the runs, delete their entries. Rows another transaction holds
# (an update_tag) are skipped this round, not waited for.
_PURGE = (
    "WITH doomed AS (SELECT algorithm, id FROM checkpoints "
    "WHERE lifecycle_stage = ANY(%s) AND last_modified < %s "
    "ORDER BY last_modified LIMIT %s FOR UPDATE SKIP LOCKED), "
    "gone AS (DELETE FROM checkpoints c USING doomed d "
    "WHERE c.algorithm = d.algorithm AND c.id = d.id RETURNING c.algorithm, c.id), "
    "entries AS (DELETE FROM submission_buffer s USING gone g "
    "WHERE s.algorithm = g.algorithm AND s.id = g.id), "
    "payloads AS (DELETE FROM payloads p USING gone g "
    "WHERE p.algorithm = g.algorithm AND p.id = g.id) "
    "SELECT algorithm, id FROM gone"
)
_TERMINAL = sorted(str(stage) for stage in TERMINAL)
_PURGE_PAYLOADS = (
    "DELETE FROM payloads p USING (SELECT algorithm, id FROM payloads WHERE written_at < %s "
    "ORDER BY written_at LIMIT %s FOR UPDATE SKIP LOCKED) d "
    "WHERE p.algorithm = d.algorithm AND p.id = d.id"
)


@functools.lru_cache(maxsize=256)
def _update_statement(names: tuple[str, ...], *, of_attempt: bool) -> str:
    """The compare-and-set UPDATE setting `names` (the same text each time: server-prepared),
    also conditional on the run's attempt when `of_attempt`.

    Names are `lifecycle_stage`, `last_modified`, the lease columns and `MUTABLE_FIELDS`
    members (checked by `check_changes`), never caller text.
    """
    sets = ", ".join(f"{name} = %s" for name in names)
    return (
        f"UPDATE checkpoints SET {sets} WHERE algorithm = %s AND id = %s "
        "AND lifecycle_stage = ANY(%s)" + (" AND attempt = %s" if of_attempt else "")
    )


class PostgresCheckpointStore(PostgresLeases, PostgresBudgets, SqlReads):
    """The `CheckpointStore` protocol on PostgreSQL. Build it with `open`."""

    MARK = "%s"
    KEY_ORDER = _KEY_ORDER
    _decode_checkpoint = staticmethod(decode_checkpoint)
    _decode_submission = staticmethod(decode_submission)
    _decode_time = staticmethod(decode_time)

    @staticmethod
    def _decode_json(value: Any) -> Any:
        return value  # psycopg parses json columns

    @staticmethod
    def _encode_time(value: dt.datetime) -> Any:
        return value

    def __init__(self, *, clock: Clock, pool: ConnectionPool[Connection], dsn: str) -> None:
        self._clock = clock
        self._dsn = dsn
        self._calls = CallRunner(pool=pool, dsn=dsn)
        self._identities: list[Connection] = []
        #: `user@host:port/dbname`, safe to log
        self.where = self._calls.where
        metrics.time_operations(self, OPERATIONS)

    @classmethod
    async def open(
        cls,
        *,
        dsn: str,
        clock: Clock,
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
        migrate: bool = False,
    ) -> PostgresCheckpointStore:
        """Connect, check (or with `migrate=True`, bring up) the schema, and open the pool.

        Raises StoreError naming host, port, database and user (never the password) when the
        server cannot be reached or refuses the credentials, and when the schema is missing or
        not this code's version ("run `nexusd store migrate`").
        """
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"need 0 <= min_size <= max_size, max_size >= 1; got {min_size}, {max_size}"
            )
        await trio.to_thread.run_sync(lambda: check_schema(dsn, auto_migrate=migrate))
        pool: ConnectionPool[Connection] = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            timeout=pool_timeout,
            name=f"nexusd:{describe_dsn(dsn)}",
            open=False,
        )
        try:
            await trio.to_thread.run_sync(
                lambda: pool.open(wait=min_size > 0, timeout=pool_timeout)
            )
        except PoolTimeout as exc:
            await trio.to_thread.run_sync(pool.close)
            raise StoreError(
                f"cannot open {min_size} connections to PostgreSQL {describe_dsn(dsn)} "
                f"within {pool_timeout}s"
            ) from exc
        return cls(clock=clock, pool=pool, dsn=dsn)

    async def hold_identity(self, *, host: str, holder: str) -> None:
        """An advisory lock held by a session of its own (`postgres_identity`)."""
        try:
            session = await trio.to_thread.run_sync(
                functools.partial(
                    lock_identity,
                    self._dsn,
                    host=host,
                    holder=holder,
                    what=f"node.host_name {host!r}",
                    hint=IDENTITY_HINT,
                )
            )
        except psycopg.Error as exc:
            raise translate(exc, self._dsn) from None
        self._identities.append(session)

    async def aclose(self) -> None:
        """Wait for running calls (shielded), then close every connection (the identity
        sessions last: their names stay held until nothing of this store runs). Idempotent."""
        if self._calls.closed:
            return
        await self._calls.aclose()
        with trio.CancelScope(shield=True):
            for session in self._identities:
                await trio.to_thread.run_sync(session.close)

    async def __aenter__(self) -> PostgresCheckpointStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> PostgresStatistics:
        return self._calls.statistics()

    async def _run(self, fn: Callable[[Connection], _T]) -> _T:
        return await self._calls.run(fn)

    # --- writes --------------------------------------------------------------------------

    async def create(
        self,
        *,
        checkpoint: Checkpoint,
        submission: SubmissionEntry | None,
        payload: bytes | None = None,
    ) -> None:
        await self.create_many(
            runs=(NewRun(checkpoint=checkpoint, submission=submission, payload=payload),)
        )

    async def create_many(self, *, runs: Sequence[NewRun]) -> None:
        """One transaction, its statements pipelined: all the runs are stored, or none."""
        checkpoints, entries, payloads = [], [], []
        for run in runs:
            check_submission(run.checkpoint, run.submission)
            held, fingerprint, answer = key_row(run.idempotency)
            checkpoints.append(
                (*encode_checkpoint(run.checkpoint), held, fingerprint, encode_json(answer))
            )
            if run.submission is not None:
                entries.append(encode_submission(run.submission))
            if run.payload is not None:
                key = (run.checkpoint.algorithm, run.checkpoint.id)
                payloads.append((*key, run.checkpoint.received_at, run.payload))

        def insert(connection: Connection) -> None:
            try:
                with (
                    connection.pipeline(),
                    connection.transaction(),
                    connection.cursor() as cursor,
                ):
                    cursor.executemany(_INSERT_CHECKPOINT, checkpoints)
                    if entries:
                        cursor.executemany(_INSERT_SUBMISSION, entries)
                    if payloads:
                        cursor.executemany(_INSERT_PAYLOAD, payloads)
            except errors.UniqueViolation as exc:
                # A concurrent insert of the same key waited for the holder's transaction and
                # failed once it committed, so the holder is there for the next read.
                if exc.diag.constraint_name == KEY_INDEX:
                    raise KeyTaken(f"idempotency key taken: {exc.diag.message_detail}") from None
                raise AlreadyExists(f"a run already exists: {exc.diag.message_detail}") from None

        await self._run(insert)

    async def transition(
        self,
        *,
        algorithm: str,
        request_id: str,
        to: Stage,
        expected: Collection[Stage] | None = None,
        changes: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> Transition:
        fields = check_changes(changes)
        target = Stage(to)
        sources = sorted(str(stage) for stage in allowed_sources(target, expected))
        assignments = {"lifecycle_stage": str(target), "last_modified": self._clock.now()}
        assignments |= fields
        if target.is_terminal:  # a finished run holds no lease
            assignments |= {"lease_holder": "", "lease_expires": None}
        update = _update_statement(tuple(assignments), of_attempt=attempt is not None)
        params: tuple[Any, ...] = (
            *(encode_value(name, value) for name, value in assignments.items()),
            algorithm,
            request_id,
            sources,
        )
        if attempt is not None:
            params += (check_attempt(attempt),)

        def apply(connection: Connection) -> Transition:
            if sources and connection.execute(update, params).rowcount:
                return Transition(applied=True, stage=target)
            # A new statement, so a new snapshot: the run as committed now, after whichever
            # concurrent write made the compare-and-set fail.
            current = connection.execute(_SELECT_STAGE, (algorithm, request_id)).fetchone()
            if current is None:
                raise NotFound(f"no run {algorithm}/{request_id}")
            return Transition(applied=False, stage=Stage(str(current[0])))

        return await self._run(apply)

    async def update_tag(self, *, algorithm: str, request_id: str, tag: str) -> Checkpoint | None:
        update = (
            "UPDATE checkpoints SET tag = %s, last_modified = %s "
            f"WHERE algorithm = %s AND id = %s RETURNING {COLUMN_LIST}"
        )
        params = (tag, self._clock.now(), algorithm, request_id)

        def apply(connection: Connection) -> Checkpoint | None:
            row = connection.execute(update, params).fetchone()
            return None if row is None else decode_checkpoint(row)

        return await self._run(apply)

    async def record_heartbeat(
        self, *, host: str, at: dt.datetime, queues: QueueReport | None = None
    ) -> None:
        check_aware("at", at)
        check_queue_report(queues)
        params = (host, at, *heartbeat_row(queues))

        def upsert(connection: Connection) -> None:
            connection.execute(_UPSERT_HEARTBEAT, params)

        await self._run(upsert)

    async def forget_heartbeats(self, *, seen_before: dt.datetime) -> int:
        check_aware("seen_before", seen_before)

        def delete(connection: Connection) -> int:
            return int(connection.execute(_FORGET_HEARTBEATS, (seen_before,)).rowcount)

        return await self._run(delete)

    async def claim(
        self, *, algorithm: str, request_id: str, from_host: str, to_host: str
    ) -> Checkpoint | None:
        check_claim(from_host, to_host)
        params = (
            to_host,
            self._clock.now(),
            algorithm,
            request_id,
            str(Stage.BUFFERED),
            from_host,
        )

        def apply(connection: Connection) -> Checkpoint | None:
            row = connection.execute(_CLAIM, params).fetchone()
            return None if row is None else decode_checkpoint(row)

        return await self._run(apply)

    async def purge(
        self, *, finished_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[tuple[str, str]]:
        check_aware("finished_before", finished_before)
        params = (_TERMINAL, finished_before, check_limit(limit))

        def delete(connection: Connection) -> list[tuple[str, str]]:
            rows = connection.execute(_PURGE, params).fetchall()
            return sorted((str(algorithm), str(id_)) for algorithm, id_ in rows)

        return await self._run(delete)

    async def purge_payloads(
        self, *, written_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> int:
        check_aware("written_before", written_before)
        params = (written_before, check_limit(limit))

        def delete(connection: Connection) -> int:
            return int(connection.execute(_PURGE_PAYLOADS, params).rowcount)

        return await self._run(delete)

    # --- reads ---------------------------------------------------------------------------

    async def stale(
        self,
        *,
        stages: Collection[Stage],
        modified_before: dt.datetime,
        limit: int = DEFAULT_PAGE,
        after: StaleCursor | None = None,
    ) -> list[Checkpoint]:
        check_aware("modified_before", modified_before)
        check_limit(limit)
        stage_set = {Stage(stage) for stage in stages}
        if not stage_set:
            return []
        wanted = sorted(map(str, stage_set))
        params: tuple[Any, ...]
        if after is None:
            query = stale_query(stage_set, resumed=False)
            params = (wanted, modified_before, limit)
        else:
            check_aware("after.last_modified", after.last_modified)
            query = stale_query(stage_set, resumed=True)
            start = after.last_modified
            params = (wanted, modified_before, start, start, after.algorithm, after.id, limit)
        rows = await self._select(query, params)
        return [decode_checkpoint(row) for row in rows]

    async def _select(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def fetch(connection: Connection) -> list[tuple[Any, ...]]:
            return connection.execute(query, params).fetchall()

        return await self._run(fetch)


def stale_query(stages: Collection[Stage], *, resumed: bool) -> str:
    """The `stale` SELECT: through `checkpoints_live_modified` when `stages` are all live."""
    live = f"{LIVE_CONDITION} AND " if set(stages) <= LIVE_STAGES else ""
    return _STALE.format(live=live, after=_STALE_AFTER if resumed else "")


@asynccontextmanager
async def open_postgres_store(
    *,
    dsn: str,
    clock: Clock,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
    migrate: bool = False,
) -> AsyncIterator[PostgresCheckpointStore]:
    """`PostgresCheckpointStore.open` as an async context manager that always closes the store."""
    store = await PostgresCheckpointStore.open(
        dsn=dsn,
        clock=clock,
        min_size=min_size,
        max_size=max_size,
        pool_timeout=pool_timeout,
        migrate=migrate,
    )
    try:
        yield store
    finally:
        await store.aclose()


if TYPE_CHECKING:
    from nexusd.stores.checkpoints import CheckpointStore

    def _conforms(store: PostgresCheckpointStore) -> CheckpointStore:
        return store  # mypy checks the protocol here
