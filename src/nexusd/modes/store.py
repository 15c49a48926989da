"""`nexusd store init | migrate`: create or upgrade the checkpoint store's schema.

PostgreSQL schemas are versioned and never changed behind an operator's back: a scheduler
refuses to start on a missing or older schema, and these commands (safe to run concurrently,
idempotent) bring it up to date. A SQLite file is created or migrated when opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from nexusd.core.clock import SystemClock
from nexusd.core.errors import ConfigError
from nexusd.modes.building import postgres_dsn
from nexusd.stores import postgres_admin as postgres
from nexusd.stores.sqlite import SqliteCheckpointStore

if TYPE_CHECKING:
    from nexusd.settings import Settings


async def run(settings: Settings, action: str) -> str:
    """Run `action` ("init" or "migrate"); returns what to tell the operator."""
    kind = settings.store.kind
    if kind == "postgres":
        dsn = postgres_dsn(settings)
        where = postgres.describe_dsn(dsn)
        if action == "init":
            version = await postgres.init_schema(dsn)
            return f"PostgreSQL {where}: schema version {version}"
        before, after = await postgres.migrate(dsn)
        if before == after:
            return f"PostgreSQL {where}: schema version {after}, nothing to migrate"
        return f"PostgreSQL {where}: migrated schema version {before} -> {after}"
    if kind == "sqlite":
        path = settings.sqlite_path
        await trio.to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
        store = await SqliteCheckpointStore.open(path=path, clock=SystemClock())
        await store.aclose()
        return f"SQLite {path}: schema up to date"
    raise ConfigError(f"store.kind: a {kind!r} store has no schema to {action}")
