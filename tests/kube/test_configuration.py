"""The template/workgroup cache against the embedded cluster over loopback HTTP: real lists,
real watches, real resourceVersions. Nothing is faked here (410 and reconnect paths the
embedded cluster cannot trigger on demand are in test_configuration_faults.py)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.core.errors import KubeNotFound
from nexusd.kube.client import TEMPLATES, WORKGROUPS, KubeClient
from nexusd.kube.configuration import ConfigurationCache, run_configuration_cache
from nexusd.kube.credentials import load_credentials

if TYPE_CHECKING:
    from collections.abc import Callable

NS = "nexus"


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll: the cache has no change notification (intake only reads it)."""
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.02)


async def test_started_only_after_both_lists_are_cached(
    kube: KubeClient, nursery: trio.Nursery, make_template, make_workgroup
):
    await kube.create(TEMPLATES, namespace=NS, body=make_template("hello-world"))
    await kube.create(WORKGROUPS, namespace=NS, body=make_workgroup("default"))
    cache = ConfigurationCache()
    assert not cache.synced
    await nursery.start(
        functools.partial(run_configuration_cache, client=kube, namespace=NS, cache=cache)
    )
    assert cache.synced
    template = cache.template("hello-world")
    assert template is not None
    assert template["spec"]["container"]["image"] == "nexus-hello"
    workgroup = cache.workgroup("default")
    assert workgroup is not None
    assert workgroup["spec"]["cluster"] == "shard-0"
    assert cache.template("missing") is None
    assert cache.template_names() == ["hello-world"]
    assert cache.workgroup_names() == ["default"]


async def test_follows_added_modified_deleted(
    kube: KubeClient, nursery: trio.Nursery, make_template, make_workgroup
):
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(run_configuration_cache, client=kube, namespace=NS, cache=cache)
    )
    assert cache.template_names() == []

    created = await kube.create(TEMPLATES, namespace=NS, body=make_template("t1"))
    await eventually(lambda: cache.template("t1") is not None)

    created["spec"]["container"]["versionTag"] = "9.9.9"
    await kube.replace(TEMPLATES, namespace=NS, name="t1", body=created)
    await eventually(
        lambda: (
            (cache.template("t1") or {}).get("spec", {}).get("container", {}).get("versionTag")
            == "9.9.9"
        )
    )

    await kube.create(WORKGROUPS, namespace=NS, body=make_workgroup("gpu", cluster="shard-1"))
    await eventually(lambda: cache.workgroup("gpu") is not None)

    await kube.delete(TEMPLATES, namespace=NS, name="t1")
    await eventually(lambda: cache.template("t1") is None)
    assert cache.workgroup("gpu") is not None


async def test_other_namespaces_are_not_cached(
    kube: KubeClient, nursery: trio.Nursery, make_template
):
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(run_configuration_cache, client=kube, namespace=NS, cache=cache)
    )
    await kube.create(TEMPLATES, namespace="elsewhere", body=make_template("foreign"))
    await kube.create(TEMPLATES, namespace=NS, body=make_template("ours"))
    await eventually(lambda: cache.template("ours") is not None)
    assert cache.template("foreign") is None


async def test_resync_replays_the_cache_without_listing(
    kube: KubeClient, nursery: trio.Nursery, make_template
):
    """client-go semantics: the periodic resync does not re-list (only a 410 does)."""
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(
            run_configuration_cache, client=kube, namespace=NS, cache=cache, resync_seconds=0.2
        )
    )
    lists_before = kube.statistics().total(verb="list")
    await kube.create(TEMPLATES, namespace=NS, body=make_template("t"))
    await eventually(lambda: cache.template("t") is not None)
    await trio.sleep(1.0)  # five resync periods
    assert kube.statistics().total(verb="list") == lists_before
    assert cache.template("t") is not None


async def test_missing_crds_stop_the_cache_with_what_to_do(dev_cluster: Any) -> None:
    """A cluster without nexusd's CRDs: a deployment mistake, said plainly (no retry loop)."""
    credentials = await trio.to_thread.run_sync(load_credentials, dev_cluster.kubeconfig_path)
    client = KubeClient(credentials=credentials, timeout=10.0)
    try:
        with pytest.RaisesGroup(
            pytest.RaisesExc(KubeNotFound, match=r"install its CustomResourceDefinitions"),
            flatten_subgroups=True,
        ):
            await run_configuration_cache(
                client=client, namespace="nexus", cache=ConfigurationCache()
            )
    finally:
        await client.aclose()
