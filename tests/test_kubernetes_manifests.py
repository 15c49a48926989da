"""The plain manifests in config/kubernetes: they apply, and grant nexusd exactly what it calls.

Real: the embedded cluster on loopback; every CRD and every manifest document is POSTed to the
REST path its kind's discovery entry names, then read back. The RBAC Roles are compared with a
table of the calls each mode makes, and that table with the calls a real `nexusd scheduler`
makes against the cluster while it runs, submits, links a child run and cancels.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
import yaml

from nexusd import settings as nexus_settings
from nexusd.devcluster import ANNOTATION_DURATION, DevClusterConfig, run_dev_cluster
from nexusd.kube import leases
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.modes import scheduler
from tests.conftest import template, wait_for_stage

if TYPE_CHECKING:
    from nexusd.devcluster import DevCluster

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "config" / "kubernetes"
CRDS = ROOT / "crds"
NS = "nexus"
SCIENCE = "science.sneaksanddata.com"

Call = tuple[str, str, str]  # (verb, API group, resource)

#: Every Kubernetes call `nexusd scheduler` makes, and where.
SCHEDULER_CALLS: frozenset[Call] = frozenset(
    {
        # kube/configuration.py run_configuration_cache -> kube/watching.py (list, then watch)
        ("list", SCIENCE, "nexusalgorithmtemplates"),
        ("watch", SCIENCE, "nexusalgorithmtemplates"),
        ("list", SCIENCE, "nexusalgorithmworkgroups"),
        ("watch", SCIENCE, "nexusalgorithmworkgroups"),
        # pipeline/submitting.py Submitter._create
        ("create", "batch", "jobs"),
        # pipeline/intake.py (the parent run's Job); submitting.py (the Job after a 409)
        ("get", "batch", "jobs"),
        # pipeline/cancelling.py Canceller; submitting.py Submitter._delete
        ("delete", "batch", "jobs"),
        # pipeline/scaling.py PoolScaler: the warm pools' Deployments
        *((verb, "apps", "deployments") for verb in ("list", "create", "update", "delete")),
    }
)
#: Every Kubernetes call `nexusd maintainer` makes, and where.
#: kube/fitting.py: the nodes a run's pod must fit on (the ClusterRole nexusd-scheduler-nodes)
SCHEDULER_NODE_CALLS: frozenset[Call] = frozenset({("list", "", "nodes"), ("watch", "", "nodes")})
MAINTAINER_CALLS: frozenset[Call] = frozenset(
    {
        # pipeline/observing.py informers (kube/watching.py: list, then watch)
        *((verb, "batch", "jobs") for verb in ("list", "watch")),
        *((verb, "", "pods") for verb in ("list", "watch")),
        *((verb, "", "events") for verb in ("list", "watch")),
        # pipeline/recovery.py resubmits lost runs through pipeline/submitting.py: create, and
        # get after a 409
        ("create", "batch", "jobs"),
        ("get", "batch", "jobs"),
        # pipeline/reconciling.py deletes failed Jobs; pipeline/collecting.py expired ones
        ("delete", "batch", "jobs"),
    }
)


#: Every Kubernetes call `nexusd controller` makes in the controller cluster, and where.
CONTROLLER_CALLS: frozenset[Call] = frozenset(
    {
        # nexusd/syncing informers (kube/watching.py: list, then watch) and re-reads (get);
        # the finalizer that carries deletes to the shards (update/patch)
        *(
            (verb, SCIENCE, resource)
            for verb in ("get", "list", "watch", "update", "patch")
            for resource in ("nexusalgorithmtemplates", "nexusalgorithmworkgroups")
        ),
        # the Ready condition and per-shard status
        *(
            (verb, SCIENCE, f"{resource}/status")
            for verb in ("get", "update", "patch")
            for resource in ("nexusalgorithmtemplates", "nexusalgorithmworkgroups")
        ),
        # ownerReference/finalizer writes where OwnerReferencesPermissionEnforcement is on
        ("update", SCIENCE, "nexusalgorithmtemplates/finalizers"),
        ("update", SCIENCE, "nexusalgorithmworkgroups/finalizers"),
        # referenced Secrets/ConfigMaps: read, and the adoption annotation
        *(
            (verb, "", resource)
            for verb in ("get", "list", "watch", "update", "patch")
            for resource in ("secrets", "configmaps")
        ),
        # Synced / ErrResource* events
        ("create", "", "events"),
        ("patch", "", "events"),
        # kube/leases.py LeaderElector: create once, then get + update (renew, release)
        ("create", "coordination.k8s.io", "leases"),
        ("get", "coordination.k8s.io", "leases"),
        ("update", "coordination.k8s.io", "leases"),
    }
)
#: What the controller's kubeconfig identity does in each shard (shard/24-rbac-shard.yaml).
SHARD_CALLS: frozenset[Call] = frozenset(
    (verb, group, resource)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
    for group, resource in (
        (SCIENCE, "nexusalgorithmtemplates"),
        (SCIENCE, "nexusalgorithmworkgroups"),
        ("", "secrets"),
        ("", "configmaps"),
    )
)
#: The one Lease the controller's replicas elect their leader with.
CONTROLLER_LEASE = "nexusd-controller"
#: Where 60-controller.yaml mounts the shards' kubeconfig Secret (kube.shards_dir).
SHARDS_DIR = "/etc/nexusd/shards"


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    """Top level in `kubectl apply -f` order, then the sub-directories (the maintainer)."""
    top = sorted(MANIFESTS.glob("*.yaml"))
    return [*top, *sorted(p for p in MANIFESTS.rglob("*.yaml") if p not in top)]


@functools.cache
def _parsed() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load(path)]


def documents() -> list[dict[str, Any]]:
    """Every document of config/kubernetes (a fresh copy: tests may change them)."""
    return copy.deepcopy(_parsed())


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    return found[0]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(owner, pod spec) of every Deployment and CronJob."""
    out = []
    for doc in documents():
        owner = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Deployment":
            out.append((owner, doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            out.append((owner, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def is_subset(sent: Any, stored: Any) -> bool:
    """Whether everything sent came back (the server may add defaults, never change values)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            key in stored and is_subset(value, stored[key]) for key, value in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(sent) == len(stored)
            and all(is_subset(a, b) for a, b in zip(sent, stored, strict=True))
        )
    return bool(sent == stored)


def role_calls(role: dict[str, Any]) -> set[Call]:
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


# --- applying ------------------------------------------------------------------------------


Paths = dict[tuple[str, str], tuple[str, bool]]


async def rest_paths(http: httpx.AsyncClient) -> Paths:
    """(apiVersion, kind) -> (collection path prefix, namespaced), from discovery."""
    versions = ["v1"]
    for group in (await http.get("/apis")).json()["groups"]:
        versions += [v["groupVersion"] for v in group["versions"]]
    out = {}
    for gv in versions:
        prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        for resource in (await http.get(prefix)).json()["resources"]:
            if "/" not in resource["name"]:
                out[(gv, resource["kind"])] = (
                    f"{prefix}|{resource['name']}",
                    resource["namespaced"],
                )
    return out


async def create(http: httpx.AsyncClient, doc: dict[str, Any], paths: Paths) -> str:
    """POST one document to the collection discovery names for it; returns the object's URL."""
    key = (doc["apiVersion"], doc["kind"])
    assert key in paths, f"the cluster does not serve {key}"
    (prefix, plural), namespaced = paths[key][0].split("|"), paths[key][1]
    namespace = doc["metadata"].get("namespace", NS)
    collection = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    response = await http.post(collection, json=doc, params={"fieldValidation": "Strict"})
    assert response.status_code == 201, f"{doc['kind']}/{doc['metadata']['name']}: {response.text}"
    return f"{collection}/{doc['metadata']['name']}"


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> DevCluster:
    config = DevClusterConfig(state_dir=tmp_path / "cluster", namespace=NS)
    started: DevCluster = await nursery.start(functools.partial(run_dev_cluster, config=config))
    return started


@pytest.fixture
async def http(cluster: DevCluster) -> Any:
    headers = {"Authorization": "Bearer anything"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as client:
        yield client


async def install_crds(http: httpx.AsyncClient) -> Paths:
    """Create the CRDs; returns the REST paths of every kind then served."""
    paths = await rest_paths(http)
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in load(path):
            await create(http, doc, paths)
    return await rest_paths(http)


async def test_every_document_is_accepted_and_readable(
    cluster: DevCluster, http: httpx.AsyncClient
) -> None:
    paths = await install_crds(http)
    for doc in documents():
        url = await create(http, doc, paths)
        stored = (await http.get(url)).json()
        assert (stored["kind"], stored["metadata"]["name"]) == (
            doc["kind"],
            doc["metadata"]["name"],
        )
        assert is_subset(doc, stored), f"{url} came back different"
    kubectl = shutil.which("kubectl")
    if kubectl:  # optional: CI machines may not have it
        result = await trio.run_process(
            [
                kubectl,
                f"--kubeconfig={cluster.kubeconfig_path}",
                "get",
                "deploy,svc,pdb,hpa,role,rolebinding,cronjob,sa,cm,secret",
                "-n",
                NS,
                "-o",
                "name",
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
        names = set(result.stdout.decode().split())
        assert {
            "deployment.apps/nexusd-scheduler",
            "service/nexusd-receiver",
            "poddisruptionbudget.policy/nexusd-scheduler",
            "horizontalpodautoscaler.autoscaling/nexusd-receiver",
            "role.rbac.authorization.k8s.io/nexusd-scheduler",
            "rolebinding.rbac.authorization.k8s.io/nexusd-maintainer",
            "cronjob.batch/nexusd-maintainer",
        } <= names, result.stderr.decode()


async def test_a_deployment_whose_selector_misses_its_labels_is_refused(
    http: httpx.AsyncClient,
) -> None:
    doc = find("Deployment", "nexusd-scheduler")
    broken = {**doc, "spec": {**doc["spec"], "selector": {"matchLabels": {"app": "other"}}}}
    response = await http.post(f"/apis/apps/v1/namespaces/{NS}/deployments", json=broken)
    assert response.status_code == 422
    assert "spec.template.metadata.labels: Invalid value: map[string]string{" in response.text
    assert "`selector` does not match template `labels`" in response.text
    service = {**find("Service", "nexusd-scheduler")}
    service["spec"] = {**service["spec"], "ports": []}
    response = await http.post(f"/api/v1/namespaces/{NS}/services", json=service)
    assert response.status_code == 422
    assert "spec.ports: Required value" in response.text
    binding = find("RoleBinding", "nexusd-scheduler")
    binding["roleRef"]["kind"] = "Deployment"
    response = await http.post(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", json=binding
    )
    assert response.status_code == 422
    assert 'roleRef.kind: Unsupported value: "Deployment"' in response.json()["message"]


# --- RBAC ----------------------------------------------------------------------------------


def test_roles_grant_exactly_the_calls_nexusd_makes() -> None:
    assert role_calls(find("Role", "nexusd-scheduler")) == SCHEDULER_CALLS
    assert role_calls(find("Role", "nexusd-maintainer")) == MAINTAINER_CALLS
    assert role_calls(find("ClusterRole", "nexusd-scheduler-nodes")) == SCHEDULER_NODE_CALLS
    binding = find("ClusterRoleBinding", "nexusd-scheduler-nodes")
    assert binding["roleRef"]["name"] == "nexusd-scheduler-nodes"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nexusd-scheduler", "namespace": NS}
    ]
    for doc in documents():
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):  # only the read of nodes
            assert doc["metadata"]["name"] == "nexusd-scheduler-nodes"
        for rule in doc.get("rules") or []:
            for field in ("verbs", "apiGroups", "resources"):
                assert "*" not in rule.get(field, []), f"{doc['metadata']['name']}: {rule}"
            if rule.get("resourceNames"):  # only the controller's own Lease
                assert doc["metadata"]["name"] == "nexusd-controller", rule
                assert (rule["apiGroups"], rule["resources"]) == (
                    ["coordination.k8s.io"],
                    ["leases"],
                )
            assert not rule.get("nonResourceURLs")


def test_each_mode_runs_as_its_own_account_and_only_those_are_bound() -> None:
    bindings = {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == "RoleBinding"}
    # nexusd-controller-shard is applied in the shards (shard/), not next to the others.
    assert set(bindings) == {
        "nexusd-scheduler",
        "nexusd-maintainer",
        "nexusd-controller",
        "nexusd-controller-shard",
    }
    for name, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]
    for owner, spec in pod_specs():
        mode = owner.split("/")[1]
        assert spec["serviceAccountName"] == mode
    receiver = find("Deployment", "nexusd-receiver")["spec"]["template"]["spec"]
    assert receiver["automountServiceAccountToken"] is False
    assert find("ServiceAccount", "nexusd-receiver")["automountServiceAccountToken"] is False


async def test_a_running_scheduler_calls_nothing_its_role_does_not_grant(
    cluster: DevCluster, http: httpx.AsyncClient, nursery: trio.Nursery, tmp_path: Path
) -> None:
    paths = await install_crds(http)
    workgroup = {
        "apiVersion": f"{SCIENCE}/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": "default", "namespace": NS},
        "spec": {"description": "embedded cluster", "cluster": "dev"},
    }
    await create(http, workgroup, paths)
    await create(http, template("slow", annotations={ANNOTATION_DURATION: "60"}), paths)
    before = dict(cluster.request_counts)
    settings = nexus_settings.load_settings(
        overrides={
            "store.kind": "memory",
            "http.host": "127.0.0.1",
            "http.port": 0,
            "data.dir": str(tmp_path / "data"),
            "kube.kubeconfig": str(cluster.kubeconfig_path),
            "kube.shard_name": "dev",
        }
    )
    running = await nursery.start(functools.partial(scheduler.run, settings))
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as api:
        parent = await api.post("/algorithm/v1/run/slow", json={"algorithmParameters": {}})
        parent_id = parent.json()["requestId"]
        await wait_for_stage(api, running.url, "slow", parent_id, "RUNNING")
        child_body = {
            "algorithmParameters": {},
            "parentRequest": {"requestId": parent_id, "algorithmName": "slow"},
        }
        child = await api.post("/algorithm/v1/run/slow", json=child_body)
        assert child.status_code == 202, child.text
        cancel = {"initiator": "test", "reason": "rbac", "cancellationPolicy": "Background"}
        response = await api.post(f"/algorithm/v1/cancel/slow/requests/{parent_id}", json=cancel)
        assert response.status_code == 200, response.text
    made = {
        (verb, resource)
        for (verb, resource, _code), count in cluster.request_counts.items()
        if count > before.get((verb, resource, _code), 0)
    }
    granted = {
        (verb, resource) for verb, _group, resource in SCHEDULER_CALLS | SCHEDULER_NODE_CALLS
    }
    assert made <= granted, f"calls the Role does not grant: {made - granted}"
    assert {("create", "jobs"), ("get", "jobs"), ("delete", "jobs")} <= made


# --- pods ----------------------------------------------------------------------------------


def test_probes_and_shutdown_fit_nexusd() -> None:
    grace = manifest_settings("nexusd-scheduler").shutdown.grace
    assert grace == nexus_settings.load_settings(environ={}).shutdown.grace
    for kind in ("Deployment",):
        for doc in (d for d in documents() if d["kind"] == kind):
            spec = doc["spec"]["template"]["spec"]
            (container,) = spec["containers"]
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"http": 8080}
            pause = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {})
            assert spec["terminationGracePeriodSeconds"] > grace + pause.get("seconds", 0)
    for owner, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, owner
            assert context["capabilities"] == {"drop": ["ALL"]}, owner
            assert context["allowPrivilegeEscalation"] is False, owner
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]


