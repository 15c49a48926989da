"""Helpers for tests of Deployments and ReplicaSets over the embedded cluster's HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conftest import EVENTS, NS, PODS, start_cluster, wait_for

if TYPE_CHECKING:
    import pathlib

    import httpx
    import trio

    from nexusd.devcluster import DevCluster

DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
REPLICASETS = f"/apis/apps/v1/namespaces/{NS}/replicasets"
MERGE = {"Content-Type": "application/merge-patch+json"}


async def replicated_cluster(nursery: trio.Nursery, tmp_path: pathlib.Path) -> DevCluster:
    """Containers without a duration annotation run for a day ("until deleted" in a test);
    CrashLoopBackOff starts at 0.2 s instead of 10 s."""
    return await start_cluster(
        nursery, tmp_path, default_duration=86_400.0, restart_backoff_base=0.2
    )


def deployment(
    name: str, replicas: int = 2, *, annotations: dict[str, str] | None = None, image: str = "1.0"
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "containers": [
                {"name": "worker", "image": f"registry.example/algo:{image}", "command": ["run"]}
            ]
        },
    }
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
        },
    }


async def get(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def pods(http: httpx.AsyncClient, app: str, *, alive: bool = True) -> list[dict[str, Any]]:
    items = (await get(http, f"{PODS}?labelSelector=app%3D{app}"))["items"]
    if alive:  # what the ReplicaSet counts: neither being deleted nor ended
        items = [
            p
            for p in items
            if not p["metadata"].get("deletionTimestamp")
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
    return items


async def replicasets(http: httpx.AsyncClient, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await get(http, f"{REPLICASETS}?labelSelector=app%3D{app}"))[
        "items"
    ]
    return items


async def wait_ready(http: httpx.AsyncClient, name: str, replicas: int) -> dict[str, Any]:
    """The Deployment once every replica is updated and available and the rollout is done."""

    async def probe() -> dict[str, Any] | None:
        d = await get(http, f"{DEPLOYMENTS}/{name}")
        status = d.get("status") or {}
        done = (
            status.get("observedGeneration") == d["metadata"]["generation"]
            and status.get("replicas", 0) == replicas
            and status.get("updatedReplicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and len(await pods(http, name)) == replicas
        )
        return d if done else None

    result: dict[str, Any] = await wait_for(probe)
    return result


async def events_of(http: httpx.AsyncClient, name: str) -> list[tuple[str, str, str]]:
    items = (await get(http, f"{EVENTS}?fieldSelector=involvedObject.name%3D{name}"))["items"]
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"], e["message"]) for e in items]


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"])
        for c in obj["status"].get("conditions") or []
    }


def restart_count(pod: dict[str, Any]) -> int:
    statuses = pod["status"].get("containerStatuses") or [{}]
    return int(statuses[0].get("restartCount", 0))


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod["status"].get("conditions") or []
    )
