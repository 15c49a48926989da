"""A warm pool in command mode: the unchanged `hello` algorithm, one process per run.

Real: `nexusd dev` on loopback with the LOCAL kubelet, so the pool's pod runs
`nexusd worker -- python -m nexusd.algorithms.hello --sas-uri=%s --request-id=%s`, which starts
`hello` per leased run with a Job's args and env: it fetches its payload, uploads its result and
reports to the receiver URL with the attempt's completion token, exactly as in a Job. The test
reads results over HTTP and the algorithm processes from /proc. Nothing is faked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.conftest import StartNexus, template, wait_for_stage, write_manifests
from tests.servers.processes import pids_with

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    hello = template(
        "hello-pool",
        args=["-m", "nexusd.algorithms.hello", "--sas-uri=%s", "--request-id=%s"],
        warmPool={"minWorkers": 1, "maxWorkers": 1, "concurrency": 2},
    )
    manifests = write_manifests(tmp_path / "manifests", hello)
    return await start_nexus(**{"dev.kubelet": "local", "dev.manifests": str(manifests)})


async def run(http: httpx.AsyncClient, nexus: Running, parameters: dict[str, Any]) -> str:
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/hello-pool", json={"algorithmParameters": parameters}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


def algorithm_processes(request_id: str) -> list[int]:
    """`hello` processes started for `request_id` (its `--request-id` argument)."""
    return pids_with(argument=f"--request-id={request_id}")


async def test_each_run_is_a_process_of_the_unchanged_command(
    http: httpx.AsyncClient, nexus: Running
) -> None:
    ids = [await run(http, nexus, {"name": f"n{i}"}) for i in range(3)]
    for i, request_id in enumerate(ids):
        result = await wait_for_stage(
            http, nexus.url, "hello-pool", request_id, "COMPLETED", "FAILED"
        )
        assert result["status"] == "COMPLETED", result
        download = await http.get(result["resultUri"])
        assert download.json() == {"greeting": f"Hello, n{i}!", "requestId": request_id}
    crashed = await run(http, nexus, {"fail": "crash"})  # exits 1 without reporting
    result = await wait_for_stage(http, nexus.url, "hello-pool", crashed, "COMPLETED", "FAILED")
    assert "without reporting" in result["runErrorMessage"]


async def test_cancel_stops_the_runs_process(http: httpx.AsyncClient, nexus: Running) -> None:
    request_id = await run(http, nexus, {"sleep": 60})
    with trio.fail_after(20):
        while not algorithm_processes(request_id):
            await trio.sleep(0.05)
    cancelled = await http.post(
        f"{nexus.url}/algorithm/v1/cancel/hello-pool/requests/{request_id}",
        json={"initiator": "test", "reason": "stop it"},
    )
    assert cancelled.status_code == 200, cancelled.text
    with trio.fail_after(15):  # the worker's renewal long poll answers at once; SIGTERM
        while algorithm_processes(request_id):
            await trio.sleep(0.05)
    result = await wait_for_stage(http, nexus.url, "hello-pool", request_id, "CANCELLED")
    assert result["status"] == "CANCELLED"
