"""Node fit (kube/fitting.py): a pure function of Node objects, a pod spec and a workgroup.

Nothing is faked; the Node objects are shaped like the API server's (and the embedded
cluster's), fed to the sink as an informer would.
"""

from __future__ import annotations

from typing import Any

import pytest

from nexusd.kube.client import NODES, WatchEvent
from nexusd.kube.fitting import NodeCapacity


def node(name: str, cpu: str, memory: str, *, labels: Any = None, taints: Any = None) -> Any:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}},
    }


def pod(cpu: str, memory: str = "100Mi", **placement: Any) -> dict[str, Any]:
    return {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        **placement,
    }


GPU_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "group", "operator": "In", "values": ["gpu"]}]}
            ]
        }
    }
}
GPU_TAINT = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
GPU_TOLERATION = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]


@pytest.fixture
def capacity() -> NodeCapacity:
    capacity = NodeCapacity("east")
    capacity.replace_all(
        NODES,
        [
            node("small", "2", "8Gi", labels={"group": "cpu"}),
            node("wide", "64", "16Gi", labels={"group": "cpu"}),
            node("gpu", "8", "512Gi", labels={"group": "gpu"}, taints=GPU_TAINT),
        ],
    )
    capacity.checking = True
    return capacity


def test_a_pod_that_fits_some_node_is_fine(capacity: NodeCapacity) -> None:
    assert capacity.misfit(pod("32", "1Gi"), {}) is None  # "wide"
    assert capacity.misfit(pod("1500m", "8Gi"), {}) is None  # "small", exactly full


def test_one_node_must_hold_every_request_at_once(capacity: NodeCapacity) -> None:
    # 64 CPUs on "wide", 512Gi only behind the gpu taint: no untolerating node has both
    misfit = capacity.misfit(pod("32", "100Gi"), {})
    assert misfit is not None
    assert "requests cpu 32, memory 107374182400" in misfit
    assert "cluster east" in misfit
    assert "cpu 64, memory 17179869184" in misfit  # what the largest eligible node offers


def test_placement_selects_the_nodes_a_pod_may_use(capacity: NodeCapacity) -> None:
    gpu = {"affinity": GPU_AFFINITY, "tolerations": GPU_TOLERATION}
    assert capacity.misfit(pod("4", "300Gi", **gpu), {}) is None
    assert capacity.misfit(pod("16", "1Gi", **gpu), {}) is not None  # gpu has 8 CPUs
    # without the toleration, the only matching node is tainted: nothing to judge by
    assert capacity.misfit(pod("16", "1Gi", affinity=GPU_AFFINITY), {}) is None
    assert capacity.misfit(pod("3", nodeSelector={"group": "cpu"}), {}) is None
    assert capacity.misfit(pod("65", nodeSelector={"group": "cpu"}), {}) is not None


def test_autoscaled_workgroups_and_unlisted_shards_are_never_refused(
    capacity: NodeCapacity,
) -> None:
    huge = pod("1000")
    assert capacity.misfit(huge, {}) is not None
    assert capacity.misfit(huge, {"capabilities": {"autoscaled": True}}) is None
    capacity.checking = False
    assert capacity.misfit(huge, {}) is None


def test_the_verdict_follows_node_changes_and_ignores_heartbeats(capacity: NodeCapacity) -> None:
    workgroup: dict[str, Any] = {}
    assert capacity.misfit(pod("100"), workgroup) is not None
    big = node("big", "128", "1Ti", labels={"group": "cpu"})
    capacity.apply(NODES, WatchEvent(type="ADDED", object=big))
    assert capacity.misfit(pod("100"), workgroup) is None
    generation = capacity._generation
    beat = {**big, "status": {**big["status"], "conditions": [{"type": "Ready"}]}}
    capacity.apply(NODES, WatchEvent(type="MODIFIED", object=beat))
    assert capacity._generation == generation  # a status heartbeat changes nothing
    capacity.apply(NODES, WatchEvent(type="DELETED", object=big))
    assert capacity.misfit(pod("100"), workgroup) is not None


@pytest.mark.parametrize(
    ("operator", "values", "judged"),
    [
        ("In", ["cpu"], True),
        ("NotIn", ["cpu"], False),
        ("Exists", [], True),
        ("DoesNotExist", [], False),
    ],
)
def test_affinity_operators(
    capacity: NodeCapacity, operator: str, values: list[str], judged: bool
) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "group", "operator": operator, "values": values}]}
                ]
            }
        }
    }
    # 65 CPUs fit no node. The group=cpu nodes are selected by In/Exists, so the run is
    # refused; NotIn/DoesNotExist select only the tainted gpu node, which the pod may not
    # use: no eligible node, nothing to judge by, not refused.
    assert (capacity.misfit(pod("65", affinity=affinity), {}) is not None) is judged
