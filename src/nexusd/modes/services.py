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
import trio

from nexusd import __version__
from nexusd.api.app import create_app, serve_http
from nexusd.api.context import AppContext, Readiness
from nexusd.kube.configuration import ConfigurationCache, run_configuration_cache
from nexusd.kube.fitting import NodeCapacity, run_node_capacity
from nexusd.kube.throttling import LocalBudget, ShardThrottle
from nexusd.modes.building import load_bearer_auth, load_completion_tokens
from nexusd.pipeline.budgets import StoreBudget
from nexusd.pipeline.cancelling import Canceller
from nexusd.pipeline.completing import Completer
from nexusd.pipeline.heartbeats import run_heartbeat
from nexusd.pipeline.intake import Intake
from nexusd.pipeline.leasing import LeaseLimits, WarmPools
from nexusd.pipeline.pool_demand import StoreDemand, run_demand_refresh
from nexusd.pipeline.queueing import VirtualQueue
from nexusd.pipeline.reaping import run_lease_reaper, run_orphan_scan
from nexusd.pipeline.recovery import requeue_buffered
from nexusd.pipeline.scaling import run_pool_scaler
from nexusd.pipeline.submitting import Submitter, run_submitter

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.core.clock import Clock
    from nexusd.devcluster import DevCluster
    from nexusd.kube.shards import Shard
    from nexusd.kube.throttling import RateBudget, RateLimits
    from nexusd.kube.warmpool import WarmPool
    from nexusd.modes.building import Foundation
    from nexusd.pipeline.intake import Resolved
    from nexusd.settings import Settings
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.signing import CompletionTokens

logger = logging.getLogger(__name__)


DRAIN_POLL_INTERVAL = 0.05  # seconds between checks of the queues while draining


@attrs.define
class Running:
    """A started mode: where it listens, and how to stop taking work."""

    url: str
    context: AppContext
    #: set to stop the HTTP server gracefully; `http_stopped` is set once it has
    http_shutdown: trio.Event
    http_stopped: trio.Event
    submitters: list[Submitter] = attrs.Factory(list)
    #: the embedded cluster, in `nexusd dev`
    cluster: DevCluster | None = None

    async def stop(self, grace: float) -> None:
        """Stop taking work and finish what was taken, within `grace` seconds:

        - intake refuses new runs at once (503, and /readyz fails);
        - the HTTP server stops accepting connections and lets the requests in flight finish
          (hypercorn's graceful shutdown), so a run or completion being posted right now is
          answered, and what it was answered for is durable;
        - meanwhile the submitters drain their queues.

        Whatever is still queued when the grace runs out stays BUFFERED in the store, where a
        restart or the maintainer picks it up: nothing accepted is lost.
        """
        self.context.readiness.accepting = False
        if self.context.pools is not None:
            self.context.pools.close()  # workers' long polls answer now, not after their wait
        self.http_shutdown.set()
        with trio.move_on_after(grace):
            await self.http_stopped.wait()
            # A short poll rather than a wake-up per queue: this runs once, at shutdown.
            while any(len(s.queue) or s.in_flight for s in self.submitters):  # noqa: ASYNC110
                await trio.sleep(DRAIN_POLL_INTERVAL)
        if not self.http_stopped.is_set():
            logger.warning("HTTP requests still in flight after the %gs grace; cancelling", grace)
        left = sum(len(s.queue) for s in self.submitters)
        if left:
            logger.warning("stopping with %d runs still queued; they stay BUFFERED", left)


