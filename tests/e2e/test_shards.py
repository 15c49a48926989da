"""A scheduler in front of two shard clusters: routing, throttling under 429s, faults, trees.

Real: `nexusd scheduler` (in this process) with a SQLite store and payload files, two embedded
clusters reached over HTTP through kubeconfig files (the home cluster `east`, plus `west` from
the shards directory), and the clusters' fault injection (429s, 503s, cut watches). Nothing is
faked.
"""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from nexusd.devcluster import DevCluster, DevClusterConfig, run_dev_cluster
from nexusd.devcluster.faults import FaultPlan
from nexusd.kube.applying import apply
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.modes import scheduler
from nexusd.settings import load_settings
from tests.conftest import template, wait_for_stage
from tests.servers.clusters import install

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.modes.services import Running


def workgroup(name: str, cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmWorkgroup",
        "metadata": {"name": name},
        "spec": {"description": name, "cluster": cluster},
    }


def in_workgroup(name: str, group: str, **spec: Any) -> dict[str, Any]:
    document = template(name, **spec)
    document["spec"]["workgroupRef"]["name"] = group
    return document


@attrs.define
class Fleet:
    east: DevCluster
    west: DevCluster
    nexus: Running
    home: KubeClient

    def cluster(self, name: str) -> DevCluster:
        return self.east if name == "east" else self.west


async def start_cluster(nursery: trio.Nursery, state: Path, **config: Any) -> DevCluster:
    cluster: DevCluster = await nursery.start(
        functools.partial(
            run_dev_cluster, config=DevClusterConfig(state_dir=state, backoff_base=0, **config)
        )
    )
    return cluster


async def start_fleet(
    nursery: trio.Nursery,
    tmp_path: Path,
    clients: list[KubeClient],
    *,
    faults: FaultPlan | None = None,
    **settings: Any,
) -> Fleet:
    """Two clusters with the CRDs, workgroups and templates, then `faults` on `east`, then the
    scheduler."""
    east_cluster = await start_cluster(nursery, tmp_path / "east")
    west_cluster = await start_cluster(nursery, tmp_path / "west")
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(west_cluster.kubeconfig_path, shards / "west.kubeconfig")
    home = KubeClient(credentials=load_credentials(east_cluster.kubeconfig_path))
    clients.append(home)
    documents = [
        workgroup("east", "east"),
        workgroup("west", "west"),
        workgroup("nowhere", "north"),
        in_workgroup("east-algo", "east"),
        in_workgroup("west-algo", "west"),
        in_workgroup(
            "slow-algo",
            "east",
            runtimeEnvironment={"annotations": {"devcluster.nexusd.io/duration": "60"}},
        ),
        in_workgroup("lost-algo", "nowhere"),
    ]
    await install(home, *documents)
    if faults is not None:
        east_cluster.faults.set(faults)
    values = {
        "http.host": "127.0.0.1",
        "http.port": 0,
        "data.dir": str(tmp_path / "data"),
        "kube.kubeconfig": str(east_cluster.kubeconfig_path),
        "kube.shard_name": "east",
        "kube.shards_dir": str(shards),
        "kube.resync": "5s",
        **settings,
    }
    nexus: Running = await nursery.start(scheduler.run, load_settings(environ={}, overrides=values))
    return Fleet(east=east_cluster, west=west_cluster, nexus=nexus, home=home)


