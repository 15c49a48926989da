"""The embedded API server over real loopback HTTP (httpx): discovery, CRUD, errors, selectors,
watch and CRDs. Nothing is faked; expected bodies come from the k8s-golden reference files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import trio

from .conftest import JOBS, NS, job_manifest, start_cluster

if TYPE_CHECKING:
    from nexusd.devcluster import DevCluster

CMS = f"/api/v1/namespaces/{NS}/configmaps"


def cm(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": name}}


async def test_discovery(http: httpx.AsyncClient) -> None:
    assert (await http.get("/version")).json()["major"] == "1"
    api = (await http.get("/api")).json()
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]
    v1 = (await http.get("/api/v1")).json()
    names = {r["name"] for r in v1["resources"]}
    assert {"pods", "pods/status", "pods/log", "configmaps", "events", "namespaces"} <= names
    groups = {g["name"] for g in (await http.get("/apis")).json()["groups"]}
    assert {"batch", "apiextensions.k8s.io"} <= groups
    batch = (await http.get("/apis/batch/v1")).json()
    assert batch["groupVersion"] == "batch/v1"
    assert {"jobs", "jobs/status"} <= {r["name"] for r in batch["resources"]}
    missing = await http.get("/apis/no.such.group/v1/namespaces/x/things")
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")
    assert missing.headers["content-type"] == "text/plain; charset=utf-8"
    assert (await http.get("/no/such/path")).status_code == 404


async def test_create_get_list_delete(http: httpx.AsyncClient) -> None:
    created = (await http.post(CMS, json=cm("a"))).json()
    assert created["kind"] == "ConfigMap"
    assert created["apiVersion"] == "v1"
    meta = created["metadata"]
    assert meta["namespace"] == NS
    assert meta["uid"]
    assert meta["resourceVersion"].isdigit()
    assert meta["creationTimestamp"].endswith("Z")
    got = (await http.get(f"{CMS}/a")).json()
    assert got == created
    listed = (await http.get(CMS)).json()
    assert listed["kind"] == "ConfigMapList"
    assert listed["apiVersion"] == "v1"
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    assert "kind" not in listed["items"][0]
    gone = (await http.delete(f"{CMS}/a")).json()
    assert gone["status"] == "Success"
    assert gone["details"]["kind"] == "configmaps"
    assert (await http.get(f"{CMS}/a")).status_code == 404
    ns = (await http.get(f"/api/v1/namespaces/{NS}")).json()
    assert ns["status"]["phase"] == "Active"


async def test_error_bodies(http: httpx.AsyncClient) -> None:
    r = await http.get(f"{JOBS}/no-such-job")
    assert r.status_code == 404
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'jobs.batch "no-such-job" not found',
        "reason": "NotFound",
        "details": {"name": "no-such-job", "group": "batch", "kind": "jobs"},
        "code": 404,
    }
    assert (await http.post(JOBS, json=job_manifest("dup"))).status_code == 201
    r = await http.post(JOBS, json=job_manifest("dup"))
    assert r.status_code == 409
    assert r.json()["reason"] == "AlreadyExists"
    assert r.json()["message"] == 'jobs.batch "dup" already exists'
    current = (await http.get(f"{JOBS}/dup")).json()
    current["metadata"]["labels"]["touched"] = "1"
    assert (await http.put(f"{JOBS}/dup", json=current)).status_code == 200
    r = await http.put(f"{JOBS}/dup", json=current)  # stale resourceVersion now
    assert r.status_code == 409
    assert r.json()["reason"] == "Conflict"
    assert "the object has been modified" in r.json()["message"]
    r = await http.post(JOBS, json=job_manifest("Bad_Name"))
    assert r.status_code == 422
    assert r.json()["details"]["kind"] == "Job"
    assert r.json()["message"].startswith(
        'Job.batch "Bad_Name" is invalid: metadata.name: Invalid value'
    )
    nameless = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}
    r = await http.post(CMS, json=nameless)
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "metadata.name"
    bad = job_manifest("no-restart")
    del bad["spec"]["template"]["spec"]["restartPolicy"]
    r = await http.post(JOBS, json=bad)
    assert r.json()["message"] == (
        'Job.batch "no-restart" is invalid: spec.template.spec.restartPolicy: '
        'Required value: valid values: "OnFailure", "Never"'
    )
    r = await http.get(JOBS, params={"labelSelector": "app in a"})
    assert r.status_code == 400
    assert r.json()["message"] == "unable to parse requirement: found 'a' expected: '('"
    r = await http.get(JOBS, params={"fieldSelector": "spec.parallelism=1"})
    assert r.json()["message"] == 'field label "spec.parallelism" not supported for Job'
    r = await http.get(
        f"/api/v1/namespaces/{NS}/pods", params={"fieldSelector": "spec.containers=x"}
    )
    assert r.json()["message"] == "field label not supported: spec.containers"
    r = await http.get(f"{JOBS[:-1]}z")
    assert r.status_code == 404
    assert r.json()["message"] == "the server could not find the requested resource"
    r = await http.patch(f"{JOBS}/dup", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415


async def test_generate_name_and_merge_patch(http: httpx.AsyncClient) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}
    created = (await http.post(CMS, json=body)).json()
    name = created["metadata"]["name"]
    assert name.startswith("gen-")
    assert len(name) == 9
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in name[4:])
    patch = {"metadata": {"labels": {"x": "1"}}, "data": {"k": "v"}}
    r = await http.patch(
        f"{CMS}/{name}",
        content=json.dumps(patch),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200
    assert r.json()["metadata"]["labels"] == {"x": "1"}
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    r = await http.patch(
        f"{CMS}/{name}",
        content=json.dumps(stale),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 409


async def test_label_selectors(http: httpx.AsyncClient) -> None:
    for name, labels in [
        ("cm-1", {"app": "a"}),
        ("cm-2", {"app": "a"}),
        ("cm-3", {"app": "b"}),
        ("cm-4", None),
    ]:
        await http.post(CMS, json=cm(name, labels))

    async def names(selector: str) -> list[str]:
        items = (await http.get(CMS, params={"labelSelector": selector})).json()["items"]
        return [i["metadata"]["name"] for i in items]

    assert await names("app=a") == ["cm-1", "cm-2"]
    assert await names("app==a") == ["cm-1", "cm-2"]
    assert await names("app!=a") == ["cm-3", "cm-4"]
    assert await names("app in (a,b)") == ["cm-1", "cm-2", "cm-3"]
    assert await names("app notin (a)") == ["cm-3", "cm-4"]
    assert await names("!app") == ["cm-4"]
    assert await names("app") == ["cm-1", "cm-2", "cm-3"]
    assert await names("app=a,app=b") == []
    fields = (await http.get(CMS, params={"fieldSelector": "metadata.name=cm-3"})).json()["items"]
    assert [i["metadata"]["name"] for i in fields] == ["cm-3"]


async def read_watch(
    http: httpx.AsyncClient, path: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    """Read a whole watch stream; callers pass timeoutSeconds so the server ends it (reading to
    the end avoids abandoning httpx's nested async generators)."""
    events: list[dict[str, Any]] = []
    async with http.stream("GET", path, params={"watch": "true", **params}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                events.append(json.loads(line))
    return events


async def test_watch_from_list_resource_version(http: httpx.AsyncClient) -> None:
    await http.post(CMS, json=cm("before"))
    rv = (await http.get(CMS)).json()["metadata"]["resourceVersion"]
    received: list[dict[str, Any]] = []

    async def watcher() -> None:
        received.extend(
            await read_watch(
                http, CMS, {"resourceVersion": rv, "labelSelector": "app=a", "timeoutSeconds": "1"}
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher)
        await http.post(CMS, json=cm("w1", {"app": "a"}))
        await http.post(CMS, json=cm("other", {"app": "b"}))
        merge = {"content-type": "application/merge-patch+json"}
        await http.patch(f"{CMS}/w1", content=b'{"metadata":{"labels":{"app":"z"}}}', headers=merge)
        await http.patch(f"{CMS}/w1", content=b'{"metadata":{"labels":{"app":"a"}}}', headers=merge)
        await http.delete(f"{CMS}/w1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in received] == [
        ("ADDED", "w1"),
        ("DELETED", "w1"),
        ("ADDED", "w1"),
        ("DELETED", "w1"),
    ]
    assert received[0]["object"]["kind"] == "ConfigMap"


async def test_watch_timeout_sends_bookmark(http: httpx.AsyncClient) -> None:
    await http.post(CMS, json=cm("x"))
    events = await read_watch(http, CMS, {"timeoutSeconds": "1", "allowWatchBookmarks": "true"})
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["kind"] == "ConfigMap"
    assert events[1]["object"]["metadata"]["resourceVersion"].isdigit()


async def test_watch_too_old_resource_version(nursery: trio.Nursery, tmp_path: Any) -> None:
    cluster: DevCluster = await start_cluster(nursery, tmp_path, history=3)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        first = (await http.post(CMS, json=cm("c0"))).json()["metadata"]["resourceVersion"]
        for i in range(1, 6):
            await http.post(CMS, json=cm(f"c{i}"))
        events = await read_watch(http, CMS, {"resourceVersion": first})
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["code"] == 410
    assert status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {first} (")


CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "nexusalgorithmtemplates.science.sneaksanddata.com"},
    "spec": {
        "group": "science.sneaksanddata.com",
        "scope": "Namespaced",
        "names": {
            "plural": "nexusalgorithmtemplates",
            "singular": "nexusalgorithmtemplate",
            "kind": "NexusAlgorithmTemplate",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object"}},
                "subresources": {"status": {}},
            }
        ],
    },
}
TEMPLATES = f"/apis/science.sneaksanddata.com/v1/namespaces/{NS}/nexusalgorithmtemplates"


async def test_crd_then_custom_resources(http: httpx.AsyncClient) -> None:
    assert (await http.get(TEMPLATES)).status_code == 404
    r = await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD)
    assert r.status_code == 201
    crd = (
        await http.get(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD['metadata']['name']}"
        )
    ).json()
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established[0]["status"] == "True"
    group = (await http.get("/apis/science.sneaksanddata.com/v1")).json()
    assert group["resources"][0]["verbs"][0] == "delete"
    rv = (await http.get(TEMPLATES)).json()["metadata"]["resourceVersion"]
    body = {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": "hello"},
        "spec": {"command": "python"},
        "status": {"x": 1},
    }
    created = (await http.post(TEMPLATES, json=body)).json()
    assert "status" not in created
    assert created["metadata"]["generation"] == 1
    merge = {"content-type": "application/merge-patch+json"}
    r = await http.patch(
        f"{TEMPLATES}/hello/status",
        headers=merge,
        content=b'{"status":{"ready":true},"spec":{"command":"no"}}',
    )
    assert r.json()["status"] == {"ready": True}
    assert r.json()["spec"]["command"] == "python"
    assert r.json()["metadata"]["generation"] == 1
    r = await http.patch(
        f"{TEMPLATES}/hello", headers=merge, content=b'{"spec":{"command":"python3"}}'
    )
    assert r.json()["metadata"]["generation"] == 2
    listed = (await http.get(TEMPLATES)).json()
    assert listed["kind"] == "NexusAlgorithmTemplateList"
    events = await read_watch(http, TEMPLATES, {"resourceVersion": rv, "timeoutSeconds": "1"})
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "MODIFIED"]
    assert events[0]["object"]["kind"] == "NexusAlgorithmTemplate"
