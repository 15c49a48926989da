"""The PostgreSQL schema of the checkpoint store, its versioned migrations, and the row codec.

Column names are upstream's `checkpoints` and `submission_buffer` columns (contract §4.1/4.2),
plus `cluster` in `submission_buffer`, which upstream declares but never writes. Types, chosen
for exact round trips and for use from `psql`:

- `received_at`, `sent_at`, `last_modified`: `timestamptz` (microsecond precision, like the
  records); read back as timezone-aware UTC whatever the session's TimeZone.
- `applied_configuration`, `configuration_overrides`, `parent`, `template`: `json`, not `jsonb`.
  `json` keeps the text exactly as written (key order, number spelling), so a record round-trips
  like it does through SQLite's text columns, while PostgreSQL still rejects malformed JSON and
  `col::jsonb` makes it queryable. `configuration_overrides` and `parent` are NULL when absent
  (upstream writes `"{}"`, which cannot tell "none" from "empty").
- `payload_valid_for`: `interval` (psycopg maps it to `timedelta` exactly).
- `lifecycle_stage`: `text` holding upstream's exact strings, with a CHECK on the known stages.

Migrations: `nexusd_schema_migrations(version, description, applied_at)` records every step
applied. `MIGRATIONS[n]` takes a database from version n to n + 1 (version 1 is the initial
schema; version 2 adds `scheduler_heartbeats(host, last_seen)`; version 3 adds
`checkpoints.cluster` and `payloads(algorithm, id, written_at, data bytea)`; version 4 adds the
submitters' shared `rate_budgets` and the functions that grant and cut them on the server's
clock, `nexusd_grant_tokens` and `nexusd_cut_rate`; version 5 adds `checkpoints_live_modified`,
a partial index over the non-terminal stages in the `stale` scan's order, its text columns in
`COLLATE "C"` like the scan's ORDER BY, and the heartbeat's queue report columns; version 6
adds the idempotency key a request's first run holds, `idempotency_key` ('' for none),
`idempotency_fingerprint` and `idempotency_answer json`, with the unique partial index
`checkpoints_idempotency_key` over `(algorithm, idempotency_key)` of non-empty keys; version 7
adds warm pools: `warm boolean`, `attempt integer` (from 1), `lease_holder` ('' for none) and
`lease_expires timestamptz`, with the partial indexes `checkpoints_leases` on `lease_expires`
and `checkpoints_lease_holder` on `lease_holder` (leased runs only) and
`checkpoints_warm_waiting` on `(algorithm, last_modified)` (BUFFERED warm runs only)). Every
change runs in one transaction that first takes a transaction-level advisory lock
(`pg_advisory_xact_lock(SCHEMA_LOCK_KEY)`), so nexusd processes starting together migrate once
and the others see the result; DDL is transactional in PostgreSQL, so a failed step leaves
the previous version intact.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import attrs
from psycopg.types.json import Json

from nexusd.core.errors import StoreError
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, ParentRef, SubmissionEntry
from nexusd.stores.sql_reads import COLUMNS

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

VERSION_TABLE = "nexusd_schema_migrations"
#: The advisory lock every schema change holds (any fixed bigint; this is b"nexusdsc").
SCHEMA_LOCK_KEY = 0x6E65787573647363


@attrs.frozen
class Migration:
    version: int
    description: str
    sql: str


_STAGES = ", ".join(f"'{stage}'" for stage in Stage)

_V1 = f"""
CREATE TABLE checkpoints (
    algorithm                 text NOT NULL,
    id                        text NOT NULL,
    lifecycle_stage           text NOT NULL CHECK (lifecycle_stage IN ({_STAGES})),
    payload_uri               text NOT NULL DEFAULT '',
    result_uri                text NOT NULL DEFAULT '',
    algorithm_failure_cause   text NOT NULL DEFAULT '',
    algorithm_failure_details text NOT NULL DEFAULT '',
    received_by_host          text NOT NULL DEFAULT '',
    received_at               timestamptz NOT NULL,
    sent_at                   timestamptz,
    applied_configuration     json NOT NULL DEFAULT '{{}}',
    configuration_overrides   json,
    content_hash              text NOT NULL DEFAULT '',
    last_modified             timestamptz NOT NULL,
    tag                       text NOT NULL DEFAULT '',
    api_version               text NOT NULL DEFAULT '',
    job_uid                   text NOT NULL DEFAULT '',
    parent                    json,
    payload_valid_for         interval NOT NULL,
    PRIMARY KEY (algorithm, id)
);
CREATE INDEX checkpoints_tag ON checkpoints (tag);
CREATE INDEX checkpoints_host_stage ON checkpoints (received_by_host, lifecycle_stage);
CREATE INDEX checkpoints_stage_modified ON checkpoints (lifecycle_stage, last_modified);
CREATE TABLE submission_buffer (
    algorithm text NOT NULL,
    id        text NOT NULL,
    cluster   text NOT NULL,
    template  json NOT NULL,
    PRIMARY KEY (algorithm, id)
);
"""

# The maintainer's view of which schedulers are alive: one row per host, upserted.
_V2 = """
CREATE TABLE scheduler_heartbeats (
    host      text PRIMARY KEY,
    last_seen timestamptz NOT NULL
);
"""

# The shard on the checkpoint row (older runs take theirs from submission_buffer), payloads
# stored inline with small runs, and the (host, stage) index extended for paged recovery.
_V3 = """
ALTER TABLE checkpoints ADD COLUMN cluster text NOT NULL DEFAULT '';
UPDATE checkpoints c SET cluster = s.cluster FROM submission_buffer s
    WHERE s.algorithm = c.algorithm AND s.id = c.id;
