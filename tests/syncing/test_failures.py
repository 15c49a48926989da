"""Shards that are down, come late, go down, hold rogue objects or drift; a controller that was
down while objects were deleted; no status writes without change. All clusters are embedded
clusters over HTTP; faults are the devcluster's own (503s) or a stopped server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nexusd.devcluster.faults import FaultPlan
from nexusd.kube.client import SECRETS, TEMPLATES, WORKGROUPS, KubeClient
from nexusd.kube.credentials import ClusterCredentials
from tests.syncing.conftest import (
    NAMESPACE,
    Cluster,
    eventually,
    free_port,
    ready,
    secret,
    template,
    workgroup,
)

if TYPE_CHECKING:
    from tests.syncing.conftest import StartCluster, StartSync


async def _status(cluster: Cluster, name: str = "algo") -> dict[str, Any]:
    obj = await cluster.get(TEMPLATES, name)
    return ((obj or {}).get("status") or {}) if obj else {}


async def _shard_entry(cluster: Cluster, shard: str) -> dict[str, Any]:
    entries = (await _status(cluster)).get("shards") or []
    return next((e for e in entries if e["name"] == shard), {})


async def _tag(cluster: Cluster, tag: str) -> bool:
    obj = await cluster.get(TEMPLATES, "algo")
    return obj is not None and obj["spec"]["container"]["versionTag"] == tag


async def test_a_shard_down_at_start_neither_blocks_nor_is_forgotten(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    await controller.put(template("algo"))
    late_port = free_port()
    late = KubeClient(credentials=ClusterCredentials(server=f"http://127.0.0.1:{late_port}"))
    sync = await start_sync(controller, {"a": a.sync_kube, "late": late})
    assert sync.status.ready()  # started although "late" does not answer

    await eventually(lambda: a.get(TEMPLATES, "algo"))
    await eventually(lambda: _ready_entry(controller, "a"))
    entry = await _shard_entry(controller, "late")
    assert entry["ready"] is False
    assert ready(await controller.get(TEMPLATES, "algo")) is False
    assert (await _status(controller))["syncedToClusters"] == ["a"]
    assert sync.status.details()["shards"]["late"]["reachable"] is False

    shard = await start_cluster("late", port=late_port)
    await eventually(lambda: shard.get(TEMPLATES, "algo"), within=15)
    obj = await eventually(lambda: _ready_template(controller))
    assert obj["status"]["syncedToClusters"] == ["a", "late"]
    assert sync.status.details()["shards"]["late"]["reachable"] is True
    await late.aclose()


async def test_a_shard_failing_midway_is_reported_and_catches_up(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a, b = [await start_cluster(n) for n in ("controller", "a", "b")]
    await controller.put(template("algo"))
    await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})
    await eventually(lambda: _ready_template(controller))

    b.dev.faults.set(FaultPlan(error_share=1.0, error_code=503))
    await controller.put(template("algo", tag="v2"))
    await eventually(lambda: _tag(a, "v2"))
    entry = await eventually(lambda: _failed_entry(controller, "b"))
    assert "unreachable" in entry["message"]
    assert ready(await controller.get(TEMPLATES, "algo")) is False

    b.dev.faults.clear()
    await eventually(lambda: _tag(b, "v2"), within=15)
    await eventually(lambda: _ready_template(controller), within=15)


async def test_a_stopped_shard_does_not_hold_back_the_others(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a, b = [await start_cluster(n) for n in ("controller", "a", "b")]
    await controller.put(template("algo"))
    await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})
    await eventually(lambda: _ready_template(controller))
    b.stop()
    await controller.put(template("algo", tag="v3"))
    await eventually(lambda: _tag(a, "v3"))
    await eventually(lambda: _failed_entry(controller, "b"))


async def test_a_rogue_secret_in_a_shard_fails_the_template_there(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a, b = [await start_cluster(n) for n in ("controller", "a", "b")]
    await a.put(secret("creds", {"k": "cm9ndWU="}))  # not ours, no owners
    await controller.put(secret("creds", {"k": "b3Vycw=="}))
    await controller.put(template("algo", env_secrets=("creds",)))
    await start_sync(controller, {"a": a.sync_kube, "b": b.sync_kube})

    events = await eventually(lambda: controller.events("ErrResourceExists"))
    assert events[0]["type"] == "Warning"
    assert events[0]["message"] == (
        'Resource "creds" already exists and is not managed by any Machine Learning Algorithm'
    )
    assert events[0]["source"]["component"] == "nexus-configuration-controller"
    entry = await eventually(lambda: _failed_entry(controller, "a"))
    assert "already exists" in entry["message"]
    condition = (await _status(controller))["conditions"][0]
    assert condition["status"] == "False"
    assert "already exists" in condition["message"]
    rogue = await a.get(SECRETS, "creds")
    assert rogue is not None
    assert rogue["data"] == {"k": "cm9ndWU="}  # untouched
    copied = await eventually(lambda: b.get(SECRETS, "creds"))
    assert copied["data"] == {"k": "b3Vycw=="}


async def test_a_missing_reference_is_reported(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    await controller.put(template("algo", key_secrets=("nowhere",)))
    await start_sync(controller, {"a": a.sync_kube})
    events = await eventually(lambda: controller.events("ErrResourceMissing"))
    assert events[0]["message"] == (
        'Resource "nowhere" referenced by NexusAlgorithmTemplate "algo" is missing in the '
        "controller cluster"
    )
    await controller.put(secret("nowhere", {"k": "dg=="}))
    await eventually(lambda: _ready_template(controller))
    assert await a.get(SECRETS, "nowhere") is not None


async def test_drift_in_a_shard_is_repaired(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    await controller.put(secret("s", {"k": "MQ=="}))
    await controller.put(template("algo", env_secrets=("s",)))
    await start_sync(controller, {"a": a.sync_kube}, resync=300.0, sweep_interval=300.0)
    await eventually(lambda: _ready_template(controller))

    await a.put(secret("s", {"k": "ZWRpdGVk"}))
    await eventually(lambda: _secret_data(a, {"k": "MQ=="}))
    await a.kube.delete(SECRETS, namespace=NAMESPACE, name="s")
    await eventually(lambda: _secret_data(a, {"k": "MQ=="}))
    await a.put(template("algo", tag="edited-in-the-shard"))
    await eventually(lambda: _tag(a, "v1"))
    await a.kube.delete(TEMPLATES, namespace=NAMESPACE, name="algo")
    await eventually(lambda: _tag(a, "v1"))


async def test_deletes_made_while_the_controller_was_down_are_applied(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    await controller.put(template("algo"))
    await controller.put(workgroup("default"))
    sync = await start_sync(controller, {"a": a.sync_kube})
    await eventually(lambda: _ready_template(controller))
    await eventually(lambda: a.get(TEMPLATES, "algo"))
    await eventually(lambda: a.get(WORKGROUPS, "default"))
    sync.stop()

    await controller.kube.delete(TEMPLATES, namespace=NAMESPACE, name="algo")
    await controller.kube.delete(WORKGROUPS, namespace=NAMESPACE, name="default")
    held = await controller.get(TEMPLATES, "algo")
    assert held is not None  # the finalizer holds it
    assert held["metadata"]["deletionTimestamp"]

    await start_sync(controller, {"a": a.sync_kube})
    await eventually(lambda: _gone(a, TEMPLATES, "algo"))
    await eventually(lambda: _gone(a, WORKGROUPS, "default"))
    await eventually(lambda: _gone(controller, TEMPLATES, "algo"))
    await eventually(lambda: _gone(controller, WORKGROUPS, "default"))


async def test_a_resync_without_change_writes_no_status(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    await controller.put(secret("s", {"k": "MQ=="}))
    await controller.put(template("algo", env_secrets=("s",)))
    await start_sync(controller, {"a": a.sync_kube}, resync=0.3)
    await eventually(lambda: _ready_template(controller))
    await eventually(lambda: controller.events("Synced"))
    writes, shard_writes = controller.status_writes(), a.dev.writes()
    lists, shard_lists = controller.lists("nexusalgorithmtemplates"), a.lists("secrets")

    # Three re-lists on each side: every object was reconciled again, with nothing to do.
    await eventually(lambda: _listed_since(controller, lists + 3))
    await eventually(lambda: _listed_since(a, shard_lists + 3, "secrets"))
    assert controller.status_writes() == writes
    assert a.dev.writes() == shard_writes
    assert len(await controller.events("Synced")) == 1


async def _listed_since(
    cluster: Cluster, count: int, plural: str = "nexusalgorithmtemplates"
) -> bool:
    return cluster.lists(plural) >= count


async def _ready_template(cluster: Cluster) -> dict[str, Any] | None:
    obj = await cluster.get(TEMPLATES, "algo")
    return obj if ready(obj) else None


async def _failed_entry(cluster: Cluster, shard: str) -> dict[str, Any] | None:
    entry = await _shard_entry(cluster, shard)
    return entry if entry and not entry["ready"] and entry["message"] != "pending" else None


async def _secret_data(cluster: Cluster, data: dict[str, str]) -> bool:
    obj = await cluster.get(SECRETS, "s")
    return obj is not None and obj.get("data") == data


async def _gone(cluster: Cluster, resource: Any, name: str) -> bool:
    return await cluster.get(resource, name) is None


async def test_a_pre_existing_secret_owned_by_other_templates_is_shared(
    start_cluster: StartCluster, start_sync: StartSync
) -> None:
    controller, a = await start_cluster("controller"), await start_cluster("a")
    legacy = await a.put(template("legacy"))  # a shard template no controller knows
    owner = {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": "NexusAlgorithmTemplate",
        "name": "legacy",
        "uid": legacy["metadata"]["uid"],
    }
    await a.put(secret("creds", {"k": "b2xk"}, ownerReferences=[owner]))
    await controller.put(secret("creds", {"k": "bmV3"}))
    await controller.put(template("algo", env_secrets=("creds",)))
    await start_sync(controller, {"a": a.sync_kube}, sweep_interval=0.2)

    async def shared() -> dict[str, Any] | None:
        obj = await a.get(SECRETS, "creds")
        refs = sorted(r["name"] for r in (obj or {}).get("metadata", {}).get("ownerReferences", []))
        return obj if refs == ["algo", "legacy"] else None

    obj = await eventually(shared)
    assert obj["data"] == {"k": "bmV3"}
    lists = a.lists("secrets")
    await eventually(lambda: _listed_since(a, lists + 2, "secrets"))  # sweeps ran meanwhile
    assert await shared() is not None


async def _ready_entry(cluster: Cluster, shard: str) -> bool:
    return bool((await _shard_entry(cluster, shard)).get("ready"))
