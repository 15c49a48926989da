"""Benchmark: the maintainer at 100,000 runs (issue 11's figures).

The store (SQLite, then PostgreSQL) holds RUNS non-terminal runs: a tenth RUNNING with a Job
each in the embedded cluster (scripted kubelet, pods Running for an hour, about six Events
each from the Job controller, scheduler and kubelet), the rest BUFFERED under a scheduler
whose heartbeat is fresh (nothing to claim). Then, each as its own process:

1. `nexusd maintainer --once`: one full pass; its CPU seconds and peak RSS (wait4 rusage);
2. `nexusd maintainer`: /healthz probed back to back while it loads its caches and makes its
   first sweep; p50 / p99, and the process's CPU over the window.

The cluster runs in this test process (seeded in-process, then reached by the maintainer over
HTTP as any cluster). `NEXUSD_PERF_RUNS` (default 100000) sets the scale.

    nox -s perf -- -k maintainer_scale
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, NewRun, SubmissionEntry
from nexusd.devcluster import (
    ANNOTATION_DURATION,
    ANNOTATION_OOM,
    DevClusterConfig,
    run_dev_cluster,
)
from nexusd.devcluster.nodes import NodeGroup
from nexusd.devcluster.resources import EVENTS, JOBS, PODS
from nexusd.stores.postgres import PostgresCheckpointStore
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.perf.measuring import cpu_seconds
from tests.servers.nexusd import free_port

if TYPE_CHECKING:
    from nexusd.devcluster import DevCluster
    from nexusd.stores.checkpoints import CheckpointStore

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("NEXUSD_PERF_RUNS", "100000"))
WITH_JOBS = RUNS // 10
NS = "nexus"
ALGORITHM = "bench"
SCHEDULER = "bench-scheduler"
BATCH = 1000
#: Seconds the running maintainer's /healthz is probed from its start (its caches' load and
#: the first sweep, or as much of it as fits).
WINDOW = float(os.environ.get("NEXUSD_PERF_WINDOW", "120"))


def job_body(request_id: str) -> dict[str, Any]:
    # the labels nexusd's manifests put on the Job and its pods (the maintainer selects on them)
    labels = {
        "science.sneaksanddata.com/algorithm-template-name": ALGORITHM,
        "science.sneaksanddata.com/nexus-component": "algorithm-run",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": request_id, "namespace": NS, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_DURATION: "3600"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": request_id, "image": "example.test/bench:1"}],
                },
            },
        },
    }


async def seed_cluster(cluster: DevCluster, ids: list[str]) -> int:
    """A Job per id, created in-process; returns once every pod runs. The number of Events."""
    for n, request_id in enumerate(ids):
        cluster.ops.create(JOBS, NS, job_body(request_id))
        if n % 200 == 0:
            await trio.sleep(0.01)  # let the controllers and kubelet keep up
    store = cluster.ops.store
    with trio.fail_after(1800):
        while True:
            running = sum(
                1 for pod in store.iter(PODS.key) if pod["status"].get("phase") == "Running"
            )
            if running >= len(ids):
                return sum(1 for _ in store.iter(EVENTS.key))
            await trio.sleep(1)


async def seed_store(store: CheckpointStore, ids: list[str]) -> None:
    now = SystemClock().now()
    for start in range(0, RUNS, BATCH):
        runs = []
        for n in range(start, min(RUNS, start + BATCH)):
            request_id = ids[n] if n < len(ids) else str(uuid.uuid4())
            checkpoint = Checkpoint(
                algorithm=ALGORITHM,
                id=request_id,
                lifecycle_stage=Stage.BUFFERED,
                received_at=now,
                last_modified=now,
                received_by_host=SCHEDULER,
                cluster="dev",
                payload_uri=f"https://nexus/data/v1/payloads/{ALGORITHM}/requests/{request_id}",
            )
            entry = SubmissionEntry(
                algorithm=ALGORITHM, id=request_id, cluster="dev", template=job_body(request_id)
            )
            runs.append(NewRun(checkpoint=checkpoint, submission=entry))
        await store.create_many(runs=runs)

    async def to_running(chunk: list[str]) -> None:
        for request_id in chunk:
            moved = await store.transition(
                algorithm=ALGORITHM,
                request_id=request_id,
                to=Stage.RUNNING,
                changes={"job_uid": request_id, "sent_at": SystemClock().now()},
            )
            assert moved.applied

    async with trio.open_nursery() as nursery:
        for k in range(32):
            nursery.start_soon(to_running, ids[k::32])
    await store.record_heartbeat(host=SCHEDULER, at=SystemClock().now())


async def keep_alive(store: CheckpointStore) -> None:
    while True:
        await store.record_heartbeat(host=SCHEDULER, at=SystemClock().now())
        await trio.sleep(5)


def maintainer_env(
    tmp_path: Path, cluster: DevCluster, store_env: dict[str, str]
) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__NODE__HOST_NAME": "bench-maintainer",
        "NEXUS__LOGGING__LEVEL": "WARNING",
        **store_env,
    }


def one_pass(env: dict[str, str], log: Path) -> tuple[float, float, int, str]:
    """`nexusd maintainer --once`: (wall s, CPU s, peak RSS bytes) from wait4's rusage, and
    what it printed (its CPU by phase)."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "nexusd", "maintainer", "--once"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        started = time.perf_counter()
        assert process.stdout is not None
        with process.stdout:
            printed = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode in (0, 1), log.read_text()[-3000:]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, printed.strip()


