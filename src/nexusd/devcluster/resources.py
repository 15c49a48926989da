"""The resource types the embedded cluster serves, and the registry that grows with CRDs.

A resource type is what a URL path names (`/apis/batch/v1/namespaces/x/jobs`): group, version,
plural, plus the kind and scope the API server needs to shape objects, lists, errors and
discovery documents. Built-ins are fixed; custom resources are added when their
CustomResourceDefinition is created and removed when it is deleted.
"""

from __future__ import annotations

from typing import Any

import attrs

#: Verbs of a built-in collection resource, in the order the real /api/v1 lists them.
BUILTIN_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
#: Verbs of a custom resource, in the order the real apiextensions server lists them (checklist 30).
CUSTOM_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")


@attrs.frozen
class ResourceType:
    """One servable collection, e.g. batch/v1 jobs."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    #: Objects of this type carry metadata.generation (bumped on spec changes).
    has_generation: bool = False
    custom: bool = False
    #: The served version's openAPIV3Schema (custom resources only); not part of equality.
    schema: dict[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: objects are shared across versions of a group, keyed by group+plural."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """`jobs.batch` or `pods`, the form used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """`Job.batch` or `Pod`, the form used in 422 messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.custom:
            return CUSTOM_VERBS
        if not self.namespaced:
            return tuple(v for v in BUILTIN_VERBS if v != "deletecollection")
        return BUILTIN_VERBS


PODS = ResourceType(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    short_names=("po",),
    categories=("all",),
    has_status=True,
    has_generation=True,
)
EVENTS = ResourceType("", "v1", "events", "event", "Event", short_names=("ev",))
CONFIGMAPS = ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", short_names=("cm",))
SECRETS = ResourceType("", "v1", "secrets", "secret", "Secret")
SERVICEACCOUNTS = ResourceType(
    "", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", short_names=("sa",)
)
NAMESPACES = ResourceType(
    "",
    "v1",
    "namespaces",
    "namespace",
    "Namespace",
    namespaced=False,
    short_names=("ns",),
    has_status=True,
)
NODES = ResourceType(
    "", "v1", "nodes", "node", "Node", namespaced=False, short_names=("no",), has_status=True
)
JOBS = ResourceType(
    "batch", "v1", "jobs", "job", "Job", categories=("all",), has_status=True, has_generation=True
)
CRDS = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "customresourcedefinition",
    "CustomResourceDefinition",
    namespaced=False,
    short_names=("crd", "crds"),
    categories=("api-extensions",),
    has_status=True,
    has_generation=True,
)

SERVICES = ResourceType(
    "",
    "v1",
    "services",
    "service",
    "Service",
    short_names=("svc",),
    categories=("all",),
    has_status=True,
)
# Run by deployments.py (Deployment -> ReplicaSets) and replicasets.py (ReplicaSet -> Pods).
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    short_names=("deploy",),
    categories=("all",),
    has_status=True,
    has_generation=True,
)
REPLICASETS = ResourceType(
    "apps",
    "v1",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    short_names=("rs",),
    categories=("all",),
    has_status=True,
    has_generation=True,
)
#: The kinds with a `/scale` subresource (autoscaling/v1 Scale over `spec.replicas`).
SCALABLE = (DEPLOYMENTS, REPLICASETS)
CRONJOBS = ResourceType(
    "batch",
    "v1",
    "cronjobs",
    "cronjob",
    "CronJob",
    short_names=("cj",),
    categories=("all",),
    has_status=True,
    has_generation=True,
)
PDBS = ResourceType(
    "policy",
    "v1",
    "poddisruptionbudgets",
    "poddisruptionbudget",
    "PodDisruptionBudget",
    short_names=("pdb",),
    has_status=True,
    has_generation=True,
)
HPAS = ResourceType(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    "HorizontalPodAutoscaler",
    short_names=("hpa",),
    categories=("all",),
    has_status=True,
)
# Leader election (`nexusd controller` replicas, kube/leases.py): plain CRUD with resourceVersion
# conflicts, list and watch. Like the real type: no status subresource, no generation, no short
# names.
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease")
_RBAC = "rbac.authorization.k8s.io"
ROLES = ResourceType(_RBAC, "v1", "roles", "role", "Role")
ROLEBINDINGS = ResourceType(_RBAC, "v1", "rolebindings", "rolebinding", "RoleBinding")
CLUSTERROLES = ResourceType(
    _RBAC, "v1", "clusterroles", "clusterrole", "ClusterRole", namespaced=False
)
CLUSTERROLEBINDINGS = ResourceType(
    _RBAC, "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", namespaced=False
)
#: Defaulted and validated by workloads.py; of these only Deployments and ReplicaSets have
#: controllers, the rest are stored so that deployment manifests apply.
MANIFEST_TYPES = (
    SERVICES,
    DEPLOYMENTS,
    REPLICASETS,
    CRONJOBS,
    PDBS,
    HPAS,
    ROLES,
    ROLEBINDINGS,
    CLUSTERROLES,
    CLUSTERROLEBINDINGS,
)

BUILTINS = (
    CONFIGMAPS,
    EVENTS,
    NAMESPACES,
    NODES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    JOBS,
    CRDS,
    LEASES,
    *MANIFEST_TYPES,
)


def resource_from_crd(crd: dict[str, object], version: str) -> ResourceType:
    """The resource type a CRD serves at `version`."""
    spec = crd["spec"]
    assert isinstance(spec, dict)
    names = spec["names"]
    subresources: dict[str, object] = {}
    schema = None
    for v in spec.get("versions") or []:
        if v.get("name") == version:
            subresources = v.get("subresources") or {}
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
    return ResourceType(
        group=spec["group"],
        version=version,
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        has_status="status" in subresources,
        has_generation=True,
        custom=True,
        schema=schema if isinstance(schema, dict) else None,
    )


class Registry:
    """Which (group, version, plural) the server answers for; built-ins plus served CRD versions."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_crd: dict[str, list[ResourceType]] = {}
        for rt in BUILTINS:
            self._add(rt)

    def _add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        """Any served version of the (group, plural) storage key."""
        for rt in self._types.values():
            if rt.key == key:
                return rt
        return None

    def has_group_version(self, group: str, version: str) -> bool:
        return any(g == group and v == version for g, v, _ in self._types)

    def has_group(self, group: str) -> bool:
        return any(g == group for g, _, _ in self._types)

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self._types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def register_crd(self, crd: dict[str, object]) -> None:
        """Serve every `served` version of the CRD (replacing an earlier registration)."""
        meta = crd["metadata"]
        assert isinstance(meta, dict)
        self.unregister_crd(meta["name"])
        spec = crd["spec"]
        assert isinstance(spec, dict)
        added = []
        for v in spec.get("versions") or []:
            if v.get("served", True):
                rt = resource_from_crd(crd, v["name"])
                self._add(rt)
                added.append(rt)
        self._by_crd[meta["name"]] = added

    def unregister_crd(self, name: str) -> None:
        for rt in self._by_crd.pop(name, []):
            self._types.pop((rt.group, rt.version, rt.plural), None)
