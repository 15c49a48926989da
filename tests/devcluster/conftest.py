"""Fixtures: a real embedded cluster on a loopback port, reached through real HTTP (httpx)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster

if TYPE_CHECKING:
    import pathlib
    from collections.abc import AsyncIterator, Awaitable, Callable

NS = "nexus"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"
EVENTS = f"/api/v1/namespaces/{NS}/events"


def job_manifest(
    name: str, *, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/algo:1.0",
                    "command": ["python", "main.py"],
                }
            ],
        }
    }
    if annotations:
        template["metadata"] = {"annotations": annotations}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, **spec, "template": template},
    }


async def start_cluster(nursery: trio.Nursery, tmp_path: pathlib.Path, **kwargs: Any) -> DevCluster:
    kwargs.setdefault("backoff_base", 0.0)
    config = DevClusterConfig(state_dir=tmp_path, namespace=NS, **kwargs)
    cluster: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
    return cluster


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: pathlib.Path) -> DevCluster:
    return await start_cluster(nursery, tmp_path)


@pytest.fixture
async def http(cluster: DevCluster) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": "Bearer anything"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as client:
        yield client


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, within: float = 10.0, interval: float = 0.01
) -> Any:
    """Poll `probe` until it returns something truthy, within a hard deadline."""
    with trio.fail_after(within):
        while True:
            value = await probe()
            if value:
                return value
            await trio.sleep(interval)


def condition_types(job: dict[str, Any]) -> list[str]:
    return [c["type"] for c in job.get("status", {}).get("conditions") or []]


async def wait_job_condition(
    http: httpx.AsyncClient, name: str, ctype: str, within: float = 10.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        job: dict[str, Any] = (await http.get(f"{JOBS}/{name}")).json()
        return job if ctype in condition_types(job) else None

    result: dict[str, Any] = await wait_for(probe, within=within)
    return result


async def job_events(http: httpx.AsyncClient, name: str) -> list[tuple[str, str, str]]:
    items = (
        await http.get(EVENTS, params={"fieldSelector": f"involvedObject.name={name}"})
    ).json()["items"]
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"], e["message"]) for e in items]
