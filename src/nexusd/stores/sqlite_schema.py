"""The SQLite schema of the checkpoint store and the row <-> record codec.

Column names are upstream's `checkpoints` and `submission_buffer` columns (contract §4), so the
database reads like upstream's Cassandra tables. Encodings, chosen for exact round trips:

- timestamps: ISO-8601 text in UTC with microseconds, fixed width
  (`2026-01-01T00:00:00.000000+00:00`), so text order is time order (the stale-by-stage index
  on `(lifecycle_stage, last_modified)` compares them as text) and a row is readable in the
  `sqlite3` shell. Read back as timezone-aware UTC, exact to the microsecond.
- `applied_configuration`, `configuration_overrides`, `template`: compact JSON text;
  `configuration_overrides` is NULL when the client sent none (upstream writes `"{}"`, which
  cannot tell "none" from "empty").
- `parent`: upstream's JSON `{"requestId": ..., "algorithmName": ...}`, or NULL.
- `payload_valid_for`: REAL seconds (exact to the microsecond below ~30 years).

- `payloads.data`: the payload bytes of runs small enough to be stored inline (BLOB).

Versions: 1 = `checkpoints` + `submission_buffer`; 2 = `scheduler_heartbeats(host, last_seen)`;
3 = `checkpoints.cluster` (the shard, filled in from `submission_buffer` for older runs), the
`payloads` table, and the (host, stage) index extended by `received_at` for paged recovery;
4 = `rate_budgets`, one row per shard (stores/rate_budgets.py), its times REAL seconds since the
epoch on the store's clock (only their differences matter, and no one reads them as dates);
5 = `checkpoints_live_modified`, a partial index over the non-terminal stages in the `stale`
scan's order `(last_modified, algorithm, id)`, so a sweep reads it in order with no temporary
B-tree, and the heartbeat's queue report (`queued`, `oldest_queued_age`, `last_taken_age`,
NULL from a process without queues);
6 = the idempotency key a request's first run holds (`idempotency_key`, '' for none,
`idempotency_fingerprint`, `idempotency_answer` JSON text or NULL) and the unique partial index
`checkpoints_idempotency_key` over `(algorithm, idempotency_key)` of non-empty keys;
7 = warm pools: `warm` (0/1), `attempt` (from 1), `lease_holder` ('' for none) and
`lease_expires` (text time or NULL), with the partial indexes `checkpoints_leases` on
`lease_expires` and `checkpoints_lease_holder` on `lease_holder` (leased runs only) and
`checkpoints_warm_waiting` on `(algorithm, last_modified)` (BUFFERED warm runs only).
`PRAGMA user_version` is the schema version; `migrate` brings a database up to date, one step
per version, and refuses a database written by a newer nexusd.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from nexusd.core.errors import StoreError
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, ParentRef, SubmissionEntry
from nexusd.stores.sql_reads import COLUMNS

if TYPE_CHECKING:
    from collections.abc import Sequence

    import apsw


_V1 = """
CREATE TABLE checkpoints (
    algorithm                 TEXT NOT NULL,
    id                        TEXT NOT NULL,
    lifecycle_stage           TEXT NOT NULL,
    payload_uri               TEXT NOT NULL DEFAULT '',
    result_uri                TEXT NOT NULL DEFAULT '',
    algorithm_failure_cause   TEXT NOT NULL DEFAULT '',
    algorithm_failure_details TEXT NOT NULL DEFAULT '',
    received_by_host          TEXT NOT NULL DEFAULT '',
    received_at               TEXT NOT NULL,
    sent_at                   TEXT,
    applied_configuration     TEXT NOT NULL DEFAULT '{}',
    configuration_overrides   TEXT,
    content_hash              TEXT NOT NULL DEFAULT '',
    last_modified             TEXT NOT NULL,
    tag                       TEXT NOT NULL DEFAULT '',
    api_version               TEXT NOT NULL DEFAULT '',
    job_uid                   TEXT NOT NULL DEFAULT '',
    parent                    TEXT,
    payload_valid_for         REAL NOT NULL,
    PRIMARY KEY (algorithm, id)
);
CREATE INDEX checkpoints_tag ON checkpoints (tag);
CREATE INDEX checkpoints_host_stage ON checkpoints (received_by_host, lifecycle_stage);
CREATE INDEX checkpoints_stage_modified ON checkpoints (lifecycle_stage, last_modified);
CREATE TABLE submission_buffer (
    algorithm TEXT NOT NULL,
    id        TEXT NOT NULL,
    cluster   TEXT NOT NULL,
    template  TEXT NOT NULL,
    PRIMARY KEY (algorithm, id)
);
"""

# The maintainer's view of which schedulers are alive. WITHOUT ROWID: the host is the key, and
# the table stays as small as the number of schedulers.
_V2 = """
CREATE TABLE scheduler_heartbeats (
    host      TEXT NOT NULL PRIMARY KEY,
    last_seen TEXT NOT NULL
) WITHOUT ROWID;
"""

_V3 = """
ALTER TABLE checkpoints ADD COLUMN cluster TEXT NOT NULL DEFAULT '';
UPDATE checkpoints SET cluster = (
    SELECT s.cluster FROM submission_buffer s
    WHERE s.algorithm = checkpoints.algorithm AND s.id = checkpoints.id
) WHERE EXISTS (
    SELECT 1 FROM submission_buffer s
    WHERE s.algorithm = checkpoints.algorithm AND s.id = checkpoints.id
);
DROP INDEX checkpoints_host_stage;
CREATE INDEX checkpoints_host_stage ON checkpoints
    (received_by_host, lifecycle_stage, received_at, algorithm, id);
