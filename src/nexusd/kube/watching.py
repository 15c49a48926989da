"""List-then-watch that loses no events: the informer loop every cache and watcher uses.

`run_informer` lists each resource (following `continue` pages), hands the items to the sink,
reports `started()` only once every initial list is in, then watches each resource from its
list's resourceVersion, with client-go's semantics:

- ADDED / MODIFIED / DELETED go to `sink.apply`; BOOKMARK only moves the resourceVersion;
- a watch that ends (server timeout, `MAX_WATCH_SECONDS`) is reopened from the last
  resourceVersion seen, with no list;
- only a 410 (`WatchExpired`: the resourceVersion is too old to resume from) re-lists;
- every `resync_seconds`, `sink.resync(resource)` replays the sink's own cache (client-go's
  resync re-delivers the cache, it does not re-list), so a sink can act again on what it holds
  at no cost to the API server. A caller that repairs drift from a fresh list instead (the
  template sync, whose caches are small) asks for `relist_on_resync=True`;
- transient failures (`KubeUnavailable`: 429, 5xx, broken or silent streams) reconnect from the
  last resourceVersion after a capped exponential back-off with jitter; the sink keeps what it
  had meanwhile (a version the server no longer has answers 410, which re-lists);
- any other error (403: RBAC missing, 404: CRD not installed) propagates and stops the mode.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn, Protocol

import trio

from nexusd.core.errors import KubeNotFound, KubeUnavailable
from nexusd.kube.client import KubeClient, Resource, WatchEvent, WatchExpired

logger = logging.getLogger(__name__)

#: Back-off between reconnects: BACKOFF_BASE * 2**attempt seconds, at most BACKOFF_CAP.
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 30.0
#: A watch that ends sooner than this without any event counts as a failure (no hot loop).
MIN_WATCH_SECONDS: Final = 1.0
#: Upper bound of the server-side watch duration (client-go uses 5-10 minutes).
MAX_WATCH_SECONDS: Final = 300


class Sink(Protocol):
    """Where an informer delivers objects. Every call is synchronous: no I/O under them.

    `replace_all` is a (re-)list, `apply` one watch event, and `resync` the periodic resync:
    nothing new from the server, replay your cache if your consumers want to act again.
    """

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None: ...

    def apply(self, resource: Resource, event: WatchEvent) -> None: ...

    def resync(self, resource: Resource) -> None: ...


def _name(obj: object) -> str:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    return str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""


def _version(event: WatchEvent) -> str:
    """The event's resourceVersion, or "" when the object has none (opaque: never parsed)."""
    metadata = event.object.get("metadata") if isinstance(event.object, Mapping) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return version if isinstance(version, str) else ""