async def start_services(
    nursery: trio.Nursery,
    foundation: Foundation,
    *,
    shards: dict[str, Shard],
    scheduler: bool,
    receiver: bool,
    receiver_url: str = "",
) -> Running:
    """Start the HTTP API and, for a scheduler, the configuration cache and the submitter.
    `receiver_url` is the receiver base URL pods get ("" = `receiver.url`)."""
    settings, store, payloads = foundation.settings, foundation.store, foundation.payloads
    tokens = await load_completion_tokens(settings)
    context = AppContext(
        store=store,
        readiness=Readiness(),
        files=foundation.files,
        max_payload_size=settings.http.max_payload_size,
        max_batch_runs=settings.http.max_batch_runs,
        max_idempotency_key=settings.http.max_idempotency_key,
        result_valid_for=dt.timedelta(seconds=settings.payloads.result_valid_for),
        bearer=await load_bearer_auth(settings) if scheduler else None,
    )
    statistics = getattr(store, "statistics", None)
    if statistics is not None:
        context.statistics["store"] = statistics
    submitters = []
    if scheduler:
        submitters = await _start_scheduler(
            nursery,
            foundation,
            shards,
            context,
            receiver_url=receiver_url or settings.receiver.url,
            tokens=tokens,
        )
    if receiver:
        context.completer = Completer(
            store=store,
            payloads=payloads,
            result_valid_for=settings.payloads.result_valid_for,
            tokens=tokens,
        )
    app = create_app(context, scheduler=scheduler, receiver=receiver)
    shutdown, stopped = trio.Event(), trio.Event()
    url = await nursery.start(
        functools.partial(
            serve_http,
            app,
            sock=foundation.sock,
            shutdown=shutdown,
            stopped=stopped,
            grace=settings.shutdown.grace,
            max_body_memory=settings.http.max_body_memory,
            keep_alive_timeout=settings.http.keep_alive_timeout,
            access_log=settings.http.access_log,
        )
    )
    return Running(
        url=url,
        context=context,
        http_shutdown=shutdown,
        http_stopped=stopped,
        submitters=submitters,
    )


async def start_submitter(
    nursery: trio.Nursery, settings: Settings, store: CheckpointStore, shard: Shard, clock: Clock
) -> Submitter:
    """One shard's throttle (its budget shared through the store unless `submission.budget`
    is "local"), virtual queue and submission workers."""
    submission = settings.submission
    budget: Callable[[RateLimits], RateBudget] = (
        functools.partial(StoreBudget, store=store, shard=shard.name, caller=settings.host_name)
        if submission.budget == "shared"
        else LocalBudget
    )
    submitter = Submitter(
        store=store,
        shard=shard,
        throttle=ShardThrottle(
            rate=submission.rate,
            burst=submission.burst,
            max_in_flight=submission.max_in_flight,
            decrease=submission.throttle_decrease,
            increase=submission.throttle_recovery,
            budget=budget,
        ),
        queue=VirtualQueue(submission.queue_capacity),
        clock=clock,
        retry_base_delay=submission.retry_base_delay,
        retry_max_delay=submission.retry_max_delay,
        owner=settings.host_name,
    )
    await nursery.start(
        functools.partial(run_submitter, submitter=submitter, workers=submission.workers)
    )
    return submitter


