"""The shards: one reconciler per cluster, kept in step with a directory of kubeconfigs.

Every `*.kubeconfig` in `shards_dir` is a shard named by the file name before its first dot
(`kube.shards.shard_name_for`, upstream's rule). Unlike upstream, the directory is scanned again
every `shards_rescan` seconds: a new file starts a reconciler, a removed one stops and drops
its shard (its status entries go with it), a changed one gets a new client. Shards passed in
directly (`nexusd dev --shards N`) run for as long as the directory does.

A file that cannot be loaded is logged (once per content) and skipped; it never stops the
other shards.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from nexusd.core.errors import ConfigError
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.kube.shards import shard_name_for
from nexusd.syncing.shard_sync import ShardReconciler

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from nexusd.core.clock import Clock
    from nexusd.syncing.cache import ObjectCache
    from nexusd.syncing.settings import SyncSettings
    from nexusd.syncing.status import Key, SyncStatus

logger = logging.getLogger(__name__)


@attrs.define
class _Running:
    reconciler: ShardReconciler
    scope: trio.CancelScope
    content: bytes | None
    """The kubeconfig it was built from; None for a shard passed in directly."""


class ShardDirectory:
    """The running shard reconcilers; `enqueue` hands a key to each."""

    def __init__(
        self,
        *,
        settings: SyncSettings,
        controller: ObjectCache,
        status: SyncStatus,
        notify: Callable[[Key | None], None],
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.controller = controller
        self.status = status
        self._notify = notify
        self._running: dict[str, _Running] = {}
        self._unloadable: dict[str, bytes] = {}

    def enqueue(self, key: Key) -> None:
        for running in self._running.values():
            running.reconciler.enqueue(key)

    async def run(
        self,
        *,
        extra_shards: Mapping[str, KubeClient],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Start the given shards and the directory's, report started, then rescan forever."""
        async with trio.open_nursery() as nursery:
            for name, client in sorted(extra_shards.items()):
                await self._start(nursery, name, client, content=None)
            await self._rescan(nursery)
            task_status.started()
            while True:
                await trio.sleep(self.settings.shards_rescan)
                await self._rescan(nursery)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _rescan(self, nursery: trio.Nursery) -> None:
        if self.settings.shards_dir is None:
            return
        found = await trio.to_thread.run_sync(_scan, self.settings.shards_dir)
        for name, running in list(self._running.items()):
            if running.content is not None and name not in found:
                logger.info("shard %s: kubeconfig removed; stopping", name)
                self._stop(name)
        for name, (path, content) in sorted(found.items()):
            current = self._running.get(name)
            if current is not None and current.content in (None, content):
                continue  # unchanged, or a shard passed in directly under this name
            if self._unloadable.get(name) == content:
                continue
            try:
                credentials = await trio.to_thread.run_sync(load_credentials, path)
            except ConfigError as exc:
                logger.warning("shard %s: cannot load %s: %s", name, path, exc)
                self._unloadable[name] = content
                continue
            self._unloadable.pop(name, None)
            if current is not None:
                logger.info("shard %s: kubeconfig changed; reconnecting", name)
                self._stop(name)
            await self._start(nursery, name, KubeClient(credentials=credentials), content=content)

    async def _start(
        self, nursery: trio.Nursery, name: str, client: KubeClient, *, content: bytes | None
    ) -> None:
        reconciler = ShardReconciler(
            name=name,
            client=client,
            settings=self.settings,
            controller=self.controller,
            notify=self._notify,
            clock=self.clock,
        )
        scope = await nursery.start(
            functools.partial(_run_shard, reconciler, close_client=content is not None)
        )
        self._running[name] = _Running(reconciler=reconciler, scope=scope, content=content)
        self.status.shards[name] = reconciler.state
        self._notify(None)

    def _stop(self, name: str) -> None:
        running = self._running.pop(name)
        running.scope.cancel()
        self.status.shards.pop(name, None)
        self._notify(None)


async def _run_shard(
    reconciler: ShardReconciler,
    *,
    close_client: bool,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one reconciler until its scope is cancelled; close a client we built."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        try:
            await reconciler.run()
        finally:
            if close_client:
                with trio.CancelScope(shield=True):
                    await reconciler.client.aclose()


def _scan(directory: Path) -> dict[str, tuple[Path, bytes]]:
    """Shard name -> (kubeconfig, its content). Blocking. The first file of a name wins."""
    found: dict[str, tuple[Path, bytes]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.kubeconfig")):
        name = shard_name_for(path)
        if name in found:
            logger.warning("shard %s: %s ignored, %s has the name", name, path, found[name][0])
            continue
        try:
            found[name] = (path, path.read_bytes())
        except OSError as exc:
            logger.warning("shard %s: cannot read %s: %s", name, path, exc)
    return found
