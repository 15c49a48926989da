"""Node capacity: the host-sized node of the local kubelet, and pods beyond a node's capacity
waiting Pending until a finishing pod frees room. Real cluster over HTTP, scripted kubelet."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import httpx

from nexusd.devcluster import ANNOTATION_DURATION
from nexusd.devcluster.nodes import NodeGroup

from .conftest import JOBS, PODS, job_manifest, start_cluster, wait_for, wait_job_condition

if TYPE_CHECKING:
    import pathlib

    import trio

TOO_MANY_PODS = (
    "0/1 nodes are available: 1 Too many pods. no new claims to deallocate, "
    "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
)


async def test_the_host_node_advertises_this_machine(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cpus = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    group = NodeGroup.for_host()
    assert (group.name, group.cpu, group.memory) == ("devcluster-node", str(cpus), str(memory))
    assert group.pods == max(4, 8 * cpus)
    cluster = await start_cluster(nursery, tmp_path, node_groups=(group,))
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        node = (await http.get("/api/v1/nodes/devcluster-node-0")).json()
    expected = {"cpu": str(cpus), "memory": str(memory), "pods": str(group.pods)}
    assert node["status"]["capacity"] == expected
    assert node["status"]["allocatable"] == expected


async def test_pods_beyond_capacity_wait_then_run(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cluster = await start_cluster(nursery, tmp_path, node_groups=(NodeGroup(name="small", pods=2),))
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        names = ("a", "b", "c")
        for name in names:
            job = job_manifest(name, annotations={ANNOTATION_DURATION: "0.3"})
            await http.post(JOBS, json=job)

        async def an_unschedulable_pod() -> dict[str, Any] | None:
            pods: list[dict[str, Any]] = (await http.get(PODS)).json()["items"]
            for pod in pods:
                for c in pod["status"].get("conditions") or []:
                    if c["type"] == "PodScheduled" and c["status"] == "False":
                        return pod
            return None

        waiting = await wait_for(an_unschedulable_pod)
        condition = waiting["status"]["conditions"][-1]
        assert (condition["reason"], condition["message"]) == ("Unschedulable", TOO_MANY_PODS)
        for name in names:
            await wait_job_condition(http, name, "Complete")
        pod = (await http.get(f"{PODS}/{waiting['metadata']['name']}")).json()
        assert pod["spec"]["nodeName"] == "small-0"  # bound once a finished pod freed room
        assert pod["status"]["phase"] == "Succeeded"


async def test_pods_created_together_do_not_overcommit_a_node(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """Three pods of one Job appear in one scheduling pass on a node with room for two: the
    pass counts the pods it has just bound, so the third one waits (FailedScheduling)."""
    cluster = await start_cluster(nursery, tmp_path, node_groups=(NodeGroup(name="small", pods=2),))
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        job = job_manifest(
            "trio", annotations={ANNOTATION_DURATION: "0.3"}, parallelism=3, completions=3
        )
        await http.post(JOBS, json=job)
        await wait_job_condition(http, "trio", "Complete")
        events = (await http.get("/api/v1/namespaces/nexus/events")).json()["items"]
    reasons = [event["reason"] for event in events if event["involvedObject"]["kind"] == "Pod"]
    assert reasons.count("FailedScheduling") >= 1
    assert reasons.count("Scheduled") == 3