def test_services_budgets_and_autoscalers_select_their_deployment() -> None:
    for mode in ("nexusd-scheduler", "nexusd-receiver"):
        deployment = find("Deployment", mode)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert labels["app.kubernetes.io/name"] == "nexusd"
        assert labels["app.kubernetes.io/component"] == mode.removeprefix("nexusd-")
        assert find("Service", mode)["spec"]["selector"] == selector
        assert find("Service", mode)["spec"]["ports"][0]["port"] == 8080
        assert find("PodDisruptionBudget", mode)["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector},
        }
        hpa = find("HorizontalPodAutoscaler", mode)["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": mode,
        }
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
        assert deployment["spec"]["replicas"] == 3
    cronjob = find("CronJob", "nexusd-maintainer")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["maintainer", "--once"]


# --- settings ------------------------------------------------------------------------------

KNOWN = {env for _section, _key, _default, env, _doc in nexus_settings.describe()}


def environment(owner: str, spec: dict[str, Any]) -> dict[str, str]:
    """The NEXUS__ environment the pod would get (downward API values made up)."""
    out: dict[str, str] = {}
    (container,) = spec["containers"]
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            out.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            out.update(find("Secret", source["secretRef"]["name"])["stringData"])
    for env in container.get("env") or []:
        if "value" in env:
            out[env["name"]] = env["value"]
        elif "secretKeyRef" in (ref := env["valueFrom"]):
            key = ref["secretKeyRef"]
            out[env["name"]] = find("Secret", key["name"])["stringData"][key["key"]]
        else:
            path = ref["fieldRef"]["fieldPath"]
            out[env["name"]] = {"metadata.name": f"{owner}-0", "metadata.namespace": NS}[path]
    return out