CREATE TABLE payloads (
    algorithm  TEXT NOT NULL,
    id         TEXT NOT NULL,
    written_at TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (algorithm, id)
);
CREATE INDEX payloads_written ON payloads (written_at);
"""

# The submitters' shared rate budgets: as small as the number of shards, updated on every grant.
_V4 = """
CREATE TABLE rate_budgets (
    shard         TEXT NOT NULL PRIMARY KEY,
    tokens        REAL NOT NULL,
    stamp         REAL NOT NULL,
    rate          REAL NOT NULL,
    ceiling       REAL NOT NULL,
    ceiling_until REAL NOT NULL,
    ceiling_by    TEXT NOT NULL
) WITHOUT ROWID;
"""

# `sql_reads.LIVE_CONDITION` must repeat this WHERE exactly, or no query uses the index.
_V5 = """
CREATE INDEX checkpoints_live_modified ON checkpoints (last_modified, algorithm, id)
    WHERE lifecycle_stage IN ('NEW', 'BUFFERED', 'RUNNING');
ALTER TABLE scheduler_heartbeats ADD COLUMN queued INTEGER;
ALTER TABLE scheduler_heartbeats ADD COLUMN oldest_queued_age REAL;
ALTER TABLE scheduler_heartbeats ADD COLUMN last_taken_age REAL;
"""

# Only keyed runs are in the index, so it costs nothing for runs without a key, and building it
# over an existing table finds no row to hold.
_V6 = """
ALTER TABLE checkpoints ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN idempotency_fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN idempotency_answer TEXT;
CREATE UNIQUE INDEX checkpoints_idempotency_key ON checkpoints (algorithm, idempotency_key)
    WHERE idempotency_key <> '';
"""

# Warm pools. Constant defaults read an older run as attempt 1, not warm, unleased; the partial
# indexes hold nothing of it. `sql_reads.LEASED_CONDITION` / `WAITING_CONDITION` repeat their
# WHEREs exactly, or no query uses them.
_V7 = """
ALTER TABLE checkpoints ADD COLUMN warm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE checkpoints ADD COLUMN lease_holder TEXT NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN lease_expires TEXT;
CREATE INDEX checkpoints_leases ON checkpoints (lease_expires) WHERE lease_holder <> '';
CREATE INDEX checkpoints_lease_holder ON checkpoints (lease_holder) WHERE lease_holder <> '';
CREATE INDEX checkpoints_warm_waiting ON checkpoints (algorithm, last_modified)
    WHERE warm AND lifecycle_stage = 'BUFFERED';