async def _start_scheduler(
    nursery: trio.Nursery,
    foundation: Foundation,
    shards: dict[str, Shard],
    context: AppContext,
    *,
    receiver_url: str,
    tokens: CompletionTokens | None,
) -> list[Submitter]:
    settings, clock, store = foundation.settings, foundation.clock, foundation.store
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
    submitters = []
    for name, shard in shards.items():
        submitter = await start_submitter(nursery, settings, store, shard, clock)
        submitters.append(submitter)
        context.statistics.update(
            {
                f"queue:{name}": submitter.queue.statistics,
                f"submitter:{name}": submitter.statistics,
                f"throttle:{name}": submitter.throttle.statistics,
                f"kube:{name}": shard.client.statistics,
            }
        )
    queues = {submitter.shard.name: submitter.queue for submitter in submitters}
    capacities = {}
    if settings.kube.check_node_capacity:
        for name, shard in shards.items():
            capacities[name] = NodeCapacity(name)
            await nursery.start(
                functools.partial(
                    run_node_capacity,
                    client=shard.client,
                    capacity=capacities[name],
                    resync_seconds=settings.kube.resync,
                )
            )
    await nursery.start(
        functools.partial(
            run_heartbeat,
            store=store,
            host=settings.host_name,
            clock=clock,
            interval=settings.node.heartbeat_interval,
            queues=queues,
        )
    )
    await requeue_buffered(store=store, host=settings.host_name, queues=queues)
    pools = WarmPools(
        store=store,
        payloads=foundation.payloads,
        clock=clock,
        tokens=tokens,
        limits=LeaseLimits(
            lease_duration=settings.warm.lease_duration,
            max_wait=settings.warm.max_wait,
            max_lease_runs=settings.warm.max_lease_runs,
            queue_capacity=settings.submission.queue_capacity,
            commit_timeout=settings.store.commit_timeout,
            result_valid_for=settings.payloads.result_valid_for,
        ),
    )
    context.pools = pools
    context.statistics["pools"] = pools.demands
    context.intake = Intake(
        store=store,
        payloads=foundation.payloads,
        configuration=cache,
        shards=shards,
        queues=queues,
        clock=clock,
        host_name=settings.host_name,
        nexus_version=__version__,
        default_valid_for=settings.payloads.valid_for,
        max_valid_for=settings.payloads.max_valid_for,
        result_valid_for=settings.payloads.result_valid_for,
        # Only where nexusd serves the payload URLs itself can it serve them from the store.
        inline_max=settings.payloads.inline_max if foundation.files is not None else 0,
        commit_timeout=settings.store.commit_timeout,
        capacities=capacities,
        receiver_url=receiver_url,
        completion_tokens=tokens,
        pools=pools,
    )
    await _start_pools(
        nursery, foundation, shards, cache, pools, context.intake, submitters, receiver_url
    )
    context.canceller = Canceller(
        store=store,
        shards=shards,
        throttles={submitter.shard.name: submitter.throttle for submitter in submitters},
        queues=queues,
        pools=pools,
    )
    return submitters


async def _start_pools(
    nursery: trio.Nursery,
    foundation: Foundation,
    shards: dict[str, Shard],
    cache: ConfigurationCache,
    pools: WarmPools,
    intake: Intake,
    submitters: list[Submitter],
    receiver_url: str,
) -> None:
    """The warm pools' loops: expired leases back to the queue, waiting runs from the store,
    and each pool's Deployment scaled to its demand."""
    store, clock, warm = foundation.store, foundation.clock, foundation.settings.warm

    def warm_resolved() -> dict[str, Resolved]:
        found = {name: intake.warm(name) for name in cache.template_names()}
        return {name: resolved for name, resolved in found.items() if resolved is not None}

    def warm_templates() -> dict[str, str]:
        return {name: resolved.shard.name for name, resolved in warm_resolved().items()}

    def warm_pools() -> dict[str, WarmPool]:
        return {name: resolved.pool for name, resolved in warm_resolved().items() if resolved.pool}

    # Sized from the store, not this scheduler's queue: schedulers sharing a shard agree.
    demand = StoreDemand(store=store, clock=clock, pools=warm_pools)
    await nursery.start(
        functools.partial(run_demand_refresh, demand=demand, interval=warm.scale_interval)
    )

    await nursery.start(
        functools.partial(
            run_lease_reaper,
            pools=pools,
            store=store,
            clock=clock,
            interval=warm.reap_interval,
            max_attempts=warm.max_attempts,
        )
    )
    await nursery.start(
        functools.partial(
            run_orphan_scan,
            pools=pools,
            store=store,
            clock=clock,
            warm_templates=warm_templates,
            interval=warm.scan_interval,
            orphan_after=warm.orphan_after,
        )
    )
    await nursery.start(
        functools.partial(
            run_pool_scaler,
            shards=shards,
            throttles={submitter.shard.name: submitter.throttle for submitter in submitters},
            configuration=cache,
            demand=demand,
            scheduler_url=warm.scheduler_url or receiver_url,
            tokens=pools.tokens,
            nexus_version=__version__,
            interval=warm.scale_interval,
            scale_up_age=warm.scale_up_age,
        )
    )
