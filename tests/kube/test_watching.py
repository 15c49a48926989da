"""The informer loop (`run_informer`) against the embedded cluster over loopback HTTP: real
lists, real watches, real resourceVersions; the sink is a recording one written here. What is
checked: the periodic resync calls `sink.resync` and lists nothing, and a sink that raises on
one object (a malformed or surprising one) does not stop the informer."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.kube.client import TEMPLATES, KubeClient, Resource, WatchEvent
from nexusd.kube.watching import run_informer

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.timeout(20)

NS = "nexus"


class Recorder:
    """A sink that remembers every call; it raises on objects named `poison-*`."""

    def __init__(self) -> None:
        self.lists = 0
        self.resyncs = 0
        self.names: list[str] = []

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        self.lists += 1

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        name = event.object["metadata"]["name"]
        if name.startswith("poison-"):
            raise TypeError(f"cannot take {name}")
        self.names.append(name)

    def resync(self, resource: Resource) -> None:
        self.resyncs += 1


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.02)


async def test_resync_replays_and_never_lists(kube: KubeClient, nursery: trio.Nursery) -> None:
    sink = Recorder()
    await nursery.start(
        functools.partial(
            run_informer,
            client=kube,
            resources=[TEMPLATES],
            namespace=NS,
            sink=sink,
            resync_seconds=0.2,
        )
    )
    lists = kube.statistics().total(verb="list")
    await eventually(lambda: sink.resyncs >= 3)
    assert sink.lists == 1
    assert kube.statistics().total(verb="list") == lists


async def test_an_object_the_sink_cannot_take_is_skipped(
    kube: KubeClient, nursery: trio.Nursery, make_template: Callable[[str], dict[str, Any]]
) -> None:
    sink = Recorder()
    await nursery.start(
        functools.partial(run_informer, client=kube, resources=[TEMPLATES], namespace=NS, sink=sink)
    )
    await kube.create(TEMPLATES, namespace=NS, body=make_template("poison-one"))
    await kube.create(TEMPLATES, namespace=NS, body=make_template("after"))
    await eventually(lambda: "after" in sink.names)
    assert "poison-one" not in sink.names
