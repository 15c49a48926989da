"""File and storage mounts (`runtimeEnvironment.secretFileMounts`, `configurationFileMounts`,
`storageMounts`): the volumes the Job builder adds, their names, and the template problems a
bad mount gives.

The builder tests are pure functions, nothing faked. The last tests run a whole `nexusd dev`
(embedded cluster over HTTP, scripted kubelet, which does not materialise volumes) and read
the Job Kubernetes received.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexusd.devcluster import ANNOTATION_DURATION
from nexusd.kube.manifests import build_job
from nexusd.kube.mounts import (
    DATADOG_MOUNT_PATH,
    SERVICE_ACCOUNT_MOUNT_PATH,
    mount_problems,
    volume_name,
)
from nexusd.kube.overrides import merge_overrides, validate_template_spec
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests
from tests.kube.conftest import HELLO_TEMPLATE_SPEC
from tests.kube.test_manifests import make_job

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
RUNTIME = "spec.runtimeEnvironment"


def with_mounts(spec: dict[str, Any], **mounts: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec.setdefault("runtimeEnvironment", {}).update(mounts)
    return spec


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


# --- the Job ------------------------------------------------------------------------------


def test_a_template_without_mounts_has_no_volumes(template_spec, workgroup_spec):
    pod = pod_of(make_job(template_spec, workgroup_spec))
    assert "volumes" not in pod
    assert "volumeMounts" not in pod["containers"][0]
    assert list(pod) == ["containers", "affinity", "tolerations", "restartPolicy"]


def test_empty_mount_maps_change_nothing(template_spec, workgroup_spec):
    bare = make_job(template_spec, workgroup_spec)
    spec = with_mounts(
        template_spec, secretFileMounts={}, configurationFileMounts={}, storageMounts={}
    )
    assert make_job(spec, workgroup_spec) == bare


def test_each_kind_of_mount_becomes_a_volume_and_a_mount(template_spec, workgroup_spec):
    spec = with_mounts(
        template_spec,
        secretFileMounts={"db-credentials": {"mountPath": "/etc/db", "readOnly": True}},
        configurationFileMounts={
            "app-settings": {"mountPath": "/etc/app/settings.json", "subPath": "settings.json"}
        },
        storageMounts={
            "models": {"mountPath": "/models", "readOnly": True},
            "scratch": {"mountPath": "/scratch", "emptyDir": {"sizeLimit": "1Gi"}},
        },
    )
    pod = pod_of(make_job(spec, workgroup_spec))
    secret = volume_name("secretFileMounts", "db-credentials")
    config = volume_name("configurationFileMounts", "app-settings")
    models = volume_name("storageMounts", "models")
    scratch = volume_name("storageMounts", "scratch")
    assert pod["volumes"] == [
        {"name": secret, "secret": {"secretName": "db-credentials"}},
        {"name": config, "configMap": {"name": "app-settings"}},
        {"name": models, "persistentVolumeClaim": {"claimName": "models"}},
        {"name": scratch, "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": secret, "mountPath": "/etc/db", "readOnly": True},
        {"name": config, "mountPath": "/etc/app/settings.json", "subPath": "settings.json"},
        {"name": models, "mountPath": "/models", "readOnly": True},
        {"name": scratch, "mountPath": "/scratch"},
    ]
    assert list(pod)[:2] == ["volumes", "containers"]  # where upstream puts the datadog volume


def test_mounts_follow_the_datadog_socket(template_spec, workgroup_spec):
    spec = with_mounts(template_spec, secretFileMounts={"creds": {"mountPath": "/etc/creds"}})
    spec["datadogIntegrationSettings"]["mountDatadogSocket"] = True
    pod = pod_of(make_job(spec, workgroup_spec))
    assert [volume["name"] for volume in pod["volumes"]] == [
        "dsdsocket",
        volume_name("secretFileMounts", "creds"),
    ]
    assert [mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]] == [
        DATADOG_MOUNT_PATH,
        "/etc/creds",
    ]


def test_only_volume_mount_fields_reach_the_container(template_spec, workgroup_spec):
    mount = {
        "name": "chosen-by-the-author",  # nexusd names the volume
        "mountPath": "/etc/creds",
        "subPathExpr": "$(POD_NAME)",
        "mountPropagation": "None",
        "recursiveReadOnly": "Disabled",
        "readOnly": False,
        "color": "blue",  # kept by the CRD, unknown to Kubernetes
    }
    spec = with_mounts(template_spec, secretFileMounts={"creds": mount})
    (built,) = pod_of(make_job(spec, workgroup_spec))["containers"][0]["volumeMounts"]
    assert built == {
        "name": volume_name("secretFileMounts", "creds"),
        "mountPath": "/etc/creds",
        "subPathExpr": "$(POD_NAME)",
        "readOnly": False,
        "recursiveReadOnly": "Disabled",
        "mountPropagation": "None",
    }


def test_volumes_are_in_source_name_order(template_spec, workgroup_spec):
    spec = with_mounts(
        template_spec,
        secretFileMounts={"b": {"mountPath": "/b"}, "a": {"mountPath": "/a"}},
    )
    mounts = pod_of(make_job(spec, workgroup_spec))["containers"][0]["volumeMounts"]
    assert [mount["mountPath"] for mount in mounts] == ["/a", "/b"]


def test_a_run_cannot_override_the_mounts(template_spec, workgroup_spec):
    spec = with_mounts(template_spec, secretFileMounts={"creds": {"mountPath": "/etc/creds"}})
    overrides = {"runtimeEnvironment": {"secretFileMounts": {"other": {"mountPath": "/x"}}}}
    merged = merge_overrides(spec, overrides)
    assert merged["runtimeEnvironment"]["secretFileMounts"] == {
        "creds": {"mountPath": "/etc/creds"}
    }
    assert make_job(merged, workgroup_spec) == make_job(spec, workgroup_spec)


def test_a_bad_mount_fails_the_build(template_spec, workgroup_spec):
    spec = with_mounts(template_spec, secretFileMounts={"creds": {"mountPath": "etc"}})
    with pytest.raises(ValueError, match=r"secretFileMounts\.creds\.mountPath"):
        make_job(spec, workgroup_spec)


# --- volume names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "source", "readable"),
    [
        ("secretFileMounts", "db-credentials", "secret-db-credentials-"),
        ("secretFileMounts", "db.credentials", "secret-db-credentials-"),
        ("configurationFileMounts", "App.Settings", "config-app-settings-"),
        ("storageMounts", "scratch space", "storage-scratch-space-"),
        ("storageMounts", "--", "storage-"),
        ("storageMounts", "ünïcode", "storage-n-code-"),
    ],
)
def test_volume_names_are_readable_labels(kind, source, readable):
    name = volume_name(kind, source)
    assert DNS_LABEL.fullmatch(name), name
    assert name.startswith(readable)
    assert name == volume_name(kind, source)  # deterministic: same template, same Job


def test_names_equal_once_sanitised_still_differ(template_spec, workgroup_spec):
    spec = with_mounts(
        template_spec,
        secretFileMounts={
            "db.creds": {"mountPath": "/one"},
            "db-creds": {"mountPath": "/two"},
        },
        configurationFileMounts={"db-creds": {"mountPath": "/three"}},
        storageMounts={"db-creds": {"mountPath": "/four"}},
    )
    pod = pod_of(make_job(spec, workgroup_spec))
    names = [volume["name"] for volume in pod["volumes"]]
    assert len(set(names)) == 4
    assert names == [mount["name"] for mount in pod["containers"][0]["volumeMounts"]]


def test_a_long_source_name_is_cut_to_a_label():
    longest = "a" * 253
    names = {volume_name("storageMounts", longest), volume_name("storageMounts", longest[:-1])}
    assert len(names) == 2
    for name in names:
        assert len(name) == 63
        assert DNS_LABEL.fullmatch(name)


@given(st.sampled_from(["secretFileMounts", "configurationFileMounts", "storageMounts"]), st.text())
def test_any_source_name_gives_a_label(kind, source):
    assert DNS_LABEL.fullmatch(volume_name(kind, source))


# --- template validation ----------------------------------------------------------------------


def problems_of(template_spec: dict[str, Any], **mounts: Any) -> list[str]:
    return validate_template_spec(with_mounts(template_spec, **mounts))


def test_good_mounts_pass(template_spec):
    assert (
        problems_of(
            template_spec,
            secretFileMounts={"db.creds": {"mountPath": "/etc/db/", "readOnly": True}},
            configurationFileMounts={"cfg": {"mountPath": "/etc/cfg", "subPath": "a/b.json"}},
            storageMounts={
                "models": {"mountPath": "/models"},
                "Scratch Space": {"mountPath": "/tmp/scratch", "emptyDir": {}},
                "ram": {"mountPath": "/ram", "emptyDir": {"medium": "Memory", "sizeLimit": 64}},
            },
        )
        == []
    )


@pytest.mark.parametrize(
    ("mounts", "problem"),
    [
        (
            {"secretFileMounts": {"creds": {"readOnly": True}}},
            f"{RUNTIME}.secretFileMounts.creds.mountPath is required",
        ),
        (
            {"secretFileMounts": {"creds": {"mountPath": ""}}},
            f"{RUNTIME}.secretFileMounts.creds.mountPath is required",
        ),
        (
            {"configurationFileMounts": {"cfg": {"mountPath": "etc/cfg"}}},
            f"{RUNTIME}.configurationFileMounts.cfg.mountPath: 'etc/cfg' must be an absolute path",
        ),
        (
            {"storageMounts": {"data": {"mountPath": 7}}},
            f"{RUNTIME}.storageMounts.data.mountPath: must be a string",
        ),
        (
            {"storageMounts": {"data": {"mountPath": "/./"}}},
            f"{RUNTIME}.storageMounts.data.mountPath: '/./' would hide the container's whole "
            "filesystem",
        ),
        (
            {"secretFileMounts": {"creds": {"mountPath": "/x", "subPath": "/abs"}}},
            f"{RUNTIME}.secretFileMounts.creds.subPath: '/abs' must be a relative path "
            "without '..'",
        ),
        (
            {"secretFileMounts": {"creds": {"mountPath": "/x", "subPath": "a/../../b"}}},
            f"{RUNTIME}.secretFileMounts.creds.subPath: 'a/../../b' must be a relative path "
            "without '..'",
        ),
        (
            {"secretFileMounts": {"creds": {"mountPath": "/x", "readOnly": "true"}}},
            f"{RUNTIME}.secretFileMounts.creds.readOnly: must be a boolean",
        ),
        (
            {"secretFileMounts": {"creds": {"mountPath": "/x", "mountPropagation": 1}}},
            f"{RUNTIME}.secretFileMounts.creds.mountPropagation: must be a string",
        ),
        (
            {"secretFileMounts": {"Creds_1": {"mountPath": "/x"}}},
            f"{RUNTIME}.secretFileMounts.Creds_1: 'Creds_1' is no Secret name",
        ),
        (
            {"configurationFileMounts": {"": {"mountPath": "/x"}}},
            f"{RUNTIME}.configurationFileMounts.: the source name must be a non-empty string",
        ),
        (
            {"storageMounts": {"My Claim": {"mountPath": "/x"}}},
            f"{RUNTIME}.storageMounts.My Claim: 'My Claim' is no PersistentVolumeClaim name",
        ),
        (
            {"storageMounts": {"tmp": {"mountPath": "/x", "emptyDir": "yes"}}},
            f"{RUNTIME}.storageMounts.tmp.emptyDir: must be an object (medium, sizeLimit)",
        ),
        (
            {"storageMounts": {"tmp": {"mountPath": "/x", "emptyDir": {"medium": "Disk"}}}},
            f"{RUNTIME}.storageMounts.tmp.emptyDir.medium: 'Disk' must be",
        ),
        (
            {"storageMounts": {"tmp": {"mountPath": "/x", "emptyDir": {"sizeLimit": "lots"}}}},
            f"{RUNTIME}.storageMounts.tmp.emptyDir.sizeLimit: 'lots' is not a Kubernetes quantity",
        ),
        (
            {"secretFileMounts": ["creds"]},
            f"{RUNTIME}.secretFileMounts: must be an object of source name to volume mount",
        ),
        (
            {"storageMounts": {"data": "/data"}},
            f'{RUNTIME}.storageMounts.data: must be an object {{"mountPath": ...}}',
        ),
    ],
)
def test_a_bad_mount_is_named(template_spec, mounts, problem):
    (found,) = problems_of(template_spec, **mounts)
    assert found.startswith(problem), found


def test_two_mounts_on_one_path_collide(template_spec):
    problems = problems_of(
        template_spec,
        secretFileMounts={"creds": {"mountPath": "/etc/app"}},
        configurationFileMounts={"cfg": {"mountPath": "/etc//app/"}},
        storageMounts={"data": {"mountPath": "/etc/app/data"}},  # nested: Kubernetes allows it
    )
    assert problems == [
        f"{RUNTIME}.configurationFileMounts.cfg.mountPath: '/etc//app/' is already mounted by "
        f"{RUNTIME}.secretFileMounts.creds.mountPath"
    ]


def test_the_datadog_socket_path_is_taken_only_when_mounted(template_spec):
    mounts = {"storageMounts": {"dd": {"mountPath": "/var/run/datadog/", "emptyDir": {}}}}
    assert problems_of(template_spec, **mounts) == []
    template_spec["datadogIntegrationSettings"]["mountDatadogSocket"] = True
    assert problems_of(template_spec, **mounts) == [
        f"{RUNTIME}.storageMounts.dd.mountPath: '/var/run/datadog/' is already mounted by the "
        "Datadog socket (datadogIntegrationSettings)"
    ]


def test_the_service_account_token_path_is_taken(template_spec):
    mounts = {"secretFileMounts": {"token": {"mountPath": SERVICE_ACCOUNT_MOUNT_PATH + "/"}}}
    assert problems_of(template_spec, **mounts) == [
        f"{RUNTIME}.secretFileMounts.token.mountPath: '{SERVICE_ACCOUNT_MOUNT_PATH}/' is already "
        "mounted by Kubernetes (the service account token)"
    ]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(JSON, JSON, JSON)
def test_any_json_gives_problems_and_never_an_exception(secrets, configurations, storage):
    spec = {
        "runtimeEnvironment": {
            "secretFileMounts": secrets,
            "configurationFileMounts": configurations,
            "storageMounts": storage,
        }
    }
    assert isinstance(mount_problems(spec, "spec"), list)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
        st.from_regex(r"/[a-z]{1,6}(/[a-z]{1,6})?", fullmatch=True),
        max_size=5,
    )
)
def test_a_valid_template_always_builds(paths):
    spec = copy.deepcopy(HELLO_TEMPLATE_SPEC)  # not the fixture: hypothesis reruns the body
    spec["runtimeEnvironment"]["secretFileMounts"] = {
        source: {"mountPath": path} for source, path in paths.items()
    }
    if validate_template_spec(spec):
        assert len(set(paths.values())) < len(paths)  # only collisions are refused
        return
    job = build_job(
        request_id="r",
        algorithm="a",
        spec=spec,
        workgroup={"cluster": "c"},
        namespace="n",
        payload_url="https://p",
        result_upload_url=None,
        parent_owner=None,
        parent=None,
        nexus_version="v",
    )
    assert len(pod_of(job).get("volumes", [])) == len(paths)


# --- through nexusd dev and the embedded cluster ------------------------------------------------


async def test_a_secret_file_mount_reaches_the_job(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    runtime = {
        "maximumRetries": 0,
        "annotations": {ANNOTATION_DURATION: "60"},
        "secretFileMounts": {"db.credentials": {"mountPath": "/etc/db", "readOnly": True}},
        "storageMounts": {"scratch": {"mountPath": "/scratch", "emptyDir": {}}},
    }
    manifests = write_manifests(
        tmp_path / "manifests", template("mounted", **{"runtimeEnvironment": runtime})
    )
    nexus = await start_nexus(**{"dev.manifests": str(manifests)})
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/mounted", json={"algorithmParameters": {}}
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    await wait_for_stage(http, nexus.url, "mounted", request_id, "RUNNING")
    assert nexus.cluster is not None
    job = await http.get(f"{nexus.cluster.url}/apis/batch/v1/namespaces/nexus/jobs/{request_id}")
    assert job.status_code == 200, job.text
    pod = pod_of(job.json())
    secret = volume_name("secretFileMounts", "db.credentials")
    scratch = volume_name("storageMounts", "scratch")
    assert pod["volumes"] == [
        {"name": secret, "secret": {"secretName": "db.credentials"}},
        {"name": scratch, "emptyDir": {}},
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": secret, "mountPath": "/etc/db", "readOnly": True},
        {"name": scratch, "mountPath": "/scratch"},
    ]


async def test_a_template_with_a_bad_mount_is_a_400_naming_the_field(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    runtime = {
        "maximumRetries": 0,
        "secretFileMounts": {"creds": {"mountPath": "/etc/creds"}},
        "configurationFileMounts": {"settings": {"mountPath": "/etc/creds/"}},
    }
    manifests = write_manifests(
        tmp_path / "manifests", template("clash", runtimeEnvironment=runtime)
    )
    nexus = await start_nexus(**{"dev.manifests": str(manifests)})
    response = await http.post(
        f"{nexus.url}/algorithm/v1/run/clash", json={"algorithmParameters": {}}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("Algorithm clash has an invalid NexusAlgorithmTemplate: ")
    assert (
        "spec.runtimeEnvironment.configurationFileMounts.settings.mountPath: '/etc/creds/' is "
        "already mounted by spec.runtimeEnvironment.secretFileMounts.creds.mountPath"
    ) in response.text
