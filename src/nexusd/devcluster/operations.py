"""The API verbs on the store (create, get, list, replace, patch, delete), for HTTP and controllers.

The HTTP layer (`apiserver.py`) only parses requests and renders responses; the in-process
controllers (job controller, kubelet, garbage collector) call the same methods directly, so
their writes go through the same defaulting, resourceVersion stamping and watch history as a
client's, just without a socket.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import secrets
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.clock import Clock, SystemClock

from . import defaults, validation
from .objects import (
    ApiError,
    Obj,
    already_exists,
    bad_request,
    conflict,
    deep_copy,
    forbidden,
    invalid,
    json_patch,
    merge_patch,
    new_uid,
    not_found,
    now_rfc3339,
    random_suffix,
    status_body,
    unsupported_media_type,
    unsupported_patch_type,
)
from .pagination import Page, item_key, paginate
from .resources import (
    CRDS,
    EVENTS,
    JOBS,
    NAMESPACES,
    PODS,
    SERVICEACCOUNTS,
    Registry,
    ResourceType,
)
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector

if TYPE_CHECKING:
    import builtins

    from .storage import Store

JOB_ORPHAN_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set '
    "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress "
    'this warning"'
)
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_NON_SPEC = ("metadata", "status", "kind", "apiVersion")
#: etcd's --max-request-bytes default (1.5 MiB); bigger objects fail with a 500.
ETCD_MAX_REQUEST_BYTES = 1536 * 1024


class Operations:
    """Verbs over a `Store` and a `Registry`; raises `ApiError` with the real server's bodies."""

    def __init__(self, *, store: Store, registry: Registry, clock: Clock | None = None) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock or SystemClock()
        for crd in store.iter(CRDS.key):  # a store loaded from disk serves its CRDs again
            registry.register_crd(crd)

    def now(self) -> str:
        return now_rfc3339(self.clock)

    # -- reads ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return self.with_type(rt, obj)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: int | None = None,
    ) -> tuple[builtins.list[Obj], int]:
        """Matching objects (without kind/apiVersion) and the list's resourceVersion.

        With `resource_version` older than the latest write, the objects are those that
        existed at that version (raises `TooOld` once the history no longer reaches it).
        """
        page, list_rv = self.list_page(
            rt,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            start="",
            limit=0,
        )
        return page.items, list_rv

    def list_page(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None,
        field_selector: str | None,
        resource_version: int | None,
        start: str,
        limit: int,
    ) -> tuple[Page, int]:
        """One page of a list (see `list`) and the list's resourceVersion. Selectors and the
        page are applied to the stored objects and only the page is copied: a client paging
        through 50k Events 500 at a time must not cost 100 copies of all of them."""
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, rt)
        current = self.store.resource_version
        if resource_version is None or resource_version >= current:
            source, list_rv = self.store.iter(rt.key, namespace), current
        else:
            source = self.store.iter_snapshot(rt.key, namespace, resource_version)
            list_rv = resource_version
        across = rt.namespaced and namespace is None
        keyed = [
            (item_key(o, across_namespaces=across), o)
            for o in source
            if labels_match(labels, o) and fields_match(fields, o)
        ]
        keyed.sort(key=operator.itemgetter(0))  # etcd's order is the string key's
        page = paginate(
            keyed,
            rv=list_rv,
            limit=limit,
            start=start,
            filtered=bool(label_selector or field_selector),
        )
        items = [deep_copy(o) for o in page.items]
        for o in items:
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return attrs.evolve(page, items=items), list_rv

    @staticmethod
    def with_type(rt: ResourceType, obj: Obj) -> Obj:
        """The object with `kind` and `apiVersion` first, as the real server serialises it."""
        out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version}
        out.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return out

    # -- create -----------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Obj) -> Obj:
        obj = deep_copy(body)
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        meta = obj["metadata"]
        if rt.namespaced:
            meta["namespace"] = namespace
            self._ensure_namespace(namespace)
        else:
            meta.pop("namespace", None)
        if rt == PODS:
            self._admit_service_account(obj)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = self.now()
        if rt.has_generation:
            meta["generation"] = 1
        defaults.admit_create(rt, obj)
        name = meta["name"]
        self._check_schema(rt, obj)
        if self.store.peek(rt.key, namespace if rt.namespaced else "", name) is not None:
            raise already_exists(rt, name)
        stored = self._put(rt, self._ordered(rt, obj))
        if rt == CRDS:
            self._establish_crd(stored)
        return self.with_type(rt, stored)

    def _admit_service_account(self, pod: Obj) -> None:
        """The ServiceAccount admission plugin: a pod naming a service account that does not
        exist is refused (403) before it gets a name; `default` exists in every namespace."""
        meta = pod["metadata"]
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        if account == "default":
            return
        if self.store.peek(SERVICEACCOUNTS.key, meta["namespace"], account) is None:
            reason = (
                f"error looking up service account {meta['namespace']}/{account}: "
                f'serviceaccount "{account}" not found'
            )
            raise forbidden(PODS, meta.get("name") or meta.get("generateName", ""), reason)

    @staticmethod
    def _check_schema(rt: ResourceType, obj: Obj) -> None:
        """Custom resources: prune unknown fields, then 422 on schema violations (checklist 30)."""
        if rt.schema is None:
            return
        validation.prune(rt.schema, obj)
        causes = validation.validate(rt.schema, obj)
        if causes:
            raise invalid(rt, obj["metadata"].get("name", ""), causes)

    def _put(self, rt: ResourceType, obj: Obj) -> Obj:
        """Store through the etcd request-size limit (checklist 23: 500 over ~1.5 MiB)."""
        if len(json.dumps(obj, separators=(",", ":"))) > ETCD_MAX_REQUEST_BYTES:
            body: Obj = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "etcdserver: request is too large",
                "code": 500,
            }
            raise ApiError(500, body)
        return self.store.put(rt.key, obj)

    def _ordered(self, rt: ResourceType, obj: Obj) -> Obj:
        obj = self.with_type(rt, obj)
        meta = obj["metadata"]
        meta.setdefault("resourceVersion", "")
        order = (
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
        )
        obj["metadata"] = {k: meta[k] for k in order if k in meta} | {
            k: v for k, v in meta.items() if k not in order
        }
        return obj

    def _ensure_namespace(self, namespace: str) -> None:
        """Namespaces spring into existence on first use (keeps the dev flow simple)."""
        if self.store.peek(NAMESPACES.key, "", namespace) is None:
            self.create(NAMESPACES, "", {"metadata": {"name": namespace}})

    def _establish_crd(self, crd: Obj) -> None:
        """Serve the CRD's resources and mark it Established (checklist 30: ~0.1 s later)."""
        self.registry.register_crd(crd)
        now = self.now()
        names = crd["spec"]["names"]
        crd["status"] = {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "acceptedNames": {
                k: names[k]
                for k in ("plural", "singular", "kind", "listKind", "shortNames", "categories")
                if k in names
            },
            "storedVersions": crd["status"].get("storedVersions", []),
        }
        self.store.put(CRDS.key, crd)

    # -- update -----------------------------------------------------------------------------

    def replace(
        self, rt: ResourceType, namespace: str, name: str, body: Obj, *, subresource: str = ""
    ) -> Obj:
        """PUT: optimistic concurrency on metadata.resourceVersion; `/status` writes only status."""
        current = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if current is None:
            raise not_found(rt, name)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request("the name of the object does not match the name on the URL")
        rv = meta.get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        return self._apply(rt, current, body, subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str,
        *,
        subresource: str = "",
    ) -> Obj:
        current = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if current is None:
            raise not_found(rt, name)
        ctype = content_type.split(";")[0].strip()
        if ctype == "application/json-patch+json" and isinstance(patch, list):
            try:
                merged = json_patch(current, patch)
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise ApiError(422, status_body(422, "Invalid", str(exc))) from None
        elif ctype in MERGE_TYPES and isinstance(patch, dict):
            if rt.custom and ctype.startswith("application/strategic"):
                raise unsupported_patch_type()
            rv = (patch.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            merged = merge_patch(current, patch)
        else:
            raise unsupported_media_type()
        return self._apply(rt, current, merged, subresource)

    def _apply(self, rt: ResourceType, current: Obj, new: Obj, subresource: str) -> Obj:
        if subresource == "status":
            updated = deep_copy(current)
            if "status" in new:
                updated["status"] = new["status"]
        else:
            updated = deep_copy(new)
            keep = (
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generateName",
            )
            updated.setdefault("metadata", {})
            for k in keep:
                if k in current["metadata"]:
                    updated["metadata"][k] = current["metadata"][k]
            if rt.has_status:
                if "status" in current:
                    updated["status"] = current["status"]
                else:
                    updated.pop("status", None)
            defaults.admit_update(rt, updated)
            if rt.has_generation and self._spec_of(updated) != self._spec_of(current):
                updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self._check_schema(rt, updated)
        return self.write(rt, updated)

    @staticmethod
    def _spec_of(obj: Obj) -> Obj:
        return {k: v for k, v in obj.items() if k not in _NON_SPEC}

    def write(self, rt: ResourceType, obj: Obj) -> Obj:
        """Store an updated object; finish a deletion whose last finalizer just went away."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt != PODS:
            # The DELETED event shows the last stored state, finalizer included (checklist 19).
            return self.with_type(rt, self._remove(rt, namespace, meta["name"]))
        stored = self._put(rt, self._ordered(rt, obj))
        return self.with_type(rt, stored)

    def _remove(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        gone = self.store.remove(rt.key, namespace, name)
        assert gone is not None
        if rt == CRDS:
            self.registry.unregister_crd(name)
        return gone

    def remove_pod(self, namespace: str, name: str) -> None:
        """The kubelet's final word on a terminating pod (grace period over, containers gone)."""
        if self.store.peek(PODS.key, namespace, name) is not None:
            self.store.remove(PODS.key, namespace, name)

    # -- delete -----------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        grace_seconds: int | None = None,
        preconditions: Obj | None = None,
    ) -> tuple[Obj, builtins.list[str]]:
        """DELETE: returns (response body, Warning header values)."""
        ns = namespace if rt.namespaced else ""
        current = self.store.get(rt.key, ns, name)
        if current is None:
            raise not_found(rt, name)
        meta = current["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(rt, name)
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt, name)
        warnings = []
        if propagation is None:
            if rt == JOBS:
                warnings.append(JOB_ORPHAN_WARNING)
                propagation = "Orphan"
            else:
                propagation = "Background"
        if rt == PODS:
            return self._delete_pod(current, grace_seconds), warnings
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            return self.with_type(rt, current), warnings
        if propagation == "Background" and not finalizers:
            gone = self._remove(rt, ns, name)
            details = {"name": name} | ({"group": rt.group} if rt.group else {})
            details |= {"kind": rt.plural, "uid": gone["metadata"]["uid"]}
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }, warnings
        extra = {"Foreground": FOREGROUND, "Orphan": ORPHAN}.get(propagation)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        meta["finalizers"] = finalizers
        meta["deletionTimestamp"] = self.now()
        meta["deletionGracePeriodSeconds"] = 0
        return self.write(rt, current), warnings

    def _delete_pod(self, pod: Obj, grace_seconds: int | None) -> Obj:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return self.with_type(PODS, pod)
        terminal = pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
        if grace_seconds is None:
            grace_seconds = 0 if terminal else pod["spec"].get("terminationGracePeriodSeconds", 30)
        when = self.clock.now() + dt.timedelta(seconds=grace_seconds)
        meta["deletionTimestamp"] = now_rfc3339(_Fixed(when))
        meta["deletionGracePeriodSeconds"] = grace_seconds
        return self.write(PODS, pod)

    # -- events -----------------------------------------------------------------------------

    def record_event(
        self,
        involved: Obj,
        rt: ResourceType,
        etype: str,
        reason: str,
        message: str,
        *,
        component: str,
    ) -> Obj:
        """A core/v1 Event shaped like the job-controller's (golden file 13)."""
        meta = involved["metadata"]
        now = self.now()
        event: Obj = {
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta.get("namespace", "default"),
            },
            "involvedObject": {
                "kind": rt.kind,
                "namespace": meta.get("namespace", ""),
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": rt.api_version,
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": etype,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        return self.create(EVENTS, event["metadata"]["namespace"], event)


class _Fixed:
    def __init__(self, when: dt.datetime) -> None:
        self._when = when

    def now(self) -> dt.datetime:
        return self._when