def manifest_settings(owner: str) -> nexus_settings.Settings:
    (spec,) = [s for o, s in pod_specs() if o == f"Deployment/{owner}"]
    return nexus_settings.load_settings(environ=environment(owner, spec))


def test_every_environment_variable_is_a_nexusd_setting_that_parses() -> None:
    for owner, spec in pod_specs():
        env = environment(owner, spec)
        unknown = set(env) - KNOWN
        assert not unknown, f"{owner}: not nexusd settings: {sorted(unknown)}"
        loaded = nexus_settings.load_settings(environ=env)  # bad values raise ConfigError
        if owner == "Deployment/nexusd-controller":  # no store, no payloads: objects only
            assert loaded.kube.runtime_namespace == NS
            continue
        assert loaded.store.kind == "postgres"
        assert loaded.payloads.kind == "s3"
        assert loaded.postgres.dsn.startswith("postgresql://")
        assert loaded.host_name == f"{owner}-0"
        if "receiver" not in owner:
            assert loaded.kube.runtime_namespace == NS


def test_the_readme_names_the_apply_commands() -> None:
    readme = (MANIFESTS / "README.md").read_text()
    assert "kubectl apply -f crds/" in readme
    assert "kubectl apply -f config/kubernetes/" in readme


# --- the configuration controller ----------------------------------------------------------