def backoff_delay(attempt: int) -> float:
    """Capped exponential back-off with up to 10% jitter (so replicas do not reconnect in step)."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 16))
    return delay * (1 + 0.1 * random.random())


class _Watcher:
    def __init__(
        self,
        *,
        client: KubeClient,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None,
        sink: Sink,
        field_selector: str | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.sink = sink

    async def list_into_sink(self) -> str:
        """One full list into the sink; returns its resourceVersion."""
        items: list[dict[str, Any]] = []
        continue_token: str | None = None
        while True:
            page = await self.client.list(
                self.resource,
                namespace=self.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                limit=500,
                continue_token=continue_token,
            )
            items.extend(item for item in page.get("items") or [] if isinstance(item, dict))
            metadata = page.get("metadata") or {}
            continue_token = metadata.get("continue") or None
            if continue_token is None:
                break
        self.sink.replace_all(self.resource, items)
        version = str(metadata.get("resourceVersion") or "")
        logger.debug(
            "listed %d %s at resourceVersion %s", len(items), self.resource.plural, version
        )
        return version

    async def initial_list(self) -> str:
        """List until it succeeds (transient errors only); returns the resourceVersion.

        A resource the server does not serve at all is a deployment mistake, said plainly.
        """
        attempt = 0
        while True:
            try:
                return await self.list_into_sink()
            except KubeNotFound as exc:
                resource = self.resource
                raise KubeNotFound(
                    f"the cluster at {self.client.server} does not serve "
                    f"{resource.plural}.{resource.group or 'core'}/{resource.version} ({exc}); "
                    "for nexusd's NexusAlgorithmTemplate and NexusAlgorithmWorkgroup, install "
                    "its CustomResourceDefinitions: kubectl apply -f crds/",
                    status=exc.status,
                    reason=exc.reason,
                ) from None
            except KubeUnavailable as exc:
                delay = backoff_delay(attempt)
                attempt += 1
                logger.warning(
                    "listing %s failed (%s); retrying in %.1f s", self.resource.plural, exc, delay
                )
                await trio.sleep(delay)

    async def keep_synced(
        self, resource_version: str, resync_seconds: float, relist_on_resync: bool
    ) -> NoReturn:
        """Watch from `resource_version` forever; re-list only on 410, resync every period."""
        plural = self.resource.plural
        watch_seconds = max(1, math.ceil(min(resync_seconds, MAX_WATCH_SECONDS)))
        next_resync = trio.current_time() + resync_seconds
        must_list = False
        attempt = 0
        while True:
            try:
                if must_list:
                    resource_version = await self.list_into_sink()
                    must_list = False
                    attempt = 0
                if trio.current_time() >= next_resync:
                    if relist_on_resync:
                        resource_version = await self.list_into_sink()
                    else:
                        self._resync()
                    next_resync = trio.current_time() + resync_seconds
                opened = trio.current_time()
                seen = 0
                with trio.move_on_at(next_resync):
                    async with self.client.watch(
                        self.resource,
                        namespace=self.namespace,
                        resource_version=resource_version,
                        timeout_seconds=watch_seconds,
                        label_selector=self.label_selector,
                        field_selector=self.field_selector,
                    ) as events:
                        async for event in events:
                            seen += 1
                            self._deliver(event)
                            resource_version = _version(event) or resource_version
                if seen:
                    attempt = 0
                elif (
                    trio.current_time() < next_resync
                    and trio.current_time() - opened < MIN_WATCH_SECONDS
                ):
                    raise KubeUnavailable(f"watch of {plural} ended at once without events")
            except WatchExpired as exc:
                logger.info("watch of %s expired (%s); listing again", plural, exc)
                must_list = True
            except KubeUnavailable as exc:
                delay = backoff_delay(attempt)
                attempt += 1
                logger.warning(
                    "watching %s failed (%s); reconnecting in %.1f s", plural, exc, delay
                )
                await trio.sleep(delay)

    def _deliver(self, event: WatchEvent) -> None:
        """Hand one event to the sink; an object the sink cannot take is logged and skipped
        (one malformed or surprising object must not stop the informer)."""
        logger.debug("%s %s %s", self.resource.plural, event.type, _name(event.object))
        try:
            self.sink.apply(self.resource, event)
        except Exception:
            logger.exception(
                "skipping a %s %s event for %r that the cache could not take",
                event.type,
                self.resource.kind,
                _name(event.object),
            )

    def _resync(self) -> None:
        logger.debug("resync of %s: replaying the cache", self.resource.plural)
        try:
            self.sink.resync(self.resource)
        except Exception:
            logger.exception(
                "the resync of %s failed; the next one tries again", self.resource.plural
            )


async def run_informer(
    *,
    client: KubeClient,
    resources: Sequence[Resource],
    namespace: str | None,
    sink: Sink,
    label_selector: str | None = None,
    field_selector: str | None = None,
    resync_seconds: float = 30.0,
    relist_on_resync: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """List every resource into `sink`, report started, then keep the sink current forever."""
    plurals = ", ".join(resource.plural for resource in resources)
    logger.info("informer for %s in %s starting", plurals, namespace)
    watchers = [
        _Watcher(
            client=client,
            resource=resource,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            sink=sink,
        )
        for resource in resources
    ]
    try:
        versions = [await watcher.initial_list() for watcher in watchers]
        task_status.started()
        async with trio.open_nursery() as nursery:
            for watcher, version in zip(watchers, versions, strict=True):
                nursery.start_soon(watcher.keep_synced, version, resync_seconds, relist_on_resync)
    finally:
        logger.info("informer for %s in %s stopped", plurals, namespace)
    raise AssertionError("the watch loops never return")  # pragma: no cover
