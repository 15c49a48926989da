"""`KubeClient` failure handling that the embedded cluster cannot produce yet.

FAKED: the API server. Every test here answers through `httpx.MockTransport` with bodies and
headers copied from a real kube-apiserver (k8s-golden 09, 10 and 12a): 429 with Retry-After
and a text body, 5xx Status bodies, transport errors and timeouts, watch ERROR lines and
malformed lines. Everything on the client side is the production code path.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from nexusd.core.errors import KubeConflict, KubeNotFound, KubeRejected, KubeUnavailable
from nexusd.kube.client import (
    JOBS,
    PODS,
    TEMPLATES,
    KubeClient,
    Resource,
    WatchEvent,
    WatchExpired,
    parse_retry_after,
    parse_watch_line,
)
from nexusd.kube.credentials import ClusterCredentials

if TYPE_CHECKING:
    from collections.abc import Callable

SERVER = "https://kube.example:6443"


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def client_for(
    handler: Callable[[httpx.Request], Any], *, token: str | None = "t0k3n", **kwargs: Any
) -> KubeClient:
    credentials = ClusterCredentials(server=SERVER, token=token, **kwargs)
    return KubeClient(credentials=credentials, transport=httpx.MockTransport(handler))


def test_resource_paths():
    assert JOBS.path(namespace="ns") == "/apis/batch/v1/namespaces/ns/jobs"
    assert PODS.path(namespace="ns", name="p") == "/api/v1/namespaces/ns/pods/p"
    assert TEMPLATES.api_version == "science.sneaksanddata.com/v1"
    assert PODS.api_version == "v1"
    cluster_scoped = Resource(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CRD", False
    )
    assert cluster_scoped.path(namespace=None, name="x") == (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x"
    )
    with pytest.raises(ValueError, match="namespaced"):
        JOBS.path(namespace=None)


async def test_requests_carry_token_accept_and_user_agent():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"kind": "JobList", "items": [], "metadata": {}})

    kube = client_for(handler)
    await kube.list(
        JOBS,
        namespace="ns",
        label_selector="a=b",
        field_selector="status.successful=1",
        limit=5,
        continue_token="abc",
        resource_version="0",
    )
    await kube.aclose()
    (request,) = seen
    assert request.headers["Authorization"] == "Bearer t0k3n"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("nexusd/")
    assert request.url.path == "/apis/batch/v1/namespaces/ns/jobs"
    assert dict(request.url.params) == {
        "labelSelector": "a=b",
        "fieldSelector": "status.successful=1",
        "limit": "5",
        "continue": "abc",
        "resourceVersion": "0",
    }


async def test_no_authorization_header_without_token():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    kube = client_for(handler, token=None)
    await kube.get(JOBS, namespace="ns", name="j")
    await kube.aclose()
    assert "Authorization" not in seen[0].headers


async def test_delete_sends_delete_options():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"kind": "Status", "status": "Success"})

    kube = client_for(handler)
    await kube.delete(
        JOBS, namespace="ns", name="j", propagation_policy="Foreground", grace_period_seconds=0
    )
    await kube.aclose()
    assert seen[0].method == "DELETE"
    assert json.loads(seen[0].content) == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Foreground",
        "gracePeriodSeconds": 0,
    }


@pytest.mark.parametrize(
    ("code", "body", "headers", "error", "reason", "message", "retry_after"),
    [
        (
            404,
            status(404, "NotFound", 'jobs.batch "x" not found'),
            {},
            KubeNotFound,
            "NotFound",
            'jobs.batch "x" not found',
            None,
        ),
        (
            409,
            status(409, "AlreadyExists", 'jobs.batch "x" already exists'),
            {},
            KubeConflict,
            "AlreadyExists",
            'jobs.batch "x" already exists',
            None,
        ),
        (
            409,
            status(409, "Conflict", "Operation cannot be fulfilled"),
            {},
            KubeConflict,
            "Conflict",
            "Operation cannot be fulfilled",
            None,
        ),
        (
            422,
            status(422, "Invalid", 'Job.batch "x" is invalid'),
            {},
            KubeRejected,
            "Invalid",
            'Job.batch "x" is invalid',
            None,
        ),
        (
            400,
            status(400, "BadRequest", "bad selector"),
            {},
            KubeRejected,
            "BadRequest",
            "bad selector",
            None,
        ),
        (
            401,
            status(401, "Unauthorized", "Unauthorized"),
            {},
            KubeRejected,
            "Unauthorized",
            "Unauthorized",
            None,
        ),
        (
            403,
            status(403, "Forbidden", "jobs.batch is forbidden"),
            {},
            KubeRejected,
            "Forbidden",
            "jobs.batch is forbidden",
            None,
        ),
        (
            413,
            status(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728"),
            {},
            KubeRejected,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
            None,
        ),
        # max-in-flight 429: text/plain body (k8s-golden 12a)
        (
            429,
            "Too many requests, please try again later.\n",
            {"Retry-After": "1"},
            KubeUnavailable,
            "",
            "Too many requests, please try again later.",
            1.0,
        ),
        # APF 429: a Status body
        (
            429,
            status(429, "TooManyRequests", "Too many requests"),
            {"Retry-After": "3"},
            KubeUnavailable,
            "TooManyRequests",
            "Too many requests",
            3.0,
        ),
        (
            500,
            status(500, "InternalError", "etcdserver: leader changed"),
            {},
            KubeUnavailable,
            "InternalError",
            "etcdserver: leader changed",
            None,
        ),
        (
            502,
            "<html>bad gateway</html>",
            {},
            KubeUnavailable,
            "",
            "<html>bad gateway</html>",
            None,
        ),
        (503, "", {"Retry-After": "7"}, KubeUnavailable, "", "HTTP 503 Service Unavailable", 7.0),
        (504, status(504, "Timeout", "timeout"), {}, KubeUnavailable, "Timeout", "timeout", None),
        (501, "not implemented", {}, KubeRejected, "", "not implemented", None),
        (404, "404 page not found\n", {}, KubeNotFound, "", "404 page not found", None),
    ],
)
async def test_error_mapping(code, body, headers, error, reason, message, retry_after):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, dict):
            return httpx.Response(code, json=body, headers=headers)
        return httpx.Response(code, text=body, headers=headers)

    kube = client_for(handler)
    with pytest.raises(error) as caught:
        await kube.create(JOBS, namespace="ns", body={})
    await kube.aclose()
    assert type(caught.value) is error
    assert caught.value.status == code
    assert caught.value.reason == reason
    assert str(caught.value) == message
    if error is KubeUnavailable:
        assert caught.value.retry_after == retry_after
    assert kube.statistics().requests == {("create", "jobs", code): 1}


@pytest.mark.parametrize(
    "exception",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
)
async def test_transport_errors_are_unavailable(exception):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    kube = client_for(handler)
    with pytest.raises(KubeUnavailable) as caught:
        await kube.get(JOBS, namespace="ns", name="x")
    await kube.aclose()
    assert caught.value.status == 0
    assert caught.value.retry_after is None
    assert kube.statistics().requests == {("get", "jobs", 0): 1}


async def test_non_json_success_is_unavailable():
    kube = client_for(lambda request: httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(KubeUnavailable, match="not JSON"):
        await kube.get(JOBS, namespace="ns", name="x")
    await kube.aclose()


def test_parse_retry_after():
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after(later) or 0) <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- watch ------------------------------------------------------------------------------------

BOOKMARK = json.dumps(
    {
        "type": "BOOKMARK",
        "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"resourceVersion": "417"}},
    }
)
MODIFIED = json.dumps(
    {
        "type": "MODIFIED",
        "object": {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "cm-1", "namespace": "golden-s10", "resourceVersion": "319"},
            "data": {"k": "1"},
        },
    }
)
EXPIRED = json.dumps(
    {"type": "ERROR", "object": status(410, "Expired", "too old resource version: 1 (739)")}
)
INTERNAL = json.dumps({"type": "ERROR", "object": status(500, "InternalError", "etcd down")})


def test_parse_watch_lines_from_a_real_server():
    event = parse_watch_line(MODIFIED)
    assert event == WatchEvent(type="MODIFIED", object=json.loads(MODIFIED)["object"])
    assert event.resource_version == "319"
    bookmark = parse_watch_line(BOOKMARK)
    assert bookmark.type == "BOOKMARK"
    assert bookmark.resource_version == "417"
    with pytest.raises(WatchExpired) as caught:
        parse_watch_line(EXPIRED)
    assert caught.value.status == 410
    assert caught.value.reason == "Expired"
    assert str(caught.value) == "too old resource version: 1 (739)"
    with pytest.raises(KubeUnavailable, match="etcd down"):
        parse_watch_line(INTERNAL)


@pytest.mark.parametrize(
    "line",
    ["{not json", '{"type":"ADDED"}', '{"object":{}}', "[1]", '{"type":"ADDED","object":[]}'],
)
def test_malformed_watch_lines_are_unavailable(line):
    with pytest.raises(KubeUnavailable, match="malformed watch line"):
        parse_watch_line(line)


async def test_watch_request_and_stream():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=(MODIFIED + "\n\n" + BOOKMARK + "\n").encode())

    kube = client_for(handler)
    async with kube.watch(
        TEMPLATES, namespace="ns", resource_version="42", timeout_seconds=60, label_selector="a=b"
    ) as events:
        received = [event async for event in events]
    await kube.aclose()
    assert [event.type for event in received] == ["MODIFIED", "BOOKMARK"]
    assert (
        seen[0].url.path
        == "/apis/science.sneaksanddata.com/v1/namespaces/ns/nexusalgorithmtemplates"
    )
    assert dict(seen[0].url.params) == {
        "watch": "true",
        "resourceVersion": "42",
        "timeoutSeconds": "60",
        "labelSelector": "a=b",
        "allowWatchBookmarks": "true",
    }
    assert seen[0].headers["Authorization"] == "Bearer t0k3n"
    assert kube.statistics().requests == {("watch", "nexusalgorithmtemplates", 200): 1}


async def test_watch_error_line_raises_watch_expired():
    kube = client_for(
        lambda request: httpx.Response(200, content=(MODIFIED + "\n" + EXPIRED + "\n").encode())
    )
    received: list[WatchEvent] = []
    with pytest.raises(WatchExpired):
        async with kube.watch(TEMPLATES, namespace="ns", resource_version="1") as events:
            async for event in events:
                received.append(event)
    await kube.aclose()
    assert [event.type for event in received] == ["MODIFIED"]


async def test_watch_refused_with_an_error_status():
    kube = client_for(
        lambda request: httpx.Response(403, json=status(403, "Forbidden", "no watch for you"))
    )
    with pytest.raises(KubeRejected, match="no watch for you"):
        async with kube.watch(TEMPLATES, namespace="ns", resource_version="1"):
            pass  # pragma: no cover
    await kube.aclose()


async def test_watch_connection_failure_is_unavailable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    kube = client_for(handler)
    with pytest.raises(KubeUnavailable):
        async with kube.watch(TEMPLATES, namespace="ns", resource_version="1"):
            pass  # pragma: no cover
    await kube.aclose()


async def test_refreshable_token_is_reread_in_a_thread_at_most_once_a_minute(autojump_clock):
    tokens = iter(["first", "second"])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={})

    kube = client_for(handler, token="initial", refresh_token=lambda: next(tokens))
    await kube.get(JOBS, namespace="ns", name="a")
    await kube.get(JOBS, namespace="ns", name="a")
    await trio.sleep(61)
    await kube.get(JOBS, namespace="ns", name="a")
    await kube.aclose()
    assert seen == ["Bearer first", "Bearer first", "Bearer second"]


async def test_failing_token_refresh_is_unavailable():
    def refresh() -> str:
        raise RuntimeError("exec plugin exited 1")

    kube = client_for(lambda request: httpx.Response(200, json={}), refresh_token=refresh)
    with pytest.raises(KubeUnavailable, match="exec plugin exited 1"):
        await kube.get(JOBS, namespace="ns", name="a")
    await kube.aclose()
