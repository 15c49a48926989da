"""The maintainer as a process: recovering a killed scheduler's runs, and `--once`.

Real: `nexusd scheduler`, `nexusd receiver` and `nexusd maintainer` processes on a throwaway
PostgreSQL (or SQLite for `--once`), payload files in a shared data directory, and the embedded
cluster (in this test process) reached through its kubeconfig. This test plays the algorithms:
it reports every Job that appears to the receiver. Nothing is faked.
"""

from __future__ import annotations

import functools
import math
import signal
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import trio

from nexusd.devcluster import ANNOTATION_EXIT_CODE
from nexusd.kube.client import JOBS, KubeClient
from nexusd.kube.watching import run_informer
from tests.conftest import template, wait_for_stage
from tests.e2e.test_shared_stores import JobsSeen
from tests.servers.clusters import WORKGROUP, start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path


async def report_every_job(
    kube: KubeClient, http: httpx.AsyncClient, receiver: str, *, task_status: Any
) -> None:
    send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                run_informer, client=kube, resources=[JOBS], namespace="nexus", sink=JobsSeen(send)
            )
        )
        task_status.started()
        async for job in receive:
            labels = job["metadata"]["labels"]
            algorithm = labels["science.sneaksanddata.com/algorithm-template-name"]
            container = job["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e["value"] for e in container["env"]}
            token_path = urlsplit(env["NEXUS__CLIENT__RECEIVER"]).path
            response = await http.post(
                f"{receiver}{token_path}/algorithm/v1/complete/{algorithm}/requests/"
                f"{job['metadata']['name']}",
                json={"resultUri": "https://r", "errorCause": "", "errorDetails": ""},
            )
            assert response.status_code == 202


async def test_a_killed_schedulers_runs_all_finish_none_twice(
    nursery: trio.Nursery, tmp_path: Path, postgres_dsn: str
) -> None:
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP, template("work"))
    env = {
        "NEXUS__STORE__KIND": "postgres",
        "NEXUS__POSTGRES__DSN": postgres_dsn,
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__NODE__HEARTBEAT_INTERVAL": "0.3s",
        # pods report to <receiver>/t/<token>: the tests send to the receiver process there
        "NEXUS__RECEIVER__URL": "http://receiver.invalid",
    }
    await trio.run_process(
        [sys.executable, "-m", "nexusd", "store", "init"], env=env, capture_stdout=True
    )
    runs = 12
    async with httpx.AsyncClient(timeout=10) as http:
        # scheduler-a accepts runs but can submit only one Job a second, then dies
        slow = {
            **env,
            "NEXUS__NODE__HOST_NAME": "scheduler-a",
            "NEXUS__SUBMISSION__RATE": "1",
            "NEXUS__SUBMISSION__BURST": "1",
        }
        async with nexusd_process(
            "scheduler", env=slow, cwd=tmp_path, log=tmp_path / "a.log"
        ) as doomed:
            ids = []
            for _ in range(runs):
                response = await http.post(
                    f"{doomed.url}/algorithm/v1/run/work", json={"algorithmParameters": {}}
                )
                ids.append(response.json()["requestId"])
            doomed.process.send_signal(signal.SIGKILL)
            await doomed.process.wait()
        maintainer_env = {
            **env,
            "NEXUS__NODE__HOST_NAME": "maintainer-0",
            "NEXUS__MAINTAINER__SCHEDULER_TIMEOUT": "1s",
            "NEXUS__MAINTAINER__INTERVAL": "0.5s",
        }
        async with (
            nexusd_process(
                "receiver", env=env, cwd=tmp_path, log=tmp_path / "receiver.log"
            ) as receiver,
            nexusd_process(
                "scheduler",
                env={**env, "NEXUS__NODE__HOST_NAME": "scheduler-b"},
                cwd=tmp_path,
                log=tmp_path / "b.log",
            ) as survivor,
            nexusd_process("maintainer", env=maintainer_env, cwd=tmp_path, log=tmp_path / "m.log"),
            trio.open_nursery() as algorithms,
        ):
            await algorithms.start(report_every_job, kube, http, receiver.url)
            for request_id in ids:
                await wait_for_stage(http, survivor.url, "work", request_id, "COMPLETED")
            algorithms.cancel_scope.cancel()
    jobs = await kube.list(JOBS, namespace="nexus")
    assert sorted(job["metadata"]["name"] for job in jobs["items"]) == sorted(ids)
    assert cluster.request_counts[("create", "jobs", 201)] == runs  # none submitted twice
    await kube.aclose()


async def test_once_does_one_pass_and_says_how_it_went(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    failing = template("failing", annotations={ANNOTATION_EXIT_CODE: "3"})
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP, failing)
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        async with nexusd_process(
            "scheduler", env=env, cwd=tmp_path, log=tmp_path / "s.log"
        ) as scheduler:
            response = await http.post(
                f"{scheduler.url}/algorithm/v1/run/failing", json={"algorithmParameters": {}}
            )
            request_id = response.json()["requestId"]
            await wait_for_stage(http, scheduler.url, "failing", request_id, "RUNNING")
        # the scheduler is gone; the Job fails; nothing has told the run yet
        with trio.fail_after(10):
            while (
                not (await kube.get(JOBS, namespace="nexus", name=request_id))
                .get("status", {})
                .get("failed")
            ):
                await trio.sleep(0.05)
        once = await trio.run_process(
            [sys.executable, "-m", "nexusd", "maintainer", "--once"],
            env={**env, "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert once.returncode == 0, once.stderr.decode()
        assert b"reconciled 1 runs" in once.stdout
        async with nexusd_process(
            "scheduler", env=env, cwd=tmp_path, log=tmp_path / "s2.log"
        ) as scheduler:
            result = await wait_for_stage(
                http, scheduler.url, "failing", request_id, "DEADLINE_EXCEEDED"
            )
    assert result["runErrorMessage"].startswith("Algorithm exceeded its max allowed run time")
    # the Job has failed: it is kept for `kubectl logs` until maintainer.failed_job_ttl
    assert cluster.request_counts[("delete", "jobs", 200)] == 0
    # a pass that cannot reach its cluster fails, within maintainer.once_timeout
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(
        cluster.kubeconfig_path.read_text().replace(cluster.url, "http://127.0.0.1:1")
    )
    failed = await trio.run_process(
        [sys.executable, "-m", "nexusd", "maintainer", "--once"],
        env={
            **env,
            "NEXUS__KUBE__KUBECONFIG": str(broken),
            "NEXUS__MAINTAINER__ONCE_TIMEOUT": "2s",
            "PATH": "/usr/bin:/bin",
        },
        cwd=tmp_path,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert failed.returncode == 1
    assert b"did not finish within 2s" in failed.stderr
    await kube.aclose()
