"""The template/workgroup cache's recovery paths: 410 re-list, reconnect with back-off,
transient errors during the initial list, and errors that must stop it.

FAKED: the API server, as a scripted `httpx.MockTransport` (list bodies and watch lines in
the shapes a real kube-apiserver sends, k8s-golden 09/10), because the embedded cluster cannot
expire a watch or fail on demand. Time is trio's `autojump_clock`.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.core.errors import KubeRejected
from nexusd.kube.client import KubeClient
from nexusd.kube.configuration import (
    BACKOFF_CAP,
    ConfigurationCache,
    backoff_delay,
    run_configuration_cache,
)
from nexusd.kube.credentials import ClusterCredentials

if TYPE_CHECKING:
    from collections.abc import Callable

TEMPLATES_PATH = "/apis/science.sneaksanddata.com/v1/namespaces/nexus/nexusalgorithmtemplates"
WORKGROUPS_PATH = "/apis/science.sneaksanddata.com/v1/namespaces/nexus/nexusalgorithmworkgroups"


def obj(kind: str, name: str, rv: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "science.sneaksanddata.com/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "nexus", "resourceVersion": rv},
        "spec": spec,
    }


def listing(kind: str, rv: str, *items: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "kind": f"{kind}List",
            "apiVersion": "science.sneaksanddata.com/v1",
            "metadata": {"resourceVersion": rv},
            "items": list(items),
        },
    )


def stream(*events: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content="".join(json.dumps(e) + "\n" for e in events).encode())


EXPIRED = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "too old resource version",
        "reason": "Expired",
        "code": 410,
    },
}


class ScriptedServer:
    """Answers each (path, watch?) from a queue of responses; when a queue runs dry, lists
    repeat their last answer and watches park forever (a quiet, healthy watch)."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, bool], list[Callable[[], httpx.Response]]] = {}
        self.requests: list[httpx.Request] = []
        self.last: dict[tuple[str, bool], Callable[[], httpx.Response]] = {}

    def add(self, path: str, *, watch: bool, response: Callable[[], httpx.Response]) -> None:
        self.script.setdefault((path, watch), []).append(response)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.url.path, request.url.params.get("watch") == "true")
        queue = self.script.get(key, [])
        if queue:
            self.last[key] = queue.pop(0)
            return self.last[key]()
        if key[1]:
            await trio.sleep_forever()
        return self.last[key]()

    def calls(self, path: str, *, watch: bool) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if r.url.path == path and (r.url.params.get("watch") == "true") == watch
        ]


def client_for(server: ScriptedServer) -> KubeClient:
    return KubeClient(
        credentials=ClusterCredentials(server="https://kube.example"),
        transport=httpx.MockTransport(server),
    )


def base_script(server: ScriptedServer) -> None:
    server.add(
        TEMPLATES_PATH,
        watch=False,
        response=lambda: listing(
            "NexusAlgorithmTemplate", "10", obj("NexusAlgorithmTemplate", "a", "5")
        ),
    )
    server.add(
        WORKGROUPS_PATH,
        watch=False,
        response=lambda: listing(
            "NexusAlgorithmWorkgroup", "11", obj("NexusAlgorithmWorkgroup", "w", "6", cluster="c")
        ),
    )


async def test_watch_expired_relists_and_resumes(nursery: trio.Nursery, autojump_clock):
    server = ScriptedServer()
    base_script(server)
    server.add(
        TEMPLATES_PATH,
        watch=True,
        response=lambda: stream(
            {"type": "ADDED", "object": obj("NexusAlgorithmTemplate", "b", "12")}, EXPIRED
        ),
    )
    # After the 410: the re-list no longer has "a" (deleted while we were not watching).
    server.add(
        TEMPLATES_PATH,
        watch=False,
        response=lambda: listing(
            "NexusAlgorithmTemplate",
            "20",
            obj("NexusAlgorithmTemplate", "b", "12"),
            obj("NexusAlgorithmTemplate", "c", "19"),
        ),
    )
    cache = ConfigurationCache()
    kube = client_for(server)
    await nursery.start(
        functools.partial(
            run_configuration_cache,
            client=kube,
            namespace="nexus",
            cache=cache,
            resync_seconds=3600,
        )
    )
    await trio.sleep(1)
    assert cache.template_names() == ["b", "c"]
    assert cache.workgroup_names() == ["w"]
    watches = server.calls(TEMPLATES_PATH, watch=True)
    assert [w.url.params["resourceVersion"] for w in watches] == ["10", "20"]
    assert all(w.url.params["allowWatchBookmarks"] == "true" for w in watches)
    assert server.calls(WORKGROUPS_PATH, watch=True)[0].url.params["resourceVersion"] == "11"


async def test_bookmarks_move_the_resource_version(nursery: trio.Nursery, autojump_clock):
    server = ScriptedServer()
    base_script(server)
    bookmark = {
        "type": "BOOKMARK",
        "object": {
            "kind": "NexusAlgorithmTemplate",
            "apiVersion": "science.sneaksanddata.com/v1",
            "metadata": {"resourceVersion": "99"},
        },
    }
    # The server ends the watch (timeoutSeconds) after a bookmark; nexusd resumes from it.
    server.add(TEMPLATES_PATH, watch=True, response=lambda: stream(bookmark))
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(
            run_configuration_cache,
            client=client_for(server),
            namespace="nexus",
            cache=cache,
            resync_seconds=3600,
        )
    )
    await trio.sleep(1)
    watches = server.calls(TEMPLATES_PATH, watch=True)
    assert [w.url.params["resourceVersion"] for w in watches] == ["10", "99"]
    assert cache.template_names() == ["a"]


