"""Create, update, dereference and delete, end to end: a controller cluster and two shards,
all embedded clusters over HTTP, with `run_configuration_sync` in between."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from nexusd.kube.client import CONFIGMAPS, SECRETS, TEMPLATES, WORKGROUPS
from nexusd.syncing.controller_side import FINALIZER
from nexusd.syncing.copies import REFERENCED_BY_ANNOTATION
from tests.syncing.conftest import (
    ALIAS,
    NAMESPACE,
    Cluster,
    configmap,
    eventually,
    ready,
    secret,
    template,
    workgroup,
)

if TYPE_CHECKING:
    from tests.syncing.conftest import StartCluster, StartSync

LABELS = {
    "science.sneaksanddata.com/controller-app": "nexus-configuration-controller",
    "science.sneaksanddata.com/configuration-owner": ALIAS,
}


@pytest.fixture
async def clusters(start_cluster: StartCluster) -> tuple[Cluster, Cluster, Cluster]:
    return await start_cluster("controller"), await start_cluster("a"), await start_cluster("b")


async def put(cluster: Cluster, document: dict[str, Any]) -> dict[str, Any]:
    return await cluster.put(document)


async def test_create_copies_everything_a_template_references(
    clusters: tuple[Cluster, Cluster, Cluster], start_sync: StartSync
) -> None:
    controller, a, b = clusters
    await put(controller, secret("env", {"k": "dg=="}, labels={"app": "x"}))
    await put(controller, secret("key", {"k": "dg=="}))
    tls = secret("mounted", {"tls.crt": "Yw=="})
    tls["type"] = "kubernetes.io/tls"
    tls["data"]["tls.key"] = "aw=="
    await put(controller, tls)
    await put(controller, configmap("cfg", {"a": "1"}))
    await put(controller, configmap("files", {}, binaryData={"blob": "AAE="}))
    await put(
        controller,
        template(
            "algo",
            env_secrets=("env",),
            key_secrets=("key",),
            mounted_secrets=("mounted",),
            env_configmaps=("cfg",),
            mounted_configmaps=("files",),
        ),
    )
    await put(controller, workgroup("default"))
    sync = await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})
    assert sync.status.ready()

    synced = await eventually(lambda: _when_ready(controller, "algo"), within=10)
    status = synced["status"]
    assert status["syncedSecrets"] == ["env", "key", "mounted"]
    assert status["syncedConfigurations"] == ["cfg", "files"]
    assert status["syncedToClusters"] == ["a", "b"]
    assert status["conditions"][0]["reason"] == "AlgorithmReady"
    assert status["conditions"][0]["message"] == 'Algorithm "algo" ready'
    assert [(s["name"], s["ready"]) for s in status["shards"]] == [("a", True), ("b", True)]
    assert FINALIZER in synced["metadata"]["finalizers"]

    for shard in (a, b):
        copy = await shard.get(TEMPLATES, "algo")
        assert copy is not None
        assert copy["spec"] == synced["spec"]
        assert copy["metadata"]["labels"] == {"team": "science", **LABELS}
        owner = {
            "apiVersion": "science.sneaksanddata.com/v1",
            "kind": "NexusAlgorithmTemplate",
            "name": "algo",
            "uid": copy["metadata"]["uid"],
        }
        mounted = await shard.get(SECRETS, "mounted")
        assert mounted is not None
        assert mounted["type"] == "kubernetes.io/tls"
        assert mounted["data"] == {"tls.crt": "Yw==", "tls.key": "aw=="}
        assert mounted["metadata"]["ownerReferences"] == [owner]
        env = await shard.get(SECRETS, "env")
        assert env is not None
        assert env["metadata"]["labels"] == {"app": "x", **LABELS}
        files = await shard.get(CONFIGMAPS, "files")
        assert files is not None
        assert files["binaryData"] == {"blob": "AAE="}
        assert await eventually(lambda shard=shard: shard.get(WORKGROUPS, "default"))

    await eventually(lambda: _annotation(controller, SECRETS, "env", "algo"))
    user_secret = await controller.get(SECRETS, "env")
    assert user_secret is not None
    assert "ownerReferences" not in user_secret["metadata"]
    assert await eventually(lambda: controller.events("Synced"))
    group = await eventually(lambda: _when_ready(controller, "default", WORKGROUPS))
    assert group["status"]["conditions"][0]["message"] == 'Workgroup "default" ready'


async def test_updates_and_dereferencing_reach_every_shard(
    clusters: tuple[Cluster, Cluster, Cluster], start_sync: StartSync
) -> None:
    controller, a, b = clusters
    await put(controller, secret("shared", {"k": "MQ=="}))
    await put(controller, configmap("cfg", {"a": "1"}))
    await put(controller, template("one", env_secrets=("shared",), env_configmaps=("cfg",)))
    await put(controller, template("two", env_secrets=("shared",)))
    await put(controller, workgroup("default"))
    await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})

    async def shared_by(shard: Cluster, owners: list[str]) -> bool:
        obj = await shard.get(SECRETS, "shared")
        names = sorted(
            r["name"] for r in (obj or {}).get("metadata", {}).get("ownerReferences", [])
        )
        return obj is not None and names == owners

    for shard in (a, b):
        await eventually(lambda shard=shard: shared_by(shard, ["one", "two"]))
    await eventually(lambda: _annotation(controller, SECRETS, "shared", "one,two"))

    # A Secret's change reaches the copies; so do a template's and a workgroup's.
    await put(controller, secret("shared", {"k": "Mg=="}))
    await put(
        controller, template("one", env_secrets=("shared",), env_configmaps=("cfg",), tag="v2")
    )
    await put(controller, workgroup("default", description="changed"))
    for shard in (a, b):
        await eventually(
            lambda shard=shard: _field(shard, SECRETS, "shared", "data", {"k": "Mg=="})
        )
        await eventually(
            lambda shard=shard: _field(shard, TEMPLATES, "one", "spec", None, tag="v2")
        )
        await eventually(
            lambda shard=shard: _field(
                shard, WORKGROUPS, "default", "spec", {"description": "changed", "cluster": "a"}
            )
        )

    # Dereference: "one" drops both; the shared Secret keeps "two", the ConfigMap goes.
    await put(controller, template("one", tag="v2"))
    for shard in (a, b):
        await eventually(lambda shard=shard: shared_by(shard, ["two"]))
        await eventually(lambda shard=shard: _gone(shard, CONFIGMAPS, "cfg"))
    assert await controller.get(CONFIGMAPS, "cfg") is not None  # never deleted at the source
    await eventually(lambda: _annotation(controller, SECRETS, "shared", "two"))
    await eventually(lambda: _annotation(controller, CONFIGMAPS, "cfg", None))
    await eventually(lambda: _synced_secrets(controller, "one", []))


async def test_deletes_reach_every_shard_before_the_finalizer_goes(
    clusters: tuple[Cluster, Cluster, Cluster], start_sync: StartSync
) -> None:
    controller, a, b = clusters
    await put(controller, secret("s", {"k": "MQ=="}))
    await put(controller, template("algo", env_secrets=("s",)))
    await put(controller, workgroup("default"))
    await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})
    await eventually(lambda: _when_ready(controller, "algo"))
    await eventually(lambda: _when_ready(controller, "default", WORKGROUPS))

    await controller.kube.delete(TEMPLATES, namespace=NAMESPACE, name="algo")
    await controller.kube.delete(WORKGROUPS, namespace=NAMESPACE, name="default")
    for shard in (a, b):
        await eventually(lambda shard=shard: _gone(shard, TEMPLATES, "algo"))
        await eventually(lambda shard=shard: _gone(shard, SECRETS, "s"))
        await eventually(lambda shard=shard: _gone(shard, WORKGROUPS, "default"))
    await eventually(lambda: _gone(controller, TEMPLATES, "algo"))
    await eventually(lambda: _gone(controller, WORKGROUPS, "default"))
    assert await controller.get(SECRETS, "s") is not None


async def _when_ready(
    cluster: Cluster, name: str, resource: Any = TEMPLATES
) -> dict[str, Any] | None:
    obj = await cluster.get(resource, name)
    return obj if ready(obj) else None


async def _gone(cluster: Cluster, resource: Any, name: str) -> bool:
    return await cluster.get(resource, name) is None


async def _field(
    cluster: Cluster, resource: Any, name: str, field: str, value: Any, *, tag: str = ""
) -> bool:
    obj = await cluster.get(resource, name)
    if obj is None:
        return False
    if tag:
        return bool(obj["spec"]["container"]["versionTag"] == tag)
    return bool(obj.get(field) == value)


async def _annotation(cluster: Cluster, resource: Any, name: str, value: str | None) -> bool:
    obj = await cluster.get(resource, name)
    annotations = (obj or {}).get("metadata", {}).get("annotations") or {}
    return obj is not None and annotations.get(REFERENCED_BY_ANNOTATION) == value


async def test_a_secret_recreated_with_another_type_is_recreated_in_the_shards(
    clusters: tuple[Cluster, Cluster, Cluster], start_sync: StartSync
) -> None:
    controller, a, b = clusters
    await put(controller, secret("s", {"k": "MQ=="}))
    await put(controller, template("algo", env_secrets=("s",)))
    await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})
    for shard in (a, b):
        await eventually(lambda shard=shard: _field(shard, SECRETS, "s", "type", "Opaque"))

    # A Secret's type cannot change: its owner deletes and recreates it.
    await controller.kube.delete(SECRETS, namespace=NAMESPACE, name="s")
    recreated = secret("s", {"username": "dQ==", "password": "cA=="})
    recreated["type"] = "kubernetes.io/basic-auth"
    await put(controller, recreated)
    for shard in (a, b):
        await eventually(
            lambda shard=shard: _field(shard, SECRETS, "s", "type", "kubernetes.io/basic-auth")
        )
        copy = await shard.get(SECRETS, "s")
        assert copy is not None
        assert copy["data"] == {"username": "dQ==", "password": "cA=="}
    await eventually(lambda: _when_ready(controller, "algo"))


async def _synced_secrets(cluster: Cluster, name: str, value: list[str]) -> bool:
    obj = await _when_ready(cluster, name)
    return obj is not None and obj["status"]["syncedSecrets"] == value
