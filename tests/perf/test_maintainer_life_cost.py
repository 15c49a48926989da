"""Benchmark: what the maintainer spends on a run over its whole life (issue 11: <= 1 ms CPU).

A `nexusd maintainer` process watches the embedded cluster (scripted kubelet, in this test
process) while RUNS runs live their lives at RATE runs per second, as a scheduler and a
receiver would drive them: checkpoint RUNNING and a Job (pod Running for `DURATION` s, about
six Events, `ttlSecondsAfterFinished: 2` so the cluster's TTL controller deletes it once done);
the run COMPLETED when its Job completes. Every change reaches the maintainer through its
watches (a wake-up and a reconcile per change), plus its periodic sweeps.

Printed: the maintainer's CPU per run, net of what it spends idle over the same time (its
heartbeat, sweeps of an empty store), measured before the load in the same run.
`NEXUSD_PERF_LIFE_RUNS` (default 2000) and `NEXUSD_PERF_LIFE_RATE` (default 50/s) set the load.

    nox -s perf -- -k maintainer_life
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, NewRun, SubmissionEntry
from nexusd.devcluster import ANNOTATION_DURATION, DevClusterConfig, run_dev_cluster
from nexusd.devcluster.resources import JOBS
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.perf.measuring import cpu_seconds
from tests.perf.test_maintainer_scale import ALGORITHM, NS, SCHEDULER, job_body, maintainer_env
from tests.servers.nexusd import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.devcluster import DevCluster
    from nexusd.stores.checkpoints import CheckpointStore

RUNS = int(os.environ.get("NEXUSD_PERF_LIFE_RUNS", "2000"))
RATE = float(os.environ.get("NEXUSD_PERF_LIFE_RATE", "50"))
DURATION = 1.0
#: Seconds the idle maintainer is measured before the load (its baseline).
IDLE = 20.0


def short_job(request_id: str) -> dict[str, Any]:
    body = job_body(request_id)
    body["spec"]["template"]["metadata"]["annotations"][ANNOTATION_DURATION] = str(DURATION)
    body["spec"]["ttlSecondsAfterFinished"] = 2
    return body


async def launch(store: CheckpointStore, cluster: DevCluster, request_id: str) -> None:
    """What a scheduler does for a run: checkpoint, Job, RUNNING."""
    now = SystemClock().now()
    checkpoint = Checkpoint(
        algorithm=ALGORITHM,
        id=request_id,
        lifecycle_stage=Stage.BUFFERED,
        received_at=now,
        last_modified=now,
        received_by_host=SCHEDULER,
        cluster="dev",
    )
    body = short_job(request_id)
    entry = SubmissionEntry(algorithm=ALGORITHM, id=request_id, cluster="dev", template=body)
    await store.create_many(runs=[NewRun(checkpoint=checkpoint, submission=entry)])
    created = cluster.ops.create(JOBS, NS, body)
    moved = await store.transition(
        algorithm=ALGORITHM,
        request_id=request_id,
        to=Stage.RUNNING,
        changes={"job_uid": created["metadata"]["uid"], "sent_at": SystemClock().now()},
    )
    # the maintainer may have seen the Job first and moved the run itself (it adopts a
    # BUFFERED run's Job), as it may a scheduler's
    assert moved.applied or moved.stage is not Stage.BUFFERED


async def complete_finished(
    store: CheckpointStore, cluster: DevCluster, pending: set[str], done: trio.Event
) -> None:
    """What the receiver does: COMPLETED once a run's Job has completed (its algorithm would
    have reported just before its pod exited)."""
    while pending or not done.is_set():
        finished = [
            job["metadata"]["name"]
            for job in cluster.ops.store.iter(JOBS.key)
            if job["metadata"]["name"] in pending
            and any(
                c.get("type") == "Complete" and c.get("status") == "True"
                for c in job.get("status", {}).get("conditions", [])
            )
        ]
        for request_id in finished:
            await store.transition(algorithm=ALGORITHM, request_id=request_id, to=Stage.COMPLETED)
            pending.discard(request_id)
        await trio.sleep(0.2)


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        with trio.fail_after(120):
            while True:
                try:
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)


async def test_maintainer_life_cost(nursery: trio.Nursery, tmp_path: Path) -> None:
    cluster: DevCluster = await nursery.start(
        lambda task_status: run_dev_cluster(
            config=DevClusterConfig(state_dir=tmp_path / "cluster", namespace=NS),
            task_status=task_status,
        )
    )
    path = tmp_path / "data" / "checkpoints.sqlite3"
    path.parent.mkdir(parents=True)
    store = await SqliteCheckpointStore.open(path=path, clock=SystemClock())
    await store.record_heartbeat(host=SCHEDULER, at=SystemClock().now())
    port = free_port()
    env = {
        **maintainer_env(tmp_path, cluster, {}),
        "NEXUS__HTTP__PORT": str(port),
        "NEXUS__HTTP__HOST": "127.0.0.1",
    }
    log = (tmp_path / "maintainer.log").open("wb")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "nexusd", "maintainer"],
        env=env,
        stderr=log,
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        before = cpu_seconds(process.pid)
        await trio.sleep(IDLE)
        idle_rate = (cpu_seconds(process.pid) - before) / IDLE

        ids = [str(uuid.uuid4()) for _ in range(RUNS)]
        pending, launched = set(ids), trio.Event()
        began, cpu_began = trio.current_time(), cpu_seconds(process.pid)
        async with trio.open_nursery() as load:
            load.start_soon(complete_finished, store, cluster, pending, launched)
            for n, request_id in enumerate(ids):
                await trio.sleep_until(began + n / RATE)
                await launch(store, cluster, request_id)
            launched.set()
            with trio.move_on_after(300):
                while pending or any(True for _ in cluster.ops.store.iter(JOBS.key)):
                    await trio.sleep(0.2)
            left = sum(1 for _ in cluster.ops.store.iter(JOBS.key))
            assert not pending, f"{len(pending)} runs whose Job never completed"
            assert not left, f"{left} Jobs never deleted"
            await trio.sleep(2)  # the last deletions' watch events reach the maintainer
        elapsed = trio.current_time() - began
        spent = cpu_seconds(process.pid) - cpu_began
        assert process.poll() is None, (tmp_path / "maintainer.log").read_text()[-3000:]
    finally:
        process.terminate()
        await process.wait()
        log.close()
        await store.aclose()
    net = spent - idle_rate * elapsed
    print(
        f"\nmaintainer over {RUNS} run lives at {RATE:.0f}/s ({elapsed:.0f}s, a Job each, "
        f"pods {DURATION:.0f}s): {spent:.2f}s CPU, idle {idle_rate * 1e3:.1f} ms/s over "
        f"the same time -> {net / RUNS * 1e3:.3f} ms CPU per run net "
        f"({spent / RUNS * 1e3:.3f} ms gross)"
    )
