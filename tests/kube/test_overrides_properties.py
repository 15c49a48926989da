"""Properties of validation, merging and Job building for any JSON-like input: validating never
raises, and whatever validation accepts builds a Job whose quantities, deadline, retries, env
and exit codes Kubernetes accepts. Pure functions, nothing faked; hypothesis makes the input
(real field names mixed with random ones, real quantities mixed with odd ones)."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity

from nexusd.kube.manifests import build_job
from nexusd.kube.overrides import merge_overrides, validate_overrides, validate_template_spec
from tests.kube.conftest import DEFAULT_WORKGROUP_SPEC, HELLO_TEMPLATE_SPEC

FIELD_NAMES = [
    "container",
    "image",
    "registry",
    "versionTag",
    "computeResources",
    "cpuLimit",
    "memoryLimit",
    "limits",
    "requests",
    "customResources",
    "cpu",
    "memory",
    "workgroupRef",
    "name",
    "runtimeEnvironment",
    "deadlineSeconds",
    "maximumRetries",
    "environmentVariables",
    "value",
    "valueFrom",
    "command",
    "args",
]
ODD_STRINGS = [
    "",
    " ",
    "0",
    "-0",
    "1",
    "500m",
    "1Gi",
    "8Ei",
    "1e400",
    "-1e400",
    "1e-50",
    "1e99999999999",
    "9223372036854775807",
    "9223372036854775807m",
    "NaN",
    "Infinity",
    "\u0661",
    "0.5",
    "X",
    "A=B",
    "MY VAR",
    "..",
    "NEXUS__SHARD_NAME",
    "NEXUS__RESULT_UPLOAD_URL",
    "nvidia.com/gpu",
    "gpu",
    "--sas-uri=%s",
    "a\x00b",
    "x" * 300,
]
#: Around the bounds: zero, the largest CPU (in millicores) and memory, just beyond them.
QUANTITY_EDGES = [
    "1",
    "250m",
    "4Gi",
    "0",
    "-0",
    "0.5",
    "1e3",
    "1e-50",
    "9223372036854775807m",
    "9223372036854775808m",
    "9223372036854775",
    "9223372036854776",
    "7Ei",
    "8Ei",
    "1e400",
]
VALID_ENV_NAMES = ["X", "MODE", "Y.z", "lower-case", "NEXUS__CLIENT__RECEIVER"]
ODD_ENV_NAMES = [
    "1X",
    "A=B",
    "NEXUS__ALGORITHM_NAME",
    "NEXUS__SHARD_NAME",
    "NEXUS__RESULT_UPLOAD_URL",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=3)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from(ODD_STRINGS)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=20,
)


def anything_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `strategy`, sometimes any JSON value instead (one_of draws its branches about
    evenly, so a repeated branch weighs more)."""
    return st.one_of(strategy, strategy, strategy, json_values)