@attrs.frozen
class Probe:
    """What `probe_sweep` saw: /healthz latencies after its first answer, when HTTP and
    readiness came (seconds from the start; None = not within the window), CPU seconds."""

    latencies: list[float]
    serving_after: float | None
    ready_after: float | None
    cpu: float


async def probe_sweep(env: dict[str, str], log: Path, window: float, port: int) -> Probe:
    """`nexusd maintainer` for `window` seconds from its start, probed by `http_probe`."""
    env = {**env, "NEXUS__HTTP__PORT": str(port), "NEXUS__HTTP__HOST": "127.0.0.1"}
    with log.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "nexusd", "maintainer"], env=env, stderr=stderr
        )
    try:
        probed = await trio.run_process(
            [
                sys.executable,
                "-m",
                "tests.perf.http_probe",
                f"http://127.0.0.1:{port}",
                str(window),
            ],
            capture_stdout=True,
            cwd=ROOT,
        )
        assert process.poll() is None, "the maintainer exited: see " + str(log)
        cpu = cpu_seconds(process.pid)
    finally:
        process.terminate()
        with trio.move_on_after(20):
            await process.wait()
        if process.poll() is None:
            process.kill()
            await process.wait()
    seen = json.loads(probed.stdout)
    return Probe(seen["latencies"], seen["serving_after"], seen["ready_after"], cpu)


STUCK = 20  # runs of each stuck kind


async def stuck_runs(
    store: CheckpointStore, cluster: DevCluster, port: int, resolved: dict[str, float]
) -> None:
    """Once the running maintainer is ready, among the 100k: runs whose pods get OOMKilled,
    and BUFFERED runs of a scheduler that died an hour ago. Fills `resolved` with how long
    after the fact the last of each kind was FAILED / resubmitted (RUNNING)."""
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    break
            await trio.sleep(0.5)
    now = SystemClock().now()
    await store.record_heartbeat(host="dead-scheduler", at=now - dt.timedelta(hours=1))
    oom, orphans = (
        [str(uuid.uuid4()) for _ in range(STUCK)],
        [str(uuid.uuid4()) for _ in range(STUCK)],
    )
    runs = []
    for request_id in oom + orphans:
        host = "dead-scheduler" if request_id in orphans else SCHEDULER
        checkpoint = Checkpoint(
            algorithm=ALGORITHM,
            id=request_id,
            lifecycle_stage=Stage.BUFFERED,
            received_at=now,
            last_modified=now - dt.timedelta(hours=1),
            received_by_host=host,
            cluster="dev",
        )
        entry = SubmissionEntry(
            algorithm=ALGORITHM, id=request_id, cluster="dev", template=job_body(request_id)
        )
        runs.append(NewRun(checkpoint=checkpoint, submission=entry))
    await store.create_many(runs=runs)
    for request_id in oom:
        body = job_body(request_id)
        annotations = body["spec"]["template"]["metadata"]["annotations"]
        annotations.update({ANNOTATION_OOM: "true", ANNOTATION_DURATION: "0.5"})
        cluster.ops.create(JOBS, NS, body)
        await store.transition(algorithm=ALGORITHM, request_id=request_id, to=Stage.RUNNING)
    began = trio.current_time()
    waiting = {"OOMKilled pods -> FAILED": (oom, Stage.FAILED)}
    waiting["BUFFERED runs of a dead scheduler -> resubmitted"] = (orphans, Stage.RUNNING)
    while waiting:
        for name, (request_ids, stage) in list(waiting.items()):
            found = [
                await store.get(algorithm=ALGORITHM, request_id=request_id)
                for request_id in request_ids
            ]
            if all(run is not None and run.lifecycle_stage is stage for run in found):
                resolved[name] = trio.current_time() - began
                del waiting[name]
        await trio.sleep(0.5)


