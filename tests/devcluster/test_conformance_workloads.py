"""Conformance of the embedded cluster's workloads against a real Kubernetes 1.36 (k8s-golden).

Everything runs for real over loopback HTTP: the API server, Job controller, scheduler, kubelet
(scripted runtime: outcomes come from pod annotations) and garbage collector. Only the
container processes are simulated. Delays are 0 (no back-off, no batching) so the module is fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster
from nexusd.devcluster.nodes import NodeGroup
from nexusd.devcluster.runtimes import (
    ANNOTATION_DURATION,
    ANNOTATION_EVICT,
    ANNOTATION_EXIT_CODE,
    ANNOTATION_OOM,
    ANNOTATION_PULL_ERROR,
)

from .conftest import EVENTS, JOBS, NS, PODS, job_manifest, wait_for, wait_job_condition

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "reference" / "k8s-golden"
POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
    ]
}
UNSCHEDULABLE_TAIL = (
    ". no new claims to deallocate, preemption: 0/2 nodes are available: "
    "2 Preemption is not helpful for scheduling."
)


def golden(name: str) -> dict[str, Any]:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference folder {GOLDEN} is not available")
    data: dict[str, Any] = json.loads((GOLDEN / name).read_text())
    return data


async def start(nursery: trio.Nursery, tmp_path: Path, **kwargs: Any) -> DevCluster:
    config = DevClusterConfig(
        state_dir=tmp_path, namespace=NS, backoff_base=0.0, job_sync_delay=0.0, **kwargs
    )
    cluster: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
    return cluster


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> DevCluster:
    return await start(nursery, tmp_path)


@pytest.fixture
async def http(cluster: DevCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        yield client


async def pods_of(http: httpx.AsyncClient, job: str) -> list[dict[str, Any]]:
    r = await http.get(PODS, params={"labelSelector": f"batch.kubernetes.io/job-name={job}"})
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def events_of(http: httpx.AsyncClient, kind: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    items: list[dict[str, Any]] = (
        await http.get(EVENTS, params={"fieldSelector": selector})
    ).json()["items"]
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return items


async def watch_until(
    http: httpx.AsyncClient, path: str, rv: str, done: Any
) -> list[dict[str, Any]]:
    """Watch from `rv` to the server's timeout (read to the end: httpx's nested generators must
    not be abandoned) and return the events up to the first one where `done(event)` holds."""
    seen: list[dict[str, Any]] = []
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}
    with trio.fail_after(5):
        async with http.stream("GET", path, params=params) as r:
            async for line in r.aiter_lines():
                seen.append(json.loads(line))
    for i, ev in enumerate(seen):
        if done(ev):
            return seen[: i + 1]
    raise AssertionError(f"watch ended without the awaited event: {seen}")


def pod_spec(manifest: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The Job manifest with `fields` set on its pod template's spec."""
    manifest["spec"]["template"]["spec"].update(fields)
    return manifest


def conds(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["type"], c["reason"]) for c in job["status"].get("conditions") or []]


