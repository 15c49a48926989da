"""Override merging (contract §5.3 plus the newer SDK shape of §0.1) and the validation that
lets intake answer 400 where upstream crashes. Pure functions: nothing is faked."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nexusd.core.quantities import shown
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
        {"runtimeEnvironment": {"deadlineSeconds": 1, "maximumRetries": 0}},
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
            "customConfiguration.computeResources.cpuLimit: "
            "'2 cores' is not a Kubernetes quantity (like 500m, 2 or 1.5Gi)",
        ),
        (
            {"computeResources": {"memoryLimit": "-1Gi"}},
            "customConfiguration.computeResources.memoryLimit: "
            "'-1Gi' is not a usable memory quantity (negative)",
        ),
        (
            {"computeResources": {"limits": {"cpu": "lots"}}},
            "customConfiguration.computeResources.limits.cpu: "
            "'lots' is not a Kubernetes quantity (like 500m, 2 or 1.5Gi)",
        ),
        (
            {"computeResources": {"requests": ["cpu"]}},
            "customConfiguration.computeResources.requests: "
            "must be an object of resource name to quantity",
        ),
        (
            {"runtimeEnvironment": {"deadlineSeconds": "60"}},
            "customConfiguration.runtimeEnvironment.deadlineSeconds: "
            "'60' must be a positive integer (at most 2147483647)",
        ),
        (
            {"runtimeEnvironment": {"maximumRetries": -1}},
            "customConfiguration.runtimeEnvironment.maximumRetries: "
            "-1 must be an integer from 0 to 2147483647",
        ),
        (
            {"runtimeEnvironment": {"maximumRetries": True}},
            "customConfiguration.runtimeEnvironment.maximumRetries: "
            "True must be an integer from 0 to 2147483647",
        ),
        (
            {"runtimeEnvironment": {"deadlineSeconds": 2**31}},
            "customConfiguration.runtimeEnvironment.deadlineSeconds: "
            "2147483648 must be a positive integer (at most 2147483647)",
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
            "spec.computeResources.cpuLimit: "
            "'2 cores' is not a Kubernetes quantity (like 500m, 2 or 1.5Gi)",
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
            "'one' is not a Kubernetes quantity (like 500m, 2 or 1.5Gi)",
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
            "spec.runtimeEnvironment.deadlineSeconds: "
            "'120' must be a positive integer (at most 2147483647)",
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


# --- environment variables (a nexusd addition: upstream drops them) ---------------------------


def env_override(*items: dict[str, Any]) -> dict[str, Any]:
    return {"runtimeEnvironment": {"environmentVariables": list(items)}}


def test_env_override_replaces_in_place_then_appends(template_spec):
    template_spec["runtimeEnvironment"]["environmentVariables"] = [
        {"name": "A", "value": "a"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "C", "value": "c"},
    ]
    overrides = env_override(
        {"name": "NEW", "value": "1"},
        {"name": "TOKEN", "value": "literal"},
        {"name": "EMPTY"},
    )
    assert validate_overrides(overrides) == []
    merged = merge_overrides(template_spec, overrides)
    assert merged["runtimeEnvironment"]["environmentVariables"] == [
        {"name": "A", "value": "a"},
        {"name": "TOKEN", "value": "literal"},
        {"name": "C", "value": "c"},
        {"name": "NEW", "value": "1"},
        {"name": "EMPTY", "value": ""},
    ]
    assert validate_template_spec(merged) == []


def test_env_override_replaces_every_template_duplicate(template_spec):
    """Kubernetes lets the last duplicate win: each must carry the run's value."""
    template_spec["runtimeEnvironment"]["environmentVariables"] = [
        {"name": "X", "value": "1"},
        {"name": "X", "value": "2"},
    ]
    merged = merge_overrides(template_spec, env_override({"name": "X", "value": "run"}))
    assert merged["runtimeEnvironment"]["environmentVariables"] == [
        {"name": "X", "value": "run"},
        {"name": "X", "value": "run"},
    ]


