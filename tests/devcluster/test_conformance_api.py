"""Conformance of the embedded API server with a real kube-apiserver, and its fault injection.

Everything runs against a real `run_dev_cluster` on a loopback port, driven over HTTP by raw
`httpx.AsyncClient` and by the official (sync) `kubernetes` client in a worker thread. Where
practical, bodies are compared field by field with the k8s-golden captures from Kubernetes
1.36 (../shared/reference/k8s-golden beside the repository); those assertions are skipped
when that folder is missing. Nothing sleeps and hopes: every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
from typing import TYPE_CHECKING, Any

import httpx
import kubernetes
import pytest
import trio

from nexusd.devcluster.faults import FaultPlan

from .conftest import JOBS, NS, job_manifest, start_cluster

if TYPE_CHECKING:
    from nexusd.devcluster import DevCluster

#: The kubernetes client is only partly typed; treat it as dynamic here.
K8S: Any = kubernetes
GOLDEN = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference" / "k8s-golden"
CMS = f"/api/v1/namespaces/{NS}/configmaps"
PODS = f"/api/v1/namespaces/{NS}/pods"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TEMPLATES = f"/apis/science.sneaksanddata.com/v1/namespaces/{NS}/nexusalgorithmtemplates"
MERGE = {"content-type": "application/merge-patch+json"}


def golden(file: str) -> dict[str, Any]:
    path = GOLDEN / file
    if not path.is_file():
        pytest.skip(f"k8s-golden reference data not found at {GOLDEN}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def golden_body(file: str, case: str, **replace: str) -> Any:
    """A golden response body, with sanitized names/namespaces swapped for this test's."""
    text = json.dumps(golden(file)["cases"][case]["response"]["body"])
    for old, new in replace.items():
        text = text.replace(old, new)
    return json.loads(text)


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": name}}


