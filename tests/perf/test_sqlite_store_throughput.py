"""Benchmark: SqliteCheckpointStore write throughput with group commit, FULL vs NORMAL sync.

Each simulated run does what the pipeline does: create (checkpoint + submission entry), then
BUFFERED -> RUNNING (job_uid, sent_at), then RUNNING -> COMPLETED (result_uri). `CONCURRENCY`
trio tasks share the runs. Everything is real: apsw on a file, the writer thread, fsyncs.

    .venv/bin/python tests/perf/test_sqlite_store_throughput.py [runs] [concurrency]
    .venv/bin/pytest tests/perf/test_sqlite_store_throughput.py -s
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry
from nexusd.stores.sqlite import Synchronous, open_sqlite_store

RUNS = 20_000
CONCURRENCY = 200
TEMPLATE = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "x", "labels": {"science.sneaksanddata.com/algorithm-template-name": "a"}},
    "spec": {
        "template": {"spec": {"containers": [{"image": "algo:1", "args": ["--sas-uri=..."]}]}}
    },
}


async def bench(path: Path, synchronous: Synchronous, runs: int, concurrency: int) -> str:
    clock = SystemClock()
    latencies: list[float] = []
    async with open_sqlite_store(path=path, clock=clock, synchronous=synchronous) as store:
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
                await store.transition(
                    algorithm="bench",
                    request_id=run_id,
                    to=Stage.RUNNING,
                    changes={"job_uid": run_id, "sent_at": clock.now()},
                )
                await store.transition(
                    algorithm="bench",
                    request_id=run_id,
                    to=Stage.COMPLETED,
                    changes={"result_uri": "https://nexus/r"},
                )

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - started
        stats = store.statistics()
    latencies.sort()
    writes = 3 * runs
    return (
        f"synchronous={synchronous:<6} runs={runs} concurrency={concurrency} "
        f"elapsed={elapsed:.2f}s writes/s={writes / elapsed:,.0f} runs/s={runs / elapsed:,.0f} "
        f"commits={stats.commits} avg_batch={stats.operations / max(stats.commits, 1):.1f} "
        f"largest_batch={stats.largest_batch} "
        f"create p50={latencies[len(latencies) // 2] * 1e3:.2f}ms "
        f"p99={latencies[int(len(latencies) * 0.99)] * 1e3:.2f}ms"
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
