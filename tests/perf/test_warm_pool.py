"""Benchmark: completions per second end to end, warm pool against Job mode, in one run.

`nexusd dev` runs as its own process with its local kubelet, so the pool's worker is a real
`nexusd worker --handler nexusd.algorithms.hello_warm:ignore` process in a pod of the pool's
Deployment in the embedded cluster, and a Job-mode run is a real pod process
(`python -m nexusd.algorithms.hello`). This process is the client, over loopback HTTP.

Phases, each printed:
1. warm throughput: batches of runs (`POST /algorithm/batch/noop`) kept `WINDOW` runs ahead of
   the completions (read from `/metrics`), for `NEXUSD_PERF_SECONDS`; completions per second
   from the first POST to the last run COMPLETED;
2. warm latency: a steady offered rate (`LATENCY_RATE` runs/s, in batches of 20), POST to
   COMPLETED, p50 / p99;
3. Job mode: the same algorithm shape as Jobs (`JOB_RUNS` runs), throughput and latency;
4. kill: warm load while SIGKILL hits a worker process every `KILL_EVERY` seconds; every run
   must end COMPLETED (none lost) and be completed once (`nexusd_completions_total`).
Latencies are the store's own timestamps: `received_at` (accepted) to `last_modified` of the
COMPLETED write, read from the SQLite file after the phase, so polling adds no load or error.
CPU per run is the dev process's and the workers' (`/proc`), over the phase.

    nox -s perf -- -k warm_pool      (NEXUSD_PERF_SECONDS=10 for a longer phase)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import trio

from tests.perf.measuring import cpu_seconds
from tests.servers.nexusd import completions, free_port
from tests.servers.processes import worker_pids

if TYPE_CHECKING:
    from pathlib import Path

SECONDS = float(os.environ.get("NEXUSD_PERF_SECONDS", "6"))
BATCH = 200
WINDOW = 3000
LATENCY_RATE = 200
JOB_RUNS = int(os.environ.get("NEXUSD_PERF_JOB_RUNS", "60"))
KILL_EVERY = 1.5
KILLS = 3


def _template(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name},
        "spec": {
            "command": "python",
            "args": ["-m", "nexusd.algorithms.hello", "--sas-uri=%s", "--request-id=%s"],
            "container": {"registry": "example.test", "image": name, "versionTag": "1"},
            "computeResources": {"cpuLimit": "100m", "memoryLimit": "100Mi"},
            "workgroupRef": {
                "name": "default",
                "group": "science.sneaksanddata.com",
                "kind": "NexusAlgorithmWorkgroup",
            },
            "runtimeEnvironment": {"maximumRetries": 0},
            **spec,
        },
    }


def _pool(workers: int, handler: str) -> dict[str, Any]:
    return {
        "minWorkers": workers,
        "maxWorkers": workers,
        "concurrency": 256,
        "handler": f"nexusd.algorithms.hello_warm:{handler}",
    }


class Dev:
    """A `nexusd dev` process and what the benchmark reads of it."""

    def __init__(self, tmp: Path) -> None:
        manifests = tmp / "manifests"
        manifests.mkdir()
        documents = [
            _template("noop", warmPool=_pool(1, "ignore")),
            # runs that take 50 ms, so a killed worker always holds some (hello_warm.greet)
            _template("slow", warmPool=_pool(2, "greet")),
            _template("jobs"),
        ]
        (manifests / "perf.yaml").write_text("\n---\n".join(map(json.dumps, documents)))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp / "data"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")},
            "NEXUS__LOGGING__LEVEL": "WARNING",
            "NEXUS__HTTP__ACCESS_LOG": "false",
            "NEXUS__WARM__LEASE_DURATION": "3s",
            "NEXUS__WARM__REAP_INTERVAL": "500ms",
            # more than the kill phase's kills: a run held at every kill must still complete
            "NEXUS__WARM__MAX_ATTEMPTS": "10",
            "NEXUS__SUBMISSION__QUEUE_CAPACITY": "50000",
        }
        argv = [sys.executable, "-m", "nexusd", "dev", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data), "--kubelet", "local", "--manifests", str(manifests)]
        # Popen only forks; the benchmark then talks to it over HTTP.
        self.process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)

    def cpu(self, *algorithms: str) -> float:
        pids = [self.process.pid] + [pid for a in algorithms for pid in worker_pids(a)]
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def runs(self, tag_prefix: str) -> list[tuple[str, float, float, int]]:
        """(stage, received, finished, attempt) of the runs tagged `tag_prefix*`."""
        with sqlite3.connect(f"file:{self.data / 'checkpoints.sqlite3'}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT lifecycle_stage, received_at, last_modified, attempt FROM checkpoints "
                "WHERE tag LIKE ?",
                (tag_prefix + "%",),
            ).fetchall()
        return [(stage, _seconds(r), _seconds(m), attempt) for stage, r, m, attempt in rows]

    def ended(self, tag_prefix: str) -> int:
        """How many runs tagged `tag_prefix*` are in a terminal stage."""
        with sqlite3.connect(f"file:{self.data / 'checkpoints.sqlite3'}?mode=ro", uri=True) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM checkpoints WHERE tag LIKE ? AND lifecycle_stage IN "
                "('COMPLETED', 'FAILED', 'SCHEDULING_FAILED', 'DEADLINE_EXCEEDED', 'CANCELLED')",
                (tag_prefix + "%",),
            ).fetchone()
        return int(count)


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


async def _post_batch(
    client: httpx.AsyncClient, url: str, algorithm: str, tag: str, n: int
) -> None:
    parameters = {"sleep": 0.05} if algorithm == "slow" else {}
    body = [{"algorithmParameters": parameters, "tag": tag} for _ in range(n)]
    response = await client.post(f"{url}/algorithm/batch/{algorithm}", json=body)
    assert response.status_code == 202, response.text[:300]


async def _until_ended(dev: Dev, tag: str, total: int) -> None:
    with trio.fail_after(120):
        while dev.ended(tag) < total:
            await trio.sleep(0.05)


def _percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:7.1f} ms, p99 {p99 * 1000:7.1f} ms"


async def _saturate(client: httpx.AsyncClient, dev: Dev, algorithm: str, tag: str) -> int:
    """Keep WINDOW runs in flight for SECONDS; return how many were posted."""
    start, posted = await completions(client, dev.url), 0
    end = time.perf_counter() + SECONDS
    while time.perf_counter() < end:
        # /metrics costs the server about 1 ms: read it 20 times a second, not per batch.
        ahead = posted - (await completions(client, dev.url) - start)
        for _ in range(max(0, WINDOW - int(ahead)) // BATCH):
            await _post_batch(client, dev.url, algorithm, tag, BATCH)
            posted += BATCH
        await trio.sleep(0.05)
    await _until_ended(dev, tag, posted)
    return posted


async def _steady(
    client: httpx.AsyncClient, dev: Dev, algorithm: str, tag: str, rate: float, n: int
) -> None:
    start, batch = trio.current_time(), max(1, min(20, n, int(rate // 10)))
    for sent in range(0, n, batch):
        await _post_batch(client, dev.url, algorithm, tag, min(batch, n - sent))
        await trio.sleep_until(start + (sent + batch) / rate)
    await _until_ended(dev, tag, n)


def _report(title: str, rows: list[tuple[str, float, float, int]], cpu: float) -> float:
    finished = [row for row in rows if row[0] == "COMPLETED"]
    assert len(finished) == len(rows), {row[0] for row in rows}
    first, last = min(row[1] for row in rows), max(row[2] for row in rows)
    rate = len(rows) / (last - first)
    latencies = [row[2] - row[1] for row in rows]
    print(
        f"  {title:<28} {len(rows):6d} runs {rate:8.0f} completions/s  "
        f"{_percentiles(latencies)}  CPU {cpu / len(rows) * 1000:.3f} ms/run"
    )
    return rate


async def bench(tmp: Path) -> None:
    dev = Dev(tmp)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            with trio.fail_after(120):
                while not worker_pids("noop") or not worker_pids("slow"):
                    await trio.sleep(0.1)
                while True:
                    try:
                        if (await client.get(f"{dev.url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
            await _steady(client, dev, "noop", "warmup-", 1000, 400)  # worker imports, caches
            print(f"\nwarm pool vs Job mode, nexusd dev, local kubelet, {os.cpu_count()} cores")
            cpu = dev.cpu("noop")
            posted = await _saturate(client, dev, "noop", "sat-")
            warm = _report("warm, saturated (1 worker)", dev.runs("sat-"), dev.cpu("noop") - cpu)
            assert posted == len(dev.runs("sat-"))
            cpu = dev.cpu("noop")
            await _steady(client, dev, "noop", "steady-", LATENCY_RATE, LATENCY_RATE * 3)
            _report(
                f"warm, {LATENCY_RATE} runs/s offered", dev.runs("steady-"), dev.cpu("noop") - cpu
            )
            cpu = dev.cpu("noop")
            await _steady(client, dev, "noop", "fast-", 1000, 3000)
            _report("warm, 1000 runs/s offered", dev.runs("fast-"), dev.cpu("noop") - cpu)
            cpu = dev.cpu()
            await _steady(client, dev, "jobs", "jobsall-", 1000, JOB_RUNS)
            jobs = _report("Job mode, all at once", dev.runs("jobsall-"), dev.cpu() - cpu)
            cpu = dev.cpu()
            await _steady(client, dev, "jobs", "jobs-slow-", 2, 10)
            _report("Job mode, 2 runs/s offered", dev.runs("jobs-slow-"), dev.cpu() - cpu)
            print(f"  warm / Job mode completions per second: {warm / jobs:.0f}x")
            await _kill_phase(client, dev)
    finally:
        dev.process.terminate()
        dev.process.wait(timeout=60)


async def _kill_phase(client: httpx.AsyncClient, dev: Dev) -> None:
    """Load on a two-worker pool while its workers are SIGKILLed; nothing lost or doubled."""
    before = await completions(client, dev.url)
    kills = 0

    async def killer() -> None:
        nonlocal kills
        for _ in range(KILLS):
            await trio.sleep(KILL_EVERY)
            pids = worker_pids("slow")
            if pids:
                os.kill(pids[kills % len(pids)], signal.SIGKILL)
                kills += 1

    tag = f"kill-{uuid.uuid4().hex[:6]}-"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(killer)
        await _steady(client, dev, "slow", tag, 1000, int(1000 * KILL_EVERY * (KILLS + 1)))
    rows = dev.runs(tag)
    completed = await completions(client, dev.url) - before
    lost = [row for row in rows if row[0] != "COMPLETED"]
    again = sum(1 for row in rows if row[3] > 1)
    print(
        f"  kill: {kills} workers SIGKILLed under load, {len(rows)} runs: {len(lost)} lost, "
        f"{completed - len(rows)} completed twice, {again} ran again as a later attempt"
    )
    assert kills == KILLS
    assert not lost
    assert completed == len(rows)


def test_warm_pool(tmp_path: Path) -> None:
    trio.run(bench, tmp_path)