DROP INDEX checkpoints_host_stage;
CREATE INDEX checkpoints_host_stage ON checkpoints
    (received_by_host, lifecycle_stage, received_at, algorithm COLLATE "C", id COLLATE "C");
CREATE TABLE payloads (
    algorithm  text NOT NULL,
    id         text NOT NULL,
    written_at timestamptz NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (algorithm, id)
);
CREATE INDEX payloads_written ON payloads (written_at);
"""

# The submitters' shared rate budgets, one row per shard (stores/rate_budgets.py has the same
# steps in Python, and the contract tests hold both to them). Functions, so that a grant is ONE
# round trip that locks the row, reads `clock_timestamp()` once the lock is held (so stamps
# only move forward, and every machine's grants are timed by this one server's clock), refills,
# grants and writes back.
_V4 = """
CREATE TABLE rate_budgets (
    shard         text PRIMARY KEY,
    tokens        double precision NOT NULL,
    stamp         timestamptz NOT NULL,
    rate          double precision NOT NULL,
    ceiling       double precision NOT NULL,
    ceiling_until timestamptz NOT NULL,
    ceiling_by    text NOT NULL
);

CREATE FUNCTION nexusd_budget_refilled(
    p_shard text, p_burst integer, p_ceiling double precision, p_caller text,
    p_hold double precision
) RETURNS rate_budgets LANGUAGE plpgsql AS $$
DECLARE
    b rate_budgets;
    now_ timestamptz;
BEGIN
    SELECT * INTO b FROM rate_budgets WHERE shard = p_shard FOR UPDATE;
    IF NOT FOUND THEN
        -- a new budget starts full, at its ceiling
        INSERT INTO rate_budgets
            (shard, tokens, stamp, rate, ceiling, ceiling_until, ceiling_by)
        VALUES (p_shard, p_burst, clock_timestamp(), p_ceiling, p_ceiling, clock_timestamp(),
            p_caller)
        ON CONFLICT (shard) DO NOTHING;
        SELECT * INTO b FROM rate_budgets WHERE shard = p_shard FOR UPDATE;
    END IF;
    now_ := clock_timestamp();
    b.tokens := least(
        p_burst::double precision,
        b.tokens + greatest(0, extract(epoch FROM now_ - b.stamp)::double precision) * b.rate
    );
    b.stamp := now_;
    IF p_ceiling <= b.ceiling OR now_ >= b.ceiling_until OR p_caller = b.ceiling_by THEN
        -- the rate moves with its ceiling, in proportion
        b.rate := least(p_ceiling, b.rate * p_ceiling / b.ceiling);
        b.ceiling := p_ceiling;
        b.ceiling_until := now_ + make_interval(secs => p_hold);
        b.ceiling_by := p_caller;
    END IF;
    RETURN b;
END $$;

CREATE FUNCTION nexusd_grant_tokens(
    p_shard text, p_wanted integer, p_burst integer, p_ceiling double precision,
    p_caller text, p_increase double precision, p_successes integer, p_hold double precision,
    OUT o_granted integer, OUT o_rate double precision, OUT o_tokens double precision
) LANGUAGE plpgsql AS $$
DECLARE
    b rate_budgets;
