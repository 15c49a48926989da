"""Two `nexusd scheduler` processes and a `nexusd receiver` sharing PostgreSQL and S3.

Real: three nexusd processes started from the executable, a throwaway PostgreSQL on loopback,
SeaweedFS as the S3 server, and the embedded cluster (in this test process) reached by every
scheduler through its kubeconfig. This test plays the algorithms: for every Job that appears it
uploads a result through the Job's `NEXUS__RESULT_UPLOAD_URL` (some runs) and reports to the
receiver, while runs are still being submitted. Nothing is faked.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import psycopg
import trio

from nexusd.kube.client import JOBS, KubeClient, Resource, WatchEvent
from nexusd.kube.watching import run_informer
from tests.conftest import template
from tests.servers.clusters import WORKGROUP, start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers.seaweedfs import SeaweedS3

RUNS = 2000
CONCURRENCY = 32
TAG = "shared-stores"


class JobsSeen:
    """An informer sink (nexusd's own list+watch loop) that hands each new Job on once."""

    def __init__(self, send: trio.MemorySendChannel[dict[str, Any]]) -> None:
        self.send = send
        self.seen: set[str] = set()

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        for job in items:
            self.offer(job)

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        if event.type in ("ADDED", "MODIFIED"):
            self.offer(event.object)

    def offer(self, job: dict[str, Any]) -> None:
        if job["metadata"]["name"] not in self.seen:
            self.seen.add(job["metadata"]["name"])
            self.send.send_nowait(job)


async def play_algorithms(
    client: KubeClient, http: httpx.AsyncClient, receiver: str, runs: int
) -> int:
    """Report every run whose Job appears; every 10th uploads a result to S3 first."""
    send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
    limiter = trio.CapacityLimiter(CONCURRENCY)
    reported = 0

    async def report(job: dict[str, Any], upload: bool) -> None:
        nonlocal reported
        async with limiter:
            request_id = job["metadata"]["name"]
            container = job["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value", "") for e in container["env"]}
            body = {
                "resultUri": f"https://results.example/{request_id}",
                "errorCause": "",
                "errorDetails": "",
            }
            if upload:
                response = await http.put(env["NEXUS__RESULT_UPLOAD_URL"], content=b'{"ok": true}')
                assert response.status_code == 200, response.text
                body["resultUri"] = ""  # the receiver signs a download URL of the upload
            token_path = urlsplit(env["NEXUS__CLIENT__RECEIVER"]).path
            response = await http.post(
                f"{receiver}{token_path}/algorithm/v1/complete/shared/requests/{request_id}",
                json=body,
            )
            assert response.status_code == 202, response.text
            reported += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                run_informer,
                client=client,
                resources=[JOBS],
                namespace="nexus",
                sink=JobsSeen(send),
            )
        )
        async with trio.open_nursery() as reporters:
            for n in range(runs):
                reporters.start_soon(report, await receive.receive(), n % 10 == 0)
        nursery.cancel_scope.cancel()
    return reported


async def test_two_schedulers_and_a_receiver_share_postgres_and_s3(
    nursery: trio.Nursery, tmp_path: Path, postgres_dsn: str, seaweedfs: SeaweedS3
) -> None:
    cluster, client = await start_cluster(
        nursery, tmp_path / "cluster", WORKGROUP, template("shared")
    )
    env = {
        "NEXUS__STORE__KIND": "postgres",
        "NEXUS__POSTGRES__DSN": postgres_dsn,
        "NEXUS__PAYLOADS__KIND": "s3",
        "NEXUS__S3__ENDPOINT": seaweedfs.endpoint,
        "NEXUS__S3__BUCKET": seaweedfs.bucket,
        "NEXUS__S3__ACCESS_KEY_ID": seaweedfs.access_key,
        "NEXUS__S3__SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__SUBMISSION__RATE": "10000",
        "NEXUS__SUBMISSION__BURST": "1000",
        "NEXUS__LOGGING__LEVEL": "WARNING",
        # pods report to <receiver>/t/<token>: the tests send to the receiver process there
        "NEXUS__RECEIVER__URL": "http://receiver.invalid",
    }
    init = await trio.run_process(
        [*__import__("sys").executable.split(), "-m", "nexusd", "store", "init"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_stdout=True,
        capture_stderr=True,
    )
    assert init.returncode == 0
    async with contextlib.AsyncExitStack() as stack:
        schedulers = [
            (
                await stack.enter_async_context(
                    nexusd_process(
                        "scheduler",
                        env={**env, "NEXUS__NODE__HOST_NAME": f"scheduler-{n}"},
                        cwd=tmp_path,
                        log=tmp_path / f"scheduler-{n}.log",
                    )
                )
            ).url
            for n in (1, 2)
        ]
        receiver = (
            await stack.enter_async_context(
                nexusd_process("receiver", env=env, cwd=tmp_path, log=tmp_path / "receiver.log")
            )
        ).url
        limits = httpx.Limits(max_connections=2 * CONCURRENCY)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30, limits=limits))
        ids: list[str] = []
        targets = itertools.cycle(schedulers)

        async def submit_all() -> None:
            limiter = trio.CapacityLimiter(CONCURRENCY)

            async def one(url: str, n: int) -> None:
                async with limiter:
                    response = await http.post(
                        f"{url}/algorithm/v1/run/shared",
                        json={"algorithmParameters": {"n": n}, "tag": TAG},
                    )
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["requestId"])

            async with trio.open_nursery() as inner:
                for n in range(RUNS):
                    inner.start_soon(one, next(targets), n)

        with trio.fail_after(240):
            async with trio.open_nursery() as work:
                work.start_soon(submit_all)
                reported = await play_algorithms(client, http, receiver, RUNS)
        assert reported == RUNS
        with trio.fail_after(60):
            while True:
                tagged = (await http.get(f"{schedulers[1]}/algorithm/v1/results/tags/{TAG}")).json()
                if sum(item["status"] == "COMPLETED" for item in tagged) == RUNS:
                    break
                await trio.sleep(0.2)
        # every run exactly once, terminal, and visible from both schedulers
        assert sorted(item["requestId"] for item in tagged) == sorted(ids)
        from_first = (await http.get(f"{schedulers[0]}/algorithm/v1/results/tags/{TAG}")).json()
        assert len(from_first) == RUNS
        uploaded = [item for item in tagged if "X-Amz-Signature" in item["resultUri"]]
        assert len(uploaded) >= RUNS // 10
        download = await http.get(uploaded[0]["resultUri"])
        assert download.json() == {"ok": True}
    # one Job per run, no duplicate creates
    assert cluster.request_counts[("create", "jobs", 201)] == RUNS
    assert cluster.request_counts[("create", "jobs", 409)] == 0
    with psycopg.connect(postgres_dsn) as connection:
        rows = connection.execute(
            "SELECT received_by_host, count(*) FROM checkpoints GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("scheduler-1", RUNS // 2), ("scheduler-2", RUNS // 2)]
    await client.aclose()
