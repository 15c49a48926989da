"""Node capacity per shard: can a run's pod fit on any node its workgroup may use, ever?

A run whose resource requests exceed what every eligible node offers would wait Pending until
its deadline and end DEADLINE_EXCEEDED with a misleading cause. Intake asks `NodeCapacity`
first and answers 400 instead. Eligible nodes are those the pod's placement allows (the
workgroup's nodeSelector, required node affinity and tolerations of NoSchedule/NoExecute
taints); the pod fits when one of them has allocatable room for all of its requests at once
(Kubernetes places a pod on one node).

The check only refuses what is certain:
- a workgroup marked `capabilities.autoscaled: true` may get new, larger nodes: never refused;
- a shard whose nodes cannot be listed (no RBAC for nodes, or not listed yet) is not checked;
- when no current node matches the placement at all, the run is not refused either (nodes of
  that group may be scaled to zero): the maintainer's Unschedulable rule speaks then.

The informer on Nodes keeps a few distinct allocatable vectors per placement; kubelet status
heartbeats (which change no labels, taints or allocatable) cost a comparison, not a rebuild.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from nexusd.core.errors import KubeRejected
from nexusd.core.quantities import quantity_amount
from nexusd.kube.client import NODES
from nexusd.kube.watching import run_informer

if TYPE_CHECKING:
    from decimal import Decimal

    from nexusd.kube.client import KubeClient, Resource, WatchEvent

logger = logging.getLogger(__name__)

_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@attrs.frozen
class NodeShape:
    """What placement and fit read of a Node."""

    name: str
    labels: tuple[tuple[str, str], ...]
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect)
    allocatable: tuple[tuple[str, Decimal], ...]

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> NodeShape:
        metadata = node.get("metadata") or {}
        taints = (node.get("spec") or {}).get("taints") or []
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        amounts = []
        for resource, value in allocatable.items():
            try:
                amounts.append((str(resource), quantity_amount(value)))
            except ValueError:
                continue  # a value Kubernetes itself would not hold: nothing to fit against
        return cls(
            name=str(metadata.get("name", "")),
            labels=tuple(
                sorted((str(k), str(v)) for k, v in (metadata.get("labels") or {}).items())
            ),
            taints=tuple(
                (str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
                for t in taints
                if isinstance(t, Mapping)
            ),
            allocatable=tuple(sorted(amounts)),
        )


class NodeCapacity:
    """The nodes of one shard as placement and fit see them (an informer sink)."""

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.checking = False  # set once the nodes are listed; never if they cannot be
        self._nodes: dict[str, NodeShape] = {}
        self._generation = 0
        # placement object -> (its object, generation, distinct allocatable vectors)
        self._eligible: dict[int, tuple[object, int, list[dict[str, Decimal]]]] = {}

    # --- the informer's sink -------------------------------------------------------------

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        self._nodes = {shape.name: shape for shape in map(NodeShape.of, items)}
        self._changed()

    def resync(self, resource: Resource) -> None:
        """The informer's periodic resync: nothing changed, so no fit changes either."""

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        shape = NodeShape.of(event.object)
        if event.type == "DELETED":
            if self._nodes.pop(shape.name, None) is not None:
                self._changed()
        elif event.type in ("ADDED", "MODIFIED") and self._nodes.get(shape.name) != shape:
            self._nodes[shape.name] = shape
            self._changed()

    def _changed(self) -> None:
        self._generation += 1
        self._eligible.clear()

    # --- the check -----------------------------------------------------------------------

    def misfit(self, pod: Mapping[str, Any], workgroup: Mapping[str, Any]) -> str | None:
        """Why the pod can never be placed (its requests fit no eligible node), or None."""
        if not self.checking or (workgroup.get("capabilities") or {}).get("autoscaled"):
            return None
        requests = _requests(pod)
        if not requests:
            return None
        eligible = self._eligible_vectors(pod, workgroup)
        if not eligible:
            return None
        if any(
            all(room.get(r, 0) >= amount for r, amount in requests.items()) for room in eligible
        ):
            return None
        wanted = ", ".join(f"{r} {_show(amount)}" for r, amount in sorted(requests.items()))
        largest = "; ".join(
            ", ".join(f"{r} {_show(room.get(r, 0))}" for r in sorted(requests)) for room in eligible
        )
        return (
            f"the run's pod requests {wanted}, which no node of cluster {self.shard} that its "
            f"workgroup can use offers (they offer {largest}); the CPU request is 10% of the "
            "CPU limit unless computeResources.requests says otherwise"
        )

    def _eligible_vectors(
        self, pod: Mapping[str, Any], workgroup: Mapping[str, Any]
    ) -> list[dict[str, Decimal]]:
        """The distinct allocatable vectors of the nodes the placement allows, cached per
        workgroup object (the configuration cache replaces it when it changes)."""
        cached = self._eligible.get(id(workgroup))
        if cached is not None and cached[0] is workgroup and cached[1] == self._generation:
            return cached[2]
        vectors: dict[tuple[tuple[str, Decimal], ...], dict[str, Decimal]] = {}
        for node in self._nodes.values():
            if _placeable(pod, node):
                vectors.setdefault(node.allocatable, dict(node.allocatable))
        found = list(vectors.values())
        self._eligible[id(workgroup)] = (workgroup, self._generation, found)
        return found


def _requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """The pod's summed container requests (intake built and validated them)."""
    total: dict[str, Decimal] = {}
    for container in pod.get("containers") or []:
        for resource, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[resource] = total.get(resource, 0) + quantity_amount(value)
    return total


def _placeable(pod: Mapping[str, Any], node: NodeShape) -> bool:
    labels = dict(node.labels)
    selector = pod.get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return False
    affinity = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = affinity.get("nodeSelectorTerms") or []
    if terms and not any(_term_matches(term, labels, node.name) for term in terms):
        return False
    tolerations = pod.get("tolerations") or []
    return all(
        effect not in _BLOCKING_EFFECTS
        or any(_tolerates(t, key, value, effect) for t in tolerations)
        for key, value, effect in node.taints
    )


def _term_matches(term: Mapping[str, Any], labels: dict[str, str], name: str) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no node (Kubernetes' rule)
    return all(_expression_matches(e, labels) for e in expressions) and all(
        _expression_matches(f, {"metadata.name": name}) for f in fields
    )


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    values = [str(v) for v in expression.get("values") or []]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _tolerates(toleration: Mapping[str, Any], key: str, value: str, effect: str) -> bool:
    if toleration.get("effect") and toleration["effect"] != effect:
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == key
    return toleration.get("key") == key and str(toleration.get("value", "")) == value


def _show(amount: Decimal | int) -> str:
    return f"{amount.normalize():f}" if not isinstance(amount, int) else str(amount)


async def run_node_capacity(
    *,
    client: KubeClient,
    capacity: NodeCapacity,
    resync_seconds: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep `capacity` current; report started once the nodes are listed, or at once (with
    the check off for this shard) when this identity may not list nodes."""
    started = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_informer(
                    client=client,
                    resources=[NODES],
                    namespace=None,
                    sink=capacity,
                    resync_seconds=resync_seconds,
                    task_status=task_status,
                )
            )
            capacity.checking, started = True, True
            task_status.started()
    except KubeRejected as exc:
        capacity.checking = False
        logger.warning(
            "cannot list the nodes of shard %s (%s): runs are not checked against node "
            "capacity there (grant list/watch on nodes to the scheduler to enable it)",
            capacity.shard,
            exc,
        )
        if not started:
            task_status.started()
        await trio.sleep_forever()
    raise AssertionError("the informer never returns")  # pragma: no cover