def test_env_override_into_a_template_without_env():
    spec: dict[str, Any] = {"command": "c"}
    merged = merge_overrides(spec, env_override({"name": "X", "value": "1"}))
    assert merged["runtimeEnvironment"] == {"environmentVariables": [{"name": "X", "value": "1"}]}
    assert spec == {"command": "c"}


def test_env_override_leaves_template_env_unmodified(template_spec):
    before = copy.deepcopy(template_spec)
    merged = merge_overrides(
        template_spec, env_override({"name": "NEXUS__CLIENT__RECEIVER", "value": "x"})
    )
    assert merged["runtimeEnvironment"]["environmentVariables"] == [
        {"name": "NEXUS__CLIENT__RECEIVER", "value": "x"}
    ]
    assert template_spec == before


ENV = "customConfiguration.runtimeEnvironment.environmentVariables"


@pytest.mark.parametrize(
    ("overrides", "problems"),
    [
        (
            {"runtimeEnvironment": {"environmentVariables": {"X": "1"}}},
            [f'{ENV}: must be a list of {{"name": ..., "value": ...}} objects'],
        ),
        (env_override("X=1"), [f'{ENV}[0]: must be an object {{"name": ..., "value": ...}}']),
        (env_override({"value": "1"}), [f"{ENV}[0].name is required"]),
        (env_override({"name": "", "value": "1"}), [f"{ENV}[0].name is required"]),
        (env_override({"name": 7, "value": "1"}), [f"{ENV}[0].name: must be a string"]),
        (
            env_override({"name": "A=B", "value": "1"}),
            [
                f"{ENV}[0].name: 'A=B' is not an environment variable name (letters, digits, "
                "'_', '-' and '.', not starting with a digit or '..')"
            ],
        ),
        (env_override({"name": "X", "value": 1}), [f"{ENV}[0].value: must be a string"]),
        (
            env_override({"name": "X", "value": "a\x00b"}),
            [f"{ENV}[0].value: must not contain NUL characters"],
        ),
        (
            env_override({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            [
                f"{ENV}[0].valueFrom: a run cannot read the namespace's Secrets or ConfigMaps; "
                "give a literal value (the algorithm's template may use valueFrom)"
            ],
        ),
        (
            env_override({"name": "X", "value": "1"}, {"name": "X", "value": "2"}),
            [f"{ENV}[1].name: 'X' is already given at [0]"],
        ),
    ],
)
def test_invalid_env_overrides(overrides, problems):
    assert validate_overrides(overrides) == problems


@pytest.mark.parametrize(
    "name",
    [
        "NEXUS__ALGORITHM_NAME",
        "NEXUS__SHARD_NAME",
        "NEXUS__PARENT_REQUEST_ID",
        "NEXUS__PARENT_ALGORITHM_NAME",
        "NEXUS__RESULT_UPLOAD_URL",
    ],
)
def test_env_override_cannot_set_what_nexusd_sets(name):
    assert validate_overrides(env_override({"name": name, "value": "spoofed"})) == [
        f"{ENV}[0].name: {name} is set by nexusd on every Job and cannot be overridden"
    ]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("MY_VAR", True),
        ("my.env-name", True),
        ("_x1", True),
        (".hidden", True),
        ("NEXUS__CLIENT__RECEIVER", True),  # nexusd does not set it: the run may
        ("1ABC", False),
        (".", False),
        ("..", False),
        ("..x", False),
        ("MY VAR", False),  # valid only on Kubernetes >= 1.32: a run cannot know its cluster's
        ("ÄPFEL", False),
        ("X\n", False),
    ],
)
def test_env_override_names_follow_the_strict_kubernetes_rule(name, valid):
    assert (validate_overrides(env_override({"name": name, "value": "v"})) == []) is valid


@pytest.mark.parametrize(("name", "valid"), [("MY VAR", True), ("1ABC", True), ("A=B", False)])
def test_template_env_names_follow_the_relaxed_rule(template_spec, name, valid):
    template_spec["runtimeEnvironment"]["environmentVariables"] = [{"name": name, "value": "v"}]
    assert (validate_template_spec(template_spec) == []) is valid


