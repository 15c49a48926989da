"""The CRD files in crds/: they parse, and declare what contract §5 and the CRDs a real API
server accepted (k8s-golden 11) declare, plus the fields of core HEAD (file and storage mounts,
limits/requests, defaultResourceQuota), the status nexusd's configuration controller writes and
the kubectl columns.

The first tests read the files only. The last ones install them in the embedded cluster
(`nexusd.devcluster`, which prunes and validates custom resources against the served
`openAPIV3Schema`, as a real API server does) and talk to it over HTTP: nothing is faked.
"""

from __future__ import annotations

import copy
import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"


def load(name: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((CRDS / name).read_text()))
    assert len(documents) == 1
    document = documents[0]
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize(
    ("file", "kind", "plural"),
    [
        ("nexusalgorithmtemplates.yaml", "NexusAlgorithmTemplate", "nexusalgorithmtemplates"),
        ("nexusalgorithmworkgroups.yaml", "NexusAlgorithmWorkgroup", "nexusalgorithmworkgroups"),
    ],
)
def test_crd_identity(file, kind, plural):
    crd = load(file)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.science.sneaksanddata.com"
    spec = crd["spec"]
    assert spec["group"] == "science.sneaksanddata.com"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": plural[:-1],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["type"] == "object"


def schema(file: str) -> dict[str, Any]:
    result: dict[str, Any] = load(file)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_template_required_fields():
    spec = schema("nexusalgorithmtemplates.yaml")["properties"]["spec"]
    assert sorted(spec["required"]) == ["command", "container"]
    props = spec["properties"]
    assert sorted(props["container"]["required"]) == ["image", "registry", "versionTag"]
    assert sorted(props["computeResources"]["required"]) == ["cpuLimit", "memoryLimit"]
    assert sorted(props["workgroupRef"]["required"]) == ["group", "kind", "name"]


def test_template_field_types():
    props = schema("nexusalgorithmtemplates.yaml")["properties"]["spec"]["properties"]
    assert props["command"]["type"] == "string"
    assert props["args"] == {
        "description": props["args"]["description"],
        "type": "array",
        "items": {"type": "string"},
    }
    runtime = props["runtimeEnvironment"]["properties"]
    for key in ("deadlineSeconds", "maximumRetries"):
        assert runtime[key]["type"] == "integer"
        assert runtime[key]["format"] == "int32"
    assert runtime["annotations"]["additionalProperties"] == {"type": "string"}
    for key in ("environmentVariables", "mappedEnvironmentVariables"):
        assert runtime[key]["type"] == "array"
    errors = props["errorHandlingBehaviour"]["properties"]
    for key in ("fatalExitCodes", "transientExitCodes"):
        assert errors[key]["items"] == {"type": "integer", "format": "int32"}
    assert props["datadogIntegrationSettings"]["properties"]["mountDatadogSocket"] == {
        "type": "boolean"
    }
    resources = props["computeResources"]["properties"]
    assert resources["customResources"]["additionalProperties"] == {"type": "string"}
    assert {"limits", "requests"} <= set(resources)


def test_template_status():
    status = schema("nexusalgorithmtemplates.yaml")["properties"]["status"]["properties"]
    condition = status["conditions"]["items"]
    assert sorted(condition["required"]) == sorted(
        ["type", "status", "lastTransitionTime", "reason", "message"]
    )
    for key in ("syncedSecrets", "syncedConfigurations", "syncedToClusters"):
        assert status[key] == {"type": "array", "items": {"type": "string"}}


