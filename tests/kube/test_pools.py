"""Warm pools: `spec.warmPool` parsing and validation, the pool Deployment against the Job the
same template makes, and the CRD schema's `warmPool`.

The manifest tests are pure functions (nothing faked, nothing sent). The last tests send the
Deployment and templates to the embedded cluster over HTTP, which admits Deployments (selector
against labels) and validates custom resources against the CRD's openAPIV3Schema (types and
required fields; it does not check `minimum`, so only the schema file is read for those).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from nexusd.kube.manifests import build_job
from nexusd.kube.overrides import ENV_ALGORITHM_NAME, ENV_SHARD_NAME, validate_template_spec
from nexusd.kube.pools import (
    DEPLOYMENTS,
    POD_TEMPLATE_HASH,
    WarmPool,
    build_pool_deployment,
    warm_pool_problems,
)
from tests.kube.conftest import CRD_DIR, TEMPLATE_CRD_FILE

ALGORITHM = "hello-world"
SCHEDULER = "http://nexusd-scheduler.nexus:8080"
TOKEN = "pool-token-of-hello-world"
WORKER_NAMES = (
    "NEXUS__WORKER__SCHEDULER",
    "NEXUS__WORKER__ALGORITHM",
    "NEXUS__WORKER__TOKEN",
    "NEXUS__WORKER__NAME",
    "NEXUS__WORKER__CONCURRENCY",
    "NEXUS__WORKER__RUNS",
)


def warm(spec: dict[str, Any], **pool: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["warmPool"] = pool
    return spec


def rich(spec: dict[str, Any]) -> dict[str, Any]:
    """A template using everything that ends up in the pod."""
    spec = copy.deepcopy(spec)
    spec["container"]["serviceAccountName"] = "algorithms"
    spec["datadogIntegrationSettings"] = {"mountDatadogSocket": True}
    spec["computeResources"]["customResources"] = {"nvidia.com/gpu": "1"}
    runtime = spec["runtimeEnvironment"]
    runtime["annotations"] = {"team": "science"}
    runtime["mappedEnvironmentVariables"] = [{"secretRef": {"name": "env-secret"}}]
    runtime["environmentVariables"].append(
        {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}
    )
    runtime["secretFileMounts"] = {"db-credentials": {"mountPath": "/etc/db", "readOnly": True}}
    runtime["storageMounts"] = {"scratch": {"mountPath": "/scratch", "emptyDir": {}}}
    return spec


def pool_deployment(spec: dict[str, Any], workgroup: dict[str, Any], **kw: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "spec": spec,
        "workgroup": workgroup,
        "namespace": "nexus",
        "scheduler_url": SCHEDULER,
        "pool_token": TOKEN,
        "nexus_version": "0.1.0-42",
    }
    arguments.update(kw)
    return build_pool_deployment(**arguments)


def job_pod(spec: dict[str, Any], workgroup: dict[str, Any]) -> dict[str, Any]:
    job = build_job(
        request_id="8c3bd1a2-0a5e-4d0e-9d0c-2f5f3c9a7b11",
        algorithm=ALGORITHM,
        spec=spec,
        workgroup=workgroup,
        namespace="nexus",
        payload_url="https://payloads.example/p?sig=1",
        result_upload_url=None,
        parent_owner=None,
        parent=None,
        nexus_version="0.1.0-42",
    )
    pod: dict[str, Any] = job["spec"]["template"]
    return pod


# --- the Deployment against the template's Job -----------------------------------------------


def test_the_workers_pod_is_the_jobs_pod(template_spec, workgroup_spec):
    spec = warm(rich(template_spec), maxWorkers=3)
    job = job_pod(spec, workgroup_spec)
    pool = pool_deployment(spec, workgroup_spec)["spec"]["template"]
    job_spec, pool_spec = job["spec"], pool["spec"]
    for key in ("volumes", "affinity", "tolerations", "serviceAccountName"):
        assert pool_spec[key] == job_spec[key], key
    assert pool_spec["restartPolicy"] == "Always"
    assert job_spec["restartPolicy"] == "Never"
    (worker,) = pool_spec["containers"]
    (run,) = job_spec["containers"]
    for key in ("image", "imagePullPolicy", "resources", "envFrom", "volumeMounts"):
        assert worker[key] == run[key], key
    assert worker["name"] == "worker"
    # The run's env (no per-run entries were given to the Job), then the worker's settings.
    assert worker["env"][: len(run["env"])] == run["env"]
    assert [item["name"] for item in worker["env"][len(run["env"]) :]] == list(WORKER_NAMES)
    assert pool["metadata"]["annotations"] == job["metadata"]["annotations"] == {"team": "science"}


def test_nothing_of_one_run_is_in_the_pod(template_spec, workgroup_spec):
    spec = warm(template_spec)
    spec["runtimeEnvironment"]["environmentVariables"] = []
    (worker,) = pool_deployment(spec, workgroup_spec)["spec"]["template"]["spec"]["containers"]
    names = {item["name"] for item in worker["env"]}
    # No result upload URL, parent, receiver token: the lease gives them per run.
    assert names == {ENV_ALGORITHM_NAME, ENV_SHARD_NAME, *WORKER_NAMES}


def test_command_mode_runs_the_template_command_under_the_worker(template_spec, workgroup_spec):
    template_spec["command"] = "python -m algorithm"
    deployment = pool_deployment(warm(template_spec), workgroup_spec)
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == ["nexusd", "worker", "--", "python", "-m", "algorithm"]
    # Unsubstituted: the worker fills the placeholders per run, as the scheduler does for Jobs.
    assert worker["args"] == ["main.py", "--sas-uri=%s", "--request-id=%s"]


def test_handler_mode_calls_the_function(template_spec, workgroup_spec):
    spec = warm(template_spec, handler="algorithm.main:run", concurrency=8)
    (worker,) = pool_deployment(spec, workgroup_spec)["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == ["nexusd", "worker", "--handler", "algorithm.main:run"]
    assert worker["args"] == []


def test_worker_settings_and_deployment_identity(template_spec, workgroup_spec):
    spec = warm(template_spec, minWorkers=2, concurrency=3, runsPerWorker=100)
    deployment = pool_deployment(spec, workgroup_spec)
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["kind"] == "Deployment"
    metadata = deployment["metadata"]
    assert metadata["name"] == "nexusd-pool-hello-world"
    assert metadata["namespace"] == "nexus"
    selector = {
        "science.sneaksanddata.com/algorithm-template-name": ALGORITHM,
        "science.sneaksanddata.com/nexus-component": "warm-worker",
    }
    assert metadata["labels"] == {**selector, "science.sneaksanddata.com/nexus-version": "0.1.0-42"}
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    assert deployment["spec"]["template"]["metadata"]["labels"] == selector
    assert deployment["spec"]["replicas"] == 2
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in worker["env"]}
    assert env["NEXUS__WORKER__SCHEDULER"]["value"] == SCHEDULER
    assert env["NEXUS__WORKER__ALGORITHM"]["value"] == ALGORITHM
    assert env["NEXUS__WORKER__TOKEN"]["value"] == TOKEN
    assert env["NEXUS__WORKER__NAME"] == {
        "name": "NEXUS__WORKER__NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert env["NEXUS__WORKER__CONCURRENCY"]["value"] == "3"
    assert env["NEXUS__WORKER__RUNS"]["value"] == "100"


def pod_hash(deployment: dict[str, Any]) -> str:
    value: str = deployment["metadata"]["annotations"][POD_TEMPLATE_HASH]
    return value


def test_the_hash_follows_the_pod_template(template_spec, workgroup_spec):
    spec = warm(template_spec)
    first = pod_hash(pool_deployment(spec, workgroup_spec))
    assert len(first) == 16
    reordered = dict(reversed(list(copy.deepcopy(spec).items())))
    assert pod_hash(pool_deployment(reordered, workgroup_spec)) == first
    # The scheduler's version and the pool's bounds are not the pod's: no roll.
    assert pod_hash(pool_deployment(spec, workgroup_spec, nexus_version="0.2.0")) == first
    assert pod_hash(pool_deployment(warm(template_spec, maxWorkers=9), workgroup_spec)) == first
    changed = copy.deepcopy(spec)
    changed["container"]["versionTag"] = "0.1.3"
    assert pod_hash(pool_deployment(changed, workgroup_spec)) != first
    assert pod_hash(pool_deployment(warm(template_spec, concurrency=2), workgroup_spec)) != first
    assert pod_hash(pool_deployment(spec, workgroup_spec, pool_token="other")) != first
    other_workgroup = {**workgroup_spec, "tolerations": []}
    assert pod_hash(pool_deployment(spec, other_workgroup)) != first


def test_no_deployment_without_a_valid_pool(template_spec, workgroup_spec):
    with pytest.raises(ValueError, match=r"no spec\.warmPool"):
        pool_deployment(template_spec, workgroup_spec)
    with pytest.raises(ValueError, match=r"spec\.warmPool\.concurrency"):
        pool_deployment(warm(template_spec, concurrency=0), workgroup_spec)


# --- spec.warmPool ---------------------------------------------------------------------------


def test_defaults_and_values(template_spec):
    assert WarmPool.from_spec(template_spec) is None
    assert WarmPool.from_spec({**template_spec, "warmPool": None}) is None
    assert WarmPool.from_spec(warm(template_spec)) == WarmPool(
        min_workers=1,
        max_workers=4,
        concurrency=1,
        runs_per_worker=0,
        idle_timeout_seconds=300,
        handler="",
    )
    pool = WarmPool.from_spec(
        warm(
            template_spec,
            minWorkers=0,
            maxWorkers=10,
            concurrency=4,
            runsPerWorker=50,
            idleTimeoutSeconds=0,
            handler="pkg.mod:Class.run",
        )
    )
    assert pool == WarmPool(
        min_workers=0,
        max_workers=10,
        concurrency=4,
        runs_per_worker=50,
        idle_timeout_seconds=0,
        handler="pkg.mod:Class.run",
    )


INT_RANGE = "must be an integer from {} to 2147483647"


@pytest.mark.parametrize(
    ("pool", "problem"),
    [
        ([1], "spec.warmPool: must be an object"),
        ({"minWorkers": -1}, "spec.warmPool.minWorkers: " + INT_RANGE.format(0)),
        ({"maxWorkers": 0, "minWorkers": 0}, "spec.warmPool.maxWorkers: " + INT_RANGE.format(1)),
        ({"concurrency": 0}, "spec.warmPool.concurrency: " + INT_RANGE.format(1)),
        ({"concurrency": 1.0}, "spec.warmPool.concurrency: " + INT_RANGE.format(1)),
        ({"runsPerWorker": True}, "spec.warmPool.runsPerWorker: " + INT_RANGE.format(0)),
        ({"idleTimeoutSeconds": "5m"}, "spec.warmPool.idleTimeoutSeconds: " + INT_RANGE.format(0)),
        ({"maxWorkers": 2**31}, "spec.warmPool.maxWorkers: " + INT_RANGE.format(1)),
        (
            {"minWorkers": 5, "maxWorkers": 2},
            "spec.warmPool.maxWorkers must be >= minWorkers (2 < 5)",
        ),
        ({"minWorkers": 5}, "spec.warmPool.maxWorkers must be >= minWorkers (4 < 5)"),
        ({"handler": 7}, "spec.warmPool.handler: must be a string"),
        (
            {"handler": "algorithm.run"},
            "spec.warmPool.handler: 'algorithm.run' is not 'module:function' (dotted Python names)",
        ),
        (
            {"handler": "a b:c"},
            "spec.warmPool.handler: 'a b:c' is not 'module:function' (dotted Python names)",
        ),
    ],
)
def test_problems_name_the_field(template_spec, pool, problem):
    spec = {**template_spec, "warmPool": pool}
    assert warm_pool_problems(spec) == [problem]
    # ... and make the template invalid (intake answers 400 with them).
    assert problem in validate_template_spec(spec)
    with pytest.raises(ValueError, match=r"spec\.warmPool"):
        WarmPool.from_spec(spec)


def test_a_template_without_or_with_a_valid_pool_is_valid(template_spec):
    assert validate_template_spec(template_spec) == []
    assert validate_template_spec(warm(template_spec, minWorkers=0, handler="m:f")) == []
    assert warm_pool_problems(template_spec) == []


# --- the CRD ---------------------------------------------------------------------------------


def warm_pool_schema() -> dict[str, Any]:
    crd = yaml.safe_load((CRD_DIR / TEMPLATE_CRD_FILE).read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "warmPool" not in spec["required"]  # optional: upstream templates have none
    schema: dict[str, Any] = spec["properties"]["warmPool"]
    return schema


def test_the_crd_declares_warm_pool():
    schema = warm_pool_schema()
    assert schema["type"] == "object"
    assert "required" not in schema
    minimums = {key: field.get("minimum") for key, field in schema["properties"].items()}
    assert minimums == {
        "minWorkers": 0,
        "maxWorkers": 1,
        "concurrency": 1,
        "runsPerWorker": 0,
        "idleTimeoutSeconds": 0,
        "handler": None,
    }
    for key, field in schema["properties"].items():
        expected = "string" if key == "handler" else "integer"
        assert field["type"] == expected, key


NS = "nexus"
TEMPLATES_PATH = f"/apis/science.sneaksanddata.com/v1/namespaces/{NS}/nexusalgorithmtemplates"


@pytest.fixture
async def cluster_http(nursery: Any, tmp_path: Any) -> Any:
    """The embedded cluster with crds/ installed, and a raw HTTP client (its own answers)."""
    import httpx

    from tests.servers.clusters import start_cluster

    cluster, kube = await start_cluster(nursery, tmp_path / "cluster")
    await kube.aclose()
    headers = {"Authorization": "Bearer anything"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as client:
        yield client


def template_cr(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def test_templates_with_and_without_a_pool_are_accepted(cluster_http, template_spec):
    full = warm(
        template_spec,
        minWorkers=0,
        maxWorkers=8,
        concurrency=2,
        runsPerWorker=1000,
        idleTimeoutSeconds=60,
        handler="algorithm.main:run",
    )
    for name, spec in (
        ("upstream", template_spec),
        ("warm", full),
        ("defaults", warm(template_spec)),
    ):
        response = await cluster_http.post(
            TEMPLATES_PATH, json=template_cr(name, spec), params={"fieldValidation": "Strict"}
        )
        assert response.status_code == 201, response.text
        assert "warning" not in response.headers  # every field declared: nothing pruned
        assert response.json()["spec"] == spec


@pytest.mark.parametrize(
    ("pool", "field"),
    [
        ({"minWorkers": "two"}, "spec.warmPool.minWorkers"),
        ({"handler": ["m:f"]}, "spec.warmPool.handler"),
        ({"concurrency": 1.5}, "spec.warmPool.concurrency"),
    ],
)
async def test_a_pool_of_the_wrong_type_is_refused(cluster_http, template_spec, pool, field):
    response = await cluster_http.post(
        TEMPLATES_PATH, json=template_cr("bad", {**template_spec, "warmPool": pool})
    )
    assert response.status_code == 422, response.text
    (cause,) = response.json()["details"]["causes"]
    assert cause["field"] == field
    assert cause["reason"] == "FieldValueTypeInvalid"


async def test_the_embedded_cluster_admits_the_deployment(kube, template_spec, workgroup_spec):
    body = pool_deployment(warm(rich(template_spec)), workgroup_spec)
    created = await kube.create(DEPLOYMENTS, namespace=NS, body=body)
    assert created["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "nexusd",
        "worker",
    ]
    assert created["metadata"]["annotations"][POD_TEMPLATE_HASH] == pod_hash(body)
