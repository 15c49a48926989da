"""SIGTERM: new connections are refused at once, requests in flight are finished, and nothing
accepted is lost.

Real: `nexusd scheduler` and `nexusd receiver` processes (SQLite store, payload files)
submitting to the embedded cluster (in this test process) through its kubeconfig. Requests "in
flight" are real HTTP/1.1 requests on raw sockets whose headers the server has taken (it
answered `100 Continue`) and whose bodies are sent only after the SIGTERM. Nothing is faked.
"""

from __future__ import annotations

import contextlib
import json
import signal
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nexusd.core.records import Checkpoint
    from nexusd.kube.client import KubeClient

RUNS = 20


@contextlib.asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteCheckpointStore]:
    store = await SqliteCheckpointStore.open(
        path=tmp_path / "data" / "checkpoints.sqlite3", clock=SystemClock()
    )
    try:
        yield store
    finally:
        await store.aclose()


async def stages(tmp_path: Path, algorithm: str, ids: list[str]) -> list[Stage]:
    async with sqlite_store(tmp_path) as store:
        found: list[Checkpoint | None] = [
            await store.get(algorithm=algorithm, request_id=i) for i in ids
        ]
    return [checkpoint.lifecycle_stage for checkpoint in found if checkpoint is not None]


async def refused(url: str) -> None:
    """Wait until the server refuses new connections (its listener is closed)."""
    host, port = url.removeprefix("http://").split(":")
    with trio.fail_after(5):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, int(port))
            except OSError:
                return
            await stream.aclose()
            await trio.sleep(0.01)


class InFlight:
    """A POST whose headers the server has taken (it said 100 Continue) and whose body waits."""

    def __init__(self, stream: trio.SocketStream, body: bytes) -> None:
        self.stream = stream
        self.body = body

    @classmethod
    async def start(cls, url: str, path: str, body: bytes) -> InFlight:
        host, port = url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        )
        await stream.send_all(head.encode())
        with trio.fail_after(10):
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(4096)
        assert received.startswith(b"HTTP/1.1 100"), received
        return cls(stream, body)

    async def finish(self) -> tuple[int, bytes]:
        """Send the body; return the status and body of the answer."""
        await self.stream.send_all(self.body)
        answer = b""
        with trio.fail_after(10):
            while True:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ]
                if rest and length and len(rest) >= length[0]:
                    break
        await self.stream.aclose()
        head, _, rest = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), rest


async def test_sigterm_drains_what_it_can_and_keeps_the_rest(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A queue throttled to 2 Jobs/s is not empty after the 2 s grace: what is left stays
    BUFFERED, and the same host submits it when it starts again."""
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
            await refused(first.url)  # intake closes at once, well within the 2 s grace
            with trio.fail_after(10):  # the grace period is a deadline
                assert await first.process.wait() == 0
        found = await stages(tmp_path, "slow", ids)
        assert len(found) == RUNS  # every accepted run is still there
        assert set(found) <= {Stage.BUFFERED, Stage.RUNNING}
        assert Stage.BUFFERED in found  # the queue was not empty: they were kept, not lost
        async with nexusd_process(
            "scheduler", env=env, cwd=tmp_path, log=tmp_path / "second.log"
        ) as second:
            for request_id in ids:
                await wait_for_stage(http, second.url, "slow", request_id, "RUNNING")
    jobs = await kube.list(JOBS, namespace="nexus")
    assert sorted(job["metadata"]["name"] for job in jobs["items"]) == sorted(ids)
    await kube.aclose()


async def token_path(kube: KubeClient, request_id: str) -> str:
    """The path of the receiver URL the run's pod was given: `/t/<its completion token>`."""
    job = await kube.get(JOBS, namespace="nexus", name=request_id)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return urlsplit(env["NEXUS__CLIENT__RECEIVER"]).path


async def test_sigterm_finishes_the_runs_and_completions_in_flight(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    slow = template("slow", annotations={"devcluster.nexusd.io/duration": "600"})
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP, slow)
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__NODE__HOST_NAME": "scheduler-0",
        "NEXUS__SHUTDOWN__GRACE": "10s",
        # pods report to <receiver>/t/<token>: the tests send to the receiver process there
        "NEXUS__RECEIVER__URL": "http://receiver.invalid",
    }
    run_body = json.dumps({"algorithmParameters": {"in": "flight"}}).encode()
    report = json.dumps({"resultUri": "https://r", "errorCause": "", "errorDetails": ""}).encode()
    async with (
        httpx.AsyncClient(timeout=10) as http,
        nexusd_process("scheduler", env=env, cwd=tmp_path, log=tmp_path / "s.log") as sched,
        nexusd_process("receiver", env=env, cwd=tmp_path, log=tmp_path / "r.log") as recv,
    ):
        running = []
        for _ in range(3):
            response = await http.post(
                f"{sched.url}/algorithm/v1/run/slow", json={"algorithmParameters": {}}
            )
            running.append(response.json()["requestId"])
        for request_id in running:
            await wait_for_stage(http, sched.url, "slow", request_id, "RUNNING")
        runs = [
            await InFlight.start(sched.url, "/algorithm/v1/run/slow", run_body) for _ in range(3)
        ]
        completions = [
            await InFlight.start(
                recv.url,
                f"{await token_path(kube, request_id)}/algorithm/v1/complete/slow/requests/"
                f"{request_id}",
                report,
            )
            for request_id in running
        ]
        for process in (sched, recv):
            process.process.send_signal(signal.SIGTERM)
        await refused(sched.url)
        await refused(recv.url)
        answers = [await request.finish() for request in runs + completions]
        for process in (sched, recv):
            with trio.fail_after(10):
                assert await process.process.wait() == 0
    assert [status for status, _ in answers] == [202] * 6, answers
    accepted = [json.loads(body)["requestId"] for _, body in answers[:3]]
    # the runs taken during the shutdown are durable and went out (or stay BUFFERED for a
    # restart); the completions are recorded
    assert set(await stages(tmp_path, "slow", accepted)) <= {Stage.BUFFERED, Stage.RUNNING}
    assert len(await stages(tmp_path, "slow", accepted)) == 3
    assert await stages(tmp_path, "slow", running) == [Stage.COMPLETED] * 3
    await kube.aclose()