BEGIN
    b := nexusd_budget_refilled(p_shard, p_burst, p_ceiling, p_caller, p_hold);
    IF p_successes > 0 THEN
        b.rate := least(b.ceiling, b.rate + p_successes * p_increase / b.rate);
    END IF;
    o_granted := least(p_wanted, floor(b.tokens + 1e-9)::integer);
    b.tokens := greatest(0, b.tokens - o_granted);
    UPDATE rate_budgets SET tokens = b.tokens, stamp = b.stamp, rate = b.rate,
        ceiling = b.ceiling, ceiling_until = b.ceiling_until, ceiling_by = b.ceiling_by
    WHERE shard = p_shard;
    o_rate := b.rate;
    o_tokens := b.tokens;
END $$;

CREATE FUNCTION nexusd_cut_rate(
    p_shard text, p_burst integer, p_ceiling double precision, p_caller text,
    p_decrease double precision, p_floor double precision, p_hold double precision,
    OUT o_rate double precision
) LANGUAGE plpgsql AS $$
DECLARE
    b rate_budgets;
BEGIN
    b := nexusd_budget_refilled(p_shard, p_burst, p_ceiling, p_caller, p_hold);
    b.rate := greatest(least(p_floor, b.ceiling), b.rate * p_decrease);
    UPDATE rate_budgets SET tokens = 0, stamp = b.stamp, rate = b.rate,
        ceiling = b.ceiling, ceiling_until = b.ceiling_until, ceiling_by = b.ceiling_by
    WHERE shard = p_shard;
    o_rate := b.rate;
END $$;
"""

# The maintainer's `stale` scans ask for non-terminal runs in the order
# `(last_modified, algorithm COLLATE "C", id COLLATE "C")`: this index holds exactly those rows
# in exactly that order, so a page is an index range read, not a sort of every live run.
# `sql_reads.LIVE_CONDITION` must repeat the WHERE exactly (the planner proves it per query).
_V5 = """
CREATE INDEX checkpoints_live_modified ON checkpoints
    (last_modified, algorithm COLLATE "C", id COLLATE "C")
    WHERE lifecycle_stage IN ('NEW', 'BUFFERED', 'RUNNING');
ALTER TABLE scheduler_heartbeats
    ADD COLUMN queued integer,
    ADD COLUMN oldest_queued_age double precision,
    ADD COLUMN last_taken_age double precision;
"""

# Idempotency keys: the columns have constant defaults (no table rewrite), and the partial index
# holds only keyed runs, so building it over an existing table finds nothing to hold. It is the
# only arbiter between schedulers: a second insert of a key waits for the first's transaction,
# then fails with a unique violation naming this index.
_V6 = """
ALTER TABLE checkpoints
    ADD COLUMN idempotency_key text NOT NULL DEFAULT '',
    ADD COLUMN idempotency_fingerprint text NOT NULL DEFAULT '',
    ADD COLUMN idempotency_answer json;
CREATE UNIQUE INDEX checkpoints_idempotency_key ON checkpoints (algorithm, idempotency_key)
    WHERE idempotency_key <> '';
"""

# Warm pools: constant defaults (no table rewrite) read an older run as attempt 1, not warm,
# unleased, and the partial indexes hold nothing of it. `sql_reads.LEASED_CONDITION` /
# `WAITING_CONDITION` repeat their WHEREs exactly, so the planner can prove them per query.
_V7 = """
ALTER TABLE checkpoints
    ADD COLUMN warm boolean NOT NULL DEFAULT false,
    ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    ADD COLUMN lease_holder text NOT NULL DEFAULT '',
    ADD COLUMN lease_expires timestamptz;
CREATE INDEX checkpoints_leases ON checkpoints (lease_expires) WHERE lease_holder <> '';
CREATE INDEX checkpoints_lease_holder ON checkpoints (lease_holder) WHERE lease_holder <> '';
CREATE INDEX checkpoints_warm_waiting ON checkpoints (algorithm, last_modified)
    WHERE warm AND lifecycle_stage = 'BUFFERED';