def test_the_controller_role_grants_exactly_what_it_calls_and_nothing_cluster_wide() -> None:
    role = find("Role", "nexusd-controller")
    assert role["metadata"]["namespace"] == NS
    assert role_calls(role) == CONTROLLER_CALLS
    lease_rules = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    # create cannot be limited by name; everything else is limited to the one Lease.
    assert sorted((r["verbs"], r.get("resourceNames")) for r in lease_rules) == [
        (["create"], None),
        (["get", "update"], [CONTROLLER_LEASE]),
    ]
    assert nexus_settings.ElectionSettings().lease_name == CONTROLLER_LEASE
    assert leases.ElectionSettings().name == CONTROLLER_LEASE
    binding = find("RoleBinding", "nexusd-controller")
    assert binding["metadata"]["namespace"] == NS
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nexusd-controller", "namespace": NS}
    ]
    for doc in documents():
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            subjects = doc.get("subjects") or []
            assert all("controller" not in s["name"] for s in subjects), doc["metadata"]
            assert "controller" not in doc["metadata"]["name"]
        labels = doc["metadata"].get("labels") or {}
        assert not any(k.startswith("rbac.authorization.k8s.io/aggregate") for k in labels)


def test_the_shard_role_is_namespaced_and_grants_only_the_mirrored_kinds() -> None:
    (role,) = [d for d in load(MANIFESTS / "shard" / "24-rbac-shard.yaml") if d["kind"] == "Role"]
    assert role["metadata"] == {
        "name": "nexusd-controller-shard",
        "namespace": NS,
        "labels": {
            "app.kubernetes.io/name": "nexusd",
            "app.kubernetes.io/component": "controller-shard",
        },
    }
    assert role_calls(role) == SHARD_CALLS
    binding = find("RoleBinding", "nexusd-controller-shard")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nexusd-controller-shard", "namespace": NS}
    ]
    assert (
        find("ServiceAccount", "nexusd-controller-shard")["automountServiceAccountToken"] is False
    )


