"""SIGTERM with a full queue loses nothing.

Real: a `nexusd scheduler` process (SQLite store, payload files) submitting to the embedded
cluster (in this test process) through its kubeconfig, throttled to 2 Jobs/s so its queue is
full when it gets SIGTERM; then a second scheduler process with the same host name. Nothing is
faked.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import httpx
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.kube.client import JOBS
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.conftest import template, wait_for_stage
from tests.servers.clusters import WORKGROUP, start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

RUNS = 20


async def test_sigterm_drains_what_it_can_and_keeps_the_rest(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    slow = template("slow", annotations={"devcluster.nexusd.io/duration": "600"})
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP, slow)
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__NODE__HOST_NAME": "scheduler-0",
        "NEXUS__SHUTDOWN__GRACE": "2s",
    }
    throttled = {**env, "NEXUS__SUBMISSION__RATE": "2", "NEXUS__SUBMISSION__BURST": "1"}
    async with httpx.AsyncClient(timeout=10) as http:
        async with nexusd_process(
            "scheduler", env=throttled, cwd=tmp_path, log=tmp_path / "first.log"
        ) as first:
            ids = []
            for _ in range(RUNS):
                response = await http.post(
                    f"{first.url}/algorithm/v1/run/slow", json={"algorithmParameters": {}}
                )
                assert response.status_code == 202
                ids.append(response.json()["requestId"])
            first.process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):  # intake closes at once (well within the 2 s grace)
                while (await http.get(f"{first.url}/readyz")).status_code != 503:
                    await trio.sleep(0.02)
            refused = await http.post(
                f"{first.url}/algorithm/v1/run/slow", json={"algorithmParameters": {}}
            )
            assert refused.status_code == 503
            with trio.fail_after(10):  # the grace period is a deadline
                assert await first.process.wait() == 0
        store = await SqliteCheckpointStore.open(
            path=tmp_path / "data" / "checkpoints.sqlite3", clock=SystemClock()
        )
        try:
            stages = [
                checkpoint.lifecycle_stage
                for checkpoint in [await store.get(algorithm="slow", request_id=i) for i in ids]
                if checkpoint is not None
            ]
        finally:
            await store.aclose()
        assert len(stages) == RUNS  # every accepted run is still there
        assert set(stages) <= {Stage.BUFFERED, Stage.RUNNING}
        assert Stage.BUFFERED in stages  # the queue was not empty: they were kept, not lost
        async with nexusd_process(
            "scheduler", env=env, cwd=tmp_path, log=tmp_path / "second.log"
        ) as second:
            for request_id in ids:
                await wait_for_stage(http, second.url, "slow", request_id, "RUNNING")
    jobs = await kube.list(JOBS, namespace="nexus")
    assert sorted(job["metadata"]["name"] for job in jobs["items"]) == sorted(ids)
    await kube.aclose()
