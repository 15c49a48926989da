"""The one Kubernetes client nexusd uses, for real clusters and the embedded one alike.

An async REST client over `httpx.AsyncClient` (which runs natively under trio): create, get,
list, replace, delete and watch for any `Resource`. Bodies are plain dicts in the API's JSON
shape; nothing is decoded into model classes.

Errors are translated at this edge from the `metav1.Status` body (or the text body some
endpoints send, e.g. the 429 of max-in-flight):

    404                         -> KubeNotFound
    409                         -> KubeConflict  (.reason AlreadyExists or Conflict)
    429, 500, 502, 503, 504     -> KubeUnavailable (.retry_after from Retry-After), but a 500
                                   "etcdserver: request is too large" -> KubeRejected
    transport errors, timeouts  -> KubeUnavailable
    any other 4xx/5xx           -> KubeRejected
    watch ERROR with code 410   -> WatchExpired (re-list, then watch again)

The client never retries: the caller's throttle/retry loop owns that policy.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import attrs
import httpx
import trio

from nexusd import __version__
from nexusd.core import metrics
from nexusd.core.errors import (
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeRejected,
    KubeUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from nexusd.kube.credentials import ClusterCredentials

logger = logging.getLogger(__name__)

#: HTTP codes worth retrying later (API priority & fairness, overload, proxies, restarts).
TRANSIENT_CODES: Final = frozenset({429, 500, 502, 503, 504})
#: The 500 an API server answers for an object its storage cannot hold: retrying cannot help.
TOO_LARGE: Final = "etcdserver: request is too large"
#: Longest time spent closing an abandoned watch stream.
STREAM_CLOSE_SECONDS: Final = 1.0
#: How often a refreshable token (exec plugin, rotated service-account token) is re-read.
TOKEN_REFRESH_SECONDS: Final = 60.0


@attrs.frozen
class Resource:
    """A REST resource: where its objects live in the API and what they are called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """The objects' `apiVersion`: `v1` for the core group, `group/version` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_prefix(self) -> str:
        """`/api/v1` for the core group, `/apis/{group}/{version}` otherwise."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, *, namespace: str | None, name: str | None = None) -> str:
        """The collection path, or an object's path when `name` is given."""
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} is namespaced: a namespace is required")
            base = f"{self.api_prefix}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        else:
            base = f"{self.api_prefix}/{self.plural}"
        # Quoted: a name from outside ("x/..", "?limit=1") must not become another path.
        return f"{base}/{quote(name, safe='')}" if name is not None else base


SCIENCE_GROUP: Final = "science.sneaksanddata.com"
JOBS: Final = Resource("batch", "v1", "jobs", "Job")
PODS: Final = Resource("", "v1", "pods", "Pod")
EVENTS: Final = Resource("", "v1", "events", "Event")
NODES: Final = Resource("", "v1", "nodes", "Node", namespaced=False)
SECRETS: Final = Resource("", "v1", "secrets", "Secret")
CONFIGMAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
TEMPLATES: Final = Resource(
    SCIENCE_GROUP, "v1", "nexusalgorithmtemplates", "NexusAlgorithmTemplate"
)
WORKGROUPS: Final = Resource(
    SCIENCE_GROUP, "v1", "nexusalgorithmworkgroups", "NexusAlgorithmWorkgroup"
)
CRDS: Final = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone / Expired): list again, then watch."""


@attrs.frozen
class WatchEvent:
    """One line of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK and the object."""

    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        """The object's resourceVersion (for a BOOKMARK, the point to resume from)."""
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


@attrs.frozen
class ClientStatistics:
    """Request counts by (verb, resource plural, HTTP status code); code 0 = no response."""

    requests: dict[tuple[str, str, int], int]

    def total(self, *, verb: str | None = None, status: int | None = None) -> int:
        """The number of requests, optionally only those of one verb and/or status code."""
        return sum(
            count
            for (v, _plural, code), count in self.requests.items()
            if (verb is None or v == verb) and (status is None or code == status)
        )


#: Every connection the pool may open may also stay open idle (httpx keeps only 20 by default):
#: with more calls in flight than idle slots (submission workers, watches, the maintainer's
#: deletes), each call beyond them would open a TCP (and TLS) connection and close it after.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)


