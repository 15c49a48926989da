"""The shards directory, hot reloaded, and the orphan sweep: real kubeconfig files pointing at
embedded clusters (or at a port nothing listens on yet), read by the engine itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nexusd.devcluster.kubeconfig import write_kubeconfig
from nexusd.kube.client import CONFIGMAPS, TEMPLATES, WORKGROUPS
from nexusd.syncing.copies import managed_labels
from tests.syncing.conftest import (
    ALIAS,
    NAMESPACE,
    Cluster,
    configmap,
    eventually,
    free_port,
    template,
    workgroup,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.syncing.conftest import StartCluster, StartSync


def kubeconfig(directory: Path, file_name: str, server: str) -> None:
    write_kubeconfig(directory / file_name, server=server, namespace=NAMESPACE)


async def _synced_to(cluster: Cluster) -> list[str] | None:
    obj = await cluster.get(TEMPLATES, "algo")
    return ((obj or {}).get("status") or {}).get("syncedToClusters")


async def test_the_shards_directory_is_hot_reloaded(
    start_cluster: StartCluster, start_sync: StartSync, tmp_path: Path
) -> None:
    controller, a, b, c = [await start_cluster(n) for n in ("controller", "a", "b", "c")]
    await controller.put(template("algo"))
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "broken.kubeconfig").write_text("not: [a kubeconfig")
    (shards / "README.md").write_text("not a kubeconfig either")
    late_port = free_port()
    kubeconfig(shards, "late.kubeconfig", f"http://127.0.0.1:{late_port}")
    sync = await start_sync(controller, shards_dir=shards)
    assert sync.status.ready()
    assert sorted(sync.status.details()["shards"]) == ["late"]

    # A new file is a new shard, named by the file name up to its first dot.
    kubeconfig(shards, "a.kubeconfig", a.dev.url)
    kubeconfig(shards, "b.eu-west.kubeconfig", b.dev.url)
    await eventually(lambda: a.get(TEMPLATES, "algo"))
    await eventually(lambda: b.get(TEMPLATES, "algo"))
    assert await eventually(lambda: _equal(_synced_to(controller), ["a", "b"]))

    # The late shard's server comes up: it catches up.
    late = await start_cluster("late", port=late_port)
    await eventually(lambda: late.get(TEMPLATES, "algo"), within=15)
    await eventually(lambda: _equal(_synced_to(controller), ["a", "b", "late"]))

    # A changed file: a new client, here for another cluster under the same shard name.
    kubeconfig(shards, "a.kubeconfig", c.dev.url)
    await eventually(lambda: c.get(TEMPLATES, "algo"))

    # A removed file: the shard is dropped, from the engine's state and from the statuses.
    (shards / "b.eu-west.kubeconfig").unlink()
    await eventually(lambda: _equal(_synced_to(controller), ["a", "late"]))
    assert sorted(sync.status.details()["shards"]) == ["a", "late"]


async def test_orphans_labelled_with_our_alias_are_swept(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    ours = {"labels": managed_labels(ALIAS)}
    theirs = {"labels": managed_labels("another-controller")}
    await a.put(_with_metadata(configmap("left-over", {"a": "1"}), ours))
    await a.put(_with_metadata(workgroup("left-over"), ours))
    await a.put(_with_metadata(configmap("not-ours", {"a": "1"}), theirs))
    await a.put(configmap("unlabelled", {"a": "1"}))
    await controller.put(template("algo"))
    await start_sync(controller, {"a": a.sync_kube})

    await eventually(lambda: _gone(a, CONFIGMAPS, "left-over"))
    await eventually(lambda: _gone(a, WORKGROUPS, "left-over"))
    assert await a.get(CONFIGMAPS, "not-ours") is not None
    assert await a.get(CONFIGMAPS, "unlabelled") is not None
    assert await a.get(TEMPLATES, "algo") is not None


def _with_metadata(document: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    return {**document, "metadata": {**document["metadata"], **metadata}}


async def _equal(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _gone(cluster: Cluster, resource: Any, name: str) -> bool:
    return await cluster.get(resource, name) is None
