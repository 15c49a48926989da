"""`SqliteCheckpointStore`: the default checkpoint store (single cluster, `nexusd dev`), on apsw.

Open it with ``async with open_sqlite_store(path=..., clock=...) as store`` or
``store = await SqliteCheckpointStore.open(...)`` followed by ``await store.aclose()``.

Writes go through one writer thread with group commit (`sqlite_writer`): many operations per
transaction, one fsync per batch, no thread hop per write on the trio side. A transition is ONE
conditional statement (``UPDATE ... WHERE ... AND lifecycle_stage IN (...)``, reading the stage
back only when it did not apply), so the compare-and-set is atomic even against other processes
sharing the file; so is a `claim`
(``UPDATE ... WHERE lifecycle_stage = 'BUFFERED' AND received_by_host = ?``). A `purge` is one
writer operation (one savepoint): the runs and their submission entries go together; so is a
rate-budget grant (sqlite_budgets.py: read, refill, write back under the write lock), and so
are the warm pools' `lease`, `renew` and `requeue` (sqlite_leases.py: one conditional UPDATE per
run, all of a call in one savepoint). Reads run
in trio worker threads on a small pool of read-only connections; with WAL they never wait for the
writer and always see every commit that finished before they started.

Durability (`synchronous`):

- ``"FULL"`` (default): the WAL is fsynced at every commit. When `create` returns, the run
  survives a power loss. This is what "durable before 202" needs, and group commit pays the
  fsync once per batch, not once per run.
- ``"NORMAL"``: the WAL is fsynced only at checkpoints. A crash of nexusd loses nothing
  (the commit is in the OS page cache), and the database is never corrupted, but a power loss
  or kernel crash can lose the last commits, i.e. runs already answered with 202. Use it only
  where the host cannot lose power independently of its disk (or for benchmarks).
"""

from __future__ import annotations

import functools
import json
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import apsw
import trio

from nexusd.core import metrics
from nexusd.core.errors import AlreadyExists, NotFound, StoreError
from nexusd.core.lifecycle import TERMINAL, Stage
from nexusd.core.records import NewRun, Transition
from nexusd.stores.checkpoints import DEFAULT_PAGE, OPERATIONS, KeyTaken
from nexusd.stores.locking import FileLock, take_lock
from nexusd.stores.sql_reads import (
    COLUMN_LIST,
    COLUMNS,
    IDENTITY_HINT,
    INSERT_COLUMN_LIST,
    KEY_COLUMNS,
    LIVE_CONDITION,
    LIVE_STAGES,
    SqlReads,
    heartbeat_row,
    key_row,
)
from nexusd.stores.sqlite_budgets import SqliteBudgets
from nexusd.stores.sqlite_leases import SqliteLeases
from nexusd.stores.sqlite_schema import (
    decode_checkpoint,
    decode_submission,
    decode_time,
    encode_checkpoint,
    encode_json,
    encode_submission,
    encode_time,
    encode_value,
    migrate,
)
from nexusd.stores.sqlite_writer import GroupCommitWriter, WriterStatistics, translate
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

Synchronous = Literal["NORMAL", "FULL"]

#: Operations committed per transaction at most: large enough to amortise the fsync under a
#: burst, small enough that one transaction stays short (the WAL grows by a batch at a time).
DEFAULT_BATCH_SIZE = 256
#: Read connections (and read threads) at most; reads are short point or index lookups.
DEFAULT_READERS = 4
#: How long a connection waits for another process's lock before failing (milliseconds).
BUSY_TIMEOUT_MS = 5_000

