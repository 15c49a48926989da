"""Deployment pods whose containers exit: restarted in place by the kubelet with
CrashLoopBackOff (base shortened to 0.2 s), and ranked first for deletion while not ready.
Over the embedded cluster's HTTP API; container exits are scripted with pod annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from nexusd.devcluster import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE, ANNOTATION_OOM, DevCluster

from .conftest import NS, PODS, wait_for
from .workloads_http import (
    DEPLOYMENTS,
    MERGE,
    REPLICASETS,
    deployment,
    events_of,
    get,
    is_ready,
    pods,
    replicasets,
    replicated_cluster,
    restart_count,
    wait_ready,
)

if TYPE_CHECKING:
    import pathlib

    import httpx
    import trio


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: pathlib.Path) -> DevCluster:
    return await replicated_cluster(nursery, tmp_path)


async def test_unready_pods_are_deleted_before_ready_ones(http: httpx.AsyncClient) -> None:
    # One replica crash-loops (not ready most of the time); scaling to 1 keeps the ready one.
    await http.post(DEPLOYMENTS, json=deployment("mixed", 1))
    await wait_ready(http, "mixed", 1)
    [ready] = await pods(http, "mixed")
    [rs] = await replicasets(http, "mixed")
    rs_url = f"{REPLICASETS}/{rs['metadata']['name']}"
    # Scale the ReplicaSet itself while the Deployment is paused, so nothing scales it back.
    await http.patch(f"{DEPLOYMENTS}/mixed", json={"spec": {"paused": True}}, headers=MERGE)
    template = {
        "metadata": {"annotations": {ANNOTATION_DURATION: "0.05", ANNOTATION_EXIT_CODE: "1"}}
    }
    await http.patch(rs_url, json={"spec": {"replicas": 2, "template": template}}, headers=MERGE)

    async def crashing() -> list[dict[str, Any]]:
        return [p for p in await pods(http, "mixed") if restart_count(p) >= 1 and not is_ready(p)]

    [crasher] = await wait_for(crashing)
    await http.patch(rs_url, json={"spec": {"replicas": 1}}, headers=MERGE)

    async def one_left() -> list[dict[str, Any]]:
        left = await pods(http, "mixed")
        return left if len(left) == 1 else []

    [left] = await wait_for(one_left)
    assert left["metadata"]["name"] == ready["metadata"]["name"] != crasher["metadata"]["name"]


async def test_an_exiting_container_is_restarted_with_crashloop_backoff(
    http: httpx.AsyncClient,
) -> None:
    crash = {ANNOTATION_EXIT_CODE: "3", ANNOTATION_DURATION: "0.05"}
    await http.post(DEPLOYMENTS, json=deployment("crash", 1, annotations=crash))

    async def backing_off() -> dict[str, Any] | None:
        for pod in await pods(http, "crash"):
            cs = pod["status"].get("containerStatuses") or [{}]
            if (cs[0].get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                return pod
        return None

    pod = await wait_for(backing_off)
    [cs] = pod["status"]["containerStatuses"]
    meta = pod["metadata"]
    assert cs["restartCount"] >= 1
    assert cs["state"]["waiting"]["message"].startswith("back-off ")
    assert cs["state"]["waiting"]["message"].endswith(
        f" restarting failed container=worker pod={meta['name']}_{NS}({meta['uid']})"
    )
    terminated = cs["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert cs["ready"] is False
    assert pod["status"]["phase"] == "Running"
    ready = {c["type"]: c for c in pod["status"]["conditions"]}
    assert (ready["Ready"]["status"], ready["Ready"]["reason"]) == ("False", "ContainersNotReady")
    # the same pod keeps being restarted in place: no new pods
    await wait_for(lambda: _restarted_at_least(http, meta["name"], 3))
    assert [p["metadata"]["name"] for p in await pods(http, "crash")] == [meta["name"]]
    events = await events_of(http, meta["name"])
    backoffs = [m for t, r, m in events if r == "BackOff"]
    assert backoffs
    assert set(backoffs) == {
        f"Back-off restarting failed container worker in pod {meta['name']}_{NS}({meta['uid']})"
    }
    assert all(t == "Warning" for t, r, _ in events if r == "BackOff")
    assert sum(1 for _, r, _ in events if r == "Started") >= 3


async def _restarted_at_least(http: httpx.AsyncClient, name: str, count: int) -> bool:
    return restart_count(await get(http, f"{PODS}/{name}")) >= count


async def test_a_container_exiting_zero_is_restarted_too(http: httpx.AsyncClient) -> None:
    clean = {ANNOTATION_EXIT_CODE: "0", ANNOTATION_DURATION: "0.05"}
    await http.post(DEPLOYMENTS, json=deployment("recycle", 1, annotations=clean))

    async def restarted() -> dict[str, Any] | None:
        for pod in await pods(http, "recycle"):
            if restart_count(pod) >= 2:
                return pod
        return None

    pod = await wait_for(restarted)
    cs = pod["status"]["containerStatuses"][0]
    terminated = cs["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert pod["status"]["phase"] == "Running"
    assert len(await pods(http, "recycle")) == 1


async def test_an_oom_killed_worker_shows_in_last_state_of_its_running_pod(
    http: httpx.AsyncClient,
) -> None:
    # What the maintainer sees of a pool worker killed for memory: the pod stays, restarted.
    oom = {ANNOTATION_OOM: "true", ANNOTATION_DURATION: "0.05"}
    await http.post(DEPLOYMENTS, json=deployment("oom", 1, annotations=oom))

    async def killed() -> dict[str, Any] | None:
        for pod in await pods(http, "oom"):
            last = pod["status"]["containerStatuses"][0].get("lastState") or {}
            if "terminated" in last:
                return pod
        return None

    pod = await wait_for(killed)
    [cs] = pod["status"]["containerStatuses"]
    assert cs["restartCount"] >= 1
    terminated = cs["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    assert pod["status"]["phase"] == "Running"
