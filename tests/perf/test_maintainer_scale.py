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

import math
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.lifecycle import Stage
from nexusd.core.records import Checkpoint, NewRun, SubmissionEntry
from nexusd.devcluster import ANNOTATION_DURATION, DevClusterConfig, run_dev_cluster
from nexusd.devcluster.nodes import NodeGroup
from nexusd.devcluster.resources import EVENTS, JOBS, PODS
from nexusd.stores.postgres import PostgresCheckpointStore
from nexusd.stores.sqlite import SqliteCheckpointStore
from tests.perf.measuring import cpu_seconds
from tests.servers.nexusd import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.devcluster import DevCluster
    from nexusd.stores.checkpoints import CheckpointStore

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
    labels = {"science.sneaksanddata.com/algorithm-template-name": ALGORITHM}
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


def one_pass(env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """`nexusd maintainer --once`: (wall s, CPU s, peak RSS bytes), from wait4's rusage."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "nexusd", "maintainer", "--once"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        started = time.perf_counter()
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode in (0, 1), log.read_text()[-3000:]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


async def probe_sweep(env: dict[str, str], log: Path, window: float) -> tuple[list[float], float]:
    """`nexusd maintainer` for `window` seconds from its start; /healthz latencies (after the
    first answer) and its CPU seconds over the window."""
    port = free_port()
    env = {**env, "NEXUS__HTTP__PORT": str(port), "NEXUS__HTTP__HOST": "127.0.0.1"}
    latencies: list[float] = []
    with log.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "nexusd", "maintainer"], env=env, stderr=stderr
        )
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            answered = False
            with trio.move_on_after(window):
                while True:
                    began = trio.current_time()
                    try:
                        response = await http.get(f"http://127.0.0.1:{port}/healthz")
                    except httpx.TransportError:
                        assert process.poll() is None, "the maintainer exited: see " + str(log)
                        await trio.sleep(0.05)
                        continue
                    assert response.status_code == 200
                    if answered:
                        latencies.append(trio.current_time() - began)
                    answered = True
                    await trio.sleep(0.02)
        cpu = cpu_seconds(process.pid)
    finally:
        process.terminate()
        with trio.move_on_after(20):
            await process.wait()
        if process.poll() is None:
            process.kill()
            await process.wait()
    return latencies, cpu


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
    try:
        await seed_store(store, ids)
    finally:
        await store.aclose()
    env = maintainer_env(tmp_path, cluster, store_env)
    wall, cpu, rss = await trio.to_thread.run_sync(one_pass, env, tmp_path / "once.log")
    latencies, window_cpu = await probe_sweep(env, tmp_path / "maintainer.log", window=WINDOW)
    print(
        f"\nmaintainer at {RUNS} non-terminal runs ({kind}), {WITH_JOBS} Jobs/Pods, {events} "
        f"Events (cluster seeded in {cluster_ready:.0f}s)\n"
        f"  one full pass (--once): {wall:.1f}s wall, {cpu:.1f}s CPU "
        f"({cpu / RUNS * 1e3:.3f} ms per run), peak RSS {rss / 2**20:.0f} MiB\n"
        f"  running maintainer, first {WINDOW:.0f}s: {window_cpu:.1f}s CPU; "
        f"/healthz {len(latencies)} answers, p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms, max {max(latencies) * 1e3:.0f} ms"
    )
