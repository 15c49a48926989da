"""The CRD files in crds/: they parse, and declare what contract §5 and the CRDs a real API
server accepted (k8s-golden 11) declare. Reads files only; no cluster involved."""

from __future__ import annotations

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
    import json

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
