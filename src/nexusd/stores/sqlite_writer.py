"""Group commit: every write of a SQLite store runs on one dedicated OS thread, in batches.

Flow of one write::

    trio task --queue.put(op)--> writer thread: drain up to `batch_size` ops
                                 BEGIN IMMEDIATE
                                   SAVEPOINT op; op(connection); RELEASE      (for each op)
                                 COMMIT                                      (one fsync per batch)
    trio task <--run_sync_soon-- set each op's result and its trio.Event, once per batch

Why: SQLite has one writer at a time and a durable commit costs an fsync. Committing many
operations per transaction turns "one fsync per write" into "one fsync per batch", and while
one batch commits, the next one queues up. The trio side pays no thread hop per write: it puts
the operation on a `queue.SimpleQueue` (non-blocking) and waits on a `trio.Event`; the writer
wakes all the waiters of a batch with one `TrioToken.run_sync_soon` call.

Each operation runs inside its own SAVEPOINT, so an operation that raises (a duplicate key, a
run not found) is rolled back alone and its neighbours in the batch still commit. Results are
delivered only after COMMIT returns: a caller never hears "done" for a write that is not yet
committed. If the COMMIT itself fails, every operation of the batch gets the error.

Cancellation: an operation is queued the moment `run` is called (unless the task was already
cancelled). If the task is cancelled while waiting, the operation is NOT withdrawn: it is still
applied and committed, only its result is dropped. Callers must treat a cancelled write as
"may or may not have happened" and re-read; nothing is ever half-applied, because each
operation is all-or-nothing inside its savepoint.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import apsw
import attrs
import trio

from nexusd.core.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")
_STOP = object()


@attrs.frozen
class WriterStatistics:
    """A snapshot of the writer's counters (served by /readyz and printed by benchmarks)."""

    #: transactions committed (one per batch)
    commits: int
    #: operations that ran to an outcome, committed or rolled back to their savepoint
    operations: int
    #: operations that raised and were rolled back alone (AlreadyExists, NotFound ...)
    failed_operations: int
    #: batches whose BEGIN or COMMIT failed (every operation in them got the error)
    failed_commits: int
    #: the most operations committed in one transaction
    largest_batch: int
    #: operations queued and not yet delivered
    pending: int
    #: whether the writer thread is alive and accepting work
    running: bool