def describe_pass(wall: float, cpu: float, rss: int, printed: str) -> str:
    return (
        f"  one full pass (--once): {wall:.1f}s wall, {cpu:.1f}s CPU "
        f"({cpu / RUNS * 1e3:.3f} ms per run), peak RSS {rss / 2**20:.0f} MiB\n"
        f"  it said: {printed}"
    )


def describe_probe(probe: Probe) -> str:
    def after(seconds: float | None) -> str:
        return f"{seconds:.1f}s" if seconds is not None else f"not within {WINDOW:.0f}s"

    latencies = probe.latencies or [math.nan]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return (
        f"  running maintainer, first {WINDOW:.0f}s: {probe.cpu:.1f}s CPU; HTTP after "
        f"{after(probe.serving_after)}, ready after {after(probe.ready_after)}; /healthz "
        f"{len(probe.latencies)} answers, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
        f"max {max(latencies) * 1e3:.0f} ms"
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_maintainer_scale(
    nursery: trio.Nursery, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    config = DevClusterConfig(
        state_dir=tmp_path / "cluster",
        namespace=NS,
        node_groups=(
            NodeGroup(
                name="bench", count=10, cpu="100000", memory="100000Gi", pods=WITH_JOBS // 10 + 10
            ),
        ),
    )
    cluster: DevCluster = await nursery.start(
        lambda task_status: run_dev_cluster(config=config, task_status=task_status)
    )
    ids = [str(uuid.uuid4()) for _ in range(WITH_JOBS)]
    began = time.perf_counter()
    events = await seed_cluster(cluster, ids)
    cluster_ready = time.perf_counter() - began
    if kind == "sqlite":
        path = tmp_path / "data" / "checkpoints.sqlite3"
        path.parent.mkdir(parents=True)
        store: CheckpointStore = await SqliteCheckpointStore.open(path=path, clock=SystemClock())
        store_env: dict[str, str] = {}
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        store_env = {"NEXUS__STORE__KIND": "postgres", "NEXUS__POSTGRES__DSN": dsn}
        init = await trio.run_process(
            [sys.executable, "-m", "nexusd", "store", "init"],
            env={**store_env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert init.returncode == 0, init.stderr
        store = await PostgresCheckpointStore.open(dsn=dsn, clock=SystemClock())
    resolved: dict[str, float] = {}
    try:
        await seed_store(store, ids)
        async with trio.open_nursery() as beating:
            # the scheduler the BUFFERED runs belong to stays alive: nothing to recover
            beating.start_soon(keep_alive, store)
            env = maintainer_env(tmp_path, cluster, store_env)
            once = await trio.to_thread.run_sync(one_pass, env, tmp_path / "once.log")
            print(
                f"\nmaintainer at {RUNS} non-terminal runs ({kind}), {WITH_JOBS} Jobs/Pods, "
                f"{events} Events (cluster seeded in {cluster_ready:.0f}s)\n{describe_pass(*once)}"
            )
            port = free_port()
            async with trio.open_nursery() as running:
                running.start_soon(stuck_runs, store, cluster, port, resolved)
                probe = await probe_sweep(env, tmp_path / "maintainer.log", WINDOW, port)
                running.cancel_scope.cancel()
            print(describe_probe(probe))
            for kind_of_run, seconds in resolved.items():
                print(f"  {kind_of_run}: all resolved {seconds:.1f}s after they were stuck")
            beating.cancel_scope.cancel()
    finally:
        await store.aclose()
    assert probe.serving_after is not None, "the maintainer served no /healthz: see its log"
