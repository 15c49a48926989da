"""The Job controller, garbage collector and scripted kubelet, driven over real HTTP (httpx).
Pod outcomes are scripted with the devcluster annotations; back-off base is 0 s (fixture)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nexusd.devcluster import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE, DevCluster

from .conftest import JOBS, PODS, job_events, job_manifest, wait_for, wait_job_condition

if TYPE_CHECKING:
    import httpx


async def pods_of(http: httpx.AsyncClient, job: str) -> list[dict[str, Any]]:
    r = await http.get(PODS, params={"labelSelector": f"batch.kubernetes.io/job-name={job}"})
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_job_succeeds(http: httpx.AsyncClient, cluster: DevCluster) -> None:
    created = (await http.post(JOBS, json=job_manifest("ok"))).json()
    assert created["status"] == {}
    uid = created["metadata"]["uid"]
    assert created["spec"]["selector"] == {
        "matchLabels": {"batch.kubernetes.io/controller-uid": uid}
    }
    assert created["metadata"]["labels"]["job-name"] == "ok"
    job = await wait_job_condition(http, "ok", "Complete")
    status = job["status"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert status["conditions"][1]["reason"] == "CompletionsReached"
    assert status["succeeded"] == 1
    assert "active" not in status
    assert "failed" not in status
    assert status["terminating"] == 0
    assert status["ready"] == 0
    assert status["completionTime"]
    [pod] = await pods_of(http, "ok")
    assert pod["metadata"]["name"].startswith("ok-")
    assert len(pod["metadata"]["name"]) == 8
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "ok",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["metadata"]["labels"]["controller-uid"] == uid
    assert pod["spec"]["nodeName"] == "devcluster-node-0"
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    events = await job_events(http, "ok")
    assert events == [
        ("Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}"),
        ("Normal", "Completed", "Job completed"),
    ]
    raw = (
        await http.get(
            "/api/v1/namespaces/nexus/events", params={"fieldSelector": "involvedObject.kind=Job"}
        )
    ).json()["items"][0]
    assert raw["source"] == {"component": "job-controller"}
    assert raw["count"] == 1
    assert cluster.request_counts[("create", "jobs", 201)] == 1


async def test_job_fails_exit3_backoff0(http: httpx.AsyncClient) -> None:
    await http.post(JOBS, json=job_manifest("f3", annotations={ANNOTATION_EXIT_CODE: "3"}))
    job = await wait_job_condition(http, "f3", "Failed")
    conds = job["status"]["conditions"]
    assert [c["type"] for c in conds] == ["FailureTarget", "Failed"]
    assert {c["reason"] for c in conds} == {"BackoffLimitExceeded"}
    assert conds[1]["message"] == "Job has reached the specified backoff limit"
    assert job["status"]["failed"] == 1
    assert "completionTime" not in job["status"]
    [pod] = await pods_of(http, "f3")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["exitCode"], terminated["reason"]) == (
        "Failed",
        3,
        "Error",
    )
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") in (
        await job_events(http, "f3")
    )


async def test_job_retries_backoff_limit_2(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS, json=job_manifest("r2", backoffLimit=2, annotations={ANNOTATION_EXIT_CODE: "1"})
    )
    job = await wait_job_condition(http, "r2", "Failed")
    assert job["status"]["failed"] == 3
    assert len(await pods_of(http, "r2")) == 3
    creates = [e for e in await job_events(http, "r2") if e[1] == "SuccessfulCreate"]
    assert len(creates) == 3


POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]},
        },
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
    ]
}


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
        f"Container main for pod nexus/{pod['metadata']['name']} failed with exit code 42 "
        "matching FailJob rule at index 1"
    )
    assert job["status"]["conditions"][1]["reason"] == "PodFailurePolicy"
    assert job["status"]["conditions"][1]["message"] == message
    assert ("Warning", "PodFailurePolicy", message) in await job_events(http, "p42")


async def test_pod_failure_policy_ignore(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS,
        json=job_manifest("p7", podFailurePolicy=POLICY, annotations={ANNOTATION_EXIT_CODE: "7"}),
    )

    async def three_failed_pods() -> bool:
        pods = await pods_of(http, "p7")
        return bool(sum(p["status"]["phase"] == "Failed" for p in pods) >= 3)

    await wait_for(three_failed_pods)
    job = (await http.get(f"{JOBS}/p7")).json()
    assert "failed" not in job["status"]
    assert "conditions" not in job["status"]
    await http.delete(f"{JOBS}/p7", params={"propagationPolicy": "Background"})


async def test_active_deadline(http: httpx.AsyncClient) -> None:
    await http.post(
        JOBS,
        json=job_manifest(
            "dl", backoffLimit=6, activeDeadlineSeconds=1, annotations={ANNOTATION_DURATION: "600"}
        ),
    )
    job = await wait_job_condition(http, "dl", "Failed")
    assert [c["reason"] for c in job["status"]["conditions"]] == ["DeadlineExceeded"] * 2
    assert (
        job["status"]["conditions"][0]["message"] == "Job was active longer than specified deadline"
    )
    assert job["status"]["failed"] == 1
    assert job["status"]["terminating"] == 0
    reasons = [e[1] for e in await job_events(http, "dl")]
    assert reasons == ["SuccessfulCreate", "SuccessfulDelete", "DeadlineExceeded"]
    assert await pods_of(http, "dl") == []


async def test_ttl_after_finished(http: httpx.AsyncClient) -> None:
    await http.post(JOBS, json=job_manifest("ttl", ttlSecondsAfterFinished=1))

    async def gone() -> bool:
        return (await http.get(f"{JOBS}/ttl")).status_code == 404 and not await pods_of(http, "ttl")

    await wait_for(gone, within=5)


async def running_job(http: httpx.AsyncClient, name: str) -> str:
    await http.post(JOBS, json=job_manifest(name, annotations={ANNOTATION_DURATION: "600"}))

    async def running() -> str | None:
        pods = await pods_of(http, name)
        return (
            pods[0]["metadata"]["name"]
            if pods and pods[0]["status"]["phase"] == "Running"
            else None
        )

    pod: str = await wait_for(running)

    async def ready() -> bool:
        # the Job controller batches pod changes (checklist 7), so `ready` follows shortly
        status = (await http.get(f"{JOBS}/{name}")).json()["status"]
        return bool(status.get("active") == 1 and status["ready"] == 1)

    await wait_for(ready)
    return pod


async def test_delete_background_finished_job(http: httpx.AsyncClient) -> None:
    await http.post(JOBS, json=job_manifest("bg"))
    await wait_job_condition(http, "bg", "Complete")
    r = await http.request("DELETE", f"{JOBS}/bg", json={"propagationPolicy": "Background"})
    body = r.json()
    assert body["kind"] == "Status"
    assert body["status"] == "Success"
    assert body["details"]["group"] == "batch"
    assert body["details"]["kind"] == "jobs"
    assert (await http.get(f"{JOBS}/bg")).status_code == 404
    await wait_for(lambda: _no_pods(http, "bg"))


async def _no_pods(http: httpx.AsyncClient, job: str) -> bool:
    return not await pods_of(http, job)


async def test_delete_foreground_running_job(http: httpx.AsyncClient) -> None:
    await running_job(http, "fg")
    r = await http.request("DELETE", f"{JOBS}/fg", json={"propagationPolicy": "Foreground"})
    body = r.json()
    assert body["kind"] == "Job"
    assert body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["finalizers"] == ["foregroundDeletion"]

    async def all_gone() -> bool:
        return (await http.get(f"{JOBS}/fg")).status_code == 404 and await _no_pods(http, "fg")

    await wait_for(all_gone)


async def test_delete_orphan_and_default(http: httpx.AsyncClient) -> None:
    for name, body in (("orph", {"propagationPolicy": "Orphan"}), ("dflt", None)):
        pod = await running_job(http, name)
        r = await http.request("DELETE", f"{JOBS}/{name}", json=body)
        assert r.json()["metadata"]["finalizers"] == ["orphan"]
        assert ("warning" in r.headers) == (body is None)
        if body is None:
            assert "child pods are preserved by default" in r.headers["warning"]

        async def job_gone(name: str = name) -> bool:
            return (await http.get(f"{JOBS}/{name}")).status_code == 404

        await wait_for(job_gone)
        left = (await http.get(f"{PODS}/{pod}")).json()
        assert "ownerReferences" not in left["metadata"]
        assert left["metadata"]["labels"]["job-name"] == name
        assert left["status"]["phase"] == "Running"


async def test_pod_delete_is_modified_then_deleted(http: httpx.AsyncClient) -> None:
    pod = await running_job(http, "pd")
    rv = (await http.get(PODS)).json()["metadata"]["resourceVersion"]
    r = await http.delete(f"{PODS}/{pod}")
    assert r.json()["metadata"]["deletionGracePeriodSeconds"] == 30
    params = {
        "watch": "1",
        "resourceVersion": rv,
        "timeoutSeconds": "1",
        "fieldSelector": f"metadata.name={pod}",
    }
    types = []
    async with http.stream("GET", PODS, params=params) as response:
        async for line in response.aiter_lines():
            if line:
                types.append(line.split('"', 4)[3])
    assert types[0] == "MODIFIED"
    assert types[-1] == "DELETED"