_INSERT_CHECKPOINT = (
    f"INSERT INTO checkpoints ({INSERT_COLUMN_LIST}) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + len(KEY_COLUMNS)))})"
)
# The run's key was just inserted into `checkpoints`, so any row here is a stale leftover.
_INSERT_SUBMISSION = (
    "INSERT OR REPLACE INTO submission_buffer (algorithm, id, cluster, template) "
    "VALUES (?, ?, ?, ?)"
)
_INSERT_PAYLOAD = (
    "INSERT OR REPLACE INTO payloads (algorithm, id, written_at, data) VALUES (?, ?, ?, ?)"
)
_SELECT_STAGE = "SELECT lifecycle_stage FROM checkpoints WHERE algorithm = ? AND id = ?"
_UPSERT_HEARTBEAT = (
    "INSERT INTO scheduler_heartbeats (host, last_seen, queued, oldest_queued_age, "
    "last_taken_age) VALUES (?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET "
    "last_seen = excluded.last_seen, queued = excluded.queued, "
    "oldest_queued_age = excluded.oldest_queued_age, last_taken_age = excluded.last_taken_age"
)
_FORGET_HEARTBEATS = "DELETE FROM scheduler_heartbeats WHERE last_seen < ?"
# The compare-and-set of a claim: one statement, so also atomic against other processes.
_CLAIM = (
    "UPDATE checkpoints SET received_by_host = ?, last_modified = ? "
    "WHERE algorithm = ? AND id = ? AND lifecycle_stage = ? AND received_by_host = ? "
    f"RETURNING {COLUMN_LIST}"
)
_TERMINAL = sorted(str(stage) for stage in TERMINAL)
# Oldest first through the (lifecycle_stage, last_modified) index; the row-value IN deletes
# exactly the rows the subquery picked.
_PURGE = (
    "DELETE FROM checkpoints WHERE (algorithm, id) IN ("
    "SELECT algorithm, id FROM checkpoints "
    f"WHERE lifecycle_stage IN ({', '.join('?' * len(_TERMINAL))}) AND last_modified < ? "
    "ORDER BY last_modified, algorithm, id LIMIT ?) RETURNING algorithm, id"
)
_DELETE_SUBMISSION = "DELETE FROM submission_buffer WHERE algorithm = ? AND id = ?"
_DELETE_PAYLOAD = "DELETE FROM payloads WHERE algorithm = ? AND id = ?"
_PURGE_PAYLOADS = (
    "DELETE FROM payloads WHERE rowid IN (SELECT rowid FROM payloads WHERE written_at < ? "
    "ORDER BY written_at LIMIT ?)"
)


def _encode_new_run(
    run: NewRun,
) -> tuple[tuple[Any, ...], tuple[Any, ...] | None, tuple[Any, ...] | None]:
    """The rows of one new run, encoded before they reach the writer thread."""
    checkpoint = run.checkpoint
    check_submission(checkpoint, run.submission)
    entry = None if run.submission is None else encode_submission(run.submission)
    payload = None
    if run.payload is not None:
        written = encode_time(checkpoint.received_at)
        payload = (checkpoint.algorithm, checkpoint.id, written, run.payload)
    key, fingerprint, answer = key_row(run.idempotency)
    row = (
        *encode_checkpoint(checkpoint),
        key,
        fingerprint,
        None if answer is None else encode_json(answer),
    )
    return row, entry, payload


def _open_writer(path: Path, synchronous: Synchronous) -> apsw.Connection:
    """Open the write connection: WAL, the chosen sync level, schema up to date."""
    connection = apsw.Connection(str(path))
    try:
        connection.setbusytimeout(BUSY_TIMEOUT_MS)
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        connection.execute(f"PRAGMA synchronous = {synchronous}")  # validated Literal
        migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection


