"""Three `nexusd scheduler` processes share one rate budget for their shard, through the store.

Real: three scheduler processes started from the executable, sharing one SQLite file (or one
throwaway PostgreSQL database) and one embedded cluster (in this test process), reached
through its kubeconfig. Each is allowed `submission.rate` Job creates per second with a small
burst; runs are posted to them in turn. The cluster counts the creates: together they must
take at least as long as ONE budget allows, (runs - burst) / rate. That is a lower bound on
elapsed time only (never an upper bound on speed: machines are noisy); three budgets of their
own would let them finish three times as fast. Nothing is faked.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from nexusd.kube.client import JOBS
from tests.conftest import template
from tests.servers.clusters import WORKGROUP, start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

RATE = 10.0
BURST = 5
RUNS = 60
SCHEDULERS = 3


async def post_round_robin(http: httpx.AsyncClient, urls: list[str], ids: list[str]) -> None:
    """Post RUNS runs, to each scheduler in turn, all at once; note their ids."""

    async def post(url: str, n: int) -> None:
        response = await http.post(
            f"{url}/algorithm/v1/run/paced", json={"algorithmParameters": {"n": n}}
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["requestId"])

    async with trio.open_nursery() as nursery:
        for n in range(RUNS):
            nursery.start_soon(post, urls[n % len(urls)], n)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_schedulers_sharing_a_store_create_jobs_at_one_budgets_rate(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    cluster, kube = await start_cluster(nursery, tmp_path / "cluster", WORKGROUP, template("paced"))
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__SUBMISSION__RATE": str(RATE),
        "NEXUS__SUBMISSION__BURST": str(BURST),
        "NEXUS__LOGGING__LEVEL": "WARNING",
    }
    if kind == "postgres":
        env |= {
            "NEXUS__STORE__KIND": "postgres",
            "NEXUS__POSTGRES__DSN": request.getfixturevalue("postgres_dsn"),
        }
        init = await trio.run_process(
            [sys.executable, "-m", "nexusd", "store", "init"],
            env={**env, "PATH": "/usr/bin:/bin"},
            capture_stdout=True,
            capture_stderr=True,
        )
        assert init.returncode == 0, init.stderr
    async with contextlib.AsyncExitStack() as stack:
        schedulers = [
            await stack.enter_async_context(
                nexusd_process(
                    "scheduler",
                    env={**env, "NEXUS__NODE__HOST_NAME": f"scheduler-{n}"},
                    cwd=tmp_path,
                    log=tmp_path / f"scheduler-{n}.log",
                )
            )
            for n in range(SCHEDULERS)
        ]
        urls = [scheduler.url for scheduler in schedulers]
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        # No run was posted yet, so no token was granted: the shared bucket holds at most a
        # burst now, and every Job from here on took a token granted after this moment.
        ids: list[str] = []
        start = trio.current_time()
        with trio.fail_after(60):
            async with trio.open_nursery() as posting:
                posting.start_soon(post_round_robin, http, urls, ids)
                # The cluster runs in this process: its count is current whenever we look.
                while cluster.request_counts[("create", "jobs", 201)] < RUNS:
                    await trio.sleep(0.005)
        elapsed = trio.current_time() - start
        throttles = [
            (await http.get(f"{url}/readyz")).json()["details"]["throttle:dev"] for url in urls
        ]
    budget_writes = sum(throttle["asks"] for throttle in throttles)
    print(
        f"\n{kind}: {RUNS} Jobs from {SCHEDULERS} schedulers at {RATE:g}/s each (burst {BURST}) "
        f"took {elapsed:.2f}s (one budget: >= {(RUNS - BURST) / RATE:.2f}s; one each would "
        f"allow {(RUNS - SCHEDULERS * BURST) / (SCHEDULERS * RATE):.2f}s); "
        f"{budget_writes / RUNS:.2f} budget writes per Job"
    )
    assert elapsed >= (RUNS - BURST) / RATE
    assert all(throttle["shared"] for throttle in throttles)
    for n in range(SCHEDULERS):  # never on a bucket of its own, not even for a moment
        assert "budget failed" not in (tmp_path / f"scheduler-{n}.log").read_text()
    assert all(throttle["succeeded"] > 0 for throttle in throttles)  # all three took part
    # exactly one Job per run
    assert cluster.request_counts[("create", "jobs", 201)] == RUNS
    assert cluster.request_counts[("create", "jobs", 409)] == 0
    jobs = await kube.list(JOBS, namespace="nexus")
    assert sorted(job["metadata"]["name"] for job in jobs["items"]) == sorted(ids)
    await kube.aclose()
