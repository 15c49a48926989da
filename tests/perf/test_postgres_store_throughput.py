"""Benchmark: PostgresCheckpointStore vs SqliteCheckpointStore, create + 2 transitions per run.

Each simulated run does what the pipeline does: create (checkpoint + submission entry), then
BUFFERED -> RUNNING (job_uid, sent_at), then RUNNING -> COMPLETED (result_uri), with
`CONCURRENCY` trio tasks sharing the runs. Everything is real: a throwaway PostgreSQL cluster on
loopback (tests/servers/postgres.py: fsync=off, synchronous_commit=off, as the data is thrown
away) and SQLite files with FULL and NORMAL sync. The ratio line compares writes/s.

    .venv/bin/python -m tests.perf.test_postgres_store_throughput [runs] [concurrency] [pool]
    .venv/bin/pytest tests/perf/test_postgres_store_throughput.py -s
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from nexusd.core.clock import SystemClock
from nexusd.stores.postgres import open_postgres_store
from nexusd.stores.sqlite import open_sqlite_store
from tests.perf.store_load import put_load
from tests.servers.postgres import running_postgres

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from nexusd.stores.checkpoints import CheckpointStore

RUNS = 10_000
CONCURRENCY = 200
POOL_SIZE = 32


async def bench(
    label: str,
    opener: AbstractAsyncContextManager[CheckpointStore],
    runs: int,
    concurrency: int,
) -> tuple[str, float]:
    async with opener as store:
        result = await put_load(store, clock=SystemClock(), runs=runs, concurrency=concurrency)
    return f"{label:<28} {result.describe()}", result.writes_per_s


def run_all(runs: int = RUNS, concurrency: int = CONCURRENCY, pool: int = POOL_SIZE) -> list[str]:
    lines = []
    results: dict[str, float] = {}
    clock = SystemClock()
    with running_postgres() as server:
        dsn = server.create_database("bench")
        label = f"postgres pool={pool}"
        opener = open_postgres_store(
            dsn=dsn, clock=clock, min_size=pool, max_size=pool, migrate=True
        )
        line, results["postgres"] = trio.run(bench, label, opener, runs, concurrency)
        lines.append(line)
    for synchronous in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as directory:
            sqlite = open_sqlite_store(
                path=Path(directory) / "bench.db", clock=clock, synchronous=synchronous
            )
            line, results[synchronous] = trio.run(
                bench, f"sqlite synchronous={synchronous}", sqlite, runs, concurrency
            )
            lines.append(line)
    lines.append(
        f"ratio postgres/sqlite-FULL={results['postgres'] / results['FULL']:.2f} "
        f"postgres/sqlite-NORMAL={results['postgres'] / results['NORMAL']:.2f}"
    )
    return lines


def test_postgres_store_throughput() -> None:
    for line in run_all():
        print(line)


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:4]]
    for result in run_all(*arguments):
        print(result, flush=True)