class KubeClient:
    """An async client for one API server. Close it with `aclose()`.

    `transport` replaces httpx's network transport (tests use `httpx.MockTransport`).
    """

    def __init__(
        self,
        *,
        credentials: ClusterCredentials,
        timeout: float = 30.0,
        user_agent: str = f"nexusd/{__version__}",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._token = credentials.token
        self._token_read_at = -math.inf
        self._token_lock = trio.Lock()
        self._counts: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self._http = httpx.AsyncClient(
            base_url=credentials.server,
            verify=credentials.ssl_context() if transport is None else True,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            limits=POOL_LIMITS,
        )

    @property
    def server(self) -> str:
        """The API server's base URL."""
        return self._credentials.server

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def statistics(self) -> ClientStatistics:
        """A snapshot of the request counters."""
        return ClientStatistics(requests=dict(self._counts))

    async def create(
        self, resource: Resource, *, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST a new object; KubeConflict(reason='AlreadyExists') if the name is taken."""
        return await self._call(
            "create", resource, "POST", resource.path(namespace=namespace), body=body
        )

    async def get(self, resource: Resource, *, namespace: str | None, name: str) -> dict[str, Any]:
        """GET one object; KubeNotFound if it does not exist."""
        return await self._call(
            "get", resource, "GET", resource.path(namespace=namespace, name=name)
        )

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """GET the collection: the raw List (`items`, `metadata.resourceVersion/continue`)."""
        params = _params(
            labelSelector=label_selector,
            fieldSelector=field_selector,
            limit=limit,
            resourceVersion=resource_version,
            **{"continue": continue_token},
        )
        return await self._call(
            "list", resource, "GET", resource.path(namespace=namespace), params=params
        )

    async def replace(
        self, resource: Resource, *, namespace: str | None, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the whole object; KubeConflict(reason='Conflict') on a stale resourceVersion."""
        return await self._call(
            "replace", resource, "PUT", resource.path(namespace=namespace, name=name), body=body
        )

    async def delete(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        name: str,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        """DELETE with DeleteOptions; returns the object (being deleted) or a Success Status."""
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return await self._call(
            "delete",
            resource,
            "DELETE",
            resource.path(namespace=namespace, name=name),
            body=options,
        )

    @contextlib.asynccontextmanager
    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncGenerator[AsyncIterator[WatchEvent], None]:
        """Open a watch from `resource_version`; yields an iterator of `WatchEvent`s.

        The iterator ends when the server closes the stream (`timeout_seconds` reached); the
        caller watches again from the last resourceVersion it saw. It raises `WatchExpired` on
        a 410 ERROR line, `KubeUnavailable` when the connection breaks.
        """
        params = _params(
            watch="true",
            resourceVersion=resource_version,
            timeoutSeconds=timeout_seconds,
            labelSelector=label_selector,
            fieldSelector=field_selector,
            allowWatchBookmarks="true" if allow_bookmarks else None,
        )
        # The server may stay silent between events for as long as the watch lasts.
        read = None if timeout_seconds is None else timeout_seconds + self._timeout
        timeout = httpx.Timeout(self._timeout, read=read)
        path = resource.path(namespace=namespace)
        headers = await self._auth_headers()
        try:
            async with self._http.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                self._count("watch", resource, response.status_code)
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                lines = response.aiter_lines()
                try:
                    yield _WatchEvents(lines)
                finally:
                    await _finish_stream(response, lines)
        except httpx.TransportError as exc:
            raise _transport_error(exc, "watch", path) from exc

    async def _call(
        self,
        verb: str,
        resource: Resource,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        headers = await self._auth_headers()
        try:
            response = await self._http.request(
                method, path, params=params, json=body, headers=headers
            )
        except httpx.TransportError as exc:
            self._count(verb, resource, 0)
            raise _transport_error(exc, method, path) from exc
        self._count(verb, resource, response.status_code)
        if response.status_code >= 400:
            raise error_from_response(response)
        logger.debug("%s %s -> %d", method, path, response.status_code)
        try:
            decoded = response.json()
        except ValueError as exc:
            raise KubeUnavailable(
                f"{method} {path}: response is not JSON", status=response.status_code
            ) from exc
        if not isinstance(decoded, dict):
            raise KubeUnavailable(f"{method} {path}: response is not a JSON object")
        return decoded

    def _count(self, verb: str, resource: Resource, status: int) -> None:
        self._counts[(verb, resource.plural, status)] += 1
        metrics.kube_request(verb, resource.plural, status)

    async def _auth_headers(self) -> dict[str, str]:
        """`Authorization: Bearer <token>`, refreshing a rotating token at most once a minute."""
        refresh = self._credentials.refresh_token
        if (
            refresh is not None
            and trio.current_time() - self._token_read_at > TOKEN_REFRESH_SECONDS
        ):
            async with self._token_lock:
                if trio.current_time() - self._token_read_at > TOKEN_REFRESH_SECONDS:
                    try:
                        self._token = await trio.to_thread.run_sync(refresh)
                    except Exception as exc:  # an exec plugin can fail in any way
                        raise KubeUnavailable(f"cannot refresh the cluster token: {exc}") from exc
                    self._token_read_at = trio.current_time()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}


class _WatchEvents:
    """Decodes watch lines into `WatchEvent`s (an iterator object, not an async generator)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    def __aiter__(self) -> _WatchEvents:
        return self

    async def __anext__(self) -> WatchEvent:
        async for line in self._lines:
            if line.strip():
                return parse_watch_line(line)
        raise StopAsyncIteration


async def _finish_stream(response: httpx.Response, lines: AsyncIterator[str]) -> None:
    """Close a watch stream that may not have been read to its end.

    httpx reads a body through a chain of nested async generators; closing only the outermost
    one leaves the inner ones to the garbage collector (trio then warns, and their cleanup
    runs late). So: close the response first, then run the chain to its end (the closed
    connection ends or fails at once), which finishes every generator in it. Shielded and
    bounded, because this also runs when the watch is being cancelled.
    """
    with trio.move_on_after(STREAM_CLOSE_SECONDS, shield=True):
        await response.aclose()
        try:
            async for _ in lines:
                pass
        except Exception:  # any ending will do: the stream is being discarded
            pass


def parse_watch_line(line: str) -> WatchEvent:
    """Decode one watch line; an ERROR line becomes the matching exception."""
    try:
        decoded = json.loads(line)
        event_type = decoded["type"]
        obj = decoded["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KubeUnavailable(f"malformed watch line: {line[:200]!r}") from exc
    if not isinstance(obj, dict) or not isinstance(event_type, str):
        raise KubeUnavailable(f"malformed watch line: {line[:200]!r}")
    if event_type == "ERROR":
        raw_code = obj.get("code")
        code = raw_code if isinstance(raw_code, int) else 0
        message = str(obj.get("message") or "watch error")
        reason = str(obj.get("reason") or "")
        if code == 410 or reason in ("Expired", "Gone"):
            raise WatchExpired(message, status=410, reason=reason)
        raise error_for_status(code, message=message, reason=reason)
    return WatchEvent(type=event_type, object=obj)


def error_from_response(response: httpx.Response) -> KubeError:
    """The exception for an HTTP error answer, from its Status body or its text."""
    message = response.text.strip()
    reason = ""
    try:
        status = response.json()
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        message = str(status.get("message") or message)
        reason = str(status.get("reason") or "")
    if not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}"
    return error_for_status(
        response.status_code,
        message=message,
        reason=reason,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def error_for_status(
    code: int, *, message: str, reason: str = "", retry_after: float | None = None
) -> KubeError:
    """Map an HTTP status code to nexusd's exception tree (see the module docstring)."""
    if code == 404:
        return KubeNotFound(message, status=code, reason=reason)
    if code == 409:
        return KubeConflict(message, status=code, reason=reason)
    if code in TRANSIENT_CODES and not (code == 500 and TOO_LARGE in message):
        return KubeUnavailable(message, status=code, reason=reason, retry_after=retry_after)
    return KubeRejected(message, status=code, reason=reason)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _transport_error(exc: httpx.TransportError, method: str, path: str) -> KubeUnavailable:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return KubeUnavailable(f"{method} {path} {kind}: {exc!r}")


def _params(**values: object) -> dict[str, str]:
    """Query parameters without the unset ones."""
    return {key: str(value) for key, value in values.items() if value is not None}
