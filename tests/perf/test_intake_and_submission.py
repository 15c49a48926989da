"""Benchmark: what a run costs a `nexusd scheduler` process, from POST to Job, against figures
measured in the same run.

Every part is its own process: the embedded cluster (scripted kubelet), the schedulers, wrk.
Printed, each beside its same-run baseline:

1. accept: `POST /algorithm/v1/run` (durable and queued) and the dry run, against the same
   process's `GET /healthz`; the submitter is held back (rate 0.5/s) so only intake is measured;
2. batch: runs per second through `POST /algorithm/batch/{alg}` (500 runs a request);
3. submission: a second scheduler with the same name starts on what the first left BUFFERED
   and submits it all; its Job creates per second against a bare keep-alive httpx client
   (32 connections) creating as many Jobs on the same API server just before;
4. CPU per run of the scheduler (`/proc` user + system of the process, all threads): accept
   plus submission, and how it grows from a small to a larger store;
5. 429s: with the API server refusing Job creates beyond 100/s, every run gets exactly one
   Job and none is lost.

    nox -s perf -- -k intake_and_submission
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import trio

from nexusd.kube.client import JOBS, KubeClient
from nexusd.kube.credentials import load_credentials
from tests.conftest import template
from tests.perf.measuring import POST_LUA, cpu_seconds, wrk
from tests.servers.clusters import WORKGROUP, install
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

BODY = json.dumps({"algorithmParameters": {"n": 1, "name": "nexus"}})
SECONDS = int(os.environ.get("NEXUSD_PERF_SECONDS", "5"))
BATCH = 500
#: CPU seconds per create of the bare client (this process), each time it ran: what one
#: Kubernetes call costs a Python httpx client, the floor under nexusd's submission cost.
BARE_CPU: list[float] = []


async def cluster_process(state: Path) -> tuple[trio.Process, Path]:
    """The embedded cluster in a process of its own; returns it and its kubeconfig."""
    await trio.Path(state).mkdir()
    out = state / "stdout"
    with open(out, "wb") as stdout:  # noqa: ASYNC230  # opened once, handed to the child
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.devcluster.crashable_cluster", str(state), "scripted"],
            stdout=stdout,
        )
    with trio.fail_after(30):
        while not (await trio.Path(out).read_text()).strip():
            await trio.sleep(0.05)
    return process, state / "kubeconfig"


async def bare_creates(
    kube: KubeClient, manifest: dict[str, Any], count: int, connections: int
) -> float:
    """Create `count` copies of `manifest` (nexusd's own Job for a run, renamed) with
    `connections` concurrent callers; return Jobs per second."""
    left = list(range(count))

    async def caller() -> None:
        while left:
            left.pop()
            name = f"bare-{uuid.uuid4()}"
            body = {**manifest, "metadata": {**manifest["metadata"], "name": name}}
            await kube.create(JOBS, namespace="nexus", body=body)

    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(caller)
    BARE_CPU.append((time.process_time() - cpu) / count)
    return count / (time.perf_counter() - start)


async def readyz(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    details: dict[str, Any] = (await http.get(f"{url}/readyz")).json()["details"]
    return details


async def wait_idle(pid: int) -> None:
    """Until the process uses under 5% of a CPU over half a second (the cluster has caught up
    with the pods of the Jobs it was given), so one phase does not pay for the last."""
    with trio.fail_after(300):
        while True:
            before = cpu_seconds(pid)
            await trio.sleep(0.5)
            if cpu_seconds(pid) - before < 0.025:
                return


async def test_intake_and_submission(tmp_path: Path) -> None:
    cluster, kubeconfig = await cluster_process(tmp_path / "cluster")
    credentials = load_credentials(kubeconfig)
    kube = KubeClient(credentials=credentials)
    await install(kube, WORKGROUP, template("perf"))
    (tmp_path / "post.lua").write_text(POST_LUA % BODY)
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(kubeconfig),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__NODE__HOST_NAME": "bench-0",
        "NEXUS__LOGGING__LEVEL": "WARNING",
        "NEXUS__SUBMISSION__QUEUE_CAPACITY": "1000000",
        "NEXUS__SHUTDOWN__GRACE": "1s",
    }
    # The submitter held back (0.5 Jobs/s): these phases measure intake alone.
    held_back = {**env, "NEXUS__SUBMISSION__RATE": "0.5", "NEXUS__SUBMISSION__BURST": "1"}
    post = ("-s", str(tmp_path / "post.lua"))
    figures: list[str] = []
    try:
        async with nexusd_process(
            "scheduler", env=held_back, cwd=tmp_path, log=tmp_path / "a.log"
        ) as first:
            url, pid = first.url, first.process.pid

            async def measured(target: str, *extra: str) -> tuple[float, float]:
                before = cpu_seconds(pid)
                load = await trio.to_thread.run_sync(
                    functools.partial(wrk, target, *extra, seconds=SECONDS)
                )
                await trio.sleep(0.5)  # let the writer deliver the last commits
                return load.rate, (cpu_seconds(pid) - before) / load.requests

            healthz, healthz_cpu = await measured(f"{url}/healthz")
            accept, accept_cpu = await measured(f"{url}/algorithm/v1/run/perf", *post)
            dry, dry_cpu = await measured(f"{url}/algorithm/v1/run/perf?dryRun=true", *post)
            healthz2, _ = await measured(f"{url}/healthz")
            async with httpx.AsyncClient(timeout=10) as http:
                one = await http.post(f"{url}/algorithm/v1/run/perf", content=BODY)
                request_id = one.json()["requestId"]
                buffered = await http.get(f"{url}/algorithm/v1/buffer/perf/requests/{request_id}")
            manifest = buffered.json()  # the Job nexusd would create for a run
            first.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                await first.process.wait()
        baseline = (healthz + healthz2) / 2
        figures += [
            f"one scheduler process, wrk 32 connections, {SECONDS}s per phase",
            f"  GET /healthz               {baseline:7.0f} req/s  1.00"
            f"   {healthz_cpu * 1e3:.2f} ms CPU   (before/after: {healthz:.0f}/{healthz2:.0f})",
            f"  POST run (durable, queued) {accept:7.0f} runs/s {accept / baseline:.2f}"
            f"   {accept_cpu * 1e3:.2f} ms CPU per run",
            f"  POST run, dryRun=true      {dry:7.0f} runs/s {dry / baseline:.2f}"
            f"   {dry_cpu * 1e3:.2f} ms CPU per run",
        ]
        batcher = {**held_back, "NEXUS__NODE__HOST_NAME": "bench-batch"}
        async with (
            httpx.AsyncClient(timeout=60) as http,
            nexusd_process("scheduler", env=batcher, cwd=tmp_path, log=tmp_path / "b.log") as b,
        ):
            batch = [json.loads(BODY)] * BATCH
            before, start = cpu_seconds(b.process.pid), time.perf_counter()
            async with trio.open_nursery() as senders:
                for _ in range(8):
                    senders.start_soon(
                        functools.partial(http.post, f"{b.url}/algorithm/batch/perf", json=batch)
                    )
            batch_rate = 8 * BATCH / (time.perf_counter() - start)
            batch_cpu = (cpu_seconds(b.process.pid) - before) / (8 * BATCH)
        figures.append(
            f"  POST batch ({BATCH} a request, 8 at once) {batch_rate:7.0f} runs/s"
            f"   {batch_cpu * 1e3:.2f} ms CPU per run"
        )
        # Submission: a fresh scheduler under the same name finds the BUFFERED backlog.
        await wait_idle(cluster.pid)
        cluster_before, bare_start = cpu_seconds(cluster.pid), time.perf_counter()
        bare = await bare_creates(kube, manifest, 2000, connections=32)
        bare_busy = (cpu_seconds(cluster.pid) - cluster_before) / (time.perf_counter() - bare_start)
        await wait_idle(cluster.pid)
        bare_job_cpu = (cpu_seconds(cluster.pid) - cluster_before) / 2000
        fast = {
            **env,
            "NEXUS__SUBMISSION__RATE": "100000",
            "NEXUS__SUBMISSION__BURST": "100000",
            "NEXUS__SUBMISSION__WORKERS": "32",
            "NEXUS__SUBMISSION__MAX_IN_FLIGHT": "32",
        }
        async with (
            httpx.AsyncClient(timeout=60) as http,
            nexusd_process("scheduler", env=fast, cwd=tmp_path, log=tmp_path / "c.log") as second,
        ):
            url, pid = second.url, second.process.pid
            before, start = cpu_seconds(pid), time.perf_counter()
            cluster_before = cpu_seconds(cluster.pid)
            done_at = (await readyz(http, url))["submitter:dev"]["submitted"]
            with trio.fail_after(600):
                while True:  # the backlog it found at start, submitted
                    details = await readyz(http, url)
                    submitted = details["submitter:dev"]["submitted"]
                    if (
                        not details["queue:dev"]["queued"]
                        and not details["submitter:dev"]["in_flight"]
                    ):
                        break
                    await trio.sleep(0.25)  # a poll is load on the process measured
            elapsed = time.perf_counter() - start
            rate = (submitted - done_at) / elapsed
            busy = (cpu_seconds(cluster.pid) - cluster_before) / elapsed
            await wait_idle(cluster.pid)
            job_cpu = (cpu_seconds(cluster.pid) - cluster_before) / max(1, submitted - done_at)
            # The API server slows as it holds more objects: the baseline is measured before
            # and after, and their mean is 1.00.
            submit_cpu = (cpu_seconds(pid) - before) / max(1, submitted - done_at)
            bare_after = await bare_creates(kube, manifest, 2000, connections=32)
            await wait_idle(cluster.pid)
            bare_before, bare = bare, (bare + bare_after) / 2
            figures += [
                f"submission of a {submitted}-run backlog, 32 workers / 32 in flight",
                f"  bare httpx client, 32 keep-alive connections {bare:7.0f} Jobs/s  1.00"
                f"   (before/after: {bare_before:.0f}/{bare_after:.0f})"
                f"   (API server process {bare_busy:.0%} of a CPU, "
                f"{bare_job_cpu * 1e3:.1f} ms CPU per Job through idle; the client itself "
                f"{sum(BARE_CPU) / len(BARE_CPU) * 1e3:.2f} ms CPU per create)",
                f"  nexusd scheduler                           {rate:7.0f} Jobs/s  "
                f"{rate / bare:.2f}   {submit_cpu * 1e3:.2f} ms CPU per run"
                f"   (API server process {busy:.0%} of a CPU, "
                f"{job_cpu * 1e3:.1f} ms CPU per Job through idle)",
                "  scheduler CPU per accepted + recovered and submitted run: "
                f"{(accept_cpu + submit_cpu) * 1e3:.2f} ms",
            ]
            # The usual path: runs accepted and submitted by the same process, the manifest
            # handed from intake to the submitter in memory.
            before = cpu_seconds(pid)
            load = await trio.to_thread.run_sync(
                functools.partial(wrk, f"{url}/algorithm/v1/run/perf", *post, seconds=SECONDS)
            )
            with trio.fail_after(600):
                while True:
                    details = await readyz(http, url)
                    if (
                        details["submitter:dev"]["submitted"] >= submitted + load.requests
                        and not details["submitter:dev"]["in_flight"]
                    ):
                        break
                    await trio.sleep(0.25)
            live_cpu = (cpu_seconds(pid) - before) / load.requests
            submitted = details["submitter:dev"]["submitted"]
            await wait_idle(cluster.pid)
            figures.append(
                f"  accepted and submitted by one process: {load.requests} runs at "
                f"{load.rate:.0f}/s, {live_cpu * 1e3:.2f} ms scheduler CPU per run"
            )
            # 429s: the API server takes 100 Job creates a second (burst 10) and refuses the
            # rest with 429; every run still gets exactly one Job.
            faults = await http.patch(
                f"{credentials.server}/devcluster/v1/faults",
                json={"mutating_rate": 100.0, "mutating_burst": 10, "resources": ["jobs"]},
                headers={"Authorization": f"Bearer {credentials.token}"},
            )
            assert faults.status_code == 200, faults.text
            ids = []
            for _ in range(300):
                response = await http.post(f"{url}/algorithm/v1/run/perf", content=BODY)
                ids.append(response.json()["requestId"])
            with trio.fail_after(120):
                while (await readyz(http, url))["submitter:dev"]["submitted"] < submitted + 300:
                    await trio.sleep(0.05)
            throttle = (await readyz(http, url))["throttle:dev"]
        jobs = await kube.list(JOBS, namespace="nexus")
        names = {job["metadata"]["name"] for job in jobs["items"]}
        lost = [request_id for request_id in ids if request_id not in names]
        figures.append(
            f"  API server at 100 creates/s: 300 runs, {throttle['throttled']} 429s seen, "
            f"{len(lost)} without a Job (Jobs are named after their run: one each)"
        )
        assert not lost
    finally:
        await kube.aclose()
        cluster.kill()
        with trio.CancelScope(shield=True):
            await cluster.wait()
        print("\n" + "\n".join(figures))
