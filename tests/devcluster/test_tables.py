"""The embedded cluster's server-side Table format (`kubectl get`), over HTTP and with kubectl.

Real: the embedded cluster on loopback with its scripted kubelet, reached with httpx exactly as
kubectl asks (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), nexusd's own CRDs
(crds/) installed through the API, and the `kubectl` binary when the machine has one (else
that one test is skipped, saying so). `human_duration` is a pure function, tested against
apimachinery's own table of cases.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.devcluster import ANNOTATION_DURATION, ANNOTATION_EXIT_CODE
from nexusd.devcluster.tables import format_selector, human_duration
from tests.conftest import template as algorithm_template
from tests.devcluster.conftest import JOBS, NS, PODS, job_manifest, wait_for, wait_job_condition
from tests.servers.clusters import WORKGROUP, crd_documents

if TYPE_CHECKING:
    import httpx

    from nexusd.devcluster import DevCluster

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
#: What kubectl 1.32 sends for `kubectl get`.
KUBECTL_ACCEPT = f"{TABLE},application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
GROUP = "/apis/science.sneaksanddata.com/v1"
TEMPLATES = f"{GROUP}/namespaces/{NS}/nexusalgorithmtemplates"
WORKGROUPS = f"{GROUP}/namespaces/{NS}/nexusalgorithmworkgroups"
AGE = re.compile(r"^\d+s$")  # everything here is seconds old


def names(table: dict[str, Any], *, priority: int = 0) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"] if c["priority"] == priority]


def rows_by_name(table: dict[str, Any]) -> dict[str, list[Any]]:
    return {row["cells"][0]: row["cells"] for row in table["rows"]}


async def table(http: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await http.get(path, params=params, headers={"Accept": KUBECTL_ACCEPT})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    assert (document["kind"], document["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    return document


async def start_jobs(http: httpx.AsyncClient) -> None:
    for name, kubelet_script in (
        ("done", {ANNOTATION_DURATION: "0"}),
        ("broken", {ANNOTATION_DURATION: "0", ANNOTATION_EXIT_CODE: "3"}),
        ("busy", {ANNOTATION_DURATION: "60"}),
    ):
        response = await http.post(JOBS, json=job_manifest(name, annotations=kubelet_script))
        assert response.status_code == 201, response.text
    await wait_job_condition(http, "done", "Complete")
    await wait_job_condition(http, "broken", "Failed")

    async def busy_runs() -> bool:
        pods = (await http.get(PODS, params={"labelSelector": "job-name=busy"})).json()["items"]
        return bool(pods) and pods[0]["status"].get("phase") == "Running"

    await wait_for(busy_runs)


async def test_jobs_list_with_kubectls_columns(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    await start_jobs(http)
    jobs = await table(http, JOBS)
    assert names(jobs) == ["Name", "Status", "Completions", "Duration", "Age"]
    assert names(jobs, priority=1) == ["Containers", "Images", "Selector"]
    assert jobs["columnDefinitions"][0]["format"] == "name"
    assert jobs["metadata"]["resourceVersion"].isdigit()
    rows = rows_by_name(jobs)
    assert set(rows) == {"done", "broken", "busy"}
    for name, status in (("done", "Complete"), ("broken", "Failed"), ("busy", "Running")):
        cells = rows[name]
        assert cells[1] == status, cells
        assert cells[2] == ("1/1" if name == "done" else "0/1")
        assert AGE.match(cells[3]), cells  # started: a duration
        assert AGE.match(cells[4]), cells
        assert cells[5:7] == ["main", "registry.example/algo:1.0"]
        assert cells[7].startswith("batch.kubernetes.io/controller-uid=") or "=" in cells[7]
    row = jobs["rows"][0]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert row["object"]["metadata"]["name"] == row["cells"][0]
    assert "spec" not in row["object"]


async def test_pods_list_with_kubectls_columns(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    await start_jobs(http)
    pods = await table(http, PODS)
    assert names(pods) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert names(pods, priority=1) == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    by_job = {row["object"]["metadata"]["labels"]["job-name"]: row for row in pods["rows"]}
    expected = {
        "done": ("0/1", "Completed"),
        "broken": ("0/1", "Error"),
        "busy": ("1/1", "Running"),
    }
    for job, (ready, status) in expected.items():
        cells = by_job[job]["cells"]
        assert cells[0].startswith(f"{job}-")
        assert (cells[1], cells[2], cells[3]) == (ready, status, "0"), cells
        assert AGE.match(cells[4])
        assert cells[5] == "127.0.0.1"
        assert cells[6] != "<none>"
        assert cells[7:] == ["<none>", "<none>"]
    assert by_job["done"]["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]
    assert by_job["broken"]["conditions"][0]["reason"] == "Failed"
    assert "conditions" not in by_job["busy"]


async def test_get_one_object_and_the_include_object_choices(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    await start_jobs(http)
    plain = (await http.get(f"{JOBS}/done")).json()
    assert plain["kind"] == "Job"  # no Accept header: the object itself, as before
    one = await table(http, f"{JOBS}/done")
    assert [row["cells"][:3] for row in one["rows"]] == [["done", "Complete", "1/1"]]
    assert one["metadata"] == {"resourceVersion": plain["metadata"]["resourceVersion"]}
    whole = await table(http, f"{JOBS}/done", includeObject="Object")
    assert whole["rows"][0]["object"]["kind"] == "Job"
    assert whole["rows"][0]["object"]["spec"]["template"]
    listed = await table(http, JOBS, includeObject="Object")
    assert {row["object"]["kind"] for row in listed["rows"]} == {"Job"}
    bare = await table(http, JOBS, includeObject="None")
    assert {row["object"] is None for row in bare["rows"]} == {True}
    bad = await http.get(JOBS, params={"includeObject": "All"}, headers={"Accept": TABLE})
    assert bad.status_code == 400
    assert 'includeObject: Unsupported value: "All"' in bad.json()["message"]
    older = await http.get(
        JOBS, headers={"Accept": "application/json;as=Table;v=v1beta1;g=meta.k8s.io"}
    )
    assert older.json()["apiVersion"] == "meta.k8s.io/v1beta1"


async def test_a_page_of_a_list_keeps_its_continue_token(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    for n in range(3):
        assert (await http.post(JOBS, json=job_manifest(f"page-{n}"))).status_code == 201
    first = await table(http, JOBS, limit="2")
    assert len(first["rows"]) == 2
    rest = await table(http, JOBS, limit="2", **{"continue": first["metadata"]["continue"]})
    assert [row["cells"][0] for row in first["rows"] + rest["rows"]] == [
        "page-0",
        "page-1",
        "page-2",
    ]


async def install_crds(http: httpx.AsyncClient) -> None:
    for document in crd_documents():
        response = await http.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=document
        )
        assert response.status_code == 201, response.text


async def test_custom_resources_show_their_crds_printer_columns(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    await install_crds(http)
    template = algorithm_template("algo")
    template["spec"]["container"]["versionTag"] = "1.2.3"
    created = await http.post(TEMPLATES, json=template)
    assert created.status_code == 201, created.text
    assert (await http.post(WORKGROUPS, json=WORKGROUP)).status_code == 201
    templates = await table(http, TEMPLATES)
    assert names(templates) == ["Name", "Image", "Version", "Workgroup", "Ready", "Age"]
    assert names(templates, priority=1) == ["Registry", "Command"]
    [cells] = [row["cells"] for row in templates["rows"]]
    assert cells[:5] == ["algo", "algo", "1.2.3", "default", None]  # no status yet
    assert AGE.match(cells[5])
    assert cells[6:] == ["example.test", "python"]

    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": "copied",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    stored = (await http.get(f"{TEMPLATES}/algo")).json()
    stored["status"] = {"conditions": [{**ready, "type": "Other", "status": "False"}, ready]}
    updated = await http.put(f"{TEMPLATES}/algo/status", json=stored)
    assert updated.status_code == 200, updated.text
    one = await table(http, f"{TEMPLATES}/algo")
    assert one["rows"][0]["cells"][4] == "True"  # the filter picks the Ready condition

    workgroups = await table(http, WORKGROUPS)
    assert names(workgroups) == ["Name", "Cluster", "Ready", "Age"]
    assert names(workgroups, priority=1) == ["Description"]
    assert workgroups["rows"][0]["cells"][:3] == ["default", "dev", None]
    assert workgroups["rows"][0]["cells"][4] == "embedded cluster"
    described = {c["name"]: c["description"] for c in workgroups["columnDefinitions"]}
    assert described["Cluster"] == (
        "Custom resource definition column (in JSONPath format): .spec.cluster"
    )


async def test_a_crd_without_columns_and_other_types_show_name_and_age(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.test"},
        "spec": {
            "group": "example.test",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    created = await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
    assert created.status_code == 201, created.text
    widgets = f"/apis/example.test/v1/namespaces/{NS}/widgets"
    widget = {"apiVersion": "example.test/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert (await http.post(widgets, json=widget)).status_code == 201
    listed = await table(http, widgets)
    assert names(listed) == ["Name", "Age"]
    assert listed["columnDefinitions"][1]["type"] == "date"
    assert listed["rows"][0]["cells"][0] == "w"
    assert AGE.match(listed["rows"][0]["cells"][1])

    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    assert (
        await http.post(f"/api/v1/namespaces/{NS}/configmaps", json=configmap)
    ).status_code == 201
    maps = await table(http, f"/api/v1/namespaces/{NS}/configmaps")
    assert names(maps) == ["Name", "Age"]
    assert rows_by_name(maps)["cm"][1] != "<unknown>"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
async def test_kubectl_get_prints_the_columns(cluster: DevCluster, http: httpx.AsyncClient) -> None:
    await start_jobs(http)
    await install_crds(http)
    assert (await http.post(WORKGROUPS, json=WORKGROUP)).status_code == 201

    async def kubectl(*args: str) -> list[list[str]]:
        result = await trio.run_process(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig_path), "-n", NS, "get", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        lines = result.stdout.decode().splitlines()
        return [re.split(r"\s{2,}", line.strip()) for line in lines]

    jobs = await kubectl("jobs")
    assert jobs[0] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert {row[0]: row[1:3] for row in jobs[1:]} == {
        "busy": ["Running", "0/1"],
        "broken": ["Failed", "0/1"],
        "done": ["Complete", "1/1"],
    }
    pods = await kubectl("pods")
    assert pods[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert sorted(row[2] for row in pods[1:]) == ["Completed", "Error", "Running"]
    wide_pods = await kubectl("pods", "-o", "wide")
    assert wide_pods[0][5:7] == ["IP", "NODE"]
    workgroups = await kubectl("nexusalgorithmworkgroups")
    assert workgroups[0] == ["NAME", "CLUSTER", "READY", "AGE"]
    assert workgroups[1][:2] == ["default", "dev"]
    assert AGE.match(workgroups[1][2])  # READY is empty: no Ready condition yet
    wide = await kubectl("nexusalgorithmworkgroups", "-o", "wide")
    assert wide[0][-1] == "DESCRIPTION"
    assert wide[1][-1] == "embedded cluster"
    one = await kubectl("job", "done")
    assert one[1][:3] == ["done", "Complete", "1/1"]


@pytest.mark.parametrize(
    ("seconds", "spelled"),
    [
        (-2, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (1, "1s"),
        (70, "70s"),
        (120, "2m"),
        (190, "3m10s"),
        (70 * 60, "70m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 4 * 60 + 59, "5h4m"),
        (47 * 3600, "47h"),
        (49 * 3600, "2d1h"),
        ((8 * 24 + 2) * 3600, "8d"),
        (367 * 24 * 3600, "367d"),
        ((365 * 2 * 24 + 25) * 3600, "2y1d"),
        ((365 * 8 * 24 + 2) * 3600, "8y"),
    ],
)
def test_durations_are_spelled_like_apimachinery(seconds: int, spelled: str) -> None:
    assert human_duration(seconds) == spelled


def test_label_selectors_are_spelled_like_metav1() -> None:
    assert format_selector(None) == "<none>"
    assert format_selector({}) == "<none>"
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "tier", "operator": "NotIn", "values": ["web"]},
            {"key": "x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist"},
        ],
    }
    assert format_selector(selector) == "a=1,b=2,env in (dev,prod),tier notin (web),x,!y"


def test_the_crd_columns_name_fields_of_their_schema() -> None:
    """Every printer column of crds/ points at a field its own schema declares."""
    for crd in crd_documents():
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            for column in version.get("additionalPrinterColumns", []):
                node = schema
                for part in re.sub(r"\[\?\(.*?\)\]", "", column["jsonPath"]).strip(".").split("."):
                    if part == "creationTimestamp" and node is schema["properties"]["metadata"]:
                        break
                    node = node.get("items", node)["properties"][part]
                assert node, column


def test_ages_of_timestamps_are_relative_to_now() -> None:
    from nexusd.devcluster.tables import since

    now = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)
    assert since("2026-01-01T00:00:00Z", now) == "10m"
    assert since(None, now) == "<unknown>"