async def one_pod(http: httpx.AsyncClient, job: str, check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        pods = await pods_of(http, job)
        return pods[0] if pods and check(pods[0]) else None

    pod: dict[str, Any] = await wait_for(probe)
    return pod


def waiting_reason(pod: dict[str, Any]) -> str | None:
    statuses = pod["status"].get("containerStatuses") or [{}]
    waiting = (statuses[0].get("state") or {}).get("waiting") or {}
    reason: str | None = waiting.get("reason")
    return reason


# -- Jobs -------------------------------------------------------------------------------------


async def test_success_matches_golden_01(http: httpx.AsyncClient) -> None:
    ref = golden("01-job-succeeds.json")
    uid = (await http.post(JOBS, json=job_manifest("s1"))).json()["metadata"]["uid"]
    job = await wait_job_condition(http, "s1", "Complete")
    want = ref["jobFinal"]["status"]
    assert list(job["status"]) == list(want)
    assert conds(job) == [(c["type"], c["reason"]) for c in want["conditions"]]
    assert [c["message"] for c in job["status"]["conditions"]] == [
        c["message"] for c in want["conditions"]
    ]

    async def finalizer_gone() -> dict[str, Any] | None:
        pods = await pods_of(http, "s1")
        return pods[0] if pods and not pods[0]["metadata"].get("finalizers") else None

    pod = await wait_for(finalizer_gone)
    want_pod = ref["podsFinal"]["items"][0]
    assert set(pod["metadata"]["labels"]) == set(want_pod["metadata"]["labels"])
    assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == uid
    assert pod["status"]["phase"] == "Succeeded"
    cs = pod["status"]["containerStatuses"][0]
    assert cs["state"]["terminated"]["reason"] == "Completed"
    assert cs["imageID"].startswith("registry.example/algo@sha256:")
    assert cs["containerID"].startswith("containerd://")
    job_events = [e["reason"] for e in await events_of(http, "Job", "s1")]
    assert job_events == [
        e["reason"] for e in ref["eventsBrief"] if e["involvedObject"][:3] == "Job"
    ]
    pod_events = [e["reason"] for e in await events_of(http, "Pod", pod["metadata"]["name"])]
    assert pod_events == ["Scheduled", "Pulled", "Created", "Started"]
    [scheduled] = [
        e
        for e in await events_of(http, "Pod", pod["metadata"]["name"])
        if e["reason"] == "Scheduled"
    ]
    golden_scheduled = (
        ref["events"]["items"][0] if isinstance(ref["events"], dict) else ref["events"][0]
    )
    shape = {k for k in golden_scheduled if k not in ("kind", "apiVersion")}
    assert shape <= set(scheduled)
    assert "count" not in scheduled
    assert scheduled["action"] == "Binding"
    assert scheduled["reportingComponent"] == "default-scheduler"


async def test_tracking_finalizer_in_watch(http: httpx.AsyncClient) -> None:
    rv = (await http.get(PODS)).json()["metadata"]["resourceVersion"]
    await http.post(JOBS, json=job_manifest("fin"))

    def done(ev: dict[str, Any]) -> bool:
        obj = ev["object"]
        return obj["status"].get("phase") == "Succeeded" and not obj["metadata"].get("finalizers")

    seen = [
        (
            ev["type"],
            ev["object"]["status"].get("phase", ""),
            tuple(ev["object"]["metadata"].get("finalizers") or ()),
        )
        for ev in await watch_until(http, PODS, rv, done)
    ]
    assert seen[0] == ("ADDED", "Pending", ("batch.kubernetes.io/job-tracking",))
    assert ("MODIFIED", "Succeeded", ("batch.kubernetes.io/job-tracking",)) in seen
    assert seen[-1] == ("MODIFIED", "Succeeded", ())


async def test_job_status_writes_like_golden_02(nursery: trio.Nursery, tmp_path: Path) -> None:
    """With upstream's batching of pod changes the Job sees exactly golden 02's status writes."""
    ref = golden("02-job-fails-exit3-backofflimit0.json")
    config = DevClusterConfig(state_dir=tmp_path, namespace=NS, job_sync_delay=0.3)
    cluster: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        await _status_writes_02(http, ref)


async def _status_writes_02(http: httpx.AsyncClient, ref: dict[str, Any]) -> None:
    rv = (await http.get(JOBS)).json()["metadata"]["resourceVersion"]
    await http.post(JOBS, json=job_manifest("f3", annotations={ANNOTATION_EXIT_CODE: "3"}))

    def failed(ev: dict[str, Any]) -> bool:
        return any(c["type"] == "Failed" for c in ev["object"]["status"].get("conditions") or [])

    statuses = [ev["object"]["status"] for ev in await watch_until(http, JOBS, rv, failed)]
    want = [w["object"]["status"] for w in ref["watch"]["jobs"]]

    def shape(s: dict[str, Any]) -> tuple[Any, ...]:
        uncounted = {k: len(v) for k, v in s.get("uncountedTerminatedPods", {}).items()}
        return (list(s), [c["type"] for c in s.get("conditions") or []], uncounted)

    assert [shape(s) for s in statuses] == [shape(s) for s in want]
    assert statuses[-1]["conditions"][1]["message"] == "Job has reached the specified backoff limit"


@pytest.mark.parametrize(
    ("annotations", "exit_code", "reason"),
    [
        ({ANNOTATION_EXIT_CODE: "3"}, 3, "Error"),
        ({ANNOTATION_OOM: "true"}, 137, "OOMKilled"),
    ],
)
async def test_failing_container(
    http: httpx.AsyncClient, annotations: dict[str, str], exit_code: int, reason: str
) -> None:
    await http.post(JOBS, json=job_manifest("bad", annotations=annotations))
    job = await wait_job_condition(http, "bad", "Failed")
    assert conds(job) == [
        ("FailureTarget", "BackoffLimitExceeded"),
        ("Failed", "BackoffLimitExceeded"),
    ]
    assert job["status"]["failed"] == 1
    [pod] = await pods_of(http, "bad")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (exit_code, reason)
    assert pod["status"]["phase"] == "Failed"
    reasons = [e["reason"] for e in await events_of(http, "Job", "bad")]
    assert reasons == ["SuccessfulCreate", "BackoffLimitExceeded"]


async def test_backoff_limit_retries(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS, json=job_manifest("r2", backoffLimit=2, annotations={ANNOTATION_EXIT_CODE: "1"})
    )
    job = await wait_job_condition(http, "r2", "Failed")
    assert job["status"]["failed"] == 3
    pods = await pods_of(http, "r2")
    assert len(pods) == 3
    assert all(len(p["metadata"]["name"]) == len("r2-") + 5 for p in pods)
    reasons = [e["reason"] for e in await events_of(http, "Job", "r2")]
    assert reasons == ["SuccessfulCreate"] * 3 + ["BackoffLimitExceeded"]


async def test_deadline_exceeded_like_golden_04(http: httpx.AsyncClient) -> None:
    ref = golden("04-job-activedeadlineseconds.json")
    await http.post(
        JOBS,
        json=job_manifest(
            "dl", backoffLimit=6, activeDeadlineSeconds=1, annotations={ANNOTATION_DURATION: "600"}
        ),
    )
    job = await wait_job_condition(http, "dl", "Failed")
    want = ref["jobFinal"]["status"]
    assert conds(job) == [(c["type"], c["reason"]) for c in want["conditions"]]
    assert job["status"]["failed"] == want["failed"] == 1
    want_events = [e["reason"] for e in ref["eventsBrief"] if e["involvedObject"][:3] == "Job"]
    assert [e["reason"] for e in await events_of(http, "Job", "dl")] == want_events


async def test_pod_failure_policy_fail_job(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS,
        json=job_manifest(
            "p42", backoffLimit=3, podFailurePolicy=POLICY, annotations={ANNOTATION_EXIT_CODE: "42"}
        ),
    )
    job = await wait_job_condition(http, "p42", "Failed")
    [pod] = await pods_of(http, "p42")
    message = (
        f"Container main for pod {NS}/{pod['metadata']['name']} failed with exit code 42 "
        "matching FailJob rule at index 1"
    )
    assert [(c["type"], c["reason"], c["message"]) for c in job["status"]["conditions"]] == [
        ("FailureTarget", "PodFailurePolicy", message),
        ("Failed", "PodFailurePolicy", message),
    ]
    events = await events_of(http, "Job", "p42")
    assert (events[-1]["type"], events[-1]["reason"], events[-1]["message"]) == (
        "Warning",
        "PodFailurePolicy",
        message,
    )


async def test_pod_failure_policy_ignore_is_not_counted(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS,
        json=job_manifest("p7", podFailurePolicy=POLICY, annotations={ANNOTATION_EXIT_CODE: "7"}),
    )

    async def three_pods() -> bool:
        return len(await pods_of(http, "p7")) >= 3

    await wait_for(three_pods)
    job = (await http.get(f"{JOBS}/p7")).json()
    assert "failed" not in job["status"]
    assert "conditions" not in job["status"]
    await http.request("DELETE", f"{JOBS}/p7", json={"propagationPolicy": "Background"})


async def test_eviction_is_ignored_by_disruption_rule(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS,
        json=job_manifest(
            "ev",
            podFailurePolicy=POLICY,
            annotations={ANNOTATION_EVICT: "TerminationByKubelet", ANNOTATION_DURATION: "0.05"},
        ),
    )

    async def evicted() -> dict[str, Any] | None:
        for pod in await pods_of(http, "ev"):
            if pod["status"].get("reason") == "Evicted" and not pod["metadata"].get("finalizers"):
                return pod
        return None

    pod = await wait_for(evicted)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["conditions"][0]["type"] == "DisruptionTarget"
    assert pod["status"]["conditions"][0]["reason"] == "TerminationByKubelet"
    job = (await http.get(f"{JOBS}/ev")).json()
    assert "failed" not in job["status"]
    pod_events = [e["reason"] for e in await events_of(http, "Pod", pod["metadata"]["name"])]
    assert "Evicted" in pod_events
    assert "Killing" in pod_events
    await http.request("DELETE", f"{JOBS}/ev", json={"propagationPolicy": "Background"})


async def test_ttl_deletes_job_and_pods(http: httpx.AsyncClient) -> None:
    await http.post(JOBS, json=job_manifest("ttl", ttlSecondsAfterFinished=0))

    async def gone() -> bool:
        return (await http.get(f"{JOBS}/ttl")).status_code == 404 and not await pods_of(http, "ttl")

    await wait_for(gone)
    assert [e["reason"] for e in await events_of(http, "Job", "ttl")][-1] == "Completed"


# -- kubelet outcomes -----------------------------------------------------------------------


async def test_image_pull_failure(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS, json=job_manifest("pull", annotations={ANNOTATION_PULL_ERROR: "not found"})
    )
    pod = await one_pod(http, "pull", lambda p: waiting_reason(p) == "ImagePullBackOff")
    assert pod["status"]["phase"] == "Pending"
    image = "registry.example/algo:1.0"
    events = [
        (e["reason"], e["message"]) for e in await events_of(http, "Pod", pod["metadata"]["name"])
    ]
    assert ("Failed", f'Failed to pull image "{image}": not found') in events
    assert ("Failed", "Error: ErrImagePull") in events
    assert ("BackOff", f'Back-off pulling image "{image}"') in events
    job = (await http.get(f"{JOBS}/pull")).json()
    assert (job["status"]["active"], job["status"]["ready"]) == (1, 0)


async def test_invalid_image_name(http: httpx.AsyncClient) -> None:
    manifest = job_manifest("img")
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "Registry/Bad:1"
    await http.post(JOBS, json=manifest)
    pod = await one_pod(http, "img", lambda p: waiting_reason(p) == "InvalidImageName")
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert message == (
        'Failed to apply default image tag "Registry/Bad:1": couldn\'t parse image name '
        '"Registry/Bad:1": invalid reference format: repository name (Bad) must be lowercase'
    )
    reasons = [e["reason"] for e in await events_of(http, "Pod", pod["metadata"]["name"])]
    assert reasons == ["Scheduled", "InspectFailed", "Failed"]


async def test_missing_service_account_fails_pod_creation(http: httpx.AsyncClient) -> None:
    """The ServiceAccount admission plugin refuses the pod; the Job controller says FailedCreate."""
    await http.post(JOBS, json=pod_spec(job_manifest("nosa"), serviceAccountName="missing"))
    reason = (
        f'pods "nosa-" is forbidden: error looking up service account {NS}/missing: '
        'serviceaccount "missing" not found'
    )

    async def failed_create() -> list[dict[str, Any]]:
        return [e for e in await events_of(http, "Job", "nosa") if e["reason"] == "FailedCreate"]

    [event] = await wait_for(failed_create)
    assert (event["type"], event["message"]) == ("Warning", f"Error creating: {reason}")
    assert event["source"] == {"component": "job-controller"}
    assert await pods_of(http, "nosa") == []
    direct = await http.post(
        PODS,
        json={
            "metadata": {"name": "p"},
            "spec": {
                "serviceAccountName": "missing",
                "containers": [{"name": "c", "image": "registry.example/a:1"}],
            },
        },
    )
    assert direct.status_code == 403
    body = direct.json()
    assert (body["reason"], body["code"]) == ("Forbidden", 403)
    assert body["message"].startswith('pods "p" is forbidden: error looking up service account')


async def test_create_container_config_error_then_secret_appears(
    http: httpx.AsyncClient,
) -> None:
    manifest = job_manifest("cfg")
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    ]
    await http.post(JOBS, json=manifest)
    pod = await one_pod(http, "cfg", lambda p: waiting_reason(p) == "CreateContainerConfigError")
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["message"] == 'secret "creds" not found'
    secret = {"metadata": {"name": "creds"}, "data": {"other": "eA=="}}
    await http.post(f"/api/v1/namespaces/{NS}/secrets", json=secret)

    async def key_missing() -> dict[str, Any] | None:
        pods = await pods_of(http, "cfg")
        cs = pods[0]["status"]["containerStatuses"][0]
        msg = (cs["state"].get("waiting") or {}).get("message", "")
        return pods[0] if msg.startswith("couldn't find key") else None

    pod = await wait_for(key_missing)
    msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert msg == f"couldn't find key token in Secret {NS}/creds"
    await http.patch(
        f"/api/v1/namespaces/{NS}/secrets/creds",
        json={"data": {"token": "eA=="}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    await wait_job_condition(http, "cfg", "Complete")


# -- scheduling -----------------------------------------------------------------------------


@pytest.fixture
async def two_nodes(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    groups = (NodeGroup(name="node", count=2, cpu="2", memory="4Gi"),)
    cluster = await start(nursery, tmp_path, node_groups=groups)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        yield client


async def pending_message(http: httpx.AsyncClient, job: str) -> str:
    def unschedulable(p: dict[str, Any]) -> bool:
        return any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions") or [])

    pod = await one_pod(http, job, unschedulable)
    [cond] = pod["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["observedGeneration"]) == (
        "PodScheduled",
        "False",
        1,
    )
    events = await events_of(http, "Pod", pod["metadata"]["name"])
    assert [(e["reason"], e["action"], e["message"]) for e in events] == [
        ("FailedScheduling", "Scheduling", cond["message"])
    ]
    return str(cond["message"])


async def test_unschedulable_node_selector_then_label(two_nodes: httpx.AsyncClient) -> None:
    http = two_nodes
    ref = golden("07a-unschedulable-nodeselector.json")
    await http.post(JOBS, json=pod_spec(job_manifest("ns"), nodeSelector={"disktype": "ssd"}))
    msg = await pending_message(http, "ns")
    assert msg == ref["podWhileUnschedulable"]["status"]["conditions"][0]["message"]
    await http.patch(
        "/api/v1/nodes/node-1",
        json={"metadata": {"labels": {"disktype": "ssd"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    job = await wait_job_condition(http, "ns", "Complete")
    assert job["status"]["succeeded"] == 1
    [pod] = await pods_of(http, "ns")
    assert pod["spec"]["nodeName"] == "node-1"
    messages = [e["message"] for e in await events_of(http, "Pod", pod["metadata"]["name"])]
    assert f"Successfully assigned {NS}/{pod['metadata']['name']} to node-1" in messages


async def test_unschedulable_taint_then_untaint(two_nodes: httpx.AsyncClient) -> None:
    http = two_nodes
    taint = {"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}
    merge = {"Content-Type": "application/merge-patch+json"}
    for node in ("node-0", "node-1"):
        await http.patch(f"/api/v1/nodes/{node}", json=taint, headers=merge)
    await http.post(JOBS, json=job_manifest("tt"))
    assert await pending_message(http, "tt") == (
        "0/2 nodes are available: 2 node(s) had untolerated taint(s)" + UNSCHEDULABLE_TAIL
    )
    await http.patch("/api/v1/nodes/node-0", json={"spec": {"taints": None}}, headers=merge)
    await wait_job_condition(http, "tt", "Complete")
    # a toleration makes a tainted node usable
    manifest = job_manifest("tol")
    manifest["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    ]
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "node-1"}
    await http.post(JOBS, json=manifest)
    await wait_job_condition(http, "tol", "Complete")


async def test_unschedulable_mixed_like_golden_07c(two_nodes: httpx.AsyncClient) -> None:
    http = two_nodes
    ref = golden("07c-unschedulable-mixed.json")
    taint = {"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}
    merge = {"Content-Type": "application/merge-patch+json"}
    await http.patch("/api/v1/nodes/node-0", json=taint, headers=merge)
    await http.post(
        JOBS, json=pod_spec(job_manifest("mx"), nodeSelector={"kubernetes.io/hostname": "node-0"})
    )
    msg = await pending_message(http, "mx")
    want = next(e["message"] for e in ref["eventsBrief"] if e["reason"] == "FailedScheduling")
    assert msg == want


async def test_affinity_operators_and_capacity(two_nodes: httpx.AsyncClient) -> None:
    http = two_nodes
    manifest = job_manifest("big")
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "3", "memory": "1Gi"}
    }
    await http.post(JOBS, json=manifest)
    assert await pending_message(http, "big") == (
        "0/2 nodes are available: 2 Insufficient cpu. no new claims to deallocate, preemption: "
        "0/2 nodes are available: 2 No preemption victims found for incoming pod."
    )
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "NotIn",
                                "values": ["node-0"],
                            },
                            {"key": "kubernetes.io/os", "operator": "Exists"},
                            {"key": "gpu", "operator": "DoesNotExist"},
                        ]
                    }
                ]
            }
        }
    }
    manifest = job_manifest("aff")
    manifest["spec"]["template"]["spec"]["affinity"] = affinity
    await http.post(JOBS, json=manifest)
    await wait_job_condition(http, "aff", "Complete")
    [pod] = await pods_of(http, "aff")
    assert pod["spec"]["nodeName"] == "node-1"


