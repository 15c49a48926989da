"""One PostgreSQL store call in a worker thread, cancellable from trio.

On trio cancellation the statement is cancelled server-side (`cancel_safe`) and its connection
is closed rather than reused, so a late cancel can never hit somebody else's statement.
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from typing import TYPE_CHECKING, Generic, TypeVar

import outcome
import psycopg
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg_pool import ConnectionPool

    from nexusd.stores.postgres_admin import Connection

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Seconds the server gets to confirm a cancel before the outcome counts as unknown.
CANCEL_GRACE_S = 10.0


# --- one call, with its cancellation ------------------------------------------------------


class NotSent(Exception):
    """The call was cancelled before its statement was sent."""


class Call(Generic[_T]):
    """One store call: runs `fn(connection)` in a worker thread; can cancel it from trio.

    `_lock` orders the thread taking/returning its connection against the trio side's cancel
    request, so a cancel is only ever sent while this call owns the connection.
    """

    def __init__(self, fn: Callable[[Connection], _T], pool: ConnectionPool[Connection]):
        self._fn = fn
        self._pool = pool
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._cancel_requested = False
        self._cancel_sent = False
        self._started = False
        self._connection: Connection | None = None
        self.result: outcome.Outcome[_T] | None = None
        self.finished = trio.Event()

    # worker thread

    def run(self) -> _T:
        with self._lock:
            self._started = not self._cancel_requested
        if not self._started:
            raise NotSent
        try:
            self.result = outcome.capture(self._with_connection)
        finally:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self.finished.set)
        return self.result.unwrap()

    def _with_connection(self) -> _T:
        with self._pool.connection() as connection:
            with self._lock:
                if self._cancel_requested:
                    raise NotSent
                self._connection = connection
            try:
                return self._fn(connection)
            finally:
                with self._lock:
                    self._connection = None
                    if self._cancel_sent:
                        connection.close()  # the pool replaces it; no stray cancel can follow

    # trio side

    def request_cancel(self) -> bool:
        """Stop the call from starting; True if it already started (then send_cancel)."""
        with self._lock:
            self._cancel_requested = True
            return self._started

    def send_cancel(self) -> None:
        """(In a thread.) Ask the server to cancel the running statement, if any."""
        with self._lock:
            if self._connection is None:
                return
            self._cancel_sent = True
            try:
                self._connection.cancel_safe(timeout=CANCEL_GRACE_S)
            except psycopg.Error as exc:  # the statement may still run: the caller waits
                logger.warning("could not cancel a PostgreSQL statement: %s", exc)
