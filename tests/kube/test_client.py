"""`KubeClient` against the embedded cluster (`nexusd.devcluster`) over real loopback HTTP,
with credentials loaded from the kubeconfig the cluster writes. Nothing is faked here; the
failure modes the embedded cluster cannot produce (429, 5xx, broken streams) are in
test_client_faults.py."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

from nexusd.core.errors import KubeConflict, KubeNotFound, KubeRejected
from nexusd.kube.client import CRDS, JOBS, TEMPLATES, WORKGROUPS, KubeClient, WatchExpired
from nexusd.kube.manifests import build_job, parent_owner_reference

NS = "nexus"


@pytest.fixture
def hello_job(template_spec):
    """Factory: `hello_job(request_id, **build_job overrides)` -> the Job nexusd would submit."""
    return functools.partial(_hello_job, template_spec)


def _hello_job(spec: dict[str, Any], request_id: str, **extra: object) -> dict[str, Any]:
    arguments: dict[str, object] = {
        "request_id": request_id,
        "algorithm": "hello-world",
        "spec": spec,
        "workgroup": {"cluster": "shard-0", "description": "d"},
        "namespace": NS,
        "payload_url": "http://payloads/x",
        "result_upload_url": None,
        "parent_owner": None,
        "parent": None,
        "nexus_version": "0.1.0",
    }
    arguments.update(extra)
    return build_job(**arguments)  # type: ignore[arg-type]


async def test_crud_round_trip_on_a_custom_resource(kube: KubeClient, make_template):
    created = await kube.create(TEMPLATES, namespace=NS, body=make_template("hello-world"))
    assert created["metadata"]["uid"]
    fetched = await kube.get(TEMPLATES, namespace=NS, name="hello-world")
    assert fetched["spec"]["container"]["image"] == "nexus-hello"

    fetched["spec"]["container"]["versionTag"] = "0.2.0"
    replaced = await kube.replace(TEMPLATES, namespace=NS, name="hello-world", body=fetched)
    assert replaced["spec"]["container"]["versionTag"] == "0.2.0"
    assert replaced["metadata"]["resourceVersion"] != fetched["metadata"]["resourceVersion"]

    await kube.delete(TEMPLATES, namespace=NS, name="hello-world")
    with pytest.raises(KubeNotFound):
        await kube.get(TEMPLATES, namespace=NS, name="hello-world")


async def test_the_built_job_is_accepted_by_the_api(kube: KubeClient, hello_job):
    created = await kube.create(JOBS, namespace=NS, body=hello_job("run-1"))
    assert created["metadata"]["name"] == "run-1"
    assert created["spec"]["backoffLimit"] == 1
    assert created["spec"]["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    child = hello_job("run-2", parent_owner=parent_owner_reference(created), parent=("run-1", "p"))
    created_child = await kube.create(JOBS, namespace=NS, body=child)
    assert created_child["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]


async def test_create_duplicate_is_conflict_already_exists(kube: KubeClient, hello_job):
    await kube.create(JOBS, namespace=NS, body=hello_job("dup"))
    with pytest.raises(KubeConflict) as caught:
        await kube.create(JOBS, namespace=NS, body=hello_job("dup"))
    assert caught.value.status == 409
    assert caught.value.reason == "AlreadyExists"
    assert str(caught.value) == 'jobs.batch "dup" already exists'


async def test_replace_with_stale_resource_version_is_conflict(kube: KubeClient, make_workgroup):
    created = await kube.create(WORKGROUPS, namespace=NS, body=make_workgroup("default"))
    fresh = dict(created, spec={"cluster": "shard-1", "description": "moved"})
    await kube.replace(WORKGROUPS, namespace=NS, name="default", body=fresh)
    stale = dict(created, spec={"cluster": "shard-2", "description": "stale"})
    with pytest.raises(KubeConflict) as caught:
        await kube.replace(WORKGROUPS, namespace=NS, name="default", body=stale)
    assert caught.value.reason == "Conflict"


async def test_get_missing_is_not_found_with_the_status_message(kube: KubeClient):
    with pytest.raises(KubeNotFound) as caught:
        await kube.get(JOBS, namespace=NS, name="no-such-job")
    assert caught.value.status == 404
    assert caught.value.reason == "NotFound"
    assert str(caught.value) == 'jobs.batch "no-such-job" not found'


async def test_invalid_object_is_rejected(kube: KubeClient, hello_job):
    with pytest.raises(KubeRejected) as caught:
        await kube.create(JOBS, namespace=NS, body=hello_job("Bad_Name"))
    assert caught.value.status == 422
    assert caught.value.reason == "Invalid"
    assert "Bad_Name" in str(caught.value)


async def test_list_with_selector_and_pages(kube: KubeClient, hello_job):
    for index in range(5):
        job = hello_job(f"page-{index}")
        job["metadata"]["labels"]["parity"] = "even" if index % 2 == 0 else "odd"  # type: ignore[index]
        await kube.create(JOBS, namespace=NS, body=job)
    even = await kube.list(JOBS, namespace=NS, label_selector="parity=even")
    assert sorted(item["metadata"]["name"] for item in even["items"]) == [
        "page-0",
        "page-2",
        "page-4",
    ]
    assert even["metadata"]["resourceVersion"]

    names: list[str] = []
    token: str | None = None
    while True:
        page = await kube.list(JOBS, namespace=NS, limit=2, continue_token=token)
        # (The embedded cluster may answer everything at once; a real one pages by 2.)
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue") or None
        if token is None:
            break
    assert sorted(names) == [f"page-{index}" for index in range(5)]


async def test_cluster_scoped_resource(kube: KubeClient):
    crd = await kube.get(
        CRDS, namespace=None, name="nexusalgorithmtemplates.science.sneaksanddata.com"
    )
    assert crd["spec"]["names"]["kind"] == "NexusAlgorithmTemplate"
    listed = await kube.list(CRDS, namespace=None)
    assert len(listed["items"]) >= 2


async def test_delete_with_propagation_policy(kube: KubeClient, hello_job):
    await kube.create(JOBS, namespace=NS, body=hello_job("to-delete"))
    await kube.delete(
        JOBS,
        namespace=NS,
        name="to-delete",
        propagation_policy="Background",
        grace_period_seconds=0,
    )
    with trio.fail_after(10):
        while True:
            try:
                await kube.get(JOBS, namespace=NS, name="to-delete")
            except KubeNotFound:
                break
            await trio.sleep(0.05)
    with pytest.raises(KubeNotFound):
        await kube.delete(JOBS, namespace=NS, name="to-delete")


async def test_watch_streams_changes_after_the_list(kube: KubeClient, make_workgroup):
    listed = await kube.list(WORKGROUPS, namespace=NS)
    version = listed["metadata"]["resourceVersion"]
    created = await kube.create(WORKGROUPS, namespace=NS, body=make_workgroup("w1"))
    created["spec"]["cluster"] = "shard-9"
    await kube.replace(WORKGROUPS, namespace=NS, name="w1", body=created)
    await kube.delete(WORKGROUPS, namespace=NS, name="w1")

    seen: list[tuple[str, str]] = []
    with trio.fail_after(10):
        async with kube.watch(
            WORKGROUPS, namespace=NS, resource_version=version, timeout_seconds=5
        ) as events:
            async for event in events:
                if event.type == "BOOKMARK":
                    continue
                seen.append((event.type, event.object["spec"]["cluster"]))
                assert event.resource_version
                if event.type == "DELETED":
                    break
    assert seen == [("ADDED", "shard-0"), ("MODIFIED", "shard-9"), ("DELETED", "shard-9")]


async def test_watch_from_a_compacted_version_raises_watch_expired(
    kube: KubeClient, make_workgroup
):
    for index in range(3):
        await kube.create(WORKGROUPS, namespace=NS, body=make_workgroup(f"churn-{index}"))
    with trio.fail_after(10), pytest.raises(WatchExpired) as caught:
        async with kube.watch(
            WORKGROUPS, namespace=NS, resource_version="1", timeout_seconds=5
        ) as events:
            async for _ in events:
                pass
    assert caught.value.status == 410


async def test_statistics_count_requests_by_verb_resource_and_code(
    kube: KubeClient, make_workgroup
):
    before = kube.statistics()
    await kube.create(WORKGROUPS, namespace=NS, body=make_workgroup("stats"))
    with pytest.raises(KubeNotFound):
        await kube.get(WORKGROUPS, namespace=NS, name="nope")
    after = kube.statistics()
    assert after.requests[("create", "nexusalgorithmworkgroups", 201)] == 1
    assert after.requests[("get", "nexusalgorithmworkgroups", 404)] == 1
    assert after.total() == before.total() + 2
    assert after.total(verb="create", status=201) == before.total(verb="create", status=201) + 1
