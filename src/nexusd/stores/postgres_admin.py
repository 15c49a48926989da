"""PostgreSQL administration: connecting, errors without secrets, the schema's versions.

What `nexusd store init` / `nexusd store migrate` call, and what the store checks at open.
Every message names user@host:port/db and never the password.
"""

from __future__ import annotations

import psycopg
import trio
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout

from nexusd.core.errors import NexusdError, StoreError
from nexusd.stores.postgres_schema import SCHEMA_VERSION, apply_migrations, current_version

Connection = psycopg.Connection[tuple[object, ...]]

#: Seconds to wait for a new connection before reporting the server unreachable.
CONNECT_TIMEOUT_S = 10


# --- connection details without secrets ---------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """`user@host:port/dbname` for messages: never the password (nor the DSN's other secrets)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparseable DSN, not shown>"
    host = params.get("host") or params.get("hostaddr") or "<default host>"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or "<default database>"
    user = params.get("user") or "<default user>"
    return f"{user}@{host}:{port}/{dbname}"


def _redacted(message: str, dsn: str) -> str:
    """`message` with the DSN's password (if libpq ever echoed it) replaced by ***."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return "the DSN could not be parsed (not shown: it may contain a password)"
    if password:
        message = message.replace(str(password), "***")
    return message


def _connection_error(dsn: str, exc: BaseException) -> StoreError:
    reason = _redacted(str(exc).strip(), dsn)
    return StoreError(f"cannot connect to PostgreSQL {describe_dsn(dsn)}: {reason}")


def translate(exc: Exception, dsn: str) -> Exception:
    """nexusd errors and bugs pass through; psycopg and pool errors become `StoreError`."""
    if isinstance(exc, NexusdError) or not isinstance(exc, psycopg.Error | PoolTimeout):
        return exc
    if isinstance(exc, PoolTimeout):
        error = StoreError(f"PostgreSQL {describe_dsn(dsn)}: no free connection: {exc}")
    elif isinstance(exc, psycopg.OperationalError) and not isinstance(exc, errors.QueryCanceled):
        error = _connection_error(dsn, exc)
    else:
        detail = _redacted(str(exc).strip(), dsn)
        error = StoreError(f"PostgreSQL {describe_dsn(dsn)}: {type(exc).__name__}: {detail}")
    error.__cause__ = exc
    return error


def _connect(dsn: str) -> Connection:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise _connection_error(dsn, exc) from None


# --- schema: what `nexusd store init` / `nexusd store migrate` call -----------------------


def _apply(dsn: str, *, only_if_empty: bool) -> tuple[int, int]:
    with _connect(dsn) as connection:
        try:
            return apply_migrations(connection, only_if_empty=only_if_empty)
        except psycopg.Error as exc:
            raise translate(exc, dsn) from None


async def init_schema(dsn: str) -> int:
    """Create the schema if the database has none; return the schema version now in place.

    A database that already has a schema (of any version) is left unchanged: use `migrate` to
    upgrade it. Safe to run from several processes at once (advisory lock).
    """
    _, version = await trio.to_thread.run_sync(lambda: _apply(dsn, only_if_empty=True))
    return version


async def migrate(dsn: str) -> tuple[int, int]:
    """Bring the schema up to this code's version; return (version before, version after).

    Idempotent ((n, n) when up to date) and safe to run concurrently. Refuses (StoreError) a
    schema newer than this code.
    """
    return await trio.to_thread.run_sync(lambda: _apply(dsn, only_if_empty=False))


def check_schema(dsn: str, *, auto_migrate: bool) -> None:
    with _connect(dsn) as connection:
        try:
            found = current_version(connection)
            if found < SCHEMA_VERSION and auto_migrate:
                apply_migrations(connection, only_if_empty=False)
                return
        except psycopg.Error as exc:
            raise translate(exc, dsn) from None
    where = describe_dsn(dsn)
    if found == 0:
        raise StoreError(
            f"PostgreSQL {where} has no nexusd schema: run `nexusd store init` "
            "(or `nexusd store migrate`) first"
        )
    if found < SCHEMA_VERSION:
        raise StoreError(
            f"PostgreSQL {where} has schema version {found}, this nexusd needs "
            f"{SCHEMA_VERSION}: run `nexusd store migrate`"
        )
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"PostgreSQL {where} has schema version {found}, newer than this nexusd's "
            f"({SCHEMA_VERSION}): upgrade nexusd"
        )
