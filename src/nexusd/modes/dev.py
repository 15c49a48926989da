"""`nexusd dev`: scheduler + receiver + maintainer + the embedded Kubernetes cluster in one process.

No cluster, database or object store needed: SQLite and payload files live in the data
directory, the embedded cluster runs each pod's command as a local process, and nexusd reaches
that cluster only through the kubeconfig it writes, exactly as it reaches a real one. At start it
installs the CRDs, the bundled `hello` algorithm and any `--manifests` files.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import logging
import string
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from nexusd.core.errors import ConfigError
from nexusd.devcluster import DevClusterConfig, NodeGroup, run_dev_cluster
from nexusd.devcluster.nodes import DEFAULT_NODE_GROUPS
from nexusd.kube.applying import apply, parse_documents, read_directory
from nexusd.modes.building import (
    external_url,
    hold_identity,
    open_foundation,
    open_shards,
    own_directory,
)
from nexusd.modes.controller import start_controller
from nexusd.modes.maintainer import start_maintenance
from nexusd.modes.services import Running, start_services

if TYPE_CHECKING:
    from nexusd.settings import Settings

logger = logging.getLogger(__name__)

DEV_SHARD = "dev"


def crd_directory() -> Path:
    """The CRDs shipped in the wheel, or the repository's `crds/` in a source checkout."""
    packaged = Path(str(importlib.resources.files("nexusd"))) / "crds"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "crds"


def crd_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(crd_directory().glob("*.yaml"))
        for document in parse_documents(path.read_text(), source=str(path))
    ]


def hello_documents(*, namespace: str, shard: str) -> list[dict[str, Any]]:
    """The bundled `hello` template and its workgroup `default`, which targets `shard`. Its
    pods get the receiver URL as every template's do (`receiver.url`, here this process)."""
    hello = string.Template(
        (importlib.resources.files("nexusd.algorithms") / "hello.yaml").read_text()
    ).substitute(NAMESPACE=namespace, SHARD=shard)
    return parse_documents(hello, source="nexusd/algorithms/hello.yaml")


def per_shard_hello(hello: list[dict[str, Any]], shards: list[str]) -> list[dict[str, Any]]:
    """`hello` as `hello-<shard>` with a workgroup `<shard>` per shard: one template applied
    once to the controller cluster reaches every shard, and each runs where its name says."""
    workgroup = next(d for d in hello if d["kind"] == "NexusAlgorithmWorkgroup")
    template = next(d for d in hello if d["kind"] == "NexusAlgorithmTemplate")
    documents = []
    for shard in shards:
        group = copy.deepcopy(workgroup)
        group["metadata"]["name"] = shard
        group["spec"]["cluster"] = shard
        group["spec"]["description"] = f"Local processes of embedded shard {shard} (nexusd dev)"
        variant = copy.deepcopy(template)
        variant["metadata"]["name"] = f"hello-{shard}"
        variant["spec"]["workgroupRef"]["name"] = shard
        documents += [group, variant]
    return documents


def banner(url: str, kubeconfig: Path, shards: dict[str, Path] | None = None) -> str:
    text = f"""
nexusd dev is ready on {url}

  Launch a run of the bundled `hello` algorithm:
    curl -s -X POST {url}/algorithm/v1/run/hello -H 'Content-Type: application/json' \\
      -d '{{"algorithmParameters": {{"name": "nexus"}}}}'
  Then read its result (use the requestId from the answer):
    curl -s {url}/algorithm/v1/results/hello/requests/<requestId>
  The same algorithm served by a warm pool, no pod per run: /algorithm/v1/run/hello-warm

  Look at the embedded cluster: kubectl --kubeconfig {kubeconfig} get jobs,pods -A
"""
    if not shards:
        return text
    lines = [
        "",
        "  Templates and workgroups live in the controller cluster (above); the configuration",
        "  controller copies them into every shard. To run in a given shard:",
    ]
    for name, path in shards.items():
        lines += [
            f"    curl -s -X POST {url}/algorithm/v1/run/hello-{name} "
            "-H 'Content-Type: application/json' -d '{\"algorithmParameters\": {}}'",
            f"      its Jobs: kubectl --kubeconfig {path} get jobs -n nexus",
        ]
    return text + "\n".join(lines) + "\n"


