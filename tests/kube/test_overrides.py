"""Override merging (contract §5.3 plus the newer SDK shape of §0.1) and the validation that
lets intake answer 400 where upstream crashes. Pure functions: nothing is faked."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nexusd.kube.overrides import (
    merge_overrides,
    validate_overrides,
    validate_template_spec,
    validate_workgroup_spec,
)


def test_no_overrides_is_a_copy(template_spec):
    for overrides in (None, {}):
        merged = merge_overrides(template_spec, overrides)
        assert merged == template_spec
        merged["container"]["image"] = "changed"
        assert template_spec["container"]["image"] == "nexus-hello"


@pytest.mark.parametrize(
    ("overrides", "path", "expected"),
    [
        ({"container": {"image": "other"}}, ("container", "image"), "other"),
        ({"container": {"registry": "r.io"}}, ("container", "registry"), "r.io"),
        ({"container": {"versionTag": "9.9"}}, ("container", "versionTag"), "9.9"),
        ({"container": {"versionTag": ""}}, ("container", "versionTag"), "0.1.2"),
        ({"computeResources": {"cpuLimit": "2"}}, ("computeResources", "cpuLimit"), "2"),
        ({"computeResources": {"memoryLimit": "2Gi"}}, ("computeResources", "memoryLimit"), "2Gi"),
        ({"computeResources": {"cpuLimit": ""}}, ("computeResources", "cpuLimit"), "1000m"),
        ({"workgroupRef": {"name": "gpu"}}, ("workgroupRef", "name"), "gpu"),
        ({"workgroupRef": {"group": "g"}}, ("workgroupRef", "group"), "g"),
        ({"workgroupRef": {"kind": "K"}}, ("workgroupRef", "kind"), "K"),
        (
            {"runtimeEnvironment": {"deadlineSeconds": 60}},
            ("runtimeEnvironment", "deadlineSeconds"),
            60,
        ),
        (
            {"runtimeEnvironment": {"maximumRetries": 0}},  # pointer coalesce: 0 is set
            ("runtimeEnvironment", "maximumRetries"),
            0,
        ),
        (
            {"runtimeEnvironment": {"maximumRetries": None}},
            ("runtimeEnvironment", "maximumRetries"),
            1,
        ),
    ],
)
def test_override_wins_when_non_empty(template_spec, overrides, path, expected):
    merged = merge_overrides(template_spec, overrides)
    section, key = path
    assert merged[section][key] == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"command": "rm -rf /"},
        {"args": ["x"]},
        {"container": {"serviceAccountName": "root"}},
        {"computeResources": {"customResources": {"nvidia.com/gpu": "8"}}},
        {"runtimeEnvironment": {"environmentVariables": [{"name": "X", "value": "1"}]}},
        {"runtimeEnvironment": {"mappedEnvironmentVariables": [{"secretRef": {"name": "s"}}]}},
        {"runtimeEnvironment": {"annotations": {"a": "b"}}},
        {"errorHandlingBehaviour": {"fatalExitCodes": [1]}},
        {"datadogIntegrationSettings": {"mountDatadogSocket": True}},
        {"unknownSection": {"x": 1}},
    ],
)
def test_everything_else_is_ignored(template_spec, overrides):
    assert merge_overrides(template_spec, overrides) == template_spec


def test_newer_sdk_shape_limits_and_requests(template_spec):
    """What nexus-client-sdk 1.8.5 really sends (§0.1)."""
    overrides: dict[str, Any] = {
        "computeResources": {
            "limits": {"cpu": "2", "memory": "4Gi"},
            "requests": {"cpu": "500m", "memory": "2Gi"},
        },
        "runtimeEnvironment": {"deadlineSeconds": 30, "maximumRetries": 3},
        "container": {"versionTag": "1.0.0"},
        "workgroupRef": {
            "group": "science.sneaksanddata.com",
            "kind": "NexusAlgorithmWorkgroup",
            "name": "default",
        },
    }
    merged = merge_overrides(template_spec, overrides)
    assert merged["computeResources"] == {
        "cpuLimit": "1000m",
        "memoryLimit": "1000Mi",
        "limits": {"cpu": "2", "memory": "4Gi"},
        "requests": {"cpu": "500m", "memory": "2Gi"},
    }
    assert merged["runtimeEnvironment"]["deadlineSeconds"] == 30
    assert merged["runtimeEnvironment"]["maximumRetries"] == 3
    assert merged["container"]["versionTag"] == "1.0.0"
    assert validate_template_spec(merged) == []


def test_run_limits_override_template_limits_key_by_key(template_spec):
    template_spec["computeResources"]["limits"] = {"cpu": "1", "nvidia.com/gpu": "1"}
    merged = merge_overrides(template_spec, {"computeResources": {"limits": {"cpu": "3"}}})
    assert merged["computeResources"]["limits"] == {"cpu": "3", "nvidia.com/gpu": "1"}


def test_merge_creates_missing_sections():
    spec: dict[str, Any] = {
        "command": "python",
        "container": {"image": "i", "registry": "r", "versionTag": "v"},
    }
    merged = merge_overrides(
        spec, {"runtimeEnvironment": {"deadlineSeconds": 5}, "computeResources": {"cpuLimit": "1"}}
    )
    assert merged["runtimeEnvironment"] == {"deadlineSeconds": 5}
    assert merged["computeResources"] == {"cpuLimit": "1"}


def test_merge_does_not_modify_inputs(template_spec):
    overrides = {"computeResources": {"limits": {"cpu": "2"}}, "container": {"image": "x"}}
    before = copy.deepcopy((template_spec, overrides))
    merge_overrides(template_spec, overrides)
    assert (template_spec, overrides) == before


@pytest.mark.parametrize(
    "overrides",
    [
        None,
        {},
        {"computeResources": {"cpuLimit": "2", "memoryLimit": "1Gi"}},
        {"computeResources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": 1}}},
        {"runtimeEnvironment": {"deadlineSeconds": 0, "maximumRetries": 3}},
        {"container": {"versionTag": "1.2.3"}, "workgroupRef": {"name": "x"}},
        {"somethingUnknown": True},
    ],
)
def test_valid_overrides(overrides):
    assert validate_overrides(overrides) == []


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ([], "customConfiguration: must be a JSON object"),
        ({"container": "x"}, "customConfiguration.container: must be an object"),
        ({"container": {"image": 3}}, "customConfiguration.container.image: must be a string"),
        (
            {"computeResources": {"cpuLimit": "2 cores"}},
            "customConfiguration.computeResources.cpuLimit: '2 cores' is not a Kubernetes quantity",
        ),
        (
            {"computeResources": {"memoryLimit": "-1Gi"}},
            "customConfiguration.computeResources.memoryLimit: '-1Gi' is not a Kubernetes quantity",
        ),
        (
            {"computeResources": {"limits": {"cpu": "lots"}}},
            "customConfiguration.computeResources.limits.cpu: 'lots' is not a Kubernetes quantity",
        ),
        (
            {"computeResources": {"requests": ["cpu"]}},
            "customConfiguration.computeResources.requests: "
            "must be an object of resource name to quantity",
        ),
        (
            {"runtimeEnvironment": {"deadlineSeconds": "60"}},
            "customConfiguration.runtimeEnvironment.deadlineSeconds: "
            "'60' must be a non-negative integer",
        ),
        (
            {"runtimeEnvironment": {"maximumRetries": -1}},
            "customConfiguration.runtimeEnvironment.maximumRetries: "
            "-1 must be a non-negative integer",
        ),
        (
            {"runtimeEnvironment": {"maximumRetries": True}},
            "customConfiguration.runtimeEnvironment.maximumRetries: "
            "True must be a non-negative integer",
        ),
        (
            {"runtimeEnvironment": {"deadlineSeconds": 2**31}},
            "customConfiguration.runtimeEnvironment.deadlineSeconds: "
            "2147483648 must be a non-negative integer",
        ),
        (
            {"workgroupRef": {"name": ["a"]}},
            "customConfiguration.workgroupRef.name: must be a string",
        ),
    ],
)
def test_invalid_overrides(overrides, problem):
    assert validate_overrides(overrides) == [problem]


def test_contract_template_is_valid(template_spec):
    assert validate_template_spec(template_spec) == []


def test_minimal_template_is_valid():
    spec = {
        "command": "python",
        "container": {"image": "i", "registry": "r", "versionTag": "v"},
        "computeResources": {"cpuLimit": "1", "memoryLimit": "1Gi"},
        "workgroupRef": {"name": "default", "group": "g", "kind": "k"},
    }
    assert validate_template_spec(spec) == []


def _without(spec: dict[str, Any], *path: str) -> dict[str, Any]:
    target = spec
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return spec


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (("command",), "spec.command is required"),
        (("container",), "spec.container is required"),
        (("container", "image"), "spec.container.image is required"),
        (("container", "registry"), "spec.container.registry is required"),
        (("container", "versionTag"), "spec.container.versionTag is required"),
        (("computeResources",), "spec.computeResources is required"),
        (("computeResources", "cpuLimit"), "spec.computeResources.cpuLimit is required"),
        (("computeResources", "memoryLimit"), "spec.computeResources.memoryLimit is required"),
        (("workgroupRef",), "spec.workgroupRef is required"),
        (("workgroupRef", "name"), "spec.workgroupRef.name is required"),
    ],
)
def test_template_missing_fields(template_spec, path, problem):
    assert validate_template_spec(_without(template_spec, *path)) == [problem]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"command": ["python"]}, "spec.command: must be a string"),
        ({"args": "main.py"}, "spec.args: must be a list of strings"),
        (
            {"args": ["--sas-uri"]},
            "spec.args[0]: '--sas-uri' must contain exactly one %s placeholder",
        ),
        (
            {"args": ["--request-id=%s-%s"]},
            "spec.args[0]: '--request-id=%s-%s' must contain exactly one %s placeholder",
        ),
        (
            {"computeResources": {"cpuLimit": "2 cores", "memoryLimit": "1Gi"}},
            "spec.computeResources.cpuLimit: '2 cores' is not a Kubernetes quantity",
        ),
        (
            {
                "computeResources": {
                    "cpuLimit": "1",
                    "memoryLimit": "1Gi",
                    "customResources": {"nvidia.com/gpu": "one"},
                }
            },
            "spec.computeResources.customResources.nvidia.com/gpu: "
            "'one' is not a Kubernetes quantity",
        ),
        (
            {"errorHandlingBehaviour": {"fatalExitCodes": ["137"]}},
            "spec.errorHandlingBehaviour.fatalExitCodes: must be a list of integers",
        ),
        (
            {"datadogIntegrationSettings": {"mountDatadogSocket": "yes"}},
            "spec.datadogIntegrationSettings.mountDatadogSocket: must be a boolean",
        ),
        (
            {"runtimeEnvironment": {"deadlineSeconds": "120"}},
            "spec.runtimeEnvironment.deadlineSeconds: '120' must be a non-negative integer",
        ),
        (
            {"runtimeEnvironment": {"environmentVariables": [{"value": "x"}]}},
            "spec.runtimeEnvironment.environmentVariables[0].name is required",
        ),
        (
            {"runtimeEnvironment": {"annotations": {"a": 1}}},
            "spec.runtimeEnvironment.annotations: must be a map of strings",
        ),
    ],
)
def test_template_wrong_values(template_spec, change, problem):
    template_spec.update(change)
    assert validate_template_spec(template_spec) == [problem]


def test_template_limits_shape_replaces_scalar_limits(template_spec):
    template_spec["computeResources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert validate_template_spec(template_spec) == []


def test_template_reports_every_problem():
    problems = validate_template_spec({"args": []})
    assert problems == [
        "spec.command is required",
        "spec.container is required",
        "spec.computeResources is required",
        "spec.workgroupRef is required",
    ]


def test_template_spec_must_be_an_object():
    assert validate_template_spec(None) == ["spec: must be an object"]


@pytest.mark.parametrize(
    ("spec", "problems"),
    [
        ({"cluster": "shard-0", "description": "d"}, []),
        ({"cluster": "shard-0"}, []),  # description is informational to nexusd
        ({"description": "d"}, ["spec.cluster is required"]),
        ({"cluster": "c", "tolerations": {}}, ["spec.tolerations: must be a list of objects"]),
        ({"cluster": "c", "affinity": []}, ["spec.affinity: must be an object"]),
    ],
)
def test_workgroup_validation(spec, problems):
    assert validate_workgroup_spec(spec) == problems
