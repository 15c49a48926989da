"""Deployments -> ReplicaSets -> Pods in the embedded cluster, driven over real HTTP (httpx).

The scripted kubelet plays the containers, which run until their pod is deleted
(`workloads_http.replicated_cluster`); exiting containers are `test_deployment_restarts.py`'s.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from nexusd.core.clock import ManualClock
from nexusd.devcluster.rollout import MSG_UNAVAILABLE

from .conftest import NS, wait_for
from .workloads_http import (
    DEPLOYMENTS,
    MERGE,
    REPLICASETS,
    conditions,
    deployment,
    events_of,
    get,
    pods,
    replicasets,
    replicated_cluster,
    wait_ready,
)

if TYPE_CHECKING:
    import pathlib

    import httpx
    import trio

    from nexusd.devcluster import DevCluster


HASH = re.compile(r"^[bcdfghjklmnpqrstvwxz2456789]{1,10}$")  # rand.SafeEncodeString's letters
SUFFIX = re.compile(r"^[bcdfghjklmnpqrstvwxz2456789]{5}$")


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: pathlib.Path) -> DevCluster:
    return await replicated_cluster(nursery, tmp_path)


async def test_a_deployment_runs_its_pods_through_a_replicaset(http: httpx.AsyncClient) -> None:
    created = await http.post(DEPLOYMENTS, json=deployment("pool", 2))
    assert created.status_code == 201, created.text
    uid = created.json()["metadata"]["uid"]
    d = await wait_ready(http, "pool", 2)
    [rs] = await replicasets(http, "pool")
    digest = rs["metadata"]["labels"]["pod-template-hash"]
    assert HASH.match(digest)
    assert rs["metadata"]["name"] == f"pool-{digest}"
    assert rs["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "pool",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert rs["metadata"]["annotations"] == {
        "deployment.kubernetes.io/desired-replicas": "2",
        "deployment.kubernetes.io/max-replicas": "3",
        "deployment.kubernetes.io/revision": "1",
    }
    assert rs["spec"]["selector"] == {"matchLabels": {"app": "pool", "pod-template-hash": digest}}
    assert rs["spec"]["template"]["metadata"]["labels"] == {
        "app": "pool",
        "pod-template-hash": digest,
    }
    assert rs["status"] == {
        "replicas": 2,
        "fullyLabeledReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "observedGeneration": 1,
    }
    assert d["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "1"}
    status = d["status"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
    }
    assert [c["type"] for c in status["conditions"]] == ["Available", "Progressing"]
    assert conditions(d) == {
        "Available": ("True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
        "Progressing": (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "pool-{digest}" has successfully progressed.',
        ),
    }
    workers = await pods(http, "pool")
    for pod in workers:
        name = pod["metadata"]["name"]
        assert name.startswith(f"pool-{digest}-")
        assert SUFFIX.match(name.rsplit("-", 1)[1])
        assert pod["metadata"]["labels"] == {"app": "pool", "pod-template-hash": digest}
        assert pod["metadata"]["ownerReferences"][0] | {"uid": ""} == {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": rs["metadata"]["name"],
            "uid": "",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert pod["spec"]["nodeName"] == "devcluster-node-0"
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == ready["ContainersReady"] == "True"
    assert await events_of(http, "pool") == [
        ("Normal", "ScalingReplicaSet", f"Scaled up replica set pool-{digest} to 2 from 0")
    ]
    created_pods = sorted(m for _, r, m in await events_of(http, rs["metadata"]["name"]))
    assert created_pods == sorted(f"Created pod: {p['metadata']['name']}" for p in workers)


async def test_scaling_through_patch_deletes_the_newest_pods_first(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    clock = ManualClock()  # timestamps have whole seconds: make the first pod older
    cluster.ops.clock = clock
    await http.post(DEPLOYMENTS, json=deployment("scaled", 1))
    await wait_ready(http, "scaled", 1)
    [first] = await pods(http, "scaled")
    clock.advance(10)
    patched = await http.patch(
        f"{DEPLOYMENTS}/scaled", json={"spec": {"replicas": 3}}, headers=MERGE
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"]["generation"] == 2
    d = await wait_ready(http, "scaled", 3)
    assert d["status"]["observedGeneration"] == 2
    [rs] = await replicasets(http, "scaled")
    assert rs["spec"]["replicas"] == 3
    patched = await http.patch(
        f"{DEPLOYMENTS}/scaled", json={"spec": {"replicas": 1}}, headers=MERGE
    )
    assert patched.status_code == 200
    await wait_ready(http, "scaled", 1)
    [left] = await pods(http, "scaled")
    assert left["metadata"]["name"] == first["metadata"]["name"]  # the oldest stays
    rs_name = rs["metadata"]["name"]
    deleted = [m for _, r, m in await events_of(http, rs_name) if r == "SuccessfulDelete"]
    assert len(deleted) == 2
    assert all(m.startswith(f"Deleted pod: {rs_name}-") for m in deleted)
    scaling = [m for _, r, m in await events_of(http, "scaled") if r == "ScalingReplicaSet"]
    assert scaling == [
        f"Scaled up replica set {rs_name} to 1 from 0",
        f"Scaled up replica set {rs_name} to 3 from 1",
        f"Scaled down replica set {rs_name} to 1 from 3",
    ]


async def test_scale_subresource_reads_and_sets_replicas(http: httpx.AsyncClient) -> None:
    await http.post(DEPLOYMENTS, json=deployment("sub", 1))
    await wait_ready(http, "sub", 1)
    scale = await get(http, f"{DEPLOYMENTS}/sub/scale")
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1}
    assert scale["status"]["replicas"] == 1
    assert scale["status"]["selector"] == "app=sub"
    response = await http.patch(
        f"{DEPLOYMENTS}/sub/scale", json={"spec": {"replicas": 2}}, headers=MERGE
    )
    assert response.status_code == 200, response.text
    assert response.json()["spec"] == {"replicas": 2}
    await wait_ready(http, "sub", 2)
    scale = await get(http, f"{DEPLOYMENTS}/sub/scale")
    response = await http.put(f"{DEPLOYMENTS}/sub/scale", json={**scale, "spec": {"replicas": 0}})
    assert response.status_code == 200, response.text
    await wait_ready(http, "sub", 0)
    bad = await http.patch(
        f"{DEPLOYMENTS}/sub/scale", json={"spec": {"replicas": -1}}, headers=MERGE
    )
    assert bad.status_code == 422
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in bad.text


async def test_a_template_change_rolls_to_a_new_replicaset(http: httpx.AsyncClient) -> None:
    await http.post(DEPLOYMENTS, json=deployment("rolled", 2))
    await wait_ready(http, "rolled", 2)
    [old] = await replicasets(http, "rolled")
    before = {p["metadata"]["name"] for p in await pods(http, "rolled")}
    image = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        deployment("x", image="2.0")["spec"]["template"]["spec"]["containers"][0]
                    ]
                }
            }
        }
    }
    response = await http.patch(f"{DEPLOYMENTS}/rolled", json=image, headers=MERGE)
    assert response.status_code == 200, response.text
    d = await wait_ready(http, "rolled", 2)
    sets = {rs["metadata"]["name"]: rs for rs in await replicasets(http, "rolled")}
    assert set(sets) == {
        old["metadata"]["name"],
        *(n for n in sets if n != old["metadata"]["name"]),
    }
    [new_name] = [n for n in sets if n != old["metadata"]["name"]]
    new = sets[new_name]
    assert new["spec"]["replicas"] == 2
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert sets[old["metadata"]["name"]]["spec"]["replicas"] == 0
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    after = await pods(http, "rolled")
    assert not before & {p["metadata"]["name"] for p in after}
    assert {p["spec"]["containers"][0]["image"] for p in after} == {"registry.example/algo:2.0"}
    assert conditions(d)["Progressing"][1:] == (
        "NewReplicaSetAvailable",
        f'ReplicaSet "{new_name}" has successfully progressed.',
    )
    scaling = [m for _, r, m in await events_of(http, "rolled") if r == "ScalingReplicaSet"]
    assert scaling[-2:] == [
        f"Scaled up replica set {new_name} to 2 from 0",
        f"Scaled down replica set {old['metadata']['name']} to 0 from 2",
    ]


async def test_deleting_a_deployment_removes_its_replicasets_and_pods(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    await http.post(DEPLOYMENTS, json=deployment("gone", 2))
    await wait_ready(http, "gone", 2)
    assert (await http.delete(f"{DEPLOYMENTS}/gone")).status_code == 200

    async def cleared() -> bool:
        return not await replicasets(http, "gone") and not await pods(http, "gone", alive=False)

    await wait_for(cleared)
    assert not cluster.kubelet.stops  # every container was stopped


async def test_unschedulable_replicas_leave_the_deployment_unavailable(
    http: httpx.AsyncClient,
) -> None:
    # Deployment pods go through the scheduler like Job pods: node selector, taints, capacity.
    stuck = deployment("stuck", 1)
    stuck["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    await http.post(DEPLOYMENTS, json=stuck)

    async def unschedulable() -> list[dict[str, Any]]:
        return [
            p
            for p in await pods(http, "stuck")
            for c in p["status"].get("conditions") or []
            if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
        ]

    [pod] = await wait_for(unschedulable)
    assert "node(s) didn't match Pod's node affinity/selector" in str(pod["status"]["conditions"])

    async def observed() -> dict[str, Any] | None:
        d = await get(http, f"{DEPLOYMENTS}/stuck")
        return d if (d.get("status") or {}).get("replicas") == 1 else None

    d = await wait_for(observed)
    [rs] = await replicasets(http, "stuck")
    assert [c["type"] for c in d["status"]["conditions"]] == ["Available", "Progressing"]
    assert conditions(d) == {
        "Available": ("False", "MinimumReplicasUnavailable", MSG_UNAVAILABLE),
        "Progressing": (
            "True",
            "ReplicaSetUpdated",
            f'ReplicaSet "{rs["metadata"]["name"]}" is progressing.',
        ),
    }
    assert d["status"]["unavailableReplicas"] == 1
    assert "availableReplicas" not in d["status"]
    assert rs["status"] == {"replicas": 1, "fullyLabeledReplicas": 1, "observedGeneration": 1}


async def test_kubectl_style_lists_of_replicasets(http: httpx.AsyncClient) -> None:
    await http.post(DEPLOYMENTS, json=deployment("listed", 1))
    await wait_ready(http, "listed", 1)
    listing = await get(http, REPLICASETS)
    assert listing["kind"] == "ReplicaSetList"
    assert listing["apiVersion"] == "apps/v1"
    [rs] = listing["items"]
    assert rs["metadata"]["name"].startswith("listed-")
    table = await http.get(
        REPLICASETS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    body = table.json()
    assert body["kind"] == "Table"
    names = [c["name"] for c in body["columnDefinitions"] if c["priority"] == 0]
    assert names == ["Name", "Desired", "Current", "Ready", "Age"]
    assert body["rows"][0]["cells"][:4] == [rs["metadata"]["name"], 1, 1, 1]
    deploys = (
        await http.get(
            DEPLOYMENTS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
        )
    ).json()
    names = [c["name"] for c in deploys["columnDefinitions"] if c["priority"] == 0]
    assert names == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert deploys["rows"][0]["cells"][:4] == ["listed", "1/1", 1, 1]
    discovery = await get(http, "/apis/apps/v1")
    entries = {r["name"]: r for r in discovery["resources"]}
    assert entries["replicasets"]["shortNames"] == ["rs"]
    assert entries["replicasets"]["kind"] == "ReplicaSet"
    assert {"replicasets/status", "replicasets/scale", "deployments/scale"} <= set(entries)
    assert entries["deployments/scale"]["kind"] == "Scale"


async def test_a_replicaset_must_want_always_restarting_pods(http: httpx.AsyncClient) -> None:
    broken = deployment("never")
    broken["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    response = await http.post(DEPLOYMENTS, json=broken)
    assert response.status_code == 422
    assert (
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'
        in response.json()["message"]
    )
    negative = await http.patch(
        f"{DEPLOYMENTS}/never", json={"spec": {"replicas": -1}}, headers=MERGE
    )
    assert negative.status_code == 404
    await http.post(DEPLOYMENTS, json=deployment("neg", 1))
    negative = await http.patch(
        f"{DEPLOYMENTS}/neg", json={"spec": {"replicas": -1}}, headers=MERGE
    )
    assert negative.status_code == 422
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in negative.text


async def test_a_restarted_cluster_replaces_the_pods_its_kubelet_lost(
    tmp_path: pathlib.Path,
) -> None:
    from .test_restart import running

    async with running(tmp_path, default_duration=86_400.0) as http:
        await http.post(DEPLOYMENTS, json=deployment("kept", 2))
        await wait_ready(http, "kept", 2)
        before = {p["metadata"]["name"] for p in await pods(http, "kept")}
    async with running(tmp_path, default_duration=86_400.0) as http:
        await wait_ready(http, "kept", 2)
        now = {p["metadata"]["name"] for p in await pods(http, "kept")}
        assert not now & before  # the lost ones ended Failed and were replaced
        lost = [p for p in await pods(http, "kept", alive=False) if p["metadata"]["name"] in before]
        assert {p["status"]["phase"] for p in lost} == {"Failed"}
        assert len(await replicasets(http, "kept")) == 1


async def test_a_refused_pod_create_is_retried_until_it_succeeds(http: httpx.AsyncClient) -> None:
    manifest = deployment("needs-sa", 1)
    manifest["spec"]["template"]["spec"]["serviceAccountName"] = "workers"
    await http.post(DEPLOYMENTS, json=manifest)

    async def failing() -> dict[str, Any] | None:
        for rs in await replicasets(http, "needs-sa"):
            if any(c["type"] == "ReplicaFailure" for c in rs["status"].get("conditions") or []):
                return rs
        return None

    rs = await wait_for(failing)
    name = rs["metadata"]["name"]
    refusal = (
        f'pods "{name}-" is forbidden: error looking up service account {NS}/workers: '
        'serviceaccount "workers" not found'
    )
    [failure] = rs["status"]["conditions"]
    assert (failure["status"], failure["reason"], failure["message"]) == (
        "True",
        "FailedCreate",
        refusal,
    )
    assert ("Warning", "FailedCreate", f"Error creating: {refusal}") in await events_of(http, name)
    account = {"metadata": {"name": "workers"}}
    assert (await http.post(f"/api/v1/namespaces/{NS}/serviceaccounts", json=account)).is_success
    await wait_ready(http, "needs-sa", 1)
    [rs] = await replicasets(http, "needs-sa")
    assert "conditions" not in rs["status"]


async def test_replicas_change_through_put_with_optimistic_concurrency(
    http: httpx.AsyncClient,
) -> None:
    created = (await http.post(DEPLOYMENTS, json=deployment("put", 1))).json()
    await wait_ready(http, "put", 1)
    current = await get(http, f"{DEPLOYMENTS}/put")
    stale = {**created, "spec": {**created["spec"], "replicas": 3}}
    assert (await http.put(f"{DEPLOYMENTS}/put", json=stale)).status_code == 409
    current["spec"]["replicas"] = 3
    response = await http.put(f"{DEPLOYMENTS}/put", json=current)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["generation"] == 2
    d = await wait_ready(http, "put", 3)
    assert d["status"]["observedGeneration"] == 2
    assert len(await replicasets(http, "put")) == 1  # same template: same ReplicaSet