def test_template_env_value_must_be_a_string(template_spec):
    template_spec["runtimeEnvironment"]["environmentVariables"] = [{"name": "X", "value": 1}]
    assert validate_template_spec(template_spec) == [
        "spec.runtimeEnvironment.environmentVariables[0].value: must be a string"
    ]


# --- deadlineSeconds and maximumRetries: what activeDeadlineSeconds / backoffLimit accept ----


RUNTIME = "customConfiguration.runtimeEnvironment"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("deadlineSeconds", 0, "0 must be a positive integer (at most 2147483647)"),
        ("deadlineSeconds", -5, "-5 must be a positive integer (at most 2147483647)"),
        (
            "deadlineSeconds",
            60.0,
            "60.0 must be a positive integer (at most 2147483647), written without a fraction: 60",
        ),
        ("deadlineSeconds", 1.5, "1.5 must be a positive integer (at most 2147483647)"),
        ("deadlineSeconds", False, "False must be a positive integer (at most 2147483647)"),
        ("deadlineSeconds", [60], "a list must be a positive integer (at most 2147483647)"),
        (
            "maximumRetries",
            10**30,
            "a very large integer must be an integer from 0 to 2147483647",
        ),
        ("maximumRetries", float("inf"), "inf must be an integer from 0 to 2147483647"),
        ("maximumRetries", {"n": 1}, "an object must be an integer from 0 to 2147483647"),
    ],
)
def test_invalid_runtime_integers(key, value, problem):
    assert validate_overrides({"runtimeEnvironment": {key: value}}) == [
        f"{RUNTIME}.{key}: {problem}"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("deadlineSeconds", 1),
        ("deadlineSeconds", 2**31 - 1),
        ("maximumRetries", 0),
        ("maximumRetries", 2**31 - 1),
    ],
)
def test_runtime_integer_bounds(template_spec, key, value):
    assert validate_overrides({"runtimeEnvironment": {key: value}}) == []
    template_spec["runtimeEnvironment"][key] = value
    assert validate_template_spec(template_spec) == []


def test_template_zero_deadline_is_a_problem(template_spec):
    template_spec["runtimeEnvironment"]["deadlineSeconds"] = 0
    assert validate_template_spec(template_spec) == [
        "spec.runtimeEnvironment.deadlineSeconds: 0 must be a positive integer (at most 2147483647)"
    ]


# --- other fields the API server or the kubelet would refuse ---------------------------------


@pytest.mark.parametrize(
    ("codes", "problems"),
    [
        ([139, 137, 137], []),  # unordered and repeated: build_job sorts and de-duplicates
        ([-1, 255], []),
        (
            [0],
            ["spec.errorHandlingBehaviour.fatalExitCodes[0]: 0 must be a non-zero 32-bit integer"],
        ),
        (
            [1, 2**31],
            [
                "spec.errorHandlingBehaviour.fatalExitCodes[1]: "
                "2147483648 must be a non-zero 32-bit integer"
            ],
        ),
        (
            list(range(1, 257)),
            ["spec.errorHandlingBehaviour.fatalExitCodes: at most 255 different exit codes"],
        ),
        ([True], ["spec.errorHandlingBehaviour.fatalExitCodes: must be a list of integers"]),
    ],
)
def test_exit_codes(template_spec, codes, problems):
    template_spec["errorHandlingBehaviour"] = {"fatalExitCodes": codes}
    assert validate_template_spec(template_spec) == problems


RULES = {
    "registry": "must be a registry host (with an optional :port and /path, lowercase path)",
    "image": "must be lowercase letters, digits and '.', '_', '-' separators, '/'-separated",
    "versionTag": (
        "must be up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    ),
}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image", "1.0 beta"),
        ("image", "MyModel"),
        ("image", "ÜBER"),
        ("image", ":"),
        ("registry", "a/b:c@"),
        ("registry", " x"),
        ("versionTag", "v1!"),
        ("versionTag", "-1"),
        ("versionTag", "x" * 129),
    ],
)
def test_image_parts_follow_the_reference_grammar(template_spec, key, value):
    """The kubelet would end such a container InvalidImageName: intake refuses it first."""
    assert validate_overrides({"container": {key: value}}) == [
        f"customConfiguration.container.{key}: {shown(value)} {RULES[key]}"
    ]
    template_spec["container"][key] = value
    assert validate_template_spec(template_spec) == [
        f"spec.container.{key}: {shown(value)} {RULES[key]}"
    ]


