"""The template/workgroup cache: intake's only source of NexusAlgorithmTemplates and
NexusAlgorithmWorkgroups (contract §6.5; upstream uses shared informers with a 30 s resync).

`run_configuration_cache` runs one informer (kube/watching.py) over both resources in the
scheduler's namespace and reports `started()` only once both lists are in the cache, so intake
never answers "unknown template" for a template that exists. While the watches reconnect the
cache keeps serving the last known objects; a 403 (RBAC missing) or 404 (CRDs not installed)
stops the mode.

Lookups are synchronous dictionary reads: no I/O on the request path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from nexusd.kube.client import TEMPLATES, WORKGROUPS, Resource, WatchEvent
from nexusd.kube.watching import BACKOFF_CAP, backoff_delay, run_informer

if TYPE_CHECKING:
    from nexusd.kube.client import KubeClient

logger = logging.getLogger(__name__)

__all__ = ["BACKOFF_CAP", "ConfigurationCache", "backoff_delay", "run_configuration_cache"]


class ConfigurationCache:
    """The last known templates and workgroups of one namespace, by name (whole objects)."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, dict[str, Any]]] = {
            TEMPLATES.plural: {},
            WORKGROUPS.plural: {},
        }
        self._synced = False

    @property
    def synced(self) -> bool:
        """True once both initial lists have been loaded."""
        return self._synced

    def template(self, name: str) -> dict[str, Any] | None:
        """The NexusAlgorithmTemplate object called `name`, or None."""
        return self._objects[TEMPLATES.plural].get(name)

    def workgroup(self, name: str) -> dict[str, Any] | None:
        """The NexusAlgorithmWorkgroup object called `name`, or None."""
        return self._objects[WORKGROUPS.plural].get(name)

    def template_names(self) -> list[str]:
        """The names of all cached templates, sorted."""
        return sorted(self._objects[TEMPLATES.plural])

    def workgroup_names(self) -> list[str]:
        """The names of all cached workgroups, sorted."""
        return sorted(self._objects[WORKGROUPS.plural])

    def replace_all(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        """Replace every object of `resource` with a fresh list's items."""
        self._objects[resource.plural] = {_name(item): item for item in items if _name(item)}

    def resync(self, resource: Resource) -> None:
        """The informer's periodic resync: readers look the cache up on demand, nothing to do."""

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        """Apply one watch event (BOOKMARK and unknown types change nothing)."""
        name = _name(event.object)
        if not name:
            return
        if event.type in ("ADDED", "MODIFIED"):
            self._objects[resource.plural][name] = event.object
        elif event.type == "DELETED":
            self._objects[resource.plural].pop(name, None)

    def mark_synced(self) -> None:
        """Record that both initial lists are loaded."""
        self._synced = True


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""


async def run_configuration_cache(
    *,
    client: KubeClient,
    namespace: str,
    cache: ConfigurationCache,
    resync_seconds: float = 30.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """List both resources into `cache`, report started, then keep it current forever."""
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                run_informer,
                client=client,
                resources=[TEMPLATES, WORKGROUPS],
                namespace=namespace,
                sink=cache,
                resync_seconds=resync_seconds,
            )
        )
        cache.mark_synced()
        logger.info(
            "configuration cache synced: %d templates, %d workgroups",
            len(cache.template_names()),
            len(cache.workgroup_names()),
        )
        task_status.started()
    raise AssertionError("the informer never returns")  # pragma: no cover