MAX_SHARDS = 16


def cluster_config(state_dir: Path, settings: Settings) -> DevClusterConfig:
    local = settings.dev.kubelet == "local"
    return DevClusterConfig(
        state_dir=state_dir,
        namespace=settings.kube.runtime_namespace,
        kubelet="local" if local else "scripted",
        # The cluster's objects outlive a crash of this process, so its runs' Jobs do.
        persist=True,
        # Pods are processes on this machine: as many at once as it can run.
        node_groups=(NodeGroup.for_host(),) if local else DEFAULT_NODE_GROUPS,
    )


async def start_shard_clusters(
    nursery: trio.Nursery, settings: Settings
) -> tuple[Settings, dict[str, Path]]:
    """With `dev.shards` N > 1: clusters shard-1..shard-N under `<data-dir>/shards/`, each
    with its `<name>.kubeconfig` there, and the settings with that directory as
    `kube.shards_dir` (so the scheduler, maintainer and controller find them as they find
    real shards). Returns the settings and each shard's kubeconfig."""
    count = settings.dev.shards
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"dev.shards: expected 1 to {MAX_SHARDS}, got {count}")
    if count == 1:
        return settings, {}
    directory = settings.data.dir / "shards"
    kubeconfigs = {}
    for n in range(1, count + 1):
        name = f"shard-{n}"
        cluster = await nursery.start(
            functools.partial(run_dev_cluster, config=cluster_config(directory / name, settings))
        )
        kubeconfigs[name] = directory / f"{name}.kubeconfig"
        text = await trio.Path(cluster.kubeconfig_path).read_text()
        await trio.Path(kubeconfigs[name]).write_text(text)
        # CRDs are installed in every cluster (the controller syncs objects, not their kinds).
        async with open_shards(settings, kubeconfig=kubeconfigs[name], name=name) as one:
            for document in crd_documents():
                await apply(one[name].client, document, namespace=settings.kube.runtime_namespace)
    kube = attrs.evolve(settings.kube, shards_dir=directory)
    return attrs.evolve(settings, kube=kube), kubeconfigs


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    extra = read_directory(settings.dev.manifests) if settings.dev.manifests else []
    data_dir = settings.data.dir
    namespace = settings.kube.runtime_namespace
    await trio.to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
    async with (
        own_directory(data_dir, "dev"),
        open_foundation(settings) as foundation,
        trio.open_nursery() as outer,
    ):
        await hold_identity(foundation.store, settings, "dev")
        cluster = await outer.start(
            functools.partial(
                run_dev_cluster, config=cluster_config(data_dir / "cluster", settings)
            )
        )
        settings, shard_kubeconfigs = await start_shard_clusters(outer, settings)
        url = external_url(settings, foundation.sock)
        async with (
            open_shards(settings, kubeconfig=cluster.kubeconfig_path, name=DEV_SHARD) as shards,
            trio.open_nursery() as nursery,
        ):
            home = shards[DEV_SHARD]
            first = next(iter(shard_kubeconfigs), DEV_SHARD)
            hello = hello_documents(namespace=namespace, shard=first)
            if shard_kubeconfigs:
                hello += per_shard_hello(hello, list(shard_kubeconfigs))
            for document in crd_documents() + hello + extra:
                await apply(home.client, document, namespace=namespace)
            # Every shard's pods report to this process, unless receiver.url says otherwise.
            running = await start_services(
                nursery,
                foundation,
                shards=shards,
                scheduler=True,
                receiver=True,
                receiver_url=settings.receiver.url or url,
            )
            maintainer = await start_maintenance(
                nursery,
                settings=settings,
                clock=foundation.clock,
                store=foundation.store,
                payloads=foundation.payloads,
                shards=shards,
            )
            running.context.statistics["reconciler"] = maintainer.reconciler.statistics
            if shard_kubeconfigs:
                elector, status = await start_controller(nursery, settings, client=home.client)
                running.context.statistics["election"] = elector.details
                running.context.statistics["sync"] = status.details
            running.cluster = cluster
            banner_text = banner(url, cluster.kubeconfig_path, shard_kubeconfigs)
            print(banner_text, file=sys.stderr, flush=True)
            task_status.started(running)
        outer.cancel_scope.cancel()
