"""Warm-pool workers killed with SIGKILL under load: no run is lost, none completed twice.

Real: `nexusd dev` as its own process with the LOCAL kubelet, so the pool's workers are real
`nexusd worker --handler nexusd.algorithms.hello_warm:greet` processes in the pods of the
pool's Deployment in the embedded cluster; runs posted over loopback HTTP; workers killed
with `kill -9` while they hold runs (each run sleeps 50 ms, so a worker always holds some).
The killed worker's leases expire (2 s here), the scheduler gives its runs back as their next
attempt, the other worker (and the killed one, restarted by the kubelet) completes them.
Progress and attempts are read from the store file, read-only; the completion count from
`/metrics`. Nothing is faked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import trio

from tests.conftest import template
from tests.servers.nexusd import completions, free_port
from tests.servers.processes import worker_pids

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

RUNS = 600
BATCH = 20
POOL = {
    "minWorkers": 2,
    "maxWorkers": 2,
    "concurrency": 16,
    "handler": "nexusd.algorithms.hello_warm:greet",
}


def stages(data: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(f"file:{data / 'checkpoints.sqlite3'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT lifecycle_stage, attempt FROM checkpoints WHERE algorithm = 'slow'"
        ).fetchall()
    return [(str(stage), int(attempt)) for stage, attempt in rows]


@contextlib.asynccontextmanager
async def dev_process(tmp: Path) -> AsyncIterator[tuple[str, Path]]:
    manifests = tmp / "manifests"
    manifests.mkdir()
    slow = template("slow", warmPool=POOL)
    (manifests / "slow.yaml").write_text(json.dumps(slow))
    port, data = free_port(), tmp / "data"
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")}
    env |= {"NEXUS__WARM__LEASE_DURATION": "2s", "NEXUS__WARM__REAP_INTERVAL": "200ms"}
    argv = [sys.executable, "-m", "nexusd", "dev", "--port", str(port), "--data-dir", str(data)]
    argv += ["--kubelet", "local", "--manifests", str(manifests)]
    # Popen only forks; the test then talks to it over HTTP.
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        yield f"http://127.0.0.1:{port}", data
    finally:
        process.terminate()
        process.wait(timeout=60)


async def test_killed_workers_lose_no_run_and_complete_none_twice(tmp_path: Path) -> None:
    async with dev_process(tmp_path) as (url, data), httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(60):
            while len(worker_pids("slow")) < 2:
                await trio.sleep(0.1)
        kills: list[int] = []

        async def killer() -> None:
            for threshold in (RUNS // 6, RUNS // 2):
                while await completions(client, url) < threshold:
                    await trio.sleep(0.02)
                pids = worker_pids("slow")
                os.kill(pids[len(kills) % len(pids)], signal.SIGKILL)
                kills.append(pids[len(kills) % len(pids)])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            body = [{"algorithmParameters": {"sleep": 0.05}} for _ in range(BATCH)]
            for _ in range(RUNS // BATCH):
                response = await client.post(f"{url}/algorithm/batch/slow", json=body)
                assert response.status_code == 202, response.text
                await trio.sleep(0.02)
        with trio.fail_after(90):
            while any(stage != "COMPLETED" for stage, _ in stages(data)):
                await trio.sleep(0.2)
        runs = stages(data)
        assert len(runs) == RUNS
        assert len(kills) == 2
        assert await completions(client, url) == RUNS  # one completion per run
        assert any(attempt > 1 for _, attempt in runs)  # the killed workers held runs