async def test_autoscaling_adds_a_node(nursery: trio.Nursery, tmp_path: Path) -> None:
    group = NodeGroup.for_workgroup(
        "wg", count=0, autoscale_max=2, autoscale_delay=0.05, labels={"pool": "wg"}
    )
    cluster = await start(nursery, tmp_path, node_groups=(group,))
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        assert (await http.get("/api/v1/nodes")).json()["items"] == []
        await http.post(JOBS, json=pod_spec(job_manifest("as"), nodeSelector={"pool": "wg"}))
        await wait_job_condition(http, "as", "Complete")
        nodes = (await http.get("/api/v1/nodes")).json()["items"]
        assert [n["metadata"]["name"] for n in nodes] == ["wg-0"]
        assert (
            nodes[0]["metadata"]["labels"]["kubernetes.sneaksanddata.com/service-node-group"]
            == "wg"
        )


async def test_kubernetes_client_lists_nodes_and_job_status(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    import kubernetes

    await http.post(JOBS, json=job_manifest("kc"))
    await wait_job_condition(http, "kc", "Complete")

    def read() -> tuple[list[str], list[str]]:
        api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(cluster.kubeconfig_path)
        )
        with api:
            nodes: Any = kubernetes.client.CoreV1Api(api).list_node().items
            job: Any = kubernetes.client.BatchV1Api(api).read_namespaced_job("kc", NS)
            return [n.metadata.name for n in nodes], [c.type for c in job.status.conditions]

    names, types = await trio.to_thread.run_sync(read)
    assert names == ["devcluster-node-0"]
    assert types == ["SuccessCriteriaMet", "Complete"]
