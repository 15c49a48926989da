"""Fixtures for the kube tests: the contract's example template and workgroup (§5.1, §5.2), and
the embedded cluster (`nexusd.devcluster`) with a `KubeClient` connected to it over HTTP."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import yaml

from nexusd.kube.client import CRDS, KubeClient
from nexusd.kube.credentials import load_credentials

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

HELLO_TEMPLATE_SPEC: dict[str, Any] = {
    "command": "python",
    "args": ["main.py", "--sas-uri=%s", "--request-id=%s"],
    "container": {
        "registry": "ghcr.io/sneaksanddata",
        "image": "nexus-hello",
        "versionTag": "0.1.2",
    },
    "computeResources": {"cpuLimit": "1000m", "memoryLimit": "1000Mi"},
    "errorHandlingBehaviour": {"fatalExitCodes": [137], "transientExitCodes": [139]},
    "datadogIntegrationSettings": {"mountDatadogSocket": False},
    "runtimeEnvironment": {
        "deadlineSeconds": 120,
        "maximumRetries": 1,
        "environmentVariables": [
            {"name": "NEXUS__CLIENT__RECEIVER", "value": "http://nexus-receiver.nexus:8080"}
        ],
    },
    "workgroupRef": {
        "name": "default",
        "group": "science.sneaksanddata.com",
        "kind": "NexusAlgorithmWorkgroup",
    },
}

DEFAULT_WORKGROUP_SPEC: dict[str, Any] = {
    "description": "default workgroup",
    "cluster": "kind-nexus-shard-0",
    "capabilities": {"amd64": True},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.sneaksanddata.com/service-node-group",
                                "operator": "In",
                                "values": ["default"],
                            }
                        ]
                    }
                ]
            }
        }
    },
    "tolerations": [
        {
            "key": "kubernetes.sneaksanddata.com/service-node-group",
            "operator": "Equal",
            "value": "default",
            "effect": "NoSchedule",
        }
    ],
}


@pytest.fixture
def template_spec() -> dict[str, Any]:
    """A fresh copy of the contract's hello-world template spec."""
    return copy.deepcopy(HELLO_TEMPLATE_SPEC)


@pytest.fixture
def workgroup_spec() -> dict[str, Any]:
    """A fresh copy of the contract's default workgroup spec."""
    return copy.deepcopy(DEFAULT_WORKGROUP_SPEC)


# --- the embedded cluster, reached over HTTP exactly like a real one -------------------------

TEMPLATE_CRD_FILE = "nexusalgorithmtemplates.yaml"
WORKGROUP_CRD_FILE = "nexusalgorithmworkgroups.yaml"
CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture
async def dev_cluster(nursery: trio.Nursery, tmp_path: Path) -> Any:
    """A running `nexusd.devcluster` (scripted kubelet), torn down with the test's nursery."""
    from nexusd.devcluster import DevClusterConfig, run_dev_cluster

    config = DevClusterConfig(state_dir=tmp_path / "devcluster")
    return await nursery.start(functools.partial(run_dev_cluster, config=config))


@pytest.fixture
async def kube(dev_cluster: Any) -> AsyncIterator[KubeClient]:
    """A `KubeClient` built from the kubeconfig the dev cluster wrote, with the CRDs installed."""
    credentials = await trio.to_thread.run_sync(load_credentials, dev_cluster.kubeconfig_path)
    client = KubeClient(credentials=credentials, timeout=10.0)
    try:
        for name in (TEMPLATE_CRD_FILE, WORKGROUP_CRD_FILE):
            body = yaml.safe_load((CRD_DIR / name).read_text())
            await client.create(CRDS, namespace=None, body=body)
        yield client
    finally:
        await client.aclose()


def template_object(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A NexusAlgorithmTemplate body (the contract's hello-world spec by default)."""
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name},
        "spec": copy.deepcopy(HELLO_TEMPLATE_SPEC) if spec is None else spec,
    }


def workgroup_object(name: str, cluster: str = "shard-0") -> dict[str, Any]:
    """A NexusAlgorithmWorkgroup body."""
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": name},
        "spec": {"cluster": cluster, "description": f"workgroup {name}"},
    }


@pytest.fixture
def make_template() -> Callable[..., dict[str, Any]]:
    """Factory: `make_template(name, spec=None)` -> a NexusAlgorithmTemplate body."""
    return template_object


@pytest.fixture
def make_workgroup() -> Callable[..., dict[str, Any]]:
    """Factory: `make_workgroup(name, cluster='shard-0')` -> a NexusAlgorithmWorkgroup body."""
    return workgroup_object