async def read_watch(
    http: httpx.AsyncClient, path: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with trio.fail_after(10):
        async with http.stream("GET", path, params={"watch": "true", **params}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    events.append(json.loads(line))
    return events


def api_client(cluster: DevCluster) -> Any:
    return K8S.config.new_client_from_config(config_file=str(cluster.kubeconfig_path))


# -- watch ---------------------------------------------------------------------------------


async def test_watch_resume_from_list_rv_with_kubernetes_client(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    await http.post(CMS, json=cm("before"))
    rv = (await http.get(CMS)).json()["metadata"]["resourceVersion"]
    await http.post(CMS, json=cm("after-1"))
    await http.patch(f"{CMS}/before", headers=MERGE, content=b'{"data":{"k":"changed"}}')

    def watch() -> list[tuple[str, str]]:
        api = api_client(cluster)
        try:
            core = K8S.client.CoreV1Api(api)
            stream = K8S.watch.Watch().stream(
                core.list_namespaced_config_map,
                NS,
                resource_version=rv,
                timeout_seconds=1,
                allow_watch_bookmarks=True,
            )
            return [(e["type"], e["raw_object"]["metadata"].get("name")) for e in stream]
        finally:
            api.close()

    events = await trio.to_thread.run_sync(watch)
    changes = [e for e in events if e[0] != "BOOKMARK"]
    assert changes == [("ADDED", "after-1"), ("MODIFIED", "before")]


async def test_bookmark_just_before_timeout_close(http: httpx.AsyncClient) -> None:
    rv = (await http.post(CMS, json=cm("x"))).json()["metadata"]["resourceVersion"]
    events = await read_watch(
        http, CMS, {"resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    )
    assert events == [
        {
            "type": "BOOKMARK",
            "object": {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": rv},
            },
        }
    ]
    if GOLDEN.is_dir():
        lines = golden("10-list-watch-wire-formats.json")["cases"][
            "watch-allowWatchBookmarks-timeoutSeconds-100"
        ]["lines"]
        real = json.loads(next(x["line"] for x in lines if "BOOKMARK" in x["line"]))
        assert real["object"].keys() == events[0]["object"].keys()
        assert real["object"]["metadata"].keys() == {"resourceVersion"}


async def test_too_old_watch_is_410_then_relist_and_resume(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    cluster = await start_cluster(nursery, tmp_path, history=3)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        first = (await http.post(CMS, json=cm("c0"))).json()["metadata"]["resourceVersion"]
        for i in range(1, 6):
            await http.post(CMS, json=cm(f"c{i}"))
        events = await read_watch(http, CMS, {"resourceVersion": first})
        assert len(events) == 1
        oldest = cluster.ops.store.oldest_resource_version + 1
        assert events[0] == {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {first} ({oldest})",
                "reason": "Expired",
                "code": 410,
            },
        }
        if GOLDEN.is_dir():
            raw = golden("09-error-bodies.json")["rawWatches"][0]["lines"][0]["line"]
            real = json.loads(raw)["object"]
            assert real.keys() == events[0]["object"].keys()
            assert re.fullmatch(r"too old resource version: \d+ \(\d+\)", real["message"])
        r = await http.get(CMS, params={"resourceVersion": first, "resourceVersionMatch": "Exact"})
        assert r.status_code == 410
        if GOLDEN.is_dir():
            case = "410-list-resourceVersion-1-Exact-after-compaction"
            assert r.json() == golden_body("09-error-bodies.json", case)
        # The informer's recovery: relist, then watch from the new list's resourceVersion.
        listed = (await http.get(CMS)).json()
        rv = listed["metadata"]["resourceVersion"]
        async with trio.open_nursery() as inner:
            received: list[dict[str, Any]] = []

            async def watcher() -> None:
                received.extend(
                    await read_watch(http, CMS, {"resourceVersion": rv, "timeoutSeconds": "1"})
                )

            inner.start_soon(watcher)
            await http.post(CMS, json=cm("fresh"))
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in received] == [
            ("ADDED", "fresh")
        ]


async def test_send_initial_events_then_annotated_bookmark(http: httpx.AsyncClient) -> None:
    for name in ("a", "b"):
        await http.post(CMS, json=cm(name))
    list_rv = (await http.get(CMS)).json()["metadata"]["resourceVersion"]
    events = await read_watch(
        http,
        CMS,
        {
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "1",
        },
    )
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:3]] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("BOOKMARK", None),
    ]
    assert events[0]["object"]["kind"] == "ConfigMap"
    assert events[2]["object"]["metadata"] == {
        "resourceVersion": list_rv,
        "annotations": {"k8s.io/initial-events-end": "true"},
    }
    r = await http.get(CMS, params={"watch": "true", "sendInitialEvents": "true"})
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "resourceVersionMatch"


# -- list: selectors, pagination, resourceVersion ------------------------------------------


async def test_selector_errors_match_golden(http: httpx.AsyncClient) -> None:
    golden("09-error-bodies.json")
    r = await http.get(JOBS, params={"labelSelector": "app in a"})
    assert r.json() == golden_body("09-error-bodies.json", "400-invalid-label-selector")
    r = await http.get(JOBS, params={"fieldSelector": "spec.parallelism=1"})
    assert r.json() == golden_body("09-error-bodies.json", "400-unsupported-field-selector-jobs")
    r = await http.get(PODS, params={"fieldSelector": "spec.containers=x"})
    assert r.status_code == 400
    expected = golden_body(
        "10-list-watch-wire-formats.json", "pods fieldSelector spec.containers=x"
    )
    assert r.json() == expected
    r = await http.get(JOBS, params={"resourceVersion": "abc"})
    assert r.json() == golden_body("09-error-bodies.json", "400-invalid-resourceversion-on-list")
    r = await http.get(JOBS, params={"resourceVersionMatch": "Exact"})
    case = "422-resourceVersionMatch-without-resourceVersion"
    assert r.json() == golden_body("09-error-bodies.json", case)


def _decode(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


async def test_pagination_continue_tokens(http: httpx.AsyncClient) -> None:
    for i in range(1, 6):
        await http.post(CMS, json=cm(f"cm-{i}", {"app": "a" if i < 3 else "b"}))
    pages, token, remaining = [], None, []
    while True:
        params = {"limit": "2"} | ({"continue": token} if token else {})
        body = (await http.get(CMS, params=params)).json()
        pages.append([i["metadata"]["name"] for i in body["items"]])
        token = body["metadata"].get("continue")
        remaining.append(body["metadata"].get("remainingItemCount"))
        if token is None:
            break
        assert "=" not in token
        decoded = _decode(token)
        assert decoded == {
            "v": "meta.k8s.io/v1",
            "rv": int(body["metadata"]["resourceVersion"]),
            "start": f"/{pages[-1][-1]}\u0000",
        }
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        assert raw.startswith('{"v":"meta.k8s.io/v1","rv":')
    assert pages == [["cm-1", "cm-2"], ["cm-3", "cm-4"], ["cm-5"]]
    assert remaining == [3, 1, None]
    if GOLDEN.is_dir():
        real = golden("10-list-watch-wire-formats.json")["continueTokenDecoded"]
        assert set(real["base64urlDecoded"]) == set(decoded)
        assert _decode(real["token"]) == real["base64urlDecoded"]
    everything = (await http.get(CMS, params={"limit": "2", "resourceVersion": "0"})).json()
    assert len(everything["items"]) == 5
    assert everything["metadata"].keys() == {"resourceVersion"}
    selected = (await http.get(CMS, params={"limit": "1", "labelSelector": "app=a"})).json()
    assert "continue" in selected["metadata"]
    assert "remainingItemCount" not in selected["metadata"]
    r = await http.get(JOBS, params={"limit": "1", "continue": "garbage"})
    assert r.status_code == 400
    if GOLDEN.is_dir():
        assert r.json() == golden_body("09-error-bodies.json", "400-invalid-continue-token")


async def test_consistent_pages_exact_lists_and_future_rv(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    for i in range(1, 4):
        await http.post(CMS, json=cm(f"cm-{i}"))
    first = (await http.get(CMS, params={"limit": "2"})).json()
    rv = first["metadata"]["resourceVersion"]
    await http.delete(f"{CMS}/cm-3")
    await http.post(CMS, json=cm("cm-4"))
    rest = await http.get(CMS, params={"limit": "2", "continue": first["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest.json()["items"]] == ["cm-3"]  # snapshot at rv
    exact = await http.get(CMS, params={"resourceVersion": rv, "resourceVersionMatch": "Exact"})
    assert [i["metadata"]["name"] for i in exact.json()["items"]] == ["cm-1", "cm-2", "cm-3"]
    assert exact.json()["metadata"]["resourceVersion"] == rv
    cluster.server.too_large_rv_wait = 0.05
    future = str(cluster.ops.store.resource_version + 1000)
    r = await http.get(CMS, params={"resourceVersion": future})
    assert r.status_code == 504
    assert r.headers["retry-after"] == "1"
    current = cluster.ops.store.resource_version
    expected = golden_body(
        "09-error-bodies.json",
        "504-list-future-resourceVersion-NotOlderThan",
        **{"103952": future, "3957": str(current)},
    )
    assert r.json() == expected


async def test_expired_continue_token(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    cluster = await start_cluster(nursery, tmp_path, history=3)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        for i in range(3):
            await http.post(CMS, json=cm(f"cm-{i}"))
        token = (await http.get(CMS, params={"limit": "1"})).json()["metadata"]["continue"]
        for i in range(3, 8):
            await http.post(CMS, json=cm(f"cm-{i}"))
        r = await http.get(CMS, params={"limit": "1", "continue": token})
    assert r.status_code == 410
    body = r.json()
    assert (body["reason"], body["code"]) == ("Expired", 410)
    assert body["message"].startswith("The provided continue parameter is too old")
    assert _decode(body["metadata"]["continue"])["start"] == "/cm-0\u0000"


# -- writes: conflicts, patches, status, validation, sizes ---------------------------------


async def test_conflicts_and_patch_types(http: httpx.AsyncClient) -> None:
    assert (await http.post(JOBS, json=job_manifest("s9-dup"))).status_code == 201
    r = await http.post(JOBS, json=job_manifest("s9-dup"))
    assert r.json() == golden_body("09-error-bodies.json", "409-create-duplicate-job")
    current = (await http.get(f"{JOBS}/s9-dup")).json()
    stale_rv = current["metadata"]["resourceVersion"]
    current["metadata"]["labels"]["touched"] = "1"
    assert (await http.put(f"{JOBS}/s9-dup", json=current)).status_code == 200
    r = await http.put(f"{JOBS}/s9-dup", json=current)
    assert r.json() == golden_body("09-error-bodies.json", "409-update-with-stale-rv")
    stale = {"metadata": {"resourceVersion": stale_rv, "labels": {"touched": "3"}}}
    r = await http.patch(f"{JOBS}/s9-dup", headers=MERGE, content=json.dumps(stale))
    assert r.json() == golden_body("09-error-bodies.json", "409-merge-patch-with-stale-rv")
    smp = {"content-type": "application/strategic-merge-patch+json"}
    r = await http.patch(
        f"{JOBS}/s9-dup", headers=smp, content=b'{"metadata":{"labels":{"s":"1"}}}'
    )
    assert r.json()["metadata"]["labels"]["s"] == "1"
    jp = {"content-type": "application/json-patch+json"}
    ops = [{"op": "add", "path": "/metadata/labels/j", "value": "2"}]
    r = await http.patch(f"{JOBS}/s9-dup", headers=jp, content=json.dumps(ops))
    assert r.json()["metadata"]["labels"]["j"] == "2"
    r = await http.patch(f"{JOBS}/s9-dup", headers={"content-type": "text/plain"}, content=b"{}")
    assert r.json() == golden_body("09-error-bodies.json", "415-patch-unsupported-content-type")


async def test_job_unknown_field_warning_and_strict(http: httpx.AsyncClient) -> None:
    body = job_manifest("s9-unknown-field")
    body["spec"]["bogusField"] = 1
    r = await http.post(JOBS, json=body)
    assert r.status_code == 201
    assert r.headers["warning"] == '299 - "unknown field \\"spec.bogusField\\""'
    body["metadata"]["name"] = "s9-unknown-field-strict"
    r = await http.post(JOBS, json=body, params={"fieldValidation": "Strict"})
    assert r.json() == golden_body("09-error-bodies.json", "400-create-unknown-field-strict")
    if GOLDEN.is_dir():
        case = golden("09-error-bodies.json")["cases"]["201-create-with-unknown-field-warning"]
        warning = dict(case["response"]["headers"])["Warning"]
        assert r.status_code == 400
        assert warning == '299 - "unknown field \\"spec.bogusField\\""'


def _template_crd() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {k: {"type": "string"} for k in ("type", "status", "reason", "message")}
        | {"lastTransitionTime": {"type": "string", "format": "date-time"}},
    }
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["container", "command"],
                "properties": {
                    "command": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "container": {
                        "type": "object",
                        "required": ["image", "registry", "versionTag"],
                        "properties": {
                            k: {"type": "string"} for k in ("image", "registry", "versionTag")
                        },
                    },
                    "runtimeEnvironment": {
                        "type": "object",
                        "properties": {"deadlineSeconds": {"type": "integer"}},
                    },
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "conditions": {"type": "array", "items": condition},
                    "syncedToClusters": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "nexusalgorithmtemplates.science.sneaksanddata.com"},
        "spec": {
            "group": "science.sneaksanddata.com",
            "names": {"kind": "NexusAlgorithmTemplate", "plural": "nexusalgorithmtemplates"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _template(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_crd_schema_status_subresource_and_patches(http: httpx.AsyncClient) -> None:
    container = {"registry": "ghcr.io/sneaksanddata", "image": "nexus-hello", "versionTag": "0.1.2"}
    assert (await http.post(TEMPLATES, json=_template("early"))).status_code == 404
    assert (await http.post(CRDS, json=_template_crd())).status_code == 201
    g11 = {"golden-s11": NS}
    r = await http.post(TEMPLATES, json=_template("missing-command", container=container))
    assert r.json() == golden_body(
        "11-discovery-and-crd.json", "422-missing-required-command", **g11
    )
    r = await http.post(TEMPLATES, json=_template("missing-both", args=[]))
    expected = golden_body("11-discovery-and-crd.json", "422-missing-command-and-container", **g11)
    assert r.json() == expected
    r = await http.post(
        TEMPLATES, json=_template("missing-nested", command="python", container={"image": "x"})
    )
    assert r.json() == golden_body(
        "11-discovery-and-crd.json", "422-missing-nested-required", **g11
    )
    wrong = _template(
        "wrong-types",
        command=["python"],
        container=container,
        runtimeEnvironment={"deadlineSeconds": "120"},
    )
    r = await http.post(TEMPLATES, json=wrong)
    real = golden_body("11-discovery-and-crd.json", "422-wrong-types", **g11)
    key = "reason", "field", "message"
    causes = sorted(tuple(c[k] for k in key) for c in r.json()["details"]["causes"])
    assert causes == sorted(tuple(c[k] for k in key) for c in real["details"]["causes"])
    valid = _template("hello-world", command="python", container=container, bogusField="pruned")
    valid["status"] = {"syncedToClusters": ["ignored-on-create"]}
    r = await http.post(TEMPLATES, json=valid)
    assert r.status_code == 201
    assert r.headers["warning"] == '299 - "unknown field \\"spec.bogusField\\""'
    assert "status" not in r.json()
    assert "bogusField" not in r.json()["spec"]
    strict = _template("strict", command="python", container=container, bogusField="x")
    r = await http.post(TEMPLATES, json=strict, params={"fieldValidation": "Strict"})
    assert r.status_code == 400
    assert 'strict decoding error: unknown field "spec.bogusField"' in r.json()["message"]
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "AlgorithmReady",
        "message": "ready",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
    patch = {"status": {"conditions": [ready]}, "spec": {"command": "ignored"}}
    r = await http.patch(f"{TEMPLATES}/hello-world/status", headers=MERGE, json=patch)
    obj = r.json()
    assert (obj["spec"]["command"], obj["metadata"]["generation"]) == ("python", 1)
    assert obj["status"]["conditions"] == [ready]
    patch = {"spec": {"command": "python3"}, "status": {"syncedToClusters": ["ignored"]}}
    r = await http.patch(f"{TEMPLATES}/hello-world", headers=MERGE, json=patch)
    obj = r.json()
    assert (obj["spec"]["command"], obj["metadata"]["generation"]) == ("python3", 2)
    assert "syncedToClusters" not in obj["status"]
    smp = {"content-type": "application/strategic-merge-patch+json"}
    r = await http.patch(f"{TEMPLATES}/hello-world", headers=smp, json={"spec": {}})
    expected = golden_body(
        "11-discovery-and-crd.json", "415-strategic-merge-patch-on-custom-resource"
    )
    assert r.json() == expected
    bad = {"status": {"conditions": [{"type": "Ready"}]}}
    r = await http.patch(f"{TEMPLATES}/hello-world/status", headers=MERGE, json=bad)
    expected = golden_body("11-discovery-and-crd.json", "422-status-patch-invalid", **g11)
    assert r.json() == expected


async def test_size_limits(http: httpx.AsyncClient) -> None:
    r = await http.post(CMS, json=cm("s9-big-4mib", blob="x" * (4 * 1024 * 1024)))
    assert r.json() == golden_body("09-error-bodies.json", "413-body-over-3MiB-limit")
    r = await http.post(CMS, json=cm("s9-big-1100kib", blob="x" * (1100 * 1024)))
    case = "422-configmap-1100KiB-over-1MiB-configmap-limit"
    assert r.json() == golden_body("09-error-bodies.json", case)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "big.1"},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": NS},
        "message": "x" * (1600 * 1024),
    }
    r = await http.post(f"/api/v1/namespaces/{NS}/events", json=event)
    case = "500-event-1.6MiB-over-etcd-request-limit"
    assert r.json() == golden_body("09-error-bodies.json", case)


# -- faults --------------------------------------------------------------------------------


async def test_throttle_share_is_seeded_counted_and_exact(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    plan = FaultPlan(seed=7, throttle_share=0.5, verbs=frozenset({"list"}))

    async def run() -> list[int]:
        cluster.faults.set(plan)
        return [(await http.get(CMS)).status_code for _ in range(40)]

    codes = await run()
    assert codes == await run()  # same seed, same pattern
    assert 8 <= codes.count(429) <= 32
    assert cluster.request_counts[("list", "configmaps", 429)] == 2 * codes.count(429)
    assert (await http.post(CMS, json=cm("unthrottled"))).status_code == 201
    cluster.faults.set(throttle_share=1.0)
    r = await http.get(CMS)
    assert r.status_code == 429
    assert r.text == "Too many requests, please try again later.\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-content-type-options"] == "nosniff"
    if GOLDEN.is_dir():
        sample = golden("12a-429-max-inflight.json")["sample429"]["response"]
        headers = dict(sample["headers"])
        assert r.text == sample["body"]
        for name in ("Content-Type", "Retry-After", "X-Content-Type-Options"):
            assert r.headers[name] == headers[name]

    def with_client() -> tuple[int, str | None]:
        api = api_client(cluster)
        try:
            K8S.client.CoreV1Api(api).list_namespaced_config_map(NS)
        except K8S.client.ApiException as exc:
            return exc.status, exc.headers.get("Retry-After")
        finally:
            api.close()
        return 200, None

    assert await trio.to_thread.run_sync(with_client) == (429, "1")


async def test_mutating_rate_limit_converges(http: httpx.AsyncClient, cluster: DevCluster) -> None:
    cluster.faults.set(FaultPlan(mutating_rate=20.0, mutating_burst=5))
    created = throttled = 0
    start = trio.current_time()
    while trio.current_time() < start + 1.0:
        r = await http.post(CMS, json={"metadata": {"generateName": "rl-"}})
        if r.status_code == 429:
            throttled += 1
            await trio.sleep(0.005)
        else:
            assert r.status_code == 201
            created += 1
    elapsed = trio.current_time() - start
    assert (await http.get(CMS)).status_code == 200  # reads are not limited
    assert throttled > 0
    assert 5 + 20 * (elapsed - 0.3) <= created <= 5 + 20 * elapsed + 1
    assert cluster.request_counts[("create", "configmaps", 201)] == created
    assert cluster.request_counts[("create", "configmaps", 429)] == throttled
    assert cluster.writes() == created + throttled


async def test_server_errors_scoped_by_resource(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    cluster.faults.set(FaultPlan(error_share=1.0, error_code=503, resources=frozenset({"jobs"})))
    r = await http.get(JOBS)
    assert r.status_code == 503
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server is currently unable to handle the request (injected fault)",
        "reason": "ServiceUnavailable",
        "code": 503,
    }
    assert (await http.get(CMS)).status_code == 200
    cluster.faults.set(error_code=500)
    r = await http.post(JOBS, json=job_manifest("never"))
    assert (r.status_code, r.json()["reason"]) == (500, "InternalError")
    assert cluster.request_counts[("create", "jobs", 500)] == 1
    cluster.faults.clear()
    assert (await http.get(f"{JOBS}/never")).status_code == 404  # the 500 wrote nothing


async def test_latency_per_verb(http: httpx.AsyncClient, cluster: DevCluster) -> None:
    await http.post(CMS, json=cm("slow"))
    cluster.faults.set(FaultPlan(latency_by_verb={"list": 0.3}))
    start = trio.current_time()
    await http.get(f"{CMS}/slow")
    fast = trio.current_time() - start
    start = trio.current_time()
    await http.get(CMS)
    slow = trio.current_time() - start
    assert fast < 0.2
    assert slow >= 0.3


async def test_watch_cut_after_events_and_seconds(
    http: httpx.AsyncClient, cluster: DevCluster
) -> None:
    for i in range(3):
        await http.post(CMS, json=cm(f"w{i}"))
    cluster.faults.set(FaultPlan(watch_cut_after_events=2))
    received: list[str] = []
    with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("GET", CMS, params={"watch": "true"}) as response:
            async for line in response.aiter_lines():
                received.append(json.loads(line)["object"]["metadata"]["name"])
    assert received == ["w0", "w1"]
    cluster.faults.set(FaultPlan(watch_cut_after_seconds=0.2))
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("GET", CMS, params={"watch": "true"}) as response:
            async for _ in response.aiter_lines():
                pass
    assert trio.current_time() - start < 2


async def test_admin_endpoints(http: httpx.AsyncClient, cluster: DevCluster) -> None:
    plan = {"throttle_share": 1.0, "verbs": ["get"], "seed": 3}
    r = await http.put("/devcluster/v1/faults", json=plan)
    assert r.status_code == 200
    assert r.json()["throttle_share"] == 1.0
    assert r.json()["verbs"] == ["get"]
    assert cluster.faults.plan.verbs == {"get"}
    assert (await http.get(f"{CMS}/any")).status_code == 429
    r = await http.patch("/devcluster/v1/faults", json={"verbs": ["list"]})
    assert r.json()["throttle_share"] == 1.0
    assert (await http.get(f"{CMS}/any")).status_code == 404
    assert (await http.put("/devcluster/v1/faults", json={"bogus": 1})).status_code == 400
    assert (await http.delete("/devcluster/v1/faults")).json() == FaultPlan().to_json()
    stats = (await http.get("/devcluster/v1/stats")).json()
    rows = {(x["verb"], x["resource"], x["code"]): x["count"] for x in stats["requests"]}
    assert rows == dict(cluster.request_counts)
    assert rows[("get", "configmaps", 429)] == 1
    assert stats["throttled"] == 1
    assert stats["writes"] == cluster.writes()
    assert stats["resourceVersion"] == str(cluster.ops.store.resource_version)
    assert (await http.delete("/devcluster/v1/stats")).json()["total"] == 0
    assert (await http.get("/devcluster/v1/nope")).status_code == 404


async def test_faults_from_config(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    plan = FaultPlan(throttle_share=1.0, verbs=frozenset({"create"}))
    cluster = await start_cluster(nursery, tmp_path, faults=plan)
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        assert (await http.post(CMS, json=cm("x"))).status_code == 429
        assert (await http.get(CMS)).status_code == 200
    assert cluster.request_counts[("create", "configmaps", 429)] == 1