"""

#: Never edit a released step (databases in the field were built by it); add a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, description="checkpoints and submission_buffer", sql=_V1),
    Migration(version=2, description="scheduler_heartbeats", sql=_V2),
    Migration(version=3, description="checkpoints.cluster, payloads", sql=_V3),
    Migration(version=4, description="rate_budgets", sql=_V4),
    Migration(version=5, description="checkpoints_live_modified, heartbeat queue reports", sql=_V5),
    Migration(version=6, description="idempotency keys", sql=_V6),
    Migration(version=7, description="warm pools: attempts and leases", sql=_V7),
)
SCHEMA_VERSION = len(MIGRATIONS)

_CREATE_VERSION_TABLE = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def current_version(connection: psycopg.Connection[Any]) -> int:
    """The schema version of the connected database; 0 when nexusd never created its tables."""
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if row is None or not row[0]:
        return 0
    row = connection.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()
    return 0 if row is None else int(row[0])


def apply_migrations(
    connection: psycopg.Connection[Any], *, only_if_empty: bool
) -> tuple[int, int]:
    """Bring the schema to `SCHEMA_VERSION` under the advisory lock; return (from, to).

    With `only_if_empty`, a database that already has a schema (of any version) is left as it
    is (`nexusd store init`). A schema newer than this code is never touched: StoreError.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        connection.execute(_CREATE_VERSION_TABLE)
        found = current_version(connection)
        if only_if_empty and found > 0:
            return found, found
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the database schema is version {found}, newer than this nexusd's "
                f"({SCHEMA_VERSION}); upgrade nexusd"
            )
        for step in MIGRATIONS[found:]:
            connection.execute(step.sql.encode())  # several statements: simple query protocol
            connection.execute(
                f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (%s, %s)",
                (step.version, step.description),
            )
    return found, SCHEMA_VERSION


# --- codec --------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_json(value: Any) -> Json | None:
    """A json column's parameter; None stays NULL."""
    return None if value is None else Json(value, dumps=_dumps)


def encode_value(name: str, value: Any) -> Any:
    """One field of a `Checkpoint` as its query parameter."""
    if value is None:
        return None
    if name in ("applied_configuration", "configuration_overrides"):
        return Json(value, dumps=_dumps)
    if name == "parent":
        return Json(
            {"requestId": value.request_id, "algorithmName": value.algorithm_name}, dumps=_dumps
        )
    if name in ("received_at", "sent_at", "last_modified", "lease_expires", "payload_valid_for"):
        return value  # datetime -> timestamptz, timedelta -> interval
    if name == "warm":
        return bool(value)
    if name == "attempt":
        return int(value)
    return str(value)


def encode_checkpoint(checkpoint: Checkpoint) -> tuple[Any, ...]:
    return tuple(encode_value(name, getattr(checkpoint, name)) for name in COLUMNS)


def decode_time(value: dt.datetime) -> dt.datetime:
    """A `timestamptz` as timezone-aware UTC, whatever the session's TimeZone."""
    return value.astimezone(dt.UTC)


_utc = decode_time


def decode_checkpoint(row: Sequence[Any]) -> Checkpoint:
    """A row of `SELECT COLUMN_LIST` (json columns already parsed by psycopg) as a record."""
    values = dict(zip(COLUMNS, row, strict=True))
    parent = values["parent"]
    sent_at = values["sent_at"]
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
        received_at=_utc(values["received_at"]),
        sent_at=None if sent_at is None else _utc(sent_at),
        applied_configuration=values["applied_configuration"],
        configuration_overrides=values["configuration_overrides"],
        content_hash=values["content_hash"],
        last_modified=_utc(values["last_modified"]),
        tag=values["tag"],
        api_version=values["api_version"],
        job_uid=values["job_uid"],
        parent=None
        if parent is None
        else ParentRef(request_id=parent["requestId"], algorithm_name=parent["algorithmName"]),
        payload_valid_for=values["payload_valid_for"],
        cluster=values["cluster"],
        warm=bool(values["warm"]),
        attempt=int(values["attempt"]),
        lease_holder=values["lease_holder"],
        lease_expires=None if lease_expires is None else _utc(lease_expires),
    )


def encode_submission(entry: SubmissionEntry) -> tuple[str, str, str, Json]:
    return (entry.algorithm, entry.id, entry.cluster, Json(entry.template, dumps=_dumps))


def decode_submission(row: Sequence[Any]) -> SubmissionEntry:
    algorithm, request_id, cluster, template = row
    return SubmissionEntry(algorithm=algorithm, id=request_id, cluster=cluster, template=template)
