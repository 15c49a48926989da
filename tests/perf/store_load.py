"""The load both store benchmarks put on a CheckpointStore: what the pipeline writes per run.

Each run is created (checkpoint + submission entry), then moved BUFFERED -> RUNNING (job_uid,
sent_at) and RUNNING -> COMPLETED (result_uri); `concurrency` trio tasks share the runs.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, SubmissionEntry

if TYPE_CHECKING:
    from nexusd.core.clock import Clock
    from nexusd.stores.checkpoints import CheckpointStore

WRITES_PER_RUN = 3
TEMPLATE = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "x", "labels": {"science.sneaksanddata.com/algorithm-template-name": "a"}},
    "spec": {
        "template": {"spec": {"containers": [{"image": "algo:1", "args": ["--sas-uri=..."]}]}}
    },
}


@attrs.frozen
class LoadResult:
    runs: int
    concurrency: int
    elapsed: float
    create_latencies: list[float]  # sorted, seconds

    @property
    def writes_per_s(self) -> float:
        return WRITES_PER_RUN * self.runs / self.elapsed

    def describe(self) -> str:
        latencies = self.create_latencies
        return (
            f"runs={self.runs} concurrency={self.concurrency} elapsed={self.elapsed:.2f}s "
            f"writes/s={self.writes_per_s:,.0f} runs/s={self.runs / self.elapsed:,.0f} "
            f"create p50={latencies[len(latencies) // 2] * 1e3:.2f}ms "
            f"p99={latencies[int(len(latencies) * 0.99)] * 1e3:.2f}ms"
        )


async def put_load(
    store: CheckpointStore, *, clock: Clock, runs: int, concurrency: int
) -> LoadResult:
    latencies: list[float] = []
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
            entry = SubmissionEntry(algorithm="bench", id=run_id, cluster="s", template=TEMPLATE)
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
    return LoadResult(
        runs=runs, concurrency=concurrency, elapsed=elapsed, create_latencies=sorted(latencies)
    )
