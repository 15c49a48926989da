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
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from tests.servers.postgres import running_postgres

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.stores.postgres import open_postgres_store
from nexusd.stores.sqlite import open_sqlite_store

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from nexusd.stores.checkpoints import CheckpointStore

RUNS = 10_000
CONCURRENCY = 200
POOL_SIZE = 32
TEMPLATE = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "x", "labels": {"science.sneaksanddata.com/algorithm-template-name": "a"}},
    "spec": {
        "template": {"spec": {"containers": [{"image": "algo:1", "args": ["--sas-uri=..."]}]}}
    },
}


async def bench(
    label: str,
    opener: AbstractAsyncContextManager[CheckpointStore],
    runs: int,
    concurrency: int,
) -> tuple[str, float]:
    clock = SystemClock()
    latencies: list[float] = []
    async with opener as store:
        ids = iter(range(runs))

        async def worker() -> None:
            for _ in ids:
                run_id = str(uuid.uuid4())
                now = clock.now()
                checkpoint = Checkpoint(
                    algorithm="bench",
                    id=run_id,
                    lifecycle_stage=Stage.BUFFERED,
                    received_at=now,
                    last_modified=now,
                    received_by_host="bench-host",
                    applied_configuration={"container": {"image": "algo:1"}, "cpu": "1"},
                    payload_uri=f"https://nexus/data/v1/payloads/bench/requests/{run_id}",
                )
                entry = SubmissionEntry(
                    algorithm="bench", id=run_id, cluster="s", template=TEMPLATE
                )
                started = time.perf_counter()
                await store.create(checkpoint=checkpoint, submission=entry)
                latencies.append(time.perf_counter() - started)
                for to, changes in (
                    (Stage.RUNNING, {"job_uid": run_id, "sent_at": clock.now()}),
                    (Stage.COMPLETED, {"result_uri": "https://nexus/r"}),
                ):
                    moved = await store.transition(
                        algorithm="bench", request_id=run_id, to=to, changes=changes
                    )
                    assert moved.applied

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - started
    latencies.sort()
    writes_per_s = 3 * runs / elapsed
    line = (
        f"{label:<28} runs={runs} concurrency={concurrency} elapsed={elapsed:.2f}s "
        f"writes/s={writes_per_s:,.0f} runs/s={runs / elapsed:,.0f} "
        f"create p50={latencies[len(latencies) // 2] * 1e3:.2f}ms "
        f"p99={latencies[int(len(latencies) * 0.99)] * 1e3:.2f}ms"
    )
    return line, writes_per_s


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