"""

#: MIGRATIONS[n] takes a database from user_version n to n + 1. Never edit a released step:
#: databases in the field were built by it; add a new one.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: apsw.Connection) -> None:
    """Bring the schema to `SCHEMA_VERSION`, in one immediate transaction.

    IMMEDIATE takes the write lock before reading the version, so two processes opening a new
    database at once cannot both try to create the tables.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(str(connection.execute("PRAGMA user_version").fetchall()[0][0]))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this nexusd's "
                f"({SCHEMA_VERSION}); upgrade nexusd"
            )
        for step in MIGRATIONS[version:]:
            connection.execute(step)
        # PRAGMA takes no bindings; SCHEMA_VERSION is our own integer.
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def encode_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def decode_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def encode_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_value(name: str, value: Any) -> Any:
    """One field of a `Checkpoint` as its column value."""
    if value is None:
        return None
    if name in ("received_at", "sent_at", "last_modified", "lease_expires"):
        return encode_time(value)
    if name in ("warm", "attempt"):
        return int(value)
    if name in ("applied_configuration", "configuration_overrides"):
        return encode_json(value)
    if name == "parent":
        return encode_json({"requestId": value.request_id, "algorithmName": value.algorithm_name})
    if name == "payload_valid_for":
        return value.total_seconds()
    return str(value)


def encode_checkpoint(checkpoint: Checkpoint) -> tuple[Any, ...]:
    return tuple(encode_value(name, getattr(checkpoint, name)) for name in COLUMNS)


def decode_checkpoint(row: Sequence[Any]) -> Checkpoint:
    values = dict(zip(COLUMNS, row, strict=True))
    parent = values["parent"]
    if parent is not None:
        parent_json = json.loads(parent)
        parent = ParentRef(
            request_id=parent_json["requestId"], algorithm_name=parent_json["algorithmName"]
        )
    sent_at = values["sent_at"]
    overrides = values["configuration_overrides"]
    lease_expires = values["lease_expires"]
    return Checkpoint(
        algorithm=values["algorithm"],
        id=values["id"],
        lifecycle_stage=Stage(values["lifecycle_stage"]),
        payload_uri=values["payload_uri"],
        result_uri=values["result_uri"],
        algorithm_failure_cause=values["algorithm_failure_cause"],
        algorithm_failure_details=values["algorithm_failure_details"],
        received_by_host=values["received_by_host"],
        received_at=decode_time(values["received_at"]),
        sent_at=None if sent_at is None else decode_time(sent_at),
        applied_configuration=json.loads(values["applied_configuration"]),
        configuration_overrides=None if overrides is None else json.loads(overrides),
        content_hash=values["content_hash"],
        last_modified=decode_time(values["last_modified"]),
        tag=values["tag"],
        api_version=values["api_version"],
        job_uid=values["job_uid"],
        parent=parent,
        payload_valid_for=dt.timedelta(seconds=values["payload_valid_for"]),
        cluster=values["cluster"],
        warm=bool(values["warm"]),
        attempt=int(values["attempt"]),
        lease_holder=values["lease_holder"],
        lease_expires=None if lease_expires is None else decode_time(lease_expires),
    )


def encode_submission(entry: SubmissionEntry) -> tuple[str, str, str, str]:
    return (entry.algorithm, entry.id, entry.cluster, encode_json(entry.template))


def decode_submission(row: Sequence[Any]) -> SubmissionEntry:
    algorithm, request_id, cluster, template = row
    return SubmissionEntry(
        algorithm=algorithm, id=request_id, cluster=cluster, template=json.loads(template)
    )
