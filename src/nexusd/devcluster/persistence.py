"""The embedded cluster's objects on disk (`DevClusterConfig.persist`): one SQLite file.

Without it a `kill -9` of `nexusd dev` loses every Job, and the runs behind them end
DEADLINE_EXCEEDED or FAILED after the restart. `SqliteJournal` is the store's `Journal`: each
write of the object store is one upsert of one row (the object as JSON and its resourceVersion),
committed before the store changes and so before the API server answers.

The file is in WAL mode with `synchronous = NORMAL`: a commit is in the WAL file (the operating
system's page cache) when `save` returns, so a crash of the process loses nothing the API
server answered 2xx for; a crash of the machine (power loss) may lose the last commits, which a
dev cluster can afford and which saves an fsync per write. The cost is a JSON encoding plus one
small SQLite transaction, tens of microseconds per write on a laptop, paid in the event loop
thread like the rest of the store.

A deletion leaves a tombstone (body NULL) carrying its resourceVersion, so the counter never goes
back to a number a client has already seen; opening the file keeps only the newest tombstone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import apsw

if TYPE_CHECKING:
    import pathlib

    from .objects import Obj
    from .storage import ObjectKey, ResourceKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    api_group TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    body TEXT,
    PRIMARY KEY (api_group, resource, namespace, name)
) WITHOUT ROWID
"""
_SAVE = """
INSERT INTO objects (api_group, resource, namespace, name, rv, body) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (api_group, resource, namespace, name) DO UPDATE SET rv = excluded.rv,
    body = excluded.body
"""
_LAST_RV = "SELECT coalesce(max(rv), 0) FROM objects"
_PRUNE = "DELETE FROM objects WHERE body IS NULL AND rv < ?"
_LOAD = "SELECT api_group, resource, body FROM objects WHERE body IS NOT NULL"


class SqliteJournal:
    """The objects of one embedded cluster in `path`; used from the trio thread only."""

    def __init__(self, path: pathlib.Path) -> None:
        self._db = apsw.Connection(str(path))
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(_SCHEMA)

    def load(self) -> tuple[int, list[tuple[ResourceKey, Obj]]]:
        last_rv = self._db.execute(_LAST_RV).fetchall()[0][0]
        assert isinstance(last_rv, int)
        self._db.execute(_PRUNE, (last_rv,))
        objects = [
            ((group, resource), json.loads(body))
            for group, resource, body in self._db.execute(_LOAD)
        ]
        return last_rv, objects

    def save(self, resource: ResourceKey, key: ObjectKey, rv: int, obj: Obj | None) -> None:
        body = None if obj is None else json.dumps(obj, separators=(",", ":"))
        self._db.execute(_SAVE, (*resource, *key, rv, body))

    def close(self) -> None:
        self._db.close()