def translate(exc: Exception) -> Exception:
    """nexusd errors and bugs pass through; SQLite errors become `StoreError`."""
    if isinstance(exc, apsw.Error):
        error = StoreError(f"sqlite: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    return exc


class _BatchLost(Exception):
    """SQLite rolled back the whole batch transaction while running one operation."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Op(Generic[_T]):
    __slots__ = ("done", "error", "fn", "result", "token")

    def __init__(self, fn: Callable[[apsw.Connection], _T], token: trio.lowlevel.TrioToken):
        self.fn = fn
        self.token = token
        self.done = trio.Event()
        self.result: _T | None = None
        self.error: Exception | None = None


def _deliver(ops: list[_Op[Any]]) -> None:
    """Runs in the trio thread: wake every waiter of a batch."""
    for op in ops:
        op.done.set()


class GroupCommitWriter:
    """Owns one write connection and the thread that uses it. Start with `start()`."""

    def __init__(self, *, connection: apsw.Connection, batch_size: int, name: str) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self._connection = connection
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[_Op[Any] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._lock = threading.Lock()
        self._accepting = False
        self._commits = 0
        self._operations = 0
        self._failed_operations = 0
        self._failed_commits = 0
        self._largest_batch = 0
        self._pending = 0

    def start(self) -> None:
        self._accepting = True
        self._thread.start()

    async def run(self, fn: Callable[[apsw.Connection], _T]) -> _T:
        """Run `fn(connection)` in the next batch; return its result once committed.

        Raises what `fn` raised (SQLite errors as `StoreError`), or `StoreError` if the batch
        could not commit or the writer is closed. See the module docstring on cancellation.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._accepting:
            raise StoreError("the SQLite store is closed")
        op = _Op(fn, trio.lowlevel.current_trio_token())
        with self._lock:
            self._pending += 1
        self._queue.put(op)
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]  # set by fn unless error

    async def aclose(self) -> None:
        """Stop accepting writes, commit everything queued, stop the thread. Idempotent.

        Shielded: the queued writes were promised to their callers, so a cancelled shutdown
        still waits for them (and for the connection to close).
        """
        if self._accepting:
            self._accepting = False
            self._queue.put(_STOP)
        if self._thread.is_alive():
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._thread.join)

    def statistics(self) -> WriterStatistics:
        with self._lock:
            return WriterStatistics(
                commits=self._commits,
                operations=self._operations,
                failed_operations=self._failed_operations,
                failed_commits=self._failed_commits,
                largest_batch=self._largest_batch,
                pending=self._pending,
                running=self._accepting and self._thread.is_alive(),
            )

    # --- writer thread -------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._next_batch()
                if batch:
                    self._run_batch(batch)
        finally:
            self._accepting = False
            self._fail_leftovers()
            self._connection.close()

    def _next_batch(self) -> tuple[list[_Op[Any]], bool]:
        """Block for one operation, then take whatever else is queued, up to the cap."""
        batch: list[_Op[Any]] = []
        item = self._queue.get()
        while item is not _STOP:
            assert isinstance(item, _Op)
            batch.append(item)
            if len(batch) >= self._batch_size:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _run_batch(self, batch: list[_Op[Any]]) -> None:
        connection = self._connection
        failed = 0
        try:
            connection.execute("BEGIN IMMEDIATE")
            for op in batch:
                failed += self._run_one(op)
            connection.execute("COMMIT")
        except Exception as exc:  # BEGIN, a savepoint command or COMMIT failed
            self._abandon(batch, exc)
        else:
            with self._lock:
                self._commits += 1
                self._failed_operations += failed
                self._largest_batch = max(self._largest_batch, len(batch))
        self._finish(batch)

    def _run_one(self, op: _Op[Any]) -> int:
        """Run one operation in its own savepoint; return 1 if it failed (and was undone)."""
        connection = self._connection
        connection.execute("SAVEPOINT op")
        try:
            op.result = op.fn(connection)
        except Exception as exc:
            op.error = translate(exc)
            if not connection.in_transaction:
                # SQLite rolled back the whole transaction (I/O error, disk full...): the
                # operations before this one are gone too, so the batch fails as a whole.
                raise _BatchLost(op.error) from exc
            connection.execute("ROLLBACK TO op")
            connection.execute("RELEASE op")
            return 1
        connection.execute("RELEASE op")
        return 0

    def _abandon(self, batch: list[_Op[Any]], exc: Exception) -> None:
        """Nothing of the batch is durable: roll back and give every operation the error."""
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        except apsw.Error:
            pass  # the transaction is gone either way; the error below says why
        error = exc.error if isinstance(exc, _BatchLost) else translate(exc)
        if not isinstance(error, StoreError):
            error = StoreError(f"the batch this write was in failed: {error!r}")
            error.__cause__ = exc
        for op in batch:
            op.result, op.error = None, error
        with self._lock:
            self._failed_commits += 1

    def _finish(self, batch: list[_Op[Any]]) -> None:
        with self._lock:
            self._operations += len(batch)
            self._pending -= len(batch)
        by_token: dict[trio.lowlevel.TrioToken, list[_Op[Any]]] = {}
        for op in batch:
            by_token.setdefault(op.token, []).append(op)
        for token, ops in by_token.items():
            # If the trio run that asked is gone, the writes are committed all the same.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(_deliver, ops)

    def _fail_leftovers(self) -> None:
        """After the loop ended (normally or not), nobody may wait forever."""
        leftovers: list[_Op[Any]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Op):
                item.error = StoreError("the SQLite writer stopped before this write ran")
                leftovers.append(item)
        if leftovers:
            self._finish(leftovers)