async def run(http: httpx.AsyncClient, url: str, algorithm: str, **body: Any) -> str:
    response = await http.post(
        f"{url}/algorithm/v1/run/{algorithm}", json={"algorithmParameters": {}, **body}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
async def clients() -> Any:
    """Kubernetes clients the tests open, closed at teardown."""
    opened: list[KubeClient] = []
    yield opened
    for client in opened:
        await client.aclose()


async def test_runs_go_to_the_shard_of_their_workgroup(
    nursery: trio.Nursery, tmp_path: Path, http: httpx.AsyncClient, clients: list[KubeClient]
) -> None:
    fleet = await start_fleet(nursery, tmp_path, clients)
    url = fleet.nexus.url
    east_run = await run(http, url, "east-algo")
    west_run = await run(http, url, "west-algo")
    for request_id, algorithm in ((east_run, "east-algo"), (west_run, "west-algo")):
        await wait_for_stage(http, url, algorithm, request_id, "RUNNING", "COMPLETED")
    jobs = {
        name: {
            item["metadata"]["name"]
            for item in (
                await http.get(f"{fleet.cluster(name).url}/apis/batch/v1/namespaces/nexus/jobs")
            ).json()["items"]
        }
        for name in ("east", "west")
    }
    assert jobs == {"east": {east_run}, "west": {west_run}}
    # the shard is stored with the run (upstream never writes it)
    buffered = (await http.get(f"{url}/algorithm/v1/buffer/west-algo/requests/{west_run}")).json()
    env = {
        e["name"]: e["value"] for e in buffered["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NEXUS__SHARD_NAME"] == "west"
    lost = await http.post(f"{url}/algorithm/v1/run/lost-algo", json={"algorithmParameters": {}})
    assert lost.status_code == 400
    assert "Workgroup nowhere of algorithm lost-algo targets cluster 'north'" in lost.text
    assert "known: east, west" in lost.text
    details = (await http.get(f"{url}/readyz")).json()["details"]
    assert {"queue:east", "queue:west", "throttle:east", "throttle:west"} <= set(details)


async def test_throttled_api_gets_one_job_per_run_without_a_storm_of_retries(
    nursery: trio.Nursery, tmp_path: Path, http: httpx.AsyncClient, clients: list[KubeClient]
) -> None:
    """Behaviour only: how close the rate comes to the API's limit is a figure, printed by
    tests/perf/test_throttled_submission.py."""
    fleet = await start_fleet(
        nursery,
        tmp_path,
        clients,
        faults=FaultPlan(mutating_rate=50.0, mutating_burst=5, resources=("jobs",)),
        **{"submission.rate": 400, "submission.burst": 50, "submission.workers": 16},
    )
    url = fleet.nexus.url
    runs = 300
    ids = [await run(http, url, "east-algo") for _ in range(runs)]
    with trio.fail_after(60):
        while (await http.get(f"{url}/readyz")).json()["details"]["submitter:east"][
            "submitted"
        ] < runs:
            await trio.sleep(0.1)
    counts = fleet.east.request_counts
    created, throttled = counts[("create", "jobs", 201)], counts[("create", "jobs", 429)]
    assert created == runs  # exactly one Job per accepted run
    assert counts[("create", "jobs", 409)] == 0
    assert throttled > 0  # the limit was reached: the throttle had something to react to
    assert throttled <= 0.1 * created, (throttled, created)  # no storm of retries
    await wait_for_stage(http, url, "east-algo", ids[-1], "RUNNING", "COMPLETED")


async def test_server_errors_and_cut_watches_lose_nothing(
    nursery: trio.Nursery, tmp_path: Path, http: httpx.AsyncClient, clients: list[KubeClient]
) -> None:
    faults = FaultPlan(
        seed=7, error_share=0.3, error_code=503, verbs=("create",), watch_cut_after_events=1
    )
    fleet = await start_fleet(nursery, tmp_path, clients, faults=faults)
    url = fleet.nexus.url
    ids = [await run(http, url, "east-algo") for _ in range(40)]
    for request_id in ids:
        await wait_for_stage(http, url, "east-algo", request_id, "RUNNING", "COMPLETED")
    counts = fleet.east.request_counts
    assert counts[("create", "jobs", 503)] > 0
    assert counts[("create", "jobs", 201)] == 40
    # templates added while watches keep getting cut still reach the cache
    fleet.east.faults.set(error_share=0.0)
    for n in range(3):
        await apply(fleet.home, in_workgroup(f"late-{n}", "east"), namespace="nexus")
    with trio.fail_after(20):
        while True:
            response = await http.post(
                f"{url}/algorithm/v1/run/late-2", json={"algorithmParameters": {}}
            )
            if response.status_code == 202:
                break
            await trio.sleep(0.1)


async def test_cancelling_a_parent_removes_its_execution_tree(
    nursery: trio.Nursery, tmp_path: Path, http: httpx.AsyncClient, clients: list[KubeClient]
) -> None:
    fleet = await start_fleet(nursery, tmp_path, clients)
    url = fleet.nexus.url
    parent = await run(http, url, "slow-algo")
    await wait_for_stage(http, url, "slow-algo", parent, "RUNNING")
    children = [
        await run(
            http,
            url,
            "slow-algo",
            parentRequest={"requestId": parent, "algorithmName": "slow-algo"},
        )
        for _ in range(2)
    ]
    for child in children:
        await wait_for_stage(http, url, "slow-algo", child, "RUNNING")
    response = await http.post(
        f"{url}/algorithm/v1/cancel/slow-algo/requests/{parent}",
        json={"initiator": "me", "reason": "tree", "cancellationPolicy": "Background"},
    )
    assert response.status_code == 200
    jobs = f"{fleet.east.url}/apis/batch/v1/namespaces/nexus/jobs"
    with trio.fail_after(10):
        while (await http.get(jobs)).json()["items"]:
            await trio.sleep(0.05)
    assert (await wait_for_stage(http, url, "slow-algo", parent, "CANCELLED"))["status"]
