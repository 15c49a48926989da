"""The pure parts of the sync engine: references, copies, drift checks, status, the queue
(on trio's autojump clock). No cluster involved."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from nexusd.kube.client import SECRETS, TEMPLATES
from nexusd.syncing.copies import needs_update, replacement, shard_copy
from nexusd.syncing.queueing import KeyQueue
from nexusd.syncing.references import References, template_references
from nexusd.syncing.reporting import desired_status
from nexusd.syncing.status import KeyResult, ShardState
from tests.syncing.conftest import template

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_references_are_gathered_from_every_place_sorted_and_unique() -> None:
    spec = template(
        "t",
        env_secrets=("b", "a"),
        key_secrets=("a", "c"),
        mounted_secrets=("d",),
        env_configmaps=("y",),
        mounted_configmaps=("x", "y"),
    )
    spec["spec"]["runtimeEnvironment"]["environmentVariables"].append(
        {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "z", "key": "k"}}}
    )
    assert template_references(spec) == References(
        secrets=("a", "b", "c", "d"), configmaps=("x", "y", "z")
    )


@pytest.mark.parametrize(
    "environment",
    [None, {}, {"mappedEnvironmentVariables": "oops"}, {"environmentVariables": [{"name": "A"}]}],
)
def test_a_template_without_references_references_nothing(environment: object) -> None:
    assert template_references({"spec": {"runtimeEnvironment": environment}}) == References()


def test_file_mounts_may_be_a_list_of_names() -> None:
    spec = {"spec": {"runtimeEnvironment": {"secretFileMounts": [{"name": "s"}, {"x": 1}]}}}
    assert template_references(spec).secrets == ("s",)


def _shard_object(desired: dict[str, object]) -> dict[str, object]:
    """What a shard answers for `desired`: its own metadata added, and a status."""
    obj = replacement({"metadata": {"uid": "u", "resourceVersion": "7"}}, desired)
    obj["metadata"]["managedFields"] = [{"manager": "x"}]  # type: ignore[index]
    obj["status"] = {"conditions": []}
    return obj


def test_a_copy_of_what_is_in_the_shard_needs_no_update() -> None:
    source = template("t")
    source["metadata"].update(namespace="nexus", uid="controller-uid", resourceVersion="1")
    source["status"] = {"conditions": [{"type": "Ready"}]}
    desired = shard_copy(source, alias="x")
    assert "status" not in desired
    assert desired["metadata"]["labels"]["science.sneaksanddata.com/configuration-owner"] == "x"
    assert not needs_update(_shard_object(desired), desired)
    edited = _shard_object(desired)
    edited["spec"] = {**edited["spec"], "command": "sh"}  # type: ignore[dict-item]
    assert needs_update(edited, desired)


def test_a_secret_copy_keeps_type_and_owners_and_drops_the_adoption_annotation() -> None:
    source = {
        "apiVersion": SECRETS.api_version,
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "namespace": "nexus",
            "annotations": {"science.sneaksanddata.com/referenced-by": "t", "note": "kept"},
        },
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Yw=="},
    }
    owner = {"apiVersion": TEMPLATES.api_version, "kind": "NexusAlgorithmTemplate"}
    owners = [{**owner, "name": "t2", "uid": "2"}, {**owner, "name": "t1", "uid": "1"}]
    desired = shard_copy(source, alias="x", owners=[*owners, owners[0]])
    assert desired["type"] == "kubernetes.io/tls"
    assert desired["metadata"]["annotations"] == {"note": "kept"}
    assert [ref["name"] for ref in desired["metadata"]["ownerReferences"]] == ["t1", "t2"]
    assert not needs_update(_shard_object(desired), desired)
    assert needs_update({**_shard_object(desired), "type": "Opaque"}, desired)
    fewer = shard_copy(source, alias="x", owners=owners[:1])
    assert needs_update(_shard_object(desired), fewer)


def test_the_status_is_stable_and_sorted() -> None:
    obj = template("t", env_secrets=("b", "a"))
    shards = [
        ShardState(name="z", reachable=True, results={("template", "t"): KeyResult(ok=True)}),
        ShardState(
            name="m", reachable=True, results={("template", "t"): KeyResult(ok=True, wrote_at=NOW)}
        ),
    ]
    status = desired_status(obj, kind="template", shards=shards, now=NOW)
    assert status["syncedToClusters"] == ["m", "z"]
    assert status["syncedSecrets"] == ["a", "b"]
    assert status["conditions"][0]["message"] == 'Algorithm "t" ready'
    later = NOW + dt.timedelta(hours=1)
    shards[1].results[("template", "t")] = KeyResult(ok=True)  # e.g. after a restart
    assert desired_status({**obj, "status": status}, kind="template", shards=shards, now=later) == (
        status
    )


def test_a_failure_makes_the_status_not_ready_with_the_error() -> None:
    obj = template("t")
    failed = KeyResult(ok=False, message="boom", reason="ErrResourceSyncError")
    shards = [
        ShardState(name="a", reachable=True, results={("template", "t"): KeyResult(ok=True)}),
        ShardState(name="b", reachable=True, results={("template", "t"): failed}),
        ShardState(name="c", reachable=False, last_error="refused"),
    ]
    status = desired_status(obj, kind="template", shards=shards, now=NOW)
    condition = status["conditions"][0]
    assert (condition["status"], condition["message"]) == ("False", 'boom (shard "b")')
    assert status["shards"][2] == {
        "name": "c",
        "ready": False,
        "message": "shard unreachable: refused",
    }


async def test_the_queue_backs_off_per_key_and_keeps_keys_unique(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: KeyQueue[str] = KeyQueue(base=0.03, maximum=5.0)
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    assert await queue.get() == "a"
    delays = [queue.retry("b") for _ in range(10)]
    assert delays[:3] == [0.03, 0.06, 0.12]
    assert delays[-1] == 5.0
    queue.forget("b")
    assert queue.retry("b") == 0.03
    queue.add("c")
    start = trio.current_time()
    assert await queue.get() == "c"
    assert await queue.get() == "b"
    assert trio.current_time() - start == pytest.approx(0.03)
