"""Simulated Nodes: configured node groups become v1 Node objects served through the API.

Each `NodeGroup` of `DevClusterConfig.node_groups` yields `count` Nodes named `<name>-<i>`
with the group's labels, taints and capacity (cpu, memory, pods), so `kubectl get nodes` and
the scheduler see the same thing. The default is one untainted `devcluster-node-0`. The Nodes
are ordinary objects afterwards: a client may label, taint or delete them, and the scheduler
reacts (checklist 13). Quantities follow resource.Quantity's common forms (`500m`, `2`,
`128Mi`, `1G`).

The configuration is the truth about Nodes: a cluster started on a persisted store
re-registers them from its groups (the stored Nodes are replaced, those of no group deleted).
`NodeGroup.for_host()` gives the node of the local kubelet this machine's capacity, so that the
scheduler keeps the number of algorithm processes within what the host can run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs

from nexusd.core.quantities import quantity_amount

from .objects import ApiError
from .resources import NODES

if TYPE_CHECKING:
    from .objects import Obj
    from .operations import Operations

DEFAULT_NODE_NAME = "devcluster-node-0"
#: `NodeGroup.for_host`: pods per CPU, and the least a host gets (see there why).
HOST_PODS_PER_CPU = 8
HOST_MIN_PODS = 4
NODE_GROUP_LABEL = "kubernetes.sneaksanddata.com/service-node-group"


def parse_quantity(value: Any) -> float:
    """A resource.Quantity string (or number) as a float in base units; cpu `500m` -> 0.5.

    The grammar and rounding are the API server's (`nexusd.core.quantities`): `1e9`, `500u`,
    `2Pi` parse as they do there. ValueError for what the API server would refuse.
    """
    return float(quantity_amount(value))


@attrs.frozen
class NodeGroup:
    """A set of identical simulated nodes (one per workgroup, say)."""

    name: str
    """Nodes are named `<name>-0`, `<name>-1`, …"""
    count: int = 1
    labels: dict[str, str] = attrs.field(factory=dict)
    """Extra node labels; `kubernetes.io/hostname` and the os/arch labels are always set."""
    taints: tuple[dict[str, str], ...] = ()
    """Node taints, e.g. `{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}`."""
    cpu: str = "32"
    memory: str = "256Gi"
    pods: int = 110
    autoscale_max: int | None = None
    """Simulated cluster autoscaler: grow up to this many nodes while pods that a new node of
    this group would fit are pending (None: fixed size)."""
    autoscale_delay: float = 1.0
    """Seconds a fitting pod must have been pending before one node is added."""

    @classmethod
    def for_workgroup(cls, workgroup: str, **kwargs: Any) -> NodeGroup:
        """One group per workgroup, labelled the way nexus templates select it."""
        labels = {NODE_GROUP_LABEL: workgroup, **kwargs.pop("labels", {})}
        return cls(name=workgroup, labels=labels, **kwargs)

    @classmethod
    def for_host(cls, name: str = "devcluster-node", **kwargs: Any) -> NodeGroup:
        """One node with this machine's capacity, for the local kubelet (pods are processes).

        cpu is the number of CPUs this process may run on, memory the physical memory, and
        pods `max(HOST_MIN_PODS, HOST_PODS_PER_CPU * cpus)`. The pod count is what really
        bounds a burst of algorithm processes (a backlog, a restart): templates request little
        or no cpu, so the default node's 32 CPUs / 110 pods let hundreds start at once on a
        2-core laptop. Dev algorithms mostly wait on I/O, so 8 per CPU (16 on 2 cores) keeps the
        host busy but responsive; pods beyond it stay Pending until one finishes.
        """
        if hasattr(os, "sched_getaffinity"):
            cpus = len(os.sched_getaffinity(0))
        else:  # macOS has no affinity masks
            cpus = os.cpu_count() or 1
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        pods = max(HOST_MIN_PODS, HOST_PODS_PER_CPU * cpus)
        return cls(name=name, cpu=str(cpus), memory=str(memory), pods=pods, **kwargs)


DEFAULT_NODE_GROUPS = (NodeGroup(name="devcluster-node"),)


def node_name(group: NodeGroup, index: int) -> str:
    return f"{group.name}-{index}"


def node_object(group: NodeGroup, index: int) -> Obj:
    name = node_name(group, index)
    resources = {"cpu": group.cpu, "memory": group.memory, "pods": str(group.pods)}
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "type": "devcluster",
        **group.labels,
    }
    spec: Obj = {}
    if group.taints:
        spec["taints"] = [dict(t) for t in group.taints]
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": "6.0.0-devcluster",
                "osImage": "devcluster",
                "kubeProxyVersion": "",
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.36.2",
                "containerRuntimeVersion": "devcluster://1",
            },
            "phase": "Running",
        },
    }


def _registered(ops: Operations, group: NodeGroup, index: int) -> Obj:
    """The Node as its kubelet registers it: conditions stamped now."""
    obj = node_object(group, index)
    stamp = ops.now()
    for c in obj["status"]["conditions"]:
        c["lastHeartbeatTime"] = stamp
        c["lastTransitionTime"] = stamp
    return obj


def create_node(ops: Operations, group: NodeGroup, index: int) -> Obj | None:
    """Create one node of a group (None if it exists); status is set like a kubelet registering."""
    obj = _registered(ops, group, index)
    try:
        created = ops.create(NODES, "", obj)
    except ApiError:
        return None
    created["status"] = obj["status"]
    return ops.write(NODES, created)


def register_nodes(ops: Operations, groups: tuple[NodeGroup, ...]) -> None:
    """Make the Nodes exactly those of `groups`. A stored Node of the same name keeps its uid
    and creationTimestamp but takes the group's labels, taints and capacity; a stored Node of
    no group (another configuration's, or the autoscaler's) is deleted."""
    wanted = {node_name(g, i): (g, i) for g in groups for i in range(g.count)}
    for node in ops.store.list(NODES.key):
        if node["metadata"]["name"] not in wanted:
            ops.delete(NODES, "", node["metadata"]["name"])
    for name, (group, index) in wanted.items():
        stored = ops.store.get(NODES.key, "", name)
        if stored is None:
            create_node(ops, group, index)
            continue
        obj = _registered(ops, group, index)
        obj["metadata"] = {**stored["metadata"], "labels": obj["metadata"]["labels"]}
        ops.write(NODES, obj)


__all__ = [
    "DEFAULT_NODE_GROUPS",
    "DEFAULT_NODE_NAME",
    "NODE_GROUP_LABEL",
    "NodeGroup",
    "parse_quantity",
    "register_nodes",
]