def test_workgroup_fields():
    spec = schema("nexusalgorithmworkgroups.yaml")["properties"]["spec"]
    assert sorted(spec["required"]) == ["cluster", "description"]
    props = spec["properties"]
    assert props["cluster"]["type"] == "string"
    assert props["description"]["type"] == "string"
    assert props["capabilities"]["additionalProperties"] == {"type": "boolean"}
    assert props["tolerations"]["type"] == "array"
    assert props["affinity"]["type"] == "object"
    # Kubernetes types are kept whole (not pruned) when copied into the pod.
    assert props["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["tolerations"]["items"]["x-kubernetes-preserve-unknown-fields"] is True


GOLDEN = Path("/work/shared/reference/k8s-golden/11-discovery-and-crd.json")


@pytest.mark.skipif(not GOLDEN.exists(), reason="golden reference files not available")
@pytest.mark.parametrize("index", [0, 1])
def test_golden_crd_fields_are_a_subset(index):
    """Everything the CRDs created on a real API server declared, ours declares too."""
    golden = json.loads(GOLDEN.read_text())
    creates = [
        r["request"]["bodySummary"]
        for r in golden["requests"]
        if r["request"]["method"] == "POST"
        and r["request"]["path"].endswith("/customresourcedefinitions")
    ]
    reference = creates[index]
    plural = reference["spec"]["names"]["plural"]
    ours = load(f"{plural}.yaml")
    assert ours["spec"]["names"] == reference["spec"]["names"]
    assert_subset(
        reference["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
    )


def assert_subset(reference: Any, ours: Any, path: str = "spec") -> None:
    if isinstance(reference, dict):
        assert isinstance(ours, dict), path
        for key, value in reference.items():
            if key == "required":
                assert sorted(ours[key]) == sorted(value), path
            else:
                assert key in ours, f"{path}.{key}"
                assert_subset(value, ours[key], f"{path}.{key}")
    else:
        assert ours == reference, path


# --- the fields of core HEAD and of nexusd's configuration controller ------------------------

MOUNT_MAPS = ("secretFileMounts", "configurationFileMounts", "storageMounts")


def test_template_mount_fields():
    runtime = schema("nexusalgorithmtemplates.yaml")["properties"]["spec"]["properties"][
        "runtimeEnvironment"
    ]["properties"]
    for key in MOUNT_MAPS:
        assert runtime[key]["type"] == "object"
        mount = runtime[key]["additionalProperties"]
        assert mount["type"] == "object"
        assert mount["required"] == ["mountPath"]
        # the rest of corev1.VolumeMount is kept, as EnvVar's valueFrom is
        assert mount["x-kubernetes-preserve-unknown-fields"] is True
        props = mount["properties"]
        assert props["mountPath"]["type"] == "string"
        assert props["subPath"]["type"] == "string"
        assert props["readOnly"] == {"type": "boolean"}
    empty_dir = runtime["storageMounts"]["additionalProperties"]["properties"]["emptyDir"]
    assert empty_dir["type"] == "object"
    assert empty_dir["properties"]["sizeLimit"]["x-kubernetes-int-or-string"] is True
    assert "emptyDir" not in runtime["secretFileMounts"]["additionalProperties"]["properties"]


def test_template_resource_fields():
    resources = schema("nexusalgorithmtemplates.yaml")["properties"]["spec"]["properties"][
        "computeResources"
    ]["properties"]
    assert resources["defaultResourceQuota"]["type"] == "string"  # Go: string, parsed later
    for key in ("limits", "requests"):
        quantity = resources[key]["additionalProperties"]
        assert quantity["x-kubernetes-int-or-string"] is True
        assert quantity["anyOf"] == [{"type": "integer"}, {"type": "string"}]


#: One entry of `status.shards`, as nexusd.syncing.reporting writes it.
SHARD_FIELDS = {
    "name": {"type": "string"},
    "ready": {"type": "boolean"},
    "message": {"type": "string"},
    "lastSyncTime": {"type": "string", "format": "date-time"},
}


@pytest.mark.parametrize(
    ("file", "lists"),
    [
        (
            "nexusalgorithmtemplates.yaml",
            ("syncedSecrets", "syncedConfigurations", "syncedToClusters"),
        ),
        ("nexusalgorithmworkgroups.yaml", ("syncedToClusters",)),
    ],
)
def test_status_for_the_configuration_controller(file, lists):
    status = schema(file)["properties"]["status"]["properties"]
    condition = status["conditions"]["items"]["properties"]
    assert set(condition) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    for key in lists:
        assert status[key] == {"type": "array", "items": {"type": "string"}}
    shards = status["shards"]
    assert shards["type"] == "array"
    items = shards["items"]
    assert {k: v for k, v in items.items() if k != "properties"} == {
        "type": "object",
        "required": ["name"],
    }
    assert {
        k: {f: t for f, t in v.items() if f != "description"}
        for k, v in items["properties"].items()
    } == SHARD_FIELDS


READY = '.status.conditions[?(@.type=="Ready")].status'


@pytest.mark.parametrize(
    ("file", "columns"),
    [
        (
            "nexusalgorithmtemplates.yaml",
            [
                ("Image", "string", ".spec.container.image"),
                ("Version", "string", ".spec.container.versionTag"),
                ("Workgroup", "string", ".spec.workgroupRef.name"),
                ("Ready", "string", READY),
                ("Age", "date", ".metadata.creationTimestamp"),
                ("Registry", "string", ".spec.container.registry"),  # -o wide
                ("Command", "string", ".spec.command"),  # -o wide
            ],
        ),
        (
            "nexusalgorithmworkgroups.yaml",
            [
                ("Cluster", "string", ".spec.cluster"),
                ("Ready", "string", READY),
                ("Age", "date", ".metadata.creationTimestamp"),
                ("Description", "string", ".spec.description"),  # -o wide
            ],
        ),
    ],
)
def test_printer_columns(file, columns):
    (version,) = load(file)["spec"]["versions"]
    declared = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert declared == columns


def column_value(obj: dict[str, Any], json_path: str) -> Any:
    """The few JSONPath forms the columns use: `.a.b` and `.a[?(@.k=="v")].b`."""
    value: Any = obj
    for name, key, wanted in re.findall(r'\.(\w+)(?:\[\?\(@\.(\w+)=="([^"]*)"\)\])?', json_path):
        value = value.get(name) if isinstance(value, dict) else None
        if key:
            value = next((item for item in value or [] if item.get(key) == wanted), None)
    return value


def test_printer_columns_point_at_real_fields(template_spec):
    obj = {
        "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": template_spec,
        "status": {"conditions": [{"type": "Other", "status": "False"}, READY_CONDITION]},
    }
    (version,) = load("nexusalgorithmtemplates.yaml")["spec"]["versions"]
    values = [column_value(obj, c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert values[:5] == ["nexus-hello", "0.1.2", "default", "True", "2026-01-01T00:00:00Z"]
    assert values[5:] == [template_spec["container"]["registry"], template_spec["command"]]


# --- through the embedded cluster, which validates against openAPIV3Schema ------------------

READY_CONDITION = {
    "type": "Ready",
    "status": "True",
    "reason": "AlgorithmReady",
    "message": 'Algorithm "hello-world" is ready',
    "lastTransitionTime": "2026-01-01T00:00:00Z",
    "observedGeneration": 1,
}
NS = "nexus"
HELLO = Path(__file__).resolve().parents[2] / "src" / "nexusd" / "algorithms" / "hello.yaml"
API = "/apis/science.sneaksanddata.com/v1/namespaces/nexus"


@pytest.fixture
async def cluster_http(nursery: Any, tmp_path: Path) -> Any:
    """The embedded cluster with the CRDs of crds/ installed (tests.servers.clusters), and a
    raw HTTP client for it, so that the tests see the API server's own answers."""
    import httpx

    from tests.servers.clusters import start_cluster

    cluster, kube = await start_cluster(nursery, tmp_path / "cluster")
    await kube.aclose()
    headers = {"Authorization": "Bearer anything"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as client:
        yield client


def cr(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def post(http: Any, plural: str, body: dict[str, Any]) -> Any:
    return await http.post(f"{API}/{plural}", json=body, params={"fieldValidation": "Strict"})


def upstream_documents() -> list[dict[str, Any]]:
    """Manifests written for upstream: the contract's examples (§5.1, §5.2) and the bundled
    `hello` algorithm."""
    from tests.kube.conftest import DEFAULT_WORKGROUP_SPEC, HELLO_TEMPLATE_SPEC

    hello = string.Template(HELLO.read_text()).substitute(
        NAMESPACE=NS, RECEIVER_URL="http://receiver.test", SHARD="dev"
    )
    return [
        cr("NexusAlgorithmTemplate", "hello-world", HELLO_TEMPLATE_SPEC),
        cr("NexusAlgorithmWorkgroup", "default", DEFAULT_WORKGROUP_SPEC),
        *yaml.safe_load_all(hello),
    ]


async def test_upstream_manifests_are_accepted_unchanged(cluster_http):
    for document in upstream_documents():
        plural = document["kind"].lower() + "s"
        name = document["metadata"]["name"]
        await cluster_http.delete(f"{API}/{plural}/{name}")  # two of them are `default`
        response = await post(cluster_http, plural, document)
        assert response.status_code == 201, response.text
        assert "warning" not in response.headers  # every field declared: nothing pruned
        assert response.json()["spec"] == document["spec"]


@pytest.mark.skipif(not GOLDEN.exists(), reason="golden reference files not available")
async def test_golden_custom_resources_get_the_same_answers(cluster_http):
    """The CR bodies a real API server judged (with upstream's CRDs) get the same status code
    from the embedded cluster with ours."""
    cases = golden_custom_resource_posts()
    assert len(cases) == 7
    for plural, body, answer in cases:
        response = await cluster_http.post(f"{API}/{plural}", json=body)
        assert response.status_code == answer["code"], (body["metadata"], response.text)


def golden_custom_resource_posts() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(plural, body, response) of each custom resource POST of k8s-golden 11."""
    golden = json.loads(GOLDEN.read_text())
    return [
        (r["request"]["path"].rsplit("/", 1)[-1], r["request"]["bodySummary"], r["response"])
        for r in golden["requests"]
        if r["request"]["method"] == "POST" and "/namespaces/" in r["request"]["path"]
    ]


def full_template_spec(template_spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(template_spec)
    spec["computeResources"].update(
        {
            "defaultResourceQuota": "0.25",
            "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": 1},
            "requests": {"cpu": "500m"},
            "customResources": {"example.com/fpga": "1"},
        }
    )
    spec["container"]["serviceAccountName"] = "algorithms"
    spec["runtimeEnvironment"].update(
        {
            "mappedEnvironmentVariables": [{"secretRef": {"name": "env-secret"}}],
            "annotations": {"team": "science"},
            "secretFileMounts": {
                "db.credentials": {"mountPath": "/etc/db", "readOnly": True},
            },
            "configurationFileMounts": {
                "app-settings": {
                    "mountPath": "/etc/app/settings.json",
                    "subPath": "settings.json",
                    "mountPropagation": "None",
                },
            },
            "storageMounts": {
                "models": {"mountPath": "/models", "readOnly": True},
                "scratch": {
                    "mountPath": "/scratch",
                    "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"},
                },
            },
        }
    )
    return spec


async def test_the_new_fields_are_accepted_and_kept(cluster_http, template_spec):
    spec = full_template_spec(template_spec)
    response = await post(cluster_http, "nexusalgorithmtemplates", cr(TEMPLATE, "full", spec))
    assert response.status_code == 201, response.text
    assert "warning" not in response.headers
    stored = await cluster_http.get(f"{API}/nexusalgorithmtemplates/full")
    assert stored.json()["spec"] == spec


TEMPLATE = "NexusAlgorithmTemplate"
WORKGROUP = "NexusAlgorithmWorkgroup"


@pytest.mark.parametrize("key", MOUNT_MAPS)
async def test_a_mount_without_mount_path_is_refused(cluster_http, template_spec, key):
    spec = copy.deepcopy(template_spec)
    spec["runtimeEnvironment"][key] = {"source": {"readOnly": True}}
    response = await post(cluster_http, "nexusalgorithmtemplates", cr(TEMPLATE, "bad", spec))
    assert response.status_code == 422, response.text
    field = f"spec.runtimeEnvironment.{key}.source.mountPath"
    assert response.json()["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": field}
    ]


@pytest.mark.parametrize(
    ("mount", "field"),
    [
        ({"mountPath": 7}, "mountPath"),
        ({"mountPath": "/x", "readOnly": "yes"}, "readOnly"),
        ({"mountPath": "/x", "subPath": ["a"]}, "subPath"),
    ],
)
async def test_a_mount_of_the_wrong_type_is_refused(cluster_http, template_spec, mount, field):
    spec = copy.deepcopy(template_spec)
    spec["runtimeEnvironment"]["secretFileMounts"] = {"creds": mount}
    response = await post(cluster_http, "nexusalgorithmtemplates", cr(TEMPLATE, "bad", spec))
    assert response.status_code == 422, response.text
    (cause,) = response.json()["details"]["causes"]
    assert cause["field"] == f"spec.runtimeEnvironment.secretFileMounts.creds.{field}"
    assert cause["reason"] == "FieldValueTypeInvalid"


def controller_status(*, lists: tuple[str, ...]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [READY_CONDITION]}
    for key in lists:
        status[key] = ["shard-0"] if key == "syncedToClusters" else ["some-object"]
    status["shards"] = [
        {
            "name": "shard-0",
            "ready": True,
            "message": "synced",
            "lastSyncTime": "2026-01-01T00:00:00Z",
        },
        {"name": "shard-1", "ready": False, "message": "connection refused"},
    ]
    return status


@pytest.mark.parametrize(
    ("kind", "plural", "lists"),
    [
        (
            TEMPLATE,
            "nexusalgorithmtemplates",
            ("syncedSecrets", "syncedConfigurations", "syncedToClusters"),
        ),
        (WORKGROUP, "nexusalgorithmworkgroups", ("syncedToClusters",)),
    ],
)
async def test_the_controller_status_is_accepted_and_checked(
    cluster_http, template_spec, workgroup_spec, kind, plural, lists
):
    spec = template_spec if kind == TEMPLATE else workgroup_spec
    created = await post(cluster_http, plural, cr(kind, "synced", spec))
    assert created.status_code == 201, created.text
    body = created.json()
    body["status"] = controller_status(lists=lists)
    url = f"{API}/{plural}/synced/status"
    response = await cluster_http.put(url, json=body, params={"fieldValidation": "Strict"})
    assert response.status_code == 200, response.text
    assert "warning" not in response.headers
    assert response.json()["status"] == body["status"]
    for entry, field in (
        ({"ready": True}, "status.shards[0].name"),
        ({"name": "shard-0", "ready": "yes"}, "status.shards[0].ready"),
    ):
        bad = copy.deepcopy(response.json())
        bad["status"]["shards"] = [entry]
        refused = await cluster_http.put(url, json=bad)
        assert refused.status_code == 422, refused.text
        assert [c["field"] for c in refused.json()["details"]["causes"]] == [field]
