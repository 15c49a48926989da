"""coordination.k8s.io/v1 Leases on the embedded cluster: discovery, CRUD, 409 on a stale
resourceVersion, list and watch. Real: the cluster on loopback, reached with httpx; nothing is
faked. Error bodies are the shapes of golden file 09 (404 NotFound, 409 AlreadyExists/Conflict).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio

from tests.devcluster.conftest import NS

if TYPE_CHECKING:
    import httpx

GROUP = "coordination.k8s.io"
LEASES = f"/apis/{GROUP}/v1/namespaces/{NS}/leases"


def lease(name: str, holder: str = "a", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-02T07:00:00.000000Z",
            "renewTime": "2026-12-02T07:00:00.000000Z",
            "leaseTransitions": 0,
            **spec,
        },
    }


async def test_leases_are_discovered(http: httpx.AsyncClient) -> None:
    groups = {g["name"]: g for g in (await http.get("/apis")).json()["groups"]}
    assert groups[GROUP]["preferredVersion"] == {"groupVersion": f"{GROUP}/v1", "version": "v1"}
    group = (await http.get(f"/apis/{GROUP}")).json()
    assert (group["kind"], group["name"]) == ("APIGroup", GROUP)
    resources = (await http.get(f"/apis/{GROUP}/v1")).json()
    assert resources["groupVersion"] == f"{GROUP}/v1"
    (entry,) = resources["resources"]  # no status subresource, as in a real cluster
    assert entry["name"] == "leases"
    assert entry["singularName"] == "lease"
    assert entry["kind"] == "Lease"
    assert entry["namespaced"] is True
    assert set(entry["verbs"]) == {
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    }


async def test_create_get_replace_delete(http: httpx.AsyncClient) -> None:
    created = await http.post(LEASES, json=lease("l1"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["apiVersion"], body["kind"]) == (f"{GROUP}/v1", "Lease")
    assert body["metadata"]["namespace"] == NS
    assert body["spec"] == lease("l1")["spec"]
    assert "generation" not in body["metadata"]
    assert (await http.get(f"{LEASES}/l1")).json() == body

    renewed = {**body, "spec": {**body["spec"], "renewTime": "2026-12-02T07:00:02.000000Z"}}
    replaced = await http.put(f"{LEASES}/l1", json=renewed)
    assert replaced.status_code == 200, replaced.text
    after = replaced.json()
    assert int(after["metadata"]["resourceVersion"]) > int(body["metadata"]["resourceVersion"])
    assert after["spec"]["renewTime"] == "2026-12-02T07:00:02.000000Z"

    patched = await http.patch(
        f"{LEASES}/l1",
        content=json.dumps({"spec": {"holderIdentity": "b"}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"]["holderIdentity"] == "b"

    listed = (await http.get(LEASES)).json()
    assert listed["kind"] == "LeaseList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["l1"]

    assert (await http.delete(f"{LEASES}/l1")).status_code == 200
    missing = await http.get(f"{LEASES}/l1")
    assert missing.status_code == 404
    assert missing.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'leases.coordination.k8s.io "l1" not found',
        "reason": "NotFound",
        "details": {"name": "l1", "group": GROUP, "kind": "leases"},
        "code": 404,
    }


async def test_a_stale_resource_version_is_a_conflict(http: httpx.AsyncClient) -> None:
    body = (await http.post(LEASES, json=lease("l2"))).json()
    again = await http.post(LEASES, json=lease("l2", holder="b"))
    assert again.status_code == 409
    assert again.json()["reason"] == "AlreadyExists"
    assert again.json()["message"] == 'leases.coordination.k8s.io "l2" already exists'

    # Two candidates read the same version; the first write wins, the second is refused.
    first = {**body, "spec": {**body["spec"], "holderIdentity": "b"}}
    second = {**body, "spec": {**body["spec"], "holderIdentity": "c"}}
    assert (await http.put(f"{LEASES}/l2", json=first)).status_code == 200
    refused = await http.put(f"{LEASES}/l2", json=second)
    assert refused.status_code == 409
    assert refused.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": (
            'Operation cannot be fulfilled on leases.coordination.k8s.io "l2": the object has '
            "been modified; please apply your changes to the latest version and try again"
        ),
        "reason": "Conflict",
        "details": {"name": "l2", "group": GROUP, "kind": "leases"},
        "code": 409,
    }
    assert (await http.get(f"{LEASES}/l2")).json()["spec"]["holderIdentity"] == "b"


async def test_watch_sees_every_change(http: httpx.AsyncClient) -> None:
    rv = (await http.get(LEASES)).json()["metadata"]["resourceVersion"]
    body = (await http.post(LEASES, json=lease("l3"))).json()
    body["spec"]["holderIdentity"] = "b"
    assert (await http.put(f"{LEASES}/l3", json=body)).status_code == 200
    assert (await http.delete(f"{LEASES}/l3")).status_code == 200
    seen: list[tuple[str, str]] = []
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}
    with trio.fail_after(10):  # the server ends the stream after timeoutSeconds
        async with http.stream("GET", LEASES, params=params) as stream:
            async for line in stream.aiter_lines():
                if line:
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["spec"]["holderIdentity"]))
    assert seen == [("ADDED", "a"), ("MODIFIED", "b"), ("DELETED", "b")]
