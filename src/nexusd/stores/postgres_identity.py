"""Host names owned by one live process across every process sharing a PostgreSQL database.

A session-level advisory lock (`pg_try_advisory_lock`) on a key derived from the host name,
held by a connection of its own for the holder's lifetime: the server releases it when that
session ends, so a holder that dies (even by `kill -9`, its socket closed by the kernel) frees
its name at once, and a restart under the same name recovers its runs without waiting for a
heartbeat to age. The connection's `application_name` is the holder's description, so a
refused process can say who holds the name (from `pg_locks` and `pg_stat_activity`).

If the holder's session is cut (a network partition) the server drops the lock; the holder
keeps running without it, which is the same risk as a heartbeat that stops arriving.
"""

from __future__ import annotations

import hashlib

import psycopg

from nexusd.core.errors import OwnershipError
from nexusd.stores.postgres_admin import CONNECT_TIMEOUT_S, Connection

#: PostgreSQL keeps application_name to NAMEDATALEN - 1 bytes.
_APPLICATION_NAME_MAX = 63
_HOLDER = (
    "SELECT a.application_name, coalesce(a.client_addr::text, 'a local socket'), a.pid "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::bigint = %s AND l.objid::bigint = %s"
)


def identity_key(host: str) -> int:
    """The advisory-lock key of a host name: 64 bits of its SHA-256, as a signed bigint."""
    digest = hashlib.sha256(b"nexusd-host\0" + host.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_identity(dsn: str, *, host: str, holder: str, what: str, hint: str) -> Connection:
    """(In a thread.) The session that holds `host`, or `OwnershipError` naming its holder."""
    connection: Connection = psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=holder[:_APPLICATION_NAME_MAX],
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    try:
        key = identity_key(host)
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row is not None and row[0]:
            return connection
        # A bigint key is stored as two oids: its high and its low 32 bits.
        found = connection.execute(_HOLDER, ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
        current = found.fetchone()
    except BaseException:
        connection.close()
        raise
    connection.close()
    who = (
        f"{current[0] or 'a PostgreSQL session'} (server pid {current[2]}, from {current[1]})"
        if current
        else "another PostgreSQL session"
    )
    raise OwnershipError(f"{what} is in use by {who}; {hint}")