async def test_unavailable_watch_reconnects_with_backoff(nursery: trio.Nursery, autojump_clock):
    server = ScriptedServer()
    base_script(server)
    for _ in range(4):
        server.add(
            TEMPLATES_PATH,
            watch=True,
            response=lambda: httpx.Response(503, text="", headers={"Retry-After": "1"}),
        )
    server.add(
        TEMPLATES_PATH,
        watch=True,
        response=lambda: stream(
            {"type": "DELETED", "object": obj("NexusAlgorithmTemplate", "a", "30")}
        ),
    )
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(
            run_configuration_cache,
            client=client_for(server),
            namespace="nexus",
            cache=cache,
            resync_seconds=3600,
        )
    )
    start = trio.current_time()
    with trio.fail_after(60):
        while cache.template("a") is not None:
            await trio.sleep(0.01)
    elapsed = trio.current_time() - start
    # 0.5 + 1 + 2 + 4 s of back-off (+ up to 10% jitter) before the fifth watch succeeds.
    assert 7.5 <= elapsed <= 7.5 * 1.1 + 0.1
    # Five attempts, plus perhaps the quiet re-watch after the fifth stream ended.
    assert len(server.calls(TEMPLATES_PATH, watch=True)) in (5, 6)
    assert cache.workgroup("w") is not None  # the other loop was never disturbed


async def test_empty_watches_do_not_spin(nursery: trio.Nursery, autojump_clock):
    server = ScriptedServer()
    base_script(server)
    for _ in range(50):
        server.add(TEMPLATES_PATH, watch=True, response=lambda: stream())
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(
            run_configuration_cache,
            client=client_for(server),
            namespace="nexus",
            cache=cache,
            resync_seconds=3600,
        )
    )
    await trio.sleep(10)
    # Instantly-closed watches are treated as failures and backed off, not retried hot.
    assert len(server.calls(TEMPLATES_PATH, watch=True)) < 10


async def test_initial_list_retries_transient_errors(nursery: trio.Nursery, autojump_clock):
    server = ScriptedServer()
    server.add(
        TEMPLATES_PATH,
        watch=False,
        response=lambda: httpx.Response(
            500,
            json={
                "kind": "Status",
                "status": "Failure",
                "message": "etcd",
                "reason": "InternalError",
                "code": 500,
            },
        ),
    )
    base_script(server)
    cache = ConfigurationCache()
    start = trio.current_time()
    await nursery.start(
        functools.partial(
            run_configuration_cache, client=client_for(server), namespace="nexus", cache=cache
        )
    )
    assert trio.current_time() - start >= 0.5
    assert cache.synced
    assert cache.template_names() == ["a"]


async def test_missing_crd_stops_the_cache(autojump_clock):
    """A permanent refusal (RBAC, CRD not installed) is not retried: the mode stops."""
    server = ScriptedServer()
    server.add(
        TEMPLATES_PATH,
        watch=False,
        response=lambda: httpx.Response(
            403,
            json={
                "kind": "Status",
                "status": "Failure",
                "message": "forbidden",
                "reason": "Forbidden",
                "code": 403,
            },
        ),
    )
    cache = ConfigurationCache()
    with pytest.RaisesGroup(
        pytest.RaisesExc(KubeRejected, match="forbidden"), flatten_subgroups=True
    ):
        await run_configuration_cache(client=client_for(server), namespace="nexus", cache=cache)
    assert not cache.synced


async def test_paged_initial_list(nursery: trio.Nursery, autojump_clock):
    server = ScriptedServer()
    first = listing("NexusAlgorithmTemplate", "10", obj("NexusAlgorithmTemplate", "p1", "1"))
    first_body = json.loads(first.content)
    first_body["metadata"]["continue"] = "tok"
    server.add(TEMPLATES_PATH, watch=False, response=lambda: httpx.Response(200, json=first_body))
    server.add(
        TEMPLATES_PATH,
        watch=False,
        response=lambda: listing(
            "NexusAlgorithmTemplate", "10", obj("NexusAlgorithmTemplate", "p2", "2")
        ),
    )
    server.add(
        WORKGROUPS_PATH, watch=False, response=lambda: listing("NexusAlgorithmWorkgroup", "11")
    )
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(
            run_configuration_cache, client=client_for(server), namespace="nexus", cache=cache
        )
    )
    assert cache.template_names() == ["p1", "p2"]
    lists = server.calls(TEMPLATES_PATH, watch=False)
    assert lists[1].url.params["continue"] == "tok"


def test_backoff_is_capped_exponential():
    assert 0.5 <= backoff_delay(0) <= 0.55
    assert 4.0 <= backoff_delay(3) <= 4.4
    assert BACKOFF_CAP <= backoff_delay(100) <= BACKOFF_CAP * 1.1
