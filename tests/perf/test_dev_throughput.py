"""Benchmark: runs through a whole `nexusd dev` process, and the cost of each run.

`nexusd dev` runs as its own process (scripted kubelet: pods exit at once) and this process
drives it over loopback HTTP, as clients and algorithms would. Phases:

1. baseline: GET /healthz, the floor cost of one request through the same HTTP stack;
2. intake: POST /algorithm/v1/run/perf (durable before 202);
3. submission: until every run is RUNNING (Job created in the embedded cluster);
4. completion: POST /algorithm/v1/complete/... as the algorithm would.

It prints requests/s per phase, each as a ratio to the baseline measured in the same run, and
the store writes, commits and Kubernetes calls per run read from /readyz.

    nox -s perf -- -k dev_throughput          (or: .venv/bin/pytest tests/perf -s -k dev)
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import trio

from nexusd.stores.signing import JOB_ATTEMPT, CompletionTokens

if TYPE_CHECKING:
    from pathlib import Path

RUNS = int(os.environ.get("NEXUSD_PERF_RUNS", "2000"))
CONCURRENCY = 32
TEMPLATE = {
    "apiVersion": "science.sneaksanddata.com/v1",
    "kind": "NexusAlgorithmTemplate",
    "metadata": {"name": "perf"},
    "spec": {
        "command": "python",
        "args": ["main.py", "--sas-uri=%s", "--request-id=%s"],
        "container": {"registry": "example.test", "image": "perf", "versionTag": "1"},
        "computeResources": {"cpuLimit": "100m", "memoryLimit": "100Mi"},
        "workgroupRef": {
            "name": "default",
            "group": "science.sneaksanddata.com",
            "kind": "NexusAlgorithmWorkgroup",
        },
        "runtimeEnvironment": {"maximumRetries": 0},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def hammer(client: httpx.AsyncClient, requests: list[tuple[str, str, Any]]) -> float:
    """Send the requests with CONCURRENCY workers; return requests per second."""
    pending = list(reversed(requests))

    async def worker() -> None:
        while pending:
            method, url, body = pending.pop()
            response = await client.request(method, url, json=body)
            assert response.status_code < 300, response.text

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
    return len(requests) / (time.perf_counter() - start)


async def readyz(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    details: dict[str, Any] = (await client.get(f"{url}/readyz")).json()["details"]
    return details


async def bench(tmp: Path) -> None:
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "perf.yaml").write_text(json.dumps(TEMPLATE))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEXUS__")},
        "NEXUS__SUBMISSION__RATE": "100000",
        "NEXUS__SUBMISSION__BURST": "100000",
        "NEXUS__LOGGING__LEVEL": "WARNING",
    }
    argv = [
        sys.executable,
        "-m",
        "nexusd",
        "dev",
        "--port",
        str(port),
        "--data-dir",
        str(tmp / "data"),
        "--kubelet",
        "scripted",
        "--manifests",
        str(manifests),
    ]
    # Popen only forks; the benchmark then talks to it over HTTP.
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            with trio.fail_after(60):
                while True:
                    try:
                        if (await client.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
            baseline = await hammer(client, [("GET", f"{url}/healthz", None)] * RUNS)
            before = await readyz(client, url)
            ids: list[str] = []

            async def submit(_: int) -> None:
                response = await client.post(
                    f"{url}/algorithm/v1/run/perf", json={"algorithmParameters": {"n": 1}}
                )
                ids.append(response.json()["requestId"])

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                limiter = trio.CapacityLimiter(CONCURRENCY)
                for n in range(RUNS):

                    async def one(n: int = n) -> None:
                        async with limiter:
                            await submit(n)

                    nursery.start_soon(one)
            intake = RUNS / (time.perf_counter() - start)
            while (await readyz(client, url))["submitter:dev"]["submitted"] < RUNS:
                await trio.sleep(0.05)
            submitted_by = time.perf_counter() - start
            # Each run's completion URL as its pod gets it: with the run's token.
            tokens = CompletionTokens((tmp / "data" / "url.key").read_bytes().strip())
            token = functools.partial(tokens.token, algorithm="perf", attempt=JOB_ATTEMPT)
            completions = await hammer(
                client,
                [
                    (
                        "POST",
                        f"{url}/t/{token(request_id=i)}/algorithm/v1/complete/perf/requests/{i}",
                        {"resultUri": "https://r", "errorCause": "", "errorDetails": ""},
                    )
                    for i in ids
                ],
            )
            after = await readyz(client, url)
    finally:
        process.terminate()
        process.wait(timeout=30)
    store_ops = after["store"]["operations"] - before["store"]["operations"]
    commits = after["store"]["commits"] - before["store"]["commits"]
    kube_before, kube_after = before["kube:dev"]["requests"], after["kube:dev"]["requests"]
    kube_calls = {
        k: v - kube_before.get(k, 0) for k, v in kube_after.items() if v - kube_before.get(k, 0)
    }
    print(f"\nnexusd dev, {RUNS} runs, {CONCURRENCY} concurrent clients, one process each side")
    print(f"  baseline GET /healthz     {baseline:8.0f} req/s  (1.00)")
    print(f"  intake   POST run         {intake:8.0f} runs/s ({intake / baseline:.2f} of baseline)")
    print(f"  submitted (all RUNNING)   {RUNS / submitted_by:8.0f} runs/s end to end")
    print(
        f"  completions POST complete {completions:8.0f} /s    "
        f"({completions / baseline:.2f} of baseline)"
    )
    print(f"  store writes per run {store_ops / RUNS:.2f}, commits per run {commits / RUNS:.3f}")
    print(f"  Kubernetes calls over the run phase: {kube_calls}")


def test_dev_throughput(tmp_path: Path) -> None:
    trio.run(bench, tmp_path)
