"""Shared fixtures: a whole `nexusd dev` (scheduler + receiver + embedded cluster) on loopback.

Nothing is faked: HTTP goes over real sockets, the store is a real SQLite file, payloads are real
files, and Kubernetes is the embedded cluster reached over HTTP through its kubeconfig.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.modes import dev
from nexusd.modes.services import Running
from nexusd.settings import Settings, load_settings
from tests.servers.postgres import postgres_dsn, postgres_server
from tests.servers.seaweedfs import seaweedfs

if TYPE_CHECKING:
    from pathlib import Path

StartNexus = Callable[..., Awaitable[Running]]

__all__ = ["postgres_dsn", "postgres_server", "seaweedfs"]  # fixtures for every package


def dev_settings(data_dir: Path, **overrides: Any) -> Settings:
    values = {
        "http.host": "127.0.0.1",
        "http.port": 0,
        "data.dir": str(data_dir),
        "dev.kubelet": "scripted",
        "kube.resync": "5s",
    }
    values.update(overrides)
    return load_settings(environ={}, overrides=values)


@pytest.fixture
async def start_nexus(nursery: trio.Nursery, tmp_path: Path) -> StartNexus:
    """Start `nexusd dev`; keyword arguments are settings overrides ("section.key": value)."""

    async def start(**overrides: Any) -> Running:
        settings = dev_settings(tmp_path / "data", **overrides)
        running: Running = await nursery.start(dev.run, settings)
        return running

    return start


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def write_manifests(directory: Path, *documents: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifests.yaml").write_text("\n---\n".join(json.dumps(d) for d in documents))
    return directory


def template(
    name: str, *, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A NexusAlgorithmTemplate for the scripted kubelet (the image is never pulled)."""
    body: dict[str, Any] = {
        "command": "python",
        "args": ["main.py", "--sas-uri=%s", "--request-id=%s"],
        "container": {"registry": "example.test", "image": name, "versionTag": "1.0.0"},
        "computeResources": {"cpuLimit": "1000m", "memoryLimit": "1000Mi"},
        "workgroupRef": {
            "name": "default",
            "group": "science.sneaksanddata.com",
            "kind": "NexusAlgorithmWorkgroup",
        },
        "runtimeEnvironment": {"maximumRetries": 0, "annotations": annotations or {}},
    }
    body.update(spec)
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "metadata": {"name": name},
        "spec": body,
    }


async def wait_for_stage(
    http: httpx.AsyncClient, url: str, algorithm: str, request_id: str, *stages: str
) -> dict[str, Any]:
    """Poll the results route (as SDK clients do) until the run reaches one of `stages`."""
    with trio.fail_after(30):
        while True:
            response = await http.get(
                f"{url}/algorithm/v1/results/{algorithm}/requests/{request_id}"
            )
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            if result["status"] in stages:
                return result
            await trio.sleep(0.02)