def test_the_controller_runs_two_replicas_one_elected() -> None:
    deployment = find("Deployment", "nexusd-controller")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "nexusd-controller"
    (container,) = pod["containers"]
    assert (container["command"], container["args"]) == (["nexusd"], ["controller"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in container["env"]}
    assert env["NEXUS__ELECTION__IDENTITY"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    # Least privilege: no database, no S3, no URL key.
    assert "envFrom" not in container
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])
    # The shards' kubeconfig Secret is mounted where kube.shards_dir points.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["shards"] == {"name": "shards", "mountPath": SHARDS_DIR, "readOnly": True}
    assert volumes["shards"]["secret"]["secretName"] == "ncc-shards-kube-config"
    loaded = manifest_settings("nexusd-controller")
    assert loaded.kube.shards_dir == Path(SHARDS_DIR)
    assert loaded.election.identity == "nexusd-controller-0"  # the pod name
    assert loaded.http.port == 8080
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert find("PodDisruptionBudget", "nexusd-controller")["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": selector},
    }
    readme = (MANIFESTS / "README.md").read_text()
    for name in ("60-controller.yaml", "23-rbac-controller.yaml", "shard/24-rbac-shard.yaml"):
        assert f"`{name}`" in readme, name


async def test_a_running_election_calls_nothing_the_controller_role_does_not_grant(
    cluster: DevCluster,
) -> None:
    credentials = await trio.to_thread.run_sync(load_credentials, cluster.kubeconfig_path)
    client = KubeClient(credentials=credentials, timeout=5.0)
    settings = leases.ElectionSettings(
        name=CONTROLLER_LEASE, lease_duration=2.0, renew_deadline=1.0, retry_period=0.1
    )
    elector = leases.LeaderElector(client, settings)
    before = dict(cluster.request_counts)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(elector.run, trio.sleep_forever)
            with trio.fail_after(5):
                while not elector.is_leader:
                    await trio.sleep(0.01)
                renewed = cluster.request_counts.get(("update", "leases", 200), 0)
                while cluster.request_counts.get(("update", "leases", 200), 0) < renewed + 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # a clean stop: the Lease is released (an update)
        lease = await client.get(leases.LEASES, namespace=NS, name=CONTROLLER_LEASE)
        assert lease["spec"]["holderIdentity"] == ""
    finally:
        await client.aclose()
    made = {
        (verb, resource)
        for (verb, resource, code), count in cluster.request_counts.items()
        if count > before.get((verb, resource, code), 0)
    }
    granted = {(verb, resource) for verb, _group, resource in CONTROLLER_CALLS}
    assert made <= granted, f"calls the Role does not grant: {made - granted}"
    assert {("create", "leases"), ("get", "leases"), ("update", "leases")} <= made
