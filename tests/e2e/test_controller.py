"""`nexusd controller` as processes, and `nexusd dev --shards N`.

Real: embedded clusters (a controller cluster and shard clusters) reached over HTTP through
their kubeconfigs, two `nexusd controller` processes from the executable electing a leader
through a Lease, and `nexusd dev` running the bundled `hello` as local processes in each shard.
Nothing is faked. The sync itself (every kind, deletes, drift, rogue objects, shard outages)
is tested in tests/syncing/; this module tests what only whole processes show.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING, Any

import trio

from nexusd.kube.client import TEMPLATES, KubeClient, Resource
from nexusd.kube.credentials import load_credentials
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests
from tests.servers.clusters import start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

NS = "nexus"
SECRETS = Resource("", "v1", "secrets", "Secret")
JOBS = Resource("batch", "v1", "jobs", "Job")
#: Short election timings, so a hand-over takes seconds.
ELECTION = {
    "NEXUS__ELECTION__LEASE_DURATION": "2s",
    "NEXUS__ELECTION__RENEW_DEADLINE": "1.5s",
    "NEXUS__ELECTION__RETRY_PERIOD": "0.25s",
}


def referencing(name: str, secret: str) -> dict[str, Any]:
    """A template whose pods take their environment from Secret `secret`."""
    runtime = {"mappedEnvironmentVariables": [{"secretRef": {"name": secret}}]}
    return template(name, runtimeEnvironment=runtime)


async def present(client: KubeClient, resource: Resource, name: str) -> bool:
    names = {
        item["metadata"]["name"] for item in (await client.list(resource, namespace=NS))["items"]
    }
    return name in names


async def wait_present(clients: list[KubeClient], resource: Resource, name: str) -> float:
    """Seconds until `name` is in every cluster of `clients`."""
    start = trio.current_time()
    with trio.fail_after(30):
        for client in clients:
            while not await present(client, resource, name):
                await trio.sleep(0.05)
    return trio.current_time() - start


async def election(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(f"{url}/readyz")
    assert response.status_code == 200, response.text
    details: dict[str, Any] = response.json()["details"]["election"]
    return details


async def test_two_controllers_one_leads_and_the_other_takes_over(
    nursery: trio.Nursery, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    home, home_client = await start_cluster(nursery, tmp_path / "controller")
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    shard_clients = []
    for name in ("east", "west"):
        cluster, client = await start_cluster(nursery, tmp_path / name)
        (shards_dir / f"{name}.kubeconfig").write_text(cluster.kubeconfig_path.read_text())
        shard_clients.append(client)
    env = {
        "NEXUS__KUBE__KUBECONFIG": str(home.kubeconfig_path),
        "NEXUS__KUBE__SHARDS_DIR": str(shards_dir),
        "NEXUS__LOGGING__LEVEL": "INFO",
        **ELECTION,
    }
    secret = {"metadata": {"name": "db"}, "type": "Opaque", "data": {"password": "c2VjcmV0"}}
    await home_client.create(SECRETS, namespace=NS, body=secret)
    async with contextlib.AsyncExitStack() as stack:
        controllers = [
            await stack.enter_async_context(
                nexusd_process(
                    "controller",
                    env={**env, "NEXUS__ELECTION__IDENTITY": f"replica-{n}"},
                    cwd=tmp_path,
                    log=tmp_path / f"controller-{n}.log",
                )
            )
            for n in (1, 2)
        ]
        with trio.fail_after(10):
            while not any([(await election(http, c.url))["leader"] for c in controllers]):
                await trio.sleep(0.1)
        states = [await election(http, c.url) for c in controllers]
        assert [s["leader"] for s in states].count(True) == 1  # one active, one standby
        leader = next(c for c, s in zip(controllers, states, strict=True) if s["leader"])
        standby = next(c for c in controllers if c is not leader)

        await home_client.create(TEMPLATES, namespace=NS, body=referencing("first", "db"))
        await wait_present(shard_clients, TEMPLATES, "first")
        await wait_present(shard_clients, SECRETS, "db")

        leader.process.send_signal(signal.SIGKILL)  # no release: the lease must run out
        await leader.process.wait()
        killed_at = trio.current_time()
        await home_client.create(TEMPLATES, namespace=NS, body=referencing("second", "db"))
        await wait_present(shard_clients, TEMPLATES, "second")
        taken_over = trio.current_time() - killed_at
        assert (await election(http, standby.url))["leader"]
        assert taken_over < 2 + 1.5 + 5  # lease, renew deadline, and the sync itself
    for client in (home_client, *shard_clients):
        await client.aclose()


async def test_dev_with_shards_runs_each_template_in_its_own_shard(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """`nexusd dev --shards 3`: `hello-shard-N` applied once to the controller cluster reaches
    every shard, and its run's Job is created in shard N only; the results come back. The
    user's `--manifests` (a template and the Secret it references) reach every shard."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"password": "s3cret"},
    }
    manifests = write_manifests(tmp_path / "manifests", secret, referencing("uses-db", "db"))
    running = await start_nexus(
        **{"dev.shards": 3, "dev.kubelet": "local", "dev.manifests": str(manifests)}
    )
    url = running.url
    shards = {
        name: KubeClient(
            credentials=load_credentials(tmp_path / "data" / "shards" / f"{name}.kubeconfig")
        )
        for name in ("shard-1", "shard-2", "shard-3")
    }
    try:
        # the user's manifests went to the controller cluster only, and reached every shard
        await wait_present(list(shards.values()), TEMPLATES, "uses-db")
        await wait_present(list(shards.values()), SECRETS, "db")
        for name in shards:
            await wait_present(list(shards.values()), TEMPLATES, f"hello-{name}")
            response = await http.post(
                f"{url}/algorithm/v1/run/hello-{name}", json={"algorithmParameters": {"name": name}}
            )
            assert response.status_code == 202, response.text
            request_id = response.json()["requestId"]
            result = await wait_for_stage(http, url, f"hello-{name}", request_id, "COMPLETED")
            download = await http.get(result["resultUri"])
            assert download.status_code == 200
            for other, other_client in shards.items():
                has_job = await present(other_client, JOBS, request_id)
                assert has_job == (other == name), (request_id, other)
    finally:
        for client in shards.values():
            await client.aclose()
