"""Benchmark: SqliteCheckpointStore write throughput with group commit, FULL vs NORMAL sync.

Each simulated run does what the pipeline does: create (checkpoint + submission entry), then
BUFFERED -> RUNNING (job_uid, sent_at), then RUNNING -> COMPLETED (result_uri). `CONCURRENCY`
trio tasks share the runs. Everything is real: apsw on a file, the writer thread, fsyncs.

    .venv/bin/python -m tests.perf.test_sqlite_store_throughput [runs] [concurrency]
    .venv/bin/pytest tests/perf/test_sqlite_store_throughput.py -s
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

from nexusd.core.clock import SystemClock
from nexusd.stores.sqlite import Synchronous, open_sqlite_store
from tests.perf.store_load import put_load

RUNS = 20_000
CONCURRENCY = 200


async def bench(path: Path, synchronous: Synchronous, runs: int, concurrency: int) -> str:
    clock = SystemClock()
    async with open_sqlite_store(path=path, clock=clock, synchronous=synchronous) as store:
        result = await put_load(store, clock=clock, runs=runs, concurrency=concurrency)
        stats = store.statistics()
    return (
        f"synchronous={synchronous:<6} {result.describe()} commits={stats.commits} "
        f"avg_batch={stats.operations / max(stats.commits, 1):.1f} "
        f"largest_batch={stats.largest_batch}"
    )


def run_all(runs: int = RUNS, concurrency: int = CONCURRENCY) -> list[str]:
    lines = []
    for synchronous in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as directory:
            path = Path(directory) / "bench.db"
            lines.append(trio.run(bench, path, synchronous, runs, concurrency))
    return lines


def test_sqlite_store_throughput() -> None:
    for line in run_all():
        print(line)


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:3]]
    for result in run_all(*arguments):
        print(result, flush=True)