def some_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An object with any subset of `fields`, or sometimes something else entirely."""
    return anything_or(st.fixed_dictionaries({}, optional=fields))


quantities = anything_or(
    st.sampled_from(QUANTITY_EDGES)
    | st.sampled_from(QUANTITY_EDGES)
    | st.integers(min_value=-2, max_value=10**20)
    | st.from_regex(
        r"[+-]?[0-9]{0,3}(\.[0-9]{0,3})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,3})?",
        fullmatch=True,
    )
)
resource_maps = anything_or(
    st.dictionaries(
        st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "gpu"])
        | st.text(max_size=8),
        quantities,
        max_size=4,
    )
)
strings = anything_or(st.text(max_size=12))
counts = anything_or(st.integers(min_value=-2, max_value=2**31 + 1)) | st.booleans()
valid_env_names = st.sampled_from(VALID_ENV_NAMES)
env_names = st.one_of(
    valid_env_names, valid_env_names, valid_env_names, st.sampled_from(ODD_ENV_NAMES)
)
literal_env = st.fixed_dictionaries({"name": env_names}, optional={"value": st.text(max_size=8)})
env_items = st.one_of(
    [literal_env] * 6
    + [
        st.fixed_dictionaries({"name": env_names, "valueFrom": json_values}),
        st.fixed_dictionaries({"name": json_values, "value": json_values}),
        json_values,
    ]
)
env_lists = anything_or(st.lists(env_items, min_size=1, max_size=3))
resources_section = some_of(
    {
        "cpuLimit": quantities,
        "memoryLimit": quantities,
        "limits": resource_maps,
        "requests": resource_maps,
    }
)
runtime_section = some_of(
    {"deadlineSeconds": counts, "maximumRetries": counts, "environmentVariables": env_lists}
)
overrides = st.one_of(
    some_of(
        {
            "container": some_of({key: strings for key in ("image", "registry", "versionTag")}),
            "computeResources": resources_section,
            "workgroupRef": some_of({key: strings for key in ("name", "group", "kind")}),
            "runtimeEnvironment": runtime_section,
            "unknownField": json_values,
        }
    ),
    st.fixed_dictionaries({"computeResources": resources_section}),
    st.fixed_dictionaries({"runtimeEnvironment": runtime_section}),
)
#: Where a mutation of the contract's template may land (the new optional fields included).
TEMPLATE_PATHS: list[tuple[str, ...]] = [
    (),
    ("command",),
    ("args",),
    ("args", "1"),
    ("container",),
    ("container", "image"),
    ("container", "serviceAccountName"),
    ("computeResources",),
    ("computeResources", "cpuLimit"),
    ("computeResources", "memoryLimit"),
    ("computeResources", "customResources"),
    ("computeResources", "limits"),
    ("computeResources", "requests"),
    ("errorHandlingBehaviour", "fatalExitCodes"),
    ("errorHandlingBehaviour", "transientExitCodes"),
    ("datadogIntegrationSettings", "mountDatadogSocket"),
    ("runtimeEnvironment",),
    ("runtimeEnvironment", "deadlineSeconds"),
    ("runtimeEnvironment", "maximumRetries"),
    ("runtimeEnvironment", "environmentVariables"),
    ("runtimeEnvironment", "mappedEnvironmentVariables"),
    ("runtimeEnvironment", "annotations"),
    ("workgroupRef", "name"),
]
template_values = st.one_of(
    json_values,
    quantities,
    resource_maps,
    counts,
    env_lists,
    st.lists(st.integers(min_value=-(2**32), max_value=2**32), max_size=5),
)


@st.composite
def templates(draw: st.DrawFn) -> dict[str, Any]:
    """The contract's template with a few fields replaced by other values, or removed."""
    spec = copy.deepcopy(HELLO_TEMPLATE_SPEC)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        *parents, key = draw(st.sampled_from(TEMPLATE_PATHS[1:]))
        target: Any = spec
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target[int(key)] = draw(template_values)
        elif isinstance(target, dict):
            if draw(st.booleans()):
                target[key] = draw(template_values)
            else:
                target.pop(key, None)
    return spec


def make_job(spec: dict[str, Any]) -> dict[str, Any]:
    return build_job(
        request_id="8c3bd1a2-0a5e-4d0e-9d0c-2f5f3c9a7b11",
        algorithm="hello-world",
        spec=spec,
        workgroup=copy.deepcopy(DEFAULT_WORKGROUP_SPEC),
        namespace="nexus",
        payload_url="https://payloads.example/x",
        result_upload_url="https://nexus.example/results/x",
        parent_owner=None,
        parent=("parent-id", "parent-alg"),
        nexus_version="0.1.0-42",
    )


# The OpenAPI pattern of a Kubernetes quantity (Go also wants an integer exponent).
KUBERNETES_QUANTITY = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
ENV_NAME = re.compile(r"[ -<>-~]+")  # what API servers >= 1.32 accept (printable ASCII but '=')
NEXUSD_ENV = {
    "NEXUS__ALGORITHM_NAME",
    "NEXUS__SHARD_NAME",
    "NEXUS__PARENT_REQUEST_ID",
    "NEXUS__PARENT_ALGORITHM_NAME",
    "NEXUS__RESULT_UPLOAD_URL",
}