class _ReadPool:
    """Read-only connections, each used by one worker thread at a time."""

    def __init__(self, *, path: Path, size: int) -> None:
        self._path = path
        self._limiter = trio.CapacityLimiter(size)
        self._lock = threading.Lock()
        self._idle: list[apsw.Connection] = []
        self._opened: list[apsw.Connection] = []
        self._closed = False

    async def run(self, fn: Callable[[apsw.Connection], Any]) -> Any:
        if self._closed:
            raise StoreError("the SQLite store is closed")
        return await trio.to_thread.run_sync(self._run, fn, limiter=self._limiter)

    def _run(self, fn: Callable[[apsw.Connection], Any]) -> Any:
        connection = self._take()
        try:
            return fn(connection)
        except apsw.Error as exc:
            raise translate(exc) from exc
        finally:
            with self._lock:
                self._idle.append(connection)

    def _take(self) -> apsw.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            connection = apsw.Connection(str(self._path), flags=apsw.SQLITE_OPEN_READONLY)
            connection.setbusytimeout(BUSY_TIMEOUT_MS)
        except apsw.Error as exc:
            raise translate(exc) from exc
        with self._lock:
            self._opened.append(connection)
        return connection

    async def aclose(self) -> None:
        """Close every connection, once no read is running (the limiter is drained)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            for _ in range(int(self._limiter.total_tokens)):
                await self._limiter.acquire_on_behalf_of(object())
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()
            self._idle.clear()


class SqliteCheckpointStore(SqliteLeases, SqliteBudgets, SqlReads):
    """The `CheckpointStore` protocol on one SQLite file. Build it with `open`."""

    MARK = "?"
    KEY_ORDER = "{time}, algorithm, id"
    SOURCE = "checkpoints INDEXED BY {index}"
    _decode_checkpoint = staticmethod(decode_checkpoint)
    _decode_submission = staticmethod(decode_submission)

    @staticmethod
    def _decode_json(value: Any) -> Any:
        return json.loads(value)  # JSON columns are text

    _encode_time = staticmethod(encode_time)

    @staticmethod
    def _decode_time(value: Any) -> dt.datetime:
        return decode_time(str(value))  # stored as ISO-8601 text

    def __init__(
        self, *, clock: Clock, writer: GroupCommitWriter, readers: _ReadPool, path: Path
    ) -> None:
        self._clock = clock
        self._writer = writer
        self._readers = readers
        self._locks: list[FileLock] = []
        self.path = path
        metrics.time_operations(self, OPERATIONS)

    @classmethod
    async def open(
        cls,
        *,
        path: Path | str,
        clock: Clock,
        synchronous: Synchronous = "FULL",
        batch_size: int = DEFAULT_BATCH_SIZE,
        readers: int = DEFAULT_READERS,
    ) -> SqliteCheckpointStore:
        """Open (creating or migrating) the database at `path` and start its writer thread."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if readers < 1:
            raise ValueError(f"readers must be at least 1, not {readers}")
        path = Path(path)
        try:
            connection = await trio.to_thread.run_sync(_open_writer, path, synchronous)
        except apsw.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        writer = GroupCommitWriter(
            connection=connection, batch_size=batch_size, name=f"nexusd-sqlite-writer:{path}"
        )
        writer.start()
        return cls(
            clock=clock, writer=writer, readers=_ReadPool(path=path, size=readers), path=path
        )

    async def hold_identity(self, *, host: str, holder: str) -> None:
        """A lock file per host name beside the database: every process sharing the file is
        on this machine, so the kernel's `flock` is the whole arbiter."""
        path = self.path.with_name(f"{self.path.name}.hosts") / f"{quote(host, safe='')}.lock"
        lock = await trio.to_thread.run_sync(
            functools.partial(
                take_lock,
                path,
                holder=holder,
                what=f"node.host_name {host!r}",
                hint=IDENTITY_HINT,
            )
        )
        self._locks.append(lock)

    async def aclose(self) -> None:
        """Commit every queued write, stop the writer thread, close all connections."""
        await self._writer.aclose()
        await self._readers.aclose()
        for lock in self._locks:
            lock.release()

    async def __aenter__(self) -> SqliteCheckpointStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> WriterStatistics:
        """Counters of the writer: commits, operations, batch sizes, queue depth."""
        return self._writer.statistics()

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
        """One writer operation, so one savepoint: all the runs are stored, or none."""
        rows = [_encode_new_run(run) for run in runs]

        def insert(connection: apsw.Connection) -> None:
            for checkpoint, entry, payload in rows:
                try:
                    connection.execute(_INSERT_CHECKPOINT, checkpoint)
                except apsw.ConstraintError as exc:
                    # The primary key is the run's id; the one other unique index, the key.
                    # (`extendedresult` is documented, not in the stubs.)
                    if getattr(exc, "extendedresult", None) == apsw.SQLITE_CONSTRAINT_UNIQUE:
                        raise KeyTaken(
                            f"idempotency key {checkpoint[len(COLUMNS)]!r} of {checkpoint[0]} "
                            "is taken"
                        ) from None
                    raise AlreadyExists(
                        f"run {checkpoint[0]}/{checkpoint[1]} already exists"
                    ) from None
                if entry is not None:
                    connection.execute(_INSERT_SUBMISSION, entry)
                if payload is not None:
                    connection.execute(_INSERT_PAYLOAD, payload)

        await self._writer.run(insert)

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
        sources = sorted(allowed_sources(target, expected))
        assignments = {"lifecycle_stage": str(target), "last_modified": self._clock.now()}
        assignments |= fields
        if target.is_terminal:  # a finished run holds no lease
            assignments |= {"lease_holder": "", "lease_expires": None}
        # Column names come from MUTABLE_FIELDS (checked above), never from the caller.
        sets = ", ".join(f"{name} = ?" for name in assignments)
        marks = ", ".join("?" * len(sources))
        update = (
            f"UPDATE checkpoints SET {sets} WHERE algorithm = ? AND id = ? "
            f"AND lifecycle_stage IN ({marks})"
        )
        bindings: tuple[Any, ...] = (
            *(encode_value(name, value) for name, value in assignments.items()),
            algorithm,
            request_id,
            *(str(stage) for stage in sources),
        )
        if attempt is not None:
            update += " AND attempt = ?"
            bindings += (check_attempt(attempt),)

        def apply(connection: apsw.Connection) -> Transition:
            if sources:
                connection.execute(update, bindings)
                if connection.changes():
                    return Transition(applied=True, stage=target)
            current = connection.execute(_SELECT_STAGE, (algorithm, request_id)).fetchall()
            if not current:
                raise NotFound(f"no run {algorithm}/{request_id}")
            return Transition(applied=False, stage=Stage(str(current[0][0])))

        result: Transition = await self._writer.run(apply)
        return result

    async def update_tag(self, *, algorithm: str, request_id: str, tag: str) -> Checkpoint | None:
        update = (
            "UPDATE checkpoints SET tag = ?, last_modified = ? WHERE algorithm = ? AND id = ? "
            f"RETURNING {COLUMN_LIST}"
        )
        bindings = (tag, encode_time(self._clock.now()), algorithm, request_id)

        def apply(connection: apsw.Connection) -> Checkpoint | None:
            rows = connection.execute(update, bindings).fetchall()
            return decode_checkpoint(rows[0]) if rows else None

        result: Checkpoint | None = await self._writer.run(apply)
        return result

    async def record_heartbeat(
        self, *, host: str, at: dt.datetime, queues: QueueReport | None = None
    ) -> None:
        check_aware("at", at)
        check_queue_report(queues)
        bindings = (host, encode_time(at), *heartbeat_row(queues))

        def upsert(connection: apsw.Connection) -> None:
            connection.execute(_UPSERT_HEARTBEAT, bindings)

        await self._writer.run(upsert)

    async def forget_heartbeats(self, *, seen_before: dt.datetime) -> int:
        check_aware("seen_before", seen_before)
        bindings = (encode_time(seen_before),)

        def delete(connection: apsw.Connection) -> int:
            connection.execute(_FORGET_HEARTBEATS, bindings)
            return int(connection.changes())

        deleted: int = await self._writer.run(delete)
        return deleted

    async def claim(
        self, *, algorithm: str, request_id: str, from_host: str, to_host: str
    ) -> Checkpoint | None:
        check_claim(from_host, to_host)
        bindings = (
            to_host,
            encode_time(self._clock.now()),
            algorithm,
            request_id,
            str(Stage.BUFFERED),
            from_host,
        )

        def apply(connection: apsw.Connection) -> Checkpoint | None:
            rows = connection.execute(_CLAIM, bindings).fetchall()
            return decode_checkpoint(rows[0]) if rows else None

        result: Checkpoint | None = await self._writer.run(apply)
        return result

    async def purge(
        self, *, finished_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> list[tuple[str, str]]:
        """One writer operation (one savepoint): the runs and their entries go together."""
        check_aware("finished_before", finished_before)
        bindings = (*_TERMINAL, encode_time(finished_before), check_limit(limit))

        def delete(connection: apsw.Connection) -> list[tuple[str, str]]:
            keys = [(str(a), str(i)) for a, i in connection.execute(_PURGE, bindings).fetchall()]
            if keys:
                connection.executemany(_DELETE_SUBMISSION, keys)
                connection.executemany(_DELETE_PAYLOAD, keys)
            return sorted(keys)

        result: list[tuple[str, str]] = await self._writer.run(delete)
        return result

    async def purge_payloads(
        self, *, written_before: dt.datetime, limit: int = DEFAULT_PAGE
    ) -> int:
        check_aware("written_before", written_before)
        bindings = (encode_time(written_before), check_limit(limit))

        def delete(connection: apsw.Connection) -> int:
            connection.execute(_PURGE_PAYLOADS, bindings)
            return int(connection.changes())

        deleted: int = await self._writer.run(delete)
        return deleted

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
        wanted = {Stage(stage) for stage in stages}
        if not wanted:
            return []
        if after is not None:
            check_aware("after.last_modified", after.last_modified)
        bindings: list[Any] = [*sorted(map(str, wanted)), encode_time(modified_before)]
        if after is not None:
            start = encode_time(after.last_modified)
            bindings += [start, start, after.algorithm, after.id]
        rows = await self._select(
            stale_query(wanted, resumed=after is not None), (*bindings, limit)
        )
        return [decode_checkpoint(row) for row in rows]

    async def _select(self, sql: str, bindings: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def query(connection: apsw.Connection) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in connection.execute(sql, bindings)]

        rows: list[tuple[Any, ...]] = await self._readers.run(query)
        return rows


def stale_query(stages: Collection[Stage], *, resumed: bool) -> str:
    """The `stale` SELECT for `stages` (bound in sorted order), resumed after a cursor or not.

    Non-terminal stages only (every sweep of the maintainer) read `checkpoints_live_modified`,
    which holds those rows in the scan's order: a page is a range of the index, with no
    temporary B-tree sorting every live run first. INDEXED BY pins that plan (the planner
    would otherwise pick the `(lifecycle_stage, last_modified)` index and sort); the repeated
    `LIVE_CONDITION` is what makes the partial index usable. Other stage sets (purge-like
    scans over terminal runs) go through the `(lifecycle_stage, last_modified)` index.
    """
    marks = ", ".join("?" * len(stages))
    conditions = [f"lifecycle_stage IN ({marks})", "last_modified < ?"]
    source = "checkpoints"
    if set(stages) <= LIVE_STAGES:
        source = "checkpoints INDEXED BY checkpoints_live_modified"
        conditions.insert(0, LIVE_CONDITION)
    if resumed:
        # The plain bound lets the index range start at the cursor; the row value breaks
        # ties between runs modified in the same microsecond.
        conditions += ["last_modified >= ?", "(last_modified, algorithm, id) > (?, ?, ?)"]
    return (
        f"SELECT {COLUMN_LIST} FROM {source} WHERE {' AND '.join(conditions)} "
        "ORDER BY last_modified, algorithm, id LIMIT ?"
    )


@asynccontextmanager
async def open_sqlite_store(
    *,
    path: Path | str,
    clock: Clock,
    synchronous: Synchronous = "FULL",
    batch_size: int = DEFAULT_BATCH_SIZE,
    readers: int = DEFAULT_READERS,
) -> AsyncIterator[SqliteCheckpointStore]:
    """`SqliteCheckpointStore.open` as an async context manager that always closes the store."""
    store = await SqliteCheckpointStore.open(
        path=path, clock=clock, synchronous=synchronous, batch_size=batch_size, readers=readers
    )
    try:
        yield store
    finally:
        await store.aclose()


if TYPE_CHECKING:
    from nexusd.stores.checkpoints import CheckpointStore

    def _conforms(store: SqliteCheckpointStore) -> CheckpointStore:
        return store  # mypy checks the protocol here
