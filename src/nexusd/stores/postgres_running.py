"""Every call of one PostgreSQL store: run on its pool, counted, drained at close.

`CallRunner` runs each call as a `postgres_calls.Call` in a trio worker thread; a
`trio.CapacityLimiter` sized to the pool keeps threads from queueing for connections. A call
cancelled by trio is stopped on the server and its outcome settled here (postgres.py says what a
cancelled write means); the counters feed `statistics()`, which /readyz serves.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, TypeVar

import attrs
import outcome
import trio

from nexusd.core.errors import AlreadyExists, NotFound, StoreError
from nexusd.stores.postgres_admin import describe_dsn, translate
from nexusd.stores.postgres_calls import CANCEL_GRACE_S, Call

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg_pool import ConnectionPool

    from nexusd.stores.postgres_admin import Connection

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


@attrs.frozen
class PostgresStatistics:
    """A snapshot of the store's pool and counters (served by /readyz, printed by benchmarks)."""

    #: connections open now (idle or in use), and the pool's bounds
    pool_size: int
    pool_min: int
    pool_max: int
    #: idle connections ready for a call
    pool_available: int
    #: calls waiting inside the pool for a connection (normally 0: the limiter queues them)
    requests_waiting: int
    #: calls running in a worker thread right now
    in_flight: int
    #: calls that reached an outcome (result or error)
    operations: int
    #: calls that failed with a StoreError other than AlreadyExists / NotFound
    failures: int
    #: calls cancelled by trio (statement never sent, or cancelled on the server)
    cancelled: int
    #: cancelled calls whose statement the server did not confirm stopped in CANCEL_GRACE_S
    abandoned: int
    #: whether the store accepts calls
    open: bool


class CallRunner:
    """Runs the calls of one store on its pool, counts them, and drains them at close."""

    def __init__(self, *, pool: ConnectionPool[Connection], dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._limiter = trio.CapacityLimiter(pool.max_size)
        self._counts_lock = threading.Lock()
        self._operations = 0
        self._failures = 0
        self._cancelled = 0
        self._abandoned = 0
        self.closed = False
        #: `user@host:port/dbname`, safe to log
        self.where = describe_dsn(dsn)

    async def run(self, fn: Callable[[Connection], _T]) -> _T:
        """Run `fn(connection)` in a worker thread; see postgres.py on cancellation."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.closed:
            raise StoreError(f"the PostgreSQL store {self.where} is closed")
        call = Call(fn, self._pool)
        try:
            result = await trio.to_thread.run_sync(
                call.run, limiter=self._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled as cancelled:
            result = await self._settle_cancelled(call, cancelled)
        except Exception as exc:
            error = self._count_error(exc)
            raise error from error.__cause__
        self._count(operations=1)
        return result

    async def aclose(self) -> None:
        """Refuse new calls, wait (shielded) for the running ones, close the pool. Idempotent."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True):
            for _ in range(self._pool.max_size):
                await self._limiter.acquire_on_behalf_of(object())
            await trio.to_thread.run_sync(self._pool.close)

    def statistics(self) -> PostgresStatistics:
        pool = self._pool.get_stats()
        with self._counts_lock:
            return PostgresStatistics(
                pool_size=pool.get("pool_size", 0),
                pool_min=pool.get("pool_min", 0),
                pool_max=pool.get("pool_max", 0),
                pool_available=pool.get("pool_available", 0),
                requests_waiting=pool.get("requests_waiting", 0),
                in_flight=int(self._limiter.borrowed_tokens) if not self.closed else 0,
                operations=self._operations,
                failures=self._failures,
                cancelled=self._cancelled,
                abandoned=self._abandoned,
                open=not self.closed,
            )

    async def _settle_cancelled(self, call: Call[_T], cancelled: trio.Cancelled) -> _T:
        """The task was cancelled while `call` was pending or running: stop the statement."""
        if not call.request_cancel():
            self._count(cancelled=1)
            raise cancelled
        with trio.move_on_after(CANCEL_GRACE_S, shield=True) as waiting:
            await trio.to_thread.run_sync(call.send_cancel)
            await call.finished.wait()
        if waiting.cancelled_caught or call.result is None:
            self._count(cancelled=1, abandoned=1)
            logger.warning(
                "a cancelled PostgreSQL call on %s did not stop within %ss; its outcome is unknown",
                self.where,
                CANCEL_GRACE_S,
            )
            raise cancelled
        if isinstance(call.result, outcome.Value):
            self._count(operations=1)
            applied: _T = call.result.unwrap()  # finished before the cancel landed
            return applied
        self._count(cancelled=1)
        raise cancelled  # the statement failed or was cancelled: nothing applied

    def _count_error(self, exc: Exception) -> Exception:
        error = translate(exc, self._dsn)
        failed = isinstance(error, StoreError) and not isinstance(error, AlreadyExists | NotFound)
        self._count(operations=1, failures=int(failed))
        return error

    def _count(
        self, *, operations: int = 0, failures: int = 0, cancelled: int = 0, abandoned: int = 0
    ) -> None:
        with self._counts_lock:
            self._operations += operations
            self._failures += failures
            self._cancelled += cancelled
            self._abandoned += abandoned