def test_a_reference_too_long_as_a_whole_is_a_problem(template_spec):
    template_spec["container"]["image"] = "a" * 300
    assert validate_template_spec(template_spec) == [
        f"spec.container: {shown('ghcr.io/sneaksanddata/' + 'a' * 300 + ':0.1.2')} is no image: "
        "repository name must not be more than 255 characters"
    ]


# --- input no JSON client should send, but any may: deep, huge, odd ---------------------------


def nested(depth: int) -> list[Any]:
    root: list[Any] = []
    inner = root
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return root


def test_deep_overrides_are_a_problem_not_a_recursion_error():
    for overrides in (
        {"unknownField": nested(5000)},
        {"runtimeEnvironment": {"deadlineSeconds": nested(5000)}},
        {"computeResources": {"limits": {"cpu": nested(5000)}}},
    ):
        assert validate_overrides(overrides) == [
            "customConfiguration: nested more than 32 levels deep"
        ]


def test_nesting_up_to_the_limit_is_fine():
    assert validate_overrides({"unknownField": nested(31)}) == []
    assert validate_overrides({"unknownField": nested(32)}) == [
        "customConfiguration: nested more than 32 levels deep"
    ]


def test_deep_template_is_a_problem(template_spec):
    template_spec["unknownField"] = nested(5000)
    assert validate_template_spec(template_spec) == ["spec: nested more than 32 levels deep"]
    assert validate_workgroup_spec({"cluster": "c", "affinity": {"x": nested(5000)}}) == [
        "spec: nested more than 32 levels deep"
    ]


def test_merge_copies_deep_templates_without_recursion(template_spec):
    template_spec["unknownField"] = {"deep": nested(5000)}
    merged = merge_overrides(template_spec, {"container": {"image": "other"}})
    copied, original = merged["unknownField"]["deep"], template_spec["unknownField"]["deep"]
    for _ in range(4999):
        assert copied is not original
        copied, original = copied[0], original[0]
    assert copied == original == []
    assert merged["container"]["image"] == "other"


def test_merge_survives_ill_typed_input(template_spec):
    """merge_overrides is called after validation, but does not rely on it to not raise."""
    template_spec["computeResources"]["limits"] = ["not", "a", "map"]
    template_spec["runtimeEnvironment"]["environmentVariables"] = [["x"], {"name": ["y"]}]
    merged = merge_overrides(
        template_spec,
        {
            "computeResources": {"limits": {"cpu": "2"}, "requests": "x"},
            "runtimeEnvironment": {"environmentVariables": [{"name": "Z", "value": 1}, "w"]},
            "container": [],
        },
    )
    assert merged["computeResources"]["limits"] == {"cpu": "2"}
    assert merged["runtimeEnvironment"]["environmentVariables"] == [["x"], {"name": ["y"]}]


def test_huge_values_are_shortened_in_problems():
    problems = validate_overrides({"container": {"image": "x" * 1_000_000 + " y"}})
    assert problems == [f"customConfiguration.container.image: {'x' * 77!r}... {RULES['image']}"]
    problems = validate_overrides({"computeResources": {"limits": {"a" * 10_000: "1"}}})
    assert len(problems) == 1
    assert len(problems[0]) < 400


@pytest.mark.parametrize(
    "spec_change",
    [
        {"command": ""},
        {"container": {"image": "", "registry": "", "versionTag": ""}},
        {"workgroupRef": {"name": "", "group": "", "kind": ""}},
        {"args": [None]},
        {"computeResources": []},
        {"runtimeEnvironment": {"environmentVariables": "X=1"}},
        {"errorHandlingBehaviour": {"fatalExitCodes": "137"}},
    ],
)
def test_empty_or_ill_typed_template_fields_are_problems(template_spec, spec_change):
    template_spec.update(spec_change)
    assert validate_template_spec(template_spec) != []
