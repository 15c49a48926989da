"""List-then-watch that loses no events: the informer loop every cache and watcher uses.

`run_informer` lists each resource (following `continue` pages), hands the items to the sink,
reports `started()` only once every initial list is in, then watches each resource from its
list's resourceVersion:

- ADDED / MODIFIED / DELETED go to `sink.apply`; BOOKMARK only moves the resourceVersion;
- a 410 (`WatchExpired`) re-lists, and so does every `resync_seconds`;
- transient failures (`KubeUnavailable`: 429, 5xx, broken or silent streams) reconnect after a
  capped exponential back-off with jitter; the sink keeps what it had meanwhile;
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
    """Where an informer delivers objects. Both calls are synchronous: no I/O under them."""

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None: ...

    def apply(self, resource: Resource, event: WatchEvent) -> None: ...


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""


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
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
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

    async def keep_synced(self, resource_version: str, resync_seconds: float) -> NoReturn:
        """Watch from `resource_version`; re-list on 410 and every `resync_seconds`."""
        plural = self.resource.plural
        watch_seconds = max(1, math.ceil(min(resync_seconds, MAX_WATCH_SECONDS)))
        next_resync = trio.current_time() + resync_seconds
        must_list = False
        attempt = 0
        while True:
            try:
                if must_list or trio.current_time() >= next_resync:
                    resource_version = await self.list_into_sink()
                    must_list = False
                    next_resync = trio.current_time() + resync_seconds
                    attempt = 0
                opened = trio.current_time()
                seen = 0
                with trio.move_on_at(next_resync):
                    async with self.client.watch(
                        self.resource,
                        namespace=self.namespace,
                        resource_version=resource_version,
                        timeout_seconds=watch_seconds,
                        label_selector=self.label_selector,
                    ) as events:
                        async for event in events:
                            seen += 1
                            logger.debug("%s %s %s", plural, event.type, _name(event.object))
                            self.sink.apply(self.resource, event)
                            resource_version = event.resource_version or resource_version
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


async def run_informer(
    *,
    client: KubeClient,
    resources: Sequence[Resource],
    namespace: str | None,
    sink: Sink,
    label_selector: str | None = None,
    resync_seconds: float = 30.0,
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
            sink=sink,
        )
        for resource in resources
    ]
    try:
        versions = [await watcher.initial_list() for watcher in watchers]
        task_status.started()
        async with trio.open_nursery() as nursery:
            for watcher, version in zip(watchers, versions, strict=True):
                nursery.start_soon(watcher.keep_synced, version, resync_seconds)
    finally:
        logger.info("informer for %s in %s stopped", plurals, namespace)
    raise AssertionError("the watch loops never return")  # pragma: no cover
