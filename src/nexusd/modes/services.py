"""The scheduler's and the receiver's services, started in a caller's nursery.

`scheduler`, `receiver` and `dev` differ only in which of these they start and on which
stores and shards; this module is the labelled list of what runs.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import TYPE_CHECKING

import attrs

from nexusd import __version__
from nexusd.api.app import create_app, serve_http
from nexusd.api.context import AppContext, Readiness
from nexusd.kube.configuration import ConfigurationCache, run_configuration_cache
from nexusd.pipeline.cancelling import Canceller
from nexusd.pipeline.completing import Completer
from nexusd.pipeline.intake import Intake, RunRef
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.pipeline.recovery import requeue_buffered
from nexusd.pipeline.submitting import Submitter, run_submitter
from nexusd.pipeline.throttling import TokenBucket

if TYPE_CHECKING:
    import trio

    from nexusd.core.clock import Clock
    from nexusd.devcluster import DevCluster
    from nexusd.kube.shards import Shard
    from nexusd.modes.building import Foundation
    from nexusd.settings import Settings
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.filesystem import FilesystemPayloadStore

logger = logging.getLogger(__name__)


@attrs.define
class Running:
    """A started mode: where it listens, and how to stop taking work."""

    url: str
    context: AppContext
    #: the embedded cluster, in `nexusd dev`
    cluster: DevCluster | None = None

    async def stop(self) -> None:
        """Stop intake: /readyz fails and new runs get 503; queued runs stay BUFFERED."""
        self.context.readiness.accepting = False


async def start_services(
    nursery: trio.Nursery,
    foundation: Foundation,
    *,
    shards: dict[str, Shard],
    scheduler: bool,
    receiver: bool,
) -> Running:
    """Start the HTTP API and, for a scheduler, the configuration cache and the submitter."""
    settings, clock, store, files = (
        foundation.settings,
        foundation.clock,
        foundation.store,
        foundation.files,
    )
    context = AppContext(
        store=store,
        readiness=Readiness(),
        files=files,
        max_payload_size=settings.http.max_payload_size,
        result_valid_for=dt.timedelta(seconds=settings.payloads.result_valid_for),
    )
    statistics = getattr(store, "statistics", None)
    if statistics is not None:
        context.statistics["store"] = statistics
    if scheduler:
        await _start_scheduler(nursery, settings, clock, store, files, shards, context)
    if receiver:
        context.completer = Completer(
            store=store, payloads=files, result_valid_for=settings.payloads.result_valid_for
        )
    app = create_app(context, scheduler=scheduler, receiver=receiver)
    url = await nursery.start(functools.partial(serve_http, app, sock=foundation.sock))
    return Running(url=url, context=context)


async def _start_scheduler(
    nursery: trio.Nursery,
    settings: Settings,
    clock: Clock,
    store: CheckpointStore,
    files: FilesystemPayloadStore,
    shards: dict[str, Shard],
    context: AppContext,
) -> None:
    # Templates and workgroups come from the scheduler's own cluster: the first shard.
    home = next(iter(shards.values()))
    cache = ConfigurationCache()
    await nursery.start(
        functools.partial(
            run_configuration_cache,
            client=home.client,
            namespace=home.namespace,
            cache=cache,
            resync_seconds=settings.kube.resync,
        )
    )
    queue: VirtualQueue[RunRef] = VirtualQueue(settings.submission.queue_capacity)
    throttles = {
        name: TokenBucket(rate=settings.submission.rate, burst=settings.submission.burst)
        for name in shards
    }
    submitter = Submitter(
        store=store,
        shards=shards,
        throttles=throttles,
        clock=clock,
        retry_base_delay=settings.submission.retry_base_delay,
        retry_max_delay=settings.submission.retry_max_delay,
    )
    await nursery.start(
        functools.partial(
            run_submitter, queue=queue, submitter=submitter, workers=settings.submission.workers
        )
    )
    await requeue_buffered(store=store, host=settings.host_name, queue=queue)
    context.intake = Intake(
        store=store,
        payloads=files,
        configuration=cache,
        shards=shards,
        queue=queue,
        clock=clock,
        host_name=settings.host_name,
        nexus_version=__version__,
        default_valid_for=settings.payloads.valid_for,
        max_valid_for=settings.payloads.max_valid_for,
        result_valid_for=settings.payloads.result_valid_for,
    )
    context.canceller = Canceller(store=store, shards=shards)
    context.statistics.update(
        queue=queue.statistics,
        submitter=submitter.statistics,
        **{f"throttle:{name}": bucket.statistics for name, bucket in throttles.items()},
        **{f"kube:{name}": shard.client.statistics for name, shard in shards.items()},
    )
