"""Benchmark: Job creation against an API server that limits mutating calls (429s beyond it).

An embedded cluster allows LIMIT mutating calls per second on jobs (burst 5) and answers 429
beyond; a `nexusd scheduler` (in this process) is configured far above that (400/s), so only
its reaction to 429s (AIMD rate cut, Retry-After) keeps it near the limit. Printed: the
achieved create rate as a ratio of the limit, the 429s per run and the create calls per run.

    nox -s perf -- -k throttled_submission
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import trio

from nexusd.devcluster.faults import FaultPlan
from nexusd.modes import scheduler
from nexusd.settings import load_settings
from tests.conftest import template
from tests.servers.clusters import WORKGROUP, start_cluster

if TYPE_CHECKING:
    from pathlib import Path

LIMIT = 50.0
RUNS = 300


async def test_throttled_submission(nursery: trio.Nursery, tmp_path: Path) -> None:
    cluster, kube = await start_cluster(
        nursery, tmp_path / "cluster", WORKGROUP, template("algo"), backoff_base=0
    )
    cluster.faults.set(FaultPlan(mutating_rate=LIMIT, mutating_burst=5, resources=("jobs",)))
    settings = load_settings(
        environ={},
        overrides={
            "http.host": "127.0.0.1",
            "http.port": 0,
            "data.dir": str(tmp_path / "data"),
            "kube.kubeconfig": str(cluster.kubeconfig_path),
            "kube.shard_name": "dev",
            "submission.rate": 400,
            "submission.burst": 50,
            "submission.workers": 16,
            "logging.level": "WARNING",
        },
    )
    running = await nursery.start(scheduler.run, settings)
    async with httpx.AsyncClient(timeout=30) as http:
        start = time.perf_counter()
        for _ in range(RUNS):
            response = await http.post(
                f"{running.url}/algorithm/v1/run/algo", json={"algorithmParameters": {}}
            )
            assert response.status_code == 202, response.text
        with trio.fail_after(120):
            while (await http.get(f"{running.url}/readyz")).json()["details"]["submitter:dev"][
                "submitted"
            ] < RUNS:
                await trio.sleep(0.05)
        elapsed = time.perf_counter() - start
    await kube.aclose()
    counts = cluster.request_counts
    created, throttled = counts[("create", "jobs", 201)], counts[("create", "jobs", 429)]
    assert created == RUNS
    rate = created / elapsed
    print(f"\nJob creation against an API server limited to {LIMIT:g} writes/s (burst 5)")
    print(f"  {RUNS} runs: {rate:.1f} Jobs/s = {rate / LIMIT:.2f} of the limit")
    print(f"  429s: {throttled} ({throttled / RUNS:.3f} per run)")
    print(f"  create calls per run {(created + throttled) / RUNS:.3f}, one Job per run")
