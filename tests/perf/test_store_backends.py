"""Benchmark: accepted runs per second of one `nexusd scheduler` process, by store backend.

Same load, same run: a scheduler process on SQLite, then on PostgreSQL, then on PostgreSQL +
S3 (SeaweedFS), each taking RUNS `POST /algorithm/v1/run` from CONCURRENCY clients while its
Jobs go to the embedded cluster (in this process). It prints runs/s for each and the ratio to
SQLite.

    nox -s perf -- -k store_backends
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import trio

from tests.conftest import template
from tests.servers.clusters import WORKGROUP, start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers.seaweedfs import SeaweedS3

RUNS = int(os.environ.get("NEXUSD_PERF_RUNS", "2000"))
CONCURRENCY = 32


async def accepted_per_second(http: httpx.AsyncClient, url: str) -> float:
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one() -> None:
        async with limiter:
            response = await http.post(
                f"{url}/algorithm/v1/run/bench", json={"algorithmParameters": {"n": 1}}
            )
            assert response.status_code == 202, response.text

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(RUNS):
            nursery.start_soon(one)
    return RUNS / (time.perf_counter() - start)


async def bench(
    nursery: trio.Nursery, tmp_path: Path, postgres_dsn: str, seaweedfs: SeaweedS3
) -> dict[str, float]:
    cluster, kube = await start_cluster(nursery, tmp_path / "c", WORKGROUP, template("bench"))
    await kube.aclose()
    common = {
        "NEXUS__KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
        "NEXUS__KUBE__SHARD_NAME": "dev",
        "NEXUS__LOGGING__LEVEL": "WARNING",
        "NEXUS__SUBMISSION__RATE": "100000",
        "NEXUS__SUBMISSION__BURST": "100000",
    }
    postgres = {"NEXUS__STORE__KIND": "postgres", "NEXUS__POSTGRES__DSN": postgres_dsn}
    s3 = {
        "NEXUS__PAYLOADS__KIND": "s3",
        "NEXUS__S3__ENDPOINT": seaweedfs.endpoint,
        "NEXUS__S3__BUCKET": seaweedfs.bucket,
        "NEXUS__S3__ACCESS_KEY_ID": seaweedfs.access_key,
        "NEXUS__S3__SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    variants: dict[str, dict[str, Any]] = {
        "sqlite + files": {},
        "postgres + files": postgres,
        "postgres + s3": {**postgres, **s3},
    }
    await trio.run_process(
        [sys.executable, "-m", "nexusd", "store", "init"],
        env={**os.environ, **postgres},
        capture_stdout=True,
    )
    results = {}
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as http:
        for name, extra in variants.items():
            env = {**common, **extra, "NEXUS__DATA__DIR": str(tmp_path / name.replace(" ", ""))}
            async with nexusd_process(
                "scheduler", env=env, cwd=tmp_path, log=tmp_path / f"{len(results)}.log"
            ) as scheduler:
                results[name] = await accepted_per_second(http, scheduler.url)
    return results


async def test_store_backends(
    nursery: trio.Nursery, tmp_path: Path, postgres_dsn: str, seaweedfs: SeaweedS3
) -> None:
    results = await bench(nursery, tmp_path, postgres_dsn, seaweedfs)
    baseline = results["sqlite + files"]
    print(f"\naccepted runs/s of one scheduler process, {RUNS} runs, {CONCURRENCY} clients")
    for name, rate in results.items():
        print(f"  {name:18s} {rate:8.0f} runs/s  ({rate / baseline:.2f} of sqlite)")
