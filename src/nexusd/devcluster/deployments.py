"""The Deployment controller: one ReplicaSet per pod template, scaled to `spec.replicas`.

As kube-controller-manager's deployment controller does, it names the ReplicaSet of the
current template `<deployment>-<pod-template-hash>` (an FNV-32a hash of the template spelled
in the alphabet of `rand.SafeEncodeString`; `status.collisionCount` salts it when the name is
taken), labels it, its selector and its template with `pod-template-hash`, owns it
(controller=true, blockOwnerDeletion=true), annotates it `deployment.kubernetes.io/revision`,
`desired-replicas`, `max-replicas`, writes the revision onto the Deployment, and records
Event `ScalingReplicaSet` "Scaled up|down replica set <rs> to <n> from <m>". Old ReplicaSets
beyond `revisionHistoryLimit` are deleted once the rollout is complete.

Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas
(sums over its ReplicaSets), observedGeneration, conditions `Available`
(MinimumReplicasAvailable / MinimumReplicasUnavailable against replicas - maxUnavailable) and
`Progressing` (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
NewReplicaSetAvailable), set with upstream's SetDeploymentCondition rules (a changed condition
moves last, lastTransitionTime kept while the status stays).

Simplified: a template change scales the new ReplicaSet to `spec.replicas` and every old one
to 0 at once, whatever the strategy (RollingUpdate's maxSurge/maxUnavailable only shape the
`Available` condition and the max-replicas annotation; Recreate does not wait for the old pods
to be gone); a paused Deployment only has its status written; no ProgressDeadlineExceeded; no
adoption of orphan ReplicaSets; no rollback annotations.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

import trio

from .controlloop import Key, OwnerIndex, key_of, run_control_loop
from .objects import ApiError, Obj, condition, deep_copy
from .resources import DEPLOYMENTS, REPLICASETS
from .rollout import (
    HASH_LABEL,
    MSG_AVAILABLE,
    MSG_UNAVAILABLE,
    comparable,
    complete,
    progressing,
    set_condition,
    surge_and_unavailable,
    template_hash,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .operations import Operations
    from .storage import Change

logger = logging.getLogger(__name__)

COMPONENT = "deployment-controller"
CREATE_RETRY = 10.0  # seconds before retrying a ReplicaSet create the API server refused
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
#: Deployment annotations not copied onto its ReplicaSets (upstream's skip list).
_NOT_COPIED = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
)
_STATUS_ORDER = (
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "unavailableReplicas",
    "conditions",
    "collisionCount",
)


def _revision(rs: Obj) -> int:
    value = (rs["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(value) if str(value).isdigit() else 0


class DeploymentController:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.replicasets = OwnerIndex(ops, REPLICASETS.key, "Deployment")

    def _event(self, deployment: Obj, reason: str, message: str) -> None:
        try:
            self.ops.record_event(
                deployment, DEPLOYMENTS, "Normal", reason, message, component=COMPONENT
            )
        except ApiError:  # like client-go's recorder: an Event that cannot be stored is dropped
            logger.debug("event %s for %s dropped", reason, deployment["metadata"]["name"])

    def sync(self, key: Key) -> float | None:
        """Converge one Deployment; the trio time it wants another look at, if any."""
        d = self.ops.store.get(DEPLOYMENTS.key, *key)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return None  # its ReplicaSets go with it (garbage collector)
        status = deep_copy(d.get("status") or {})
        rss = self.replicasets.owned(d)
        template = d["spec"].get("template") or {}
        wanted = comparable(template)
        new = next((rs for rs in rss if comparable(rs["spec"]["template"]) == wanted), None)
        olds = [rs for rs in rss if rs is not new]
        revision = max((_revision(rs) for rs in olds), default=0) + 1
        paused = bool(d["spec"].get("paused"))
        if new is None and not paused:
            new, retry = self._create(d, status, revision)
            if new is None:
                return trio.current_time() + retry
            rss.append(new)
            message = f'Created new replica set "{new["metadata"]["name"]}"'
            set_condition(
                status, "Progressing", "True", "NewReplicaSetCreated", message, self.ops.now()
            )
        elif new is not None and not paused:
            new = self._adopt_revision(new, revision)
            if condition(d, "Progressing") is None:
                message = f'Found new replica set "{new["metadata"]["name"]}"'
                set_condition(
                    status, "Progressing", "True", "FoundNewReplicaSet", message, self.ops.now()
                )
        if not paused:
            want = d["spec"].get("replicas", 1)
            if new is not None:
                new = self._scale(d, new, want)
            olds = [self._scale(d, rs, 0) for rs in olds]
            rss = [*olds, *([new] if new is not None else [])]
        if new is not None:
            d = self._annotate(d, str(_revision(new)))
        self._write_status(d, status, rss, new)
        return None

    # -- ReplicaSets ----------------------------------------------------------------------

    def _create(self, d: Obj, status: Obj, revision: int) -> tuple[Obj | None, float]:
        """The new ReplicaSet; or None and the seconds until the next try: at once after a
        name collision (the next hash is salted), `CREATE_RETRY` after a refusal."""
        meta, spec = d["metadata"], d["spec"]
        template = deep_copy(spec.get("template") or {})
        digest = template_hash(template, status.get("collisionCount"))
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: digest}
        selector = deep_copy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: digest}
        surge, _ = surge_and_unavailable(d)
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED
        }
        want = spec.get("replicas", 1)
        annotations |= {
            DESIRED: str(want),
            MAX_REPLICAS: str(want + surge),
            REVISION: str(revision),
        }
        body: Obj = {
            "metadata": {
                "name": f"{meta['name']}-{digest}",
                "labels": dict(tmeta["labels"]),
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": DEPLOYMENTS.api_version,
                        "kind": DEPLOYMENTS.kind,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "replicas": want,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            rs = self.ops.create(REPLICASETS, meta["namespace"], body)
        except ApiError as exc:
            if exc.code != 409:
                logger.warning("deployment %s: cannot create its ReplicaSet: %s", meta["name"], exc)
                return None, CREATE_RETRY
            status["collisionCount"] = status.get("collisionCount", 0) + 1
            self._write_status(d, status, self.replicasets.owned(d), None)
            return None, 0.0
        self.replicasets.add(rs)
        if want > 0:
            message = f"Scaled up replica set {rs['metadata']['name']} to {want} from 0"
            self._event(d, "ScalingReplicaSet", message)
        return rs, 0.0

    def _adopt_revision(self, rs: Obj, revision: int) -> Obj:
        """A template seen before (a rollback) gets the next revision, as upstream's does."""
        if _revision(rs) >= revision:
            return rs
        rs["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
        return self._replace(rs)

    def _scale(self, d: Obj, rs: Obj, replicas: int) -> Obj:
        surge, _ = surge_and_unavailable(d)
        want = d["spec"].get("replicas", 1)
        annotations = rs["metadata"].setdefault("annotations", {})
        wanted = {DESIRED: str(want), MAX_REPLICAS: str(want + surge)}
        before = rs["spec"].get("replicas", 1)
        if before == replicas and wanted.items() <= annotations.items():
            return rs
        annotations |= wanted
        rs["spec"]["replicas"] = replicas
        scaled = self._replace(rs)
        if before != replicas:
            direction = "up" if replicas > before else "down"
            name = rs["metadata"]["name"]
            message = f"Scaled {direction} replica set {name} to {replicas} from {before}"
            self._event(d, "ScalingReplicaSet", message)
        return scaled

    def _replace(self, rs: Obj) -> Obj:
        meta = rs["metadata"]
        try:
            return self.ops.replace(REPLICASETS, meta["namespace"], meta["name"], rs)
        except ApiError:  # changed meanwhile: the change brings this Deployment back
            return rs

    def _cleanup(self, d: Obj, olds: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        done = [
            rs
            for rs in olds
            if rs["spec"].get("replicas", 1) == 0
            and (rs.get("status") or {}).get("replicas", 0) == 0
            and not rs["metadata"].get("deletionTimestamp")
        ]
        done.sort(key=_revision)
        for rs in done[: max(len(done) - limit, 0)]:
            meta = rs["metadata"]
            try:
                self.ops.delete(
                    REPLICASETS, meta["namespace"], meta["name"], preconditions={"uid": meta["uid"]}
                )
            except ApiError:
                logger.debug("cleanup of %s lost a race", meta["name"])

    # -- the Deployment's own writes ------------------------------------------------------

    def _annotate(self, d: Obj, revision: str) -> Obj:
        annotations = d["metadata"].get("annotations") or {}
        if annotations.get(REVISION) == revision:
            return d
        d["metadata"]["annotations"] = {**annotations, REVISION: revision}
        return self.ops.write(DEPLOYMENTS, d)

    def _write_status(self, d: Obj, status: Obj, rss: list[Obj], new: Obj | None) -> None:
        spec, old = d["spec"], d.get("status") or {}
        want = spec.get("replicas", 1)

        def total(field: str, sets: list[Obj]) -> int:
            return sum((rs.get("status") or {}).get(field, 0) for rs in sets)

        counts = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total("replicas", rss),
            "updatedReplicas": total("replicas", [new] if new is not None else []),
            "readyReplicas": total("readyReplicas", rss),
            "availableReplicas": total("availableReplicas", rss),
        }
        desired = sum(rs["spec"].get("replicas", 1) for rs in rss)
        counts["unavailableReplicas"] = max(desired - counts["availableReplicas"], 0)
        for field, value in counts.items():
            if value:
                status[field] = value
            else:
                status.pop(field, None)
        now = self.ops.now()
        _, unavailable = surge_and_unavailable(d)
        if counts["availableReplicas"] >= want - unavailable:
            set_condition(
                status, "Available", "True", "MinimumReplicasAvailable", MSG_AVAILABLE, now
            )
        else:
            set_condition(
                status, "Available", "False", "MinimumReplicasUnavailable", MSG_UNAVAILABLE, now
            )
        if new is not None and not spec.get("paused"):
            self._progress(d, status, counts, new, now)
        status = {k: status[k] for k in _STATUS_ORDER if k in status}
        if status != old:
            current = self.ops.store.get(DEPLOYMENTS.key, *key_of(d))
            if current is not None and current["metadata"]["uid"] == d["metadata"]["uid"]:
                current["status"] = status
                self.ops.write(DEPLOYMENTS, current)
        if complete(d, counts):
            self._cleanup(d, [rs for rs in rss if rs is not new])

    @staticmethod
    def _progress(d: Obj, status: Obj, counts: dict[str, int], new: Obj, now: str) -> None:
        """syncRolloutStatus's Progressing condition."""
        current = condition({"status": status}, "Progressing")
        name = new["metadata"]["name"]
        if (
            current is not None
            and current.get("reason") == "NewReplicaSetAvailable"
            and counts["replicas"] == counts["updatedReplicas"]
        ):
            return
        if complete(d, counts):
            message = f'ReplicaSet "{name}" has successfully progressed.'
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable", message, now)
        elif progressing(d.get("status") or {}, counts):
            stamp = (
                current["lastTransitionTime"] if current and current["status"] == "True" else now
            )
            status["conditions"] = [
                c for c in status.get("conditions") or [] if c["type"] != "Progressing"
            ]
            message = f'ReplicaSet "{name}" is progressing.'
            set_condition(status, "Progressing", "True", "ReplicaSetUpdated", message, now)
            status["conditions"][-1]["lastTransitionTime"] = stamp

    # -- following the store --------------------------------------------------------------

    def dirty_from(self, change: Change) -> Iterable[Key]:
        meta = change.obj["metadata"]
        if change.resource == DEPLOYMENTS.key:
            return [(meta["namespace"], meta["name"])]
        if change.resource == REPLICASETS.key:
            owner = self.replicasets.follow(change)
            return [owner] if owner is not None else []
        return []

    def resync(self) -> set[Key]:
        self.replicasets.rebuild()
        return {key_of(d) for d in self.ops.store.iter(DEPLOYMENTS.key)}


async def run_deployment_controller(
    *, ops: Operations, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    ctrl = DeploymentController(ops)
    await run_control_loop(
        ops=ops,
        sync=ctrl.sync,
        dirty_from=ctrl.dirty_from,
        resync=ctrl.resync,
        task_status=task_status,
    )


__all__ = ["DeploymentController", "run_deployment_controller"]
