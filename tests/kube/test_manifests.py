"""The Job manifest against contract §6.4 and the checklist §14 "Algorithm container contract".

Pure functions: nothing is faked, nothing is sent anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexusd.kube.manifests import (
    build_job,
    container_resources,
    cpu_request,
    dry_run_owner_reference,
    job_args,
    parent_owner_reference,
)
from nexusd.kube.overrides import merge_overrides, validate_overrides

REQUEST_ID = "8c3bd1a2-0a5e-4d0e-9d0c-2f5f3c9a7b11"
PAYLOAD_URL = "https://payloads.example/algorithm=hello-world/8c3b?sig=a%2Fb&exp=1"


def make_job(spec: dict[str, Any], workgroup: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "request_id": REQUEST_ID,
        "algorithm": "hello-world",
        "spec": spec,
        "workgroup": workgroup,
        "namespace": "nexus",
        "payload_url": PAYLOAD_URL,
        "result_upload_url": None,
        "parent_owner": None,
        "parent": None,
        "nexus_version": "0.1.0-42",
    }
    arguments.update(overrides)
    return build_job(**arguments)


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["name"], item.get("value", "")) for item in container_of(job)["env"]]


def test_job_identity_and_labels(template_spec, workgroup_spec):
    job = make_job(template_spec, workgroup_spec)
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == REQUEST_ID
    assert job["metadata"]["namespace"] == "nexus"
    labels = {
        "science.sneaksanddata.com/algorithm-template-name": "hello-world",
        "science.sneaksanddata.com/nexus-version": "0.1.0-42",
        "science.sneaksanddata.com/nexus-component": "algorithm-run",
    }
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    # No annotations or owners configured: left out, as Go's omitempty does.
    assert "annotations" not in job["metadata"]
    assert "ownerReferences" not in job["metadata"]


def test_container_image_command_and_pull_policy(template_spec, workgroup_spec):
    template_spec["command"] = "python -m algorithm"
    container = container_of(make_job(template_spec, workgroup_spec))
    assert container["name"] == REQUEST_ID
    assert container["image"] == "ghcr.io/sneaksanddata/nexus-hello:0.1.2"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python", "-m", "algorithm"]


def test_command_split_on_single_spaces_exactly(template_spec, workgroup_spec):
    template_spec["command"] = "a  b"  # strings.Split keeps the empty field
    assert container_of(make_job(template_spec, workgroup_spec))["command"] == ["a", "", "b"]


def test_args_substitution(template_spec, workgroup_spec):
    container = container_of(make_job(template_spec, workgroup_spec))
    assert container["args"] == [
        "main.py",
        f"--sas-uri={PAYLOAD_URL}",
        f"--request-id={REQUEST_ID}",
    ]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--sas-uri=%s", "--sas-uri=URL"),
        ("--sas-uri %s", "--sas-uri URL"),
        ("--request-id=%s", "--request-id=ID"),
        ("--other=%s", "--other=%s"),  # neither keyword: unchanged
        ("plain", "plain"),
        ("--sas-uri-and-request-id=%s", "--sas-uri-and-request-id=URL"),  # sas-uri checked first
        ("--sas-uri=%s&pct=100%%", "--sas-uri=URL&pct=100%"),
    ],
)
def test_job_args_table(arg, expected):
    assert job_args([arg], payload_url="URL", request_id="ID") == [expected]


def test_payload_url_percent_signs_are_not_reinterpreted():
    url = "https://x/y?sig=a%2Fb%s"
    assert job_args(["--sas-uri=%s"], payload_url=url, request_id="id") == [f"--sas-uri={url}"]


def test_env_appends_nexus_variables_after_template_env(template_spec, workgroup_spec):
    template_spec["runtimeEnvironment"]["environmentVariables"].append(
        {"name": "NEXUS__ALGORITHM_NAME", "value": "spoofed"}
    )
    env = env_of(make_job(template_spec, workgroup_spec))
    assert env == [
        ("NEXUS__CLIENT__RECEIVER", "http://nexus-receiver.nexus:8080"),
        ("NEXUS__ALGORITHM_NAME", "spoofed"),
        ("NEXUS__ALGORITHM_NAME", "hello-world"),  # later entry wins in Kubernetes
        ("NEXUS__SHARD_NAME", "kind-nexus-shard-0"),
    ]


def test_env_parent_and_result_upload_url(template_spec, workgroup_spec):
    job = make_job(
        template_spec,
        workgroup_spec,
        parent=("parent-id", "parent-alg"),
        result_upload_url="https://nexus/data/v1/results/x?sig=1",
    )
    assert env_of(job)[-5:] == [
        ("NEXUS__ALGORITHM_NAME", "hello-world"),
        ("NEXUS__SHARD_NAME", "kind-nexus-shard-0"),
        ("NEXUS__PARENT_REQUEST_ID", "parent-id"),
        ("NEXUS__PARENT_ALGORITHM_NAME", "parent-alg"),
        ("NEXUS__RESULT_UPLOAD_URL", "https://nexus/data/v1/results/x?sig=1"),
    ]


def test_env_value_from_and_env_from_pass_through(template_spec, workgroup_spec):
    secret_env = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    env_from = [{"secretRef": {"name": "hello-secrets"}}, {"configMapRef": {"name": "cm"}}]
    runtime = template_spec["runtimeEnvironment"]
    runtime["environmentVariables"] = [secret_env]
    runtime["mappedEnvironmentVariables"] = env_from
    container = container_of(make_job(template_spec, workgroup_spec))
    assert container["env"][0] == secret_env
    assert container["envFrom"] == env_from


def test_no_env_from_when_not_configured(template_spec, workgroup_spec):
    assert "envFrom" not in container_of(make_job(template_spec, workgroup_spec))


def test_annotations_on_job_and_pod_template(template_spec, workgroup_spec):
    annotations = {"ad.datadoghq.com/tags": '{"team": "science"}'}
    template_spec["runtimeEnvironment"]["annotations"] = annotations
    job = make_job(template_spec, workgroup_spec)
    assert job["metadata"]["annotations"] == annotations
    assert job["spec"]["template"]["metadata"]["annotations"] == annotations


def test_owner_reference_to_parent_job(template_spec, workgroup_spec):
    parent_job = {"metadata": {"name": "parent-id", "uid": "1234-uid"}}
    owner = parent_owner_reference(parent_job)
    assert owner == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "parent-id",
        "uid": "1234-uid",
        "blockOwnerDeletion": True,
    }
    job = make_job(template_spec, workgroup_spec, parent_owner=owner)
    assert job["metadata"]["ownerReferences"] == [owner]


def test_dry_run_owner_reference():
    assert dry_run_owner_reference("p-1") == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "p-1",
        "uid": "p-1",
    }


def test_resources_limits_and_ten_percent_cpu_request(template_spec, workgroup_spec):
    resources = container_of(make_job(template_spec, workgroup_spec))["resources"]
    assert resources == {
        "limits": {"cpu": "1000m", "memory": "1000Mi"},
        "requests": {"cpu": "100m", "memory": "1000Mi"},
    }


def test_custom_resources_are_limits_and_requests(template_spec, workgroup_spec):
    template_spec["computeResources"]["customResources"] = {"nvidia.com/gpu": "1"}
    resources = container_of(make_job(template_spec, workgroup_spec))["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("1000m", "100m"),
        ("1", "100m"),
        ("2", "200m"),
        ("1500m", "150m"),
        ("0.5", "50m"),
        ("250m", "25m"),
        ("15m", "2m"),  # 1.5000000000000002 -> 2 (float64 arithmetic, as Go)
        ("5m", "0m"),  # 0.5 -> 0: %.0f rounds half to even, as Go does
        ("1.0005", "100m"),  # MilliValue rounds up: 1001m * 0.1 = 100.1
        (3, "300m"),
        ("1n", "0m"),  # 1m * 0.1: a zero request, which the API server accepts
        ("1e-50", "0m"),  # Kubernetes reads 1n
        ("6m", "1m"),
        ("9223372036854775807m", "922337203685477632m"),  # the largest: float64 formats it
    ],
)
def test_cpu_request_table(limit, expected):
    assert cpu_request(str(limit)) == expected


@pytest.mark.parametrize("limit", ["1e400", "NaN", "Infinity", "lots"])
def test_cpu_request_of_an_unusable_limit_is_a_value_error(limit):
    with pytest.raises(ValueError, match="is not a quantity Kubernetes can hold"):
        cpu_request(limit)


def test_newer_shape_limits_and_requests_override():
    resources = container_resources(
        {
            "cpuLimit": "1",
            "memoryLimit": "1Gi",
            "customResources": {"nvidia.com/gpu": "1"},
            "limits": {"cpu": "4", "memory": "8Gi"},
            "requests": {"memory": "2Gi"},
        }
    )
    assert resources == {
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "400m", "memory": "2Gi", "nvidia.com/gpu": "1"},
    }


def test_newer_shape_without_scalar_limits():
    resources = container_resources(
        {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "1"}}
    )
    assert resources == {
        "limits": {"cpu": "2", "memory": "1Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }


def test_datadog_socket_volume(template_spec, workgroup_spec):
    template_spec["datadogIntegrationSettings"]["mountDatadogSocket"] = True
    job = make_job(template_spec, workgroup_spec)
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "dsdsocket", "hostPath": {"path": "/var/run/datadog/"}}]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "dsdsocket", "mountPath": "/var/run/datadog"}
    ]


@pytest.mark.parametrize("settings", [None, {}, {"mountDatadogSocket": False}])
def test_no_datadog_volume_when_disabled(template_spec, workgroup_spec, settings):
    if settings is None:
        del template_spec["datadogIntegrationSettings"]
    else:
        template_spec["datadogIntegrationSettings"] = settings
    pod = make_job(template_spec, workgroup_spec)["spec"]["template"]["spec"]
    assert "volumes" not in pod
    assert "volumeMounts" not in pod["containers"][0]


DISRUPTION_RULE = {
    "action": "Ignore",
    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
}


def exit_rule(action: str, codes: list[int]) -> dict[str, Any]:
    return {
        "action": action,
        "onExitCodes": {"containerName": REQUEST_ID, "operator": "In", "values": codes},
    }


@pytest.mark.parametrize(
    ("behaviour", "rules"),
    [
        (
            {"fatalExitCodes": [137], "transientExitCodes": [139]},
            [DISRUPTION_RULE, exit_rule("FailJob", [137]), exit_rule("Ignore", [139])],
        ),
        ({"fatalExitCodes": [1, 2]}, [DISRUPTION_RULE, exit_rule("FailJob", [1, 2])]),
        ({"transientExitCodes": [7]}, [DISRUPTION_RULE, exit_rule("Ignore", [7])]),
        ({"fatalExitCodes": [], "transientExitCodes": []}, [DISRUPTION_RULE]),
        ({}, [DISRUPTION_RULE]),
        (None, [DISRUPTION_RULE]),
    ],
)
def test_pod_failure_policy_table(template_spec, workgroup_spec, behaviour, rules):
    if behaviour is None:
        del template_spec["errorHandlingBehaviour"]
    else:
        template_spec["errorHandlingBehaviour"] = behaviour
    job = make_job(template_spec, workgroup_spec)
    assert job["spec"]["podFailurePolicy"] == {"rules": rules}


def test_exit_codes_are_sorted_and_unique(template_spec, workgroup_spec):
    """Kubernetes refuses `values` out of order or repeated; the set means the same."""
    template_spec["errorHandlingBehaviour"] = {
        "fatalExitCodes": [139, 137, 139],
        "transientExitCodes": [3, -1],
    }
    job = make_job(template_spec, workgroup_spec)
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [DISRUPTION_RULE, exit_rule("FailJob", [137, 139]), exit_rule("Ignore", [-1, 3])]
    }


def test_run_env_overrides_reach_the_container(template_spec, workgroup_spec):
    overrides = {
        "runtimeEnvironment": {
            "environmentVariables": [
                {"name": "MODE", "value": "fast"},
                {"name": "NEXUS__CLIENT__RECEIVER", "value": "http://other:8080"},
            ]
        }
    }
    assert validate_overrides(overrides) == []
    env = env_of(make_job(merge_overrides(template_spec, overrides), workgroup_spec))
    assert env == [
        ("NEXUS__CLIENT__RECEIVER", "http://other:8080"),
        ("MODE", "fast"),
        ("NEXUS__ALGORITHM_NAME", "hello-world"),
        ("NEXUS__SHARD_NAME", "kind-nexus-shard-0"),
    ]


def test_pod_spec_placement_and_restart_policy(template_spec, workgroup_spec):
    template_spec["container"]["serviceAccountName"] = "hello-sa"
    pod = make_job(template_spec, workgroup_spec)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "hello-sa"
    assert pod["affinity"] == workgroup_spec["affinity"]
    assert pod["tolerations"] == workgroup_spec["tolerations"]


def test_pod_spec_without_placement(template_spec):
    pod = make_job(template_spec, {"cluster": "c", "description": "d"})["spec"]["template"]["spec"]
    assert "affinity" not in pod
    assert "tolerations" not in pod
    assert "serviceAccountName" not in pod
    assert pod["restartPolicy"] == "Never"


def test_job_limits(template_spec, workgroup_spec):
    spec = make_job(template_spec, workgroup_spec)["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 120
    assert spec["ttlSecondsAfterFinished"] == 300


def test_job_limits_omitted_when_unset(template_spec, workgroup_spec):
    del template_spec["runtimeEnvironment"]
    spec = make_job(template_spec, workgroup_spec)["spec"]
    assert "backoffLimit" not in spec
    assert "activeDeadlineSeconds" not in spec
    assert spec["ttlSecondsAfterFinished"] == 300


def test_zero_retries_is_kept(template_spec, workgroup_spec):
    template_spec["runtimeEnvironment"]["maximumRetries"] = 0
    assert make_job(template_spec, workgroup_spec)["spec"]["backoffLimit"] == 0


def test_invalid_spec_is_a_value_error(template_spec, workgroup_spec):
    del template_spec["computeResources"]
    with pytest.raises(ValueError, match=r"spec\.computeResources is required"):
        make_job(template_spec, workgroup_spec)


def test_build_job_does_not_modify_its_inputs(template_spec, workgroup_spec):
    before = repr((template_spec, workgroup_spec))
    job = make_job(template_spec, workgroup_spec)
    container_of(job)["env"].append({"name": "X"})
    job["metadata"]["labels"]["x"] = "y"
    assert repr((template_spec, workgroup_spec)) == before


@given(
    url=st.text(min_size=1, max_size=60),
    request_id=st.uuids().map(str),
)
def test_args_substitution_is_literal(url, request_id):
    args = job_args(
        ["--sas-uri=%s", "--request-id=%s", "x"], payload_url=url, request_id=request_id
    )
    assert args == [f"--sas-uri={url}", f"--request-id={request_id}", "x"]