def assert_kubernetes_accepts(job: dict[str, Any], template_env: list[Any]) -> None:
    """The field rules of the API server for what a run or a template can put in the Job."""
    json.dumps(job, allow_nan=False)  # storable: no NaN/Infinity, no recursion
    spec = job["spec"]
    assert _is_int32(spec.get("activeDeadlineSeconds", 1), minimum=1)
    assert _is_int32(spec.get("backoffLimit", 0), minimum=0)
    for rule in spec["podFailurePolicy"]["rules"][1:]:
        values = rule["onExitCodes"]["values"]
        assert values == sorted(set(values))
        assert all(_is_int32(value, minimum=-(2**31)) and value for value in values)
    container = spec["template"]["spec"]["containers"][0]
    for kind, amounts in container["resources"].items():
        for name, amount in amounts.items():
            assert isinstance(amount, str)
            assert KUBERNETES_QUANTITY.fullmatch(amount), (name, amount)
            value = parse_quantity(amount)
            assert value.is_finite()
            assert 0 <= value <= (Decimal(2**63 - 1) / 1000 if name == "cpu" else 2**63 - 1)
            assert value > 0 or kind == "requests" or name not in ("cpu", "memory")
    names = [item["name"] for item in container["env"]]
    assert all(isinstance(name, str) and ENV_NAME.fullmatch(name) for name in names)
    assert all(isinstance(item.get("value", ""), str) for item in container["env"])
    # nexusd's own variables come last; a run cannot have added any before them.
    template_names = {item.get("name") for item in template_env if isinstance(item, dict)}
    added = [name for name in names[: -len(NEXUSD_ENV)] if name not in template_names]
    assert not NEXUSD_ENV & set(added)


def _is_int32(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < 2**31


@settings(max_examples=400, deadline=None)
@given(custom_configuration=overrides)
def test_validated_overrides_always_make_a_job_kubernetes_accepts(custom_configuration):
    problems = validate_overrides(custom_configuration)
    assert all(isinstance(problem, str) and problem for problem in problems)
    if problems:
        return
    template = copy.deepcopy(HELLO_TEMPLATE_SPEC)
    applied = merge_overrides(template, custom_configuration)
    assert template == HELLO_TEMPLATE_SPEC
    assert validate_template_spec(applied) == []
    job = make_job(applied)
    assert_kubernetes_accepts(
        job, HELLO_TEMPLATE_SPEC["runtimeEnvironment"]["environmentVariables"]
    )
    assert_run_env_takes_effect(job, custom_configuration)


def assert_run_env_takes_effect(job: dict[str, Any], custom_configuration: Any) -> None:
    """Each variable the run gives is the one the container sees (the last of its name)."""
    effective = {
        item["name"]: item.get("value")
        for item in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    runtime = (custom_configuration or {}).get("runtimeEnvironment") or {}
    for item in runtime.get("environmentVariables") or []:
        assert effective[item["name"]] == (item.get("value") or "")


@settings(max_examples=400, deadline=None)
@given(spec=templates() | json_values)
def test_validated_templates_always_make_a_job_kubernetes_accepts(spec):
    problems = validate_template_spec(spec)
    assert all(isinstance(problem, str) and problem for problem in problems)
    if problems:
        return
    job = make_job(spec)
    assert_kubernetes_accepts(
        job, (spec.get("runtimeEnvironment") or {}).get("environmentVariables") or []
    )


@settings(max_examples=200, deadline=None)
@given(spec=templates(), custom_configuration=overrides)
def test_a_valid_template_with_valid_overrides_stays_valid(spec, custom_configuration):
    if validate_template_spec(spec) or validate_overrides(custom_configuration):
        return
    applied = merge_overrides(spec, custom_configuration)
    assert validate_template_spec(applied) == []
    template_env = (spec.get("runtimeEnvironment") or {}).get("environmentVariables") or []
    assert_kubernetes_accepts(make_job(applied), template_env)
