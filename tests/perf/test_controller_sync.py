"""Benchmark: sync latency of `nexusd controller`, from applying templates in the controller
cluster to their copies being present in every shard.

A controller cluster and 3 shard clusters (embedded, each in this test process, over HTTP),
one `nexusd controller` process. For 1, 10 and 100 templates applied at once (each with a
referenced Secret), the time until the last copy is present in all three shards, and the
controller's CPU per template copy. The clusters share this process, so the figures include
their own time; they are for comparing versions of nexusd on one machine.

    nox -s perf -- -k controller_sync
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from nexusd.kube.client import TEMPLATES, KubeClient, Resource
from tests.conftest import template
from tests.perf.measuring import cpu_seconds
from tests.servers.clusters import start_cluster
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from pathlib import Path

NS = "nexus"
SECRETS = Resource("", "v1", "secrets", "Secret")
SHARDS = ("shard-1", "shard-2", "shard-3")


async def names(client: KubeClient, resource: Resource) -> set[str]:
    items = (await client.list(resource, namespace=NS))["items"]
    return {item["metadata"]["name"] for item in items}


async def test_controller_sync_latency(nursery: trio.Nursery, tmp_path: Path) -> None:
    home, home_client = await start_cluster(nursery, tmp_path / "controller")
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    clients = []
    for name in SHARDS:
        cluster, client = await start_cluster(nursery, tmp_path / name)
        (shards_dir / f"{name}.kubeconfig").write_text(cluster.kubeconfig_path.read_text())
        clients.append(client)
    env = {
        "NEXUS__KUBE__KUBECONFIG": str(home.kubeconfig_path),
        "NEXUS__KUBE__SHARDS_DIR": str(shards_dir),
        "NEXUS__LOGGING__LEVEL": "WARNING",
    }
    figures = []
    async with nexusd_process("controller", env=env, cwd=tmp_path, log=tmp_path / "c.log") as c:
        offset = 0
        for count in (1, 10, 100):
            wanted = {f"algo-{n}" for n in range(offset, offset + count)}
            offset += count
            before, start = cpu_seconds(c.process.pid), time.perf_counter()
            for name in sorted(wanted):
                secret = {"metadata": {"name": f"{name}-env"}, "stringData": {"K": "v"}}
                await home_client.create(SECRETS, namespace=NS, body=secret)
                runtime = {"mappedEnvironmentVariables": [{"secretRef": {"name": f"{name}-env"}}]}
                body = template(name, runtimeEnvironment=runtime)
                await home_client.create(TEMPLATES, namespace=NS, body=body)
            applied = time.perf_counter() - start
            with trio.fail_after(300):
                for client in clients:
                    while not wanted <= await names(client, TEMPLATES):
                        await trio.sleep(0.02)
            elapsed = time.perf_counter() - start
            cpu = (cpu_seconds(c.process.pid) - before) / (count * len(SHARDS))
            figures.append(
                f"  {count:4d} templates (+ a Secret each): all in {len(SHARDS)} shards after "
                f"{elapsed * 1e3:7.0f} ms (applying took {applied * 1e3:.0f} ms), "
                f"{cpu * 1e3:.2f} ms controller CPU per template copy"
            )
    for client in (home_client, *clients):
        await client.aclose()
    print("\nnexusd controller sync latency, 3 shards\n" + "\n".join(figures))
