"""`nexusd maintainer` (alias `supervisor`): keeps every accepted run moving to a terminal state.

Long-running, or `--once` for a CronJob / systemd timer: one reconcile + recovery + garbage
collection pass, then exit 0 (1 if any action of the pass failed). Several maintainers may run
at once: every write is a compare-and-set, and lost runs are claimed before they are
resubmitted, so none is acted on twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.errors import NexusdError
from nexusd.kube.client import EVENTS, JOBS, PODS
from nexusd.kube.pools import POOL_SELECTOR
from nexusd.kube.watching import run_informer
from nexusd.modes.building import (
    hold_identity,
    open_checkpoint_store,
    open_foundation,
    open_payload_store,
    open_shards,
)
from nexusd.modes.services import Running, start_services, start_submitter
from nexusd.pipeline.collecting import Collector
from nexusd.pipeline.heartbeats import run_heartbeat
from nexusd.pipeline.maintaining import Maintainer, PassReport
from nexusd.pipeline.observing import RUN_SELECTOR, ClusterView, RunKey, event_selector
from nexusd.pipeline.reconciling import Reconciler
from nexusd.pipeline.recovery import LostRunRecovery
from nexusd.pipeline.rules import load_rules
from nexusd.pipeline.waking import RunQueue
from nexusd.pipeline.worker_pod_view import Fanout, WorkerPodView
from nexusd.pipeline.worker_pods import WorkerPods, pool_event_reasons

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nexusd.core.clock import Clock
    from nexusd.kube.client import Resource
    from nexusd.kube.shards import Shard
    from nexusd.kube.watching import Sink
    from nexusd.settings import Settings
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore

logger = logging.getLogger(__name__)


async def start_maintenance(
    nursery: trio.Nursery,
    *,
    settings: Settings,
    clock: Clock,
    store: CheckpointStore,
    payloads: PayloadStore,
    shards: dict[str, Shard],
    watch: bool = True,
) -> Maintainer:
    """Start the maintainer's informers, submitters and heartbeat; `watch=False` for --once."""
    maintainer, _ = await _start_maintenance(
        nursery,
        settings=settings,
        clock=clock,
        store=store,
        payloads=payloads,
        shards=shards,
        watch=watch,
    )
    return maintainer


async def _start_maintenance(
    nursery: trio.Nursery,
    *,
    settings: Settings,
    clock: Clock,
    store: CheckpointStore,
    payloads: PayloadStore,
    shards: dict[str, Shard],
    watch: bool,
) -> tuple[Maintainer, list[WorkerPods]]:
    """`start_maintenance`, and the watchers of the warm pools' pods (one per shard)."""
    queue = RunQueue(capacity=settings.maintainer.queue_capacity)
    rules = load_rules(settings.maintainer.rules)
    delay = settings.maintainer.wake_delay

    def changed(key: RunKey) -> None:
        queue.later(key, delay)  # the earliest wake-up of a burst stands for all of it

    views = {
        name: ClusterView(
            shard=name,
            on_change=changed,
            on_resync=queue.wake_due,
            event_reasons=rules.event_reasons(),
        )
        for name in shards
    }
    pool_events = pool_event_reasons(rules)
    worker_views = {name: WorkerPodView(shard=name, event_reasons=pool_events) for name in shards}
    for name, shard in shards.items():
        events = event_selector(rules.event_reasons())
        informers: tuple[tuple[list[Resource], Sink, str | None, str | None], ...] = (
            ([JOBS, PODS], views[name], RUN_SELECTOR, None),
            # the warm pools' Events come with the runs' (one Event watch per shard)
            ([EVENTS], Fanout(views[name], worker_views[name]), None, events),
            ([PODS], worker_views[name], POOL_SELECTOR, None),
        )
        for resources, sink, labels, fields in informers:
            await nursery.start(
                functools.partial(
                    run_informer,
                    client=shard.client,
                    resources=resources,
                    namespace=shard.namespace,
                    sink=sink,
                    label_selector=labels,
                    field_selector=fields,
                    resync_seconds=settings.maintainer.interval,
                )
            )
        views[name].synced = True
    worker_pods = [
        WorkerPods(
            store=store,
            view=view,
            rules=rules,
            clock=clock,
            max_attempts=settings.warm.max_attempts,
            delay=settings.maintainer.wake_delay,
        )
        for view in worker_views.values()
    ]
    submitters = [
        await start_submitter(nursery, settings, store, shard, clock) for shard in shards.values()
    ]
    throttles = {submitter.shard.name: submitter.throttle for submitter in submitters}
    host = settings.host_name
    await nursery.start(
        functools.partial(
            run_heartbeat,
            store=store,
            host=host,
            clock=clock,
            interval=settings.node.heartbeat_interval,
        )
    )
    maintainer = Maintainer(
        store=store,
        reconciler=Reconciler(
            store=store,
            shards=shards,
            throttles=throttles,
            views=views,
            rules=rules,
            clock=clock,
            recheck=queue.later,
        ),
        recovery=LostRunRecovery(
            store=store,
            clock=clock,
            host=host,
            queues={submitter.shard.name: submitter.queue for submitter in submitters},
            scheduler_timeout=settings.maintainer.scheduler_timeout,
            buffered_timeout=settings.maintainer.buffered_timeout,
        ),
        collector=Collector(
            store=store,
            payloads=payloads,
            shards=shards,
            throttles=throttles,
            views=views,
            clock=clock,
            checkpoint_retention=settings.maintainer.checkpoint_retention,
            payload_retention=settings.maintainer.payload_retention,
            job_ttl_slack=settings.maintainer.job_ttl_slack,
            failed_job_ttl=settings.maintainer.failed_job_ttl,
        ),
        submitters=submitters,
        clock=clock,
        interval=settings.maintainer.interval,
        gc_interval=settings.maintainer.gc_interval,
        queue=queue,
    )
    if watch:
        await nursery.start(maintainer.run)
        for pods in worker_pods:
            await nursery.start(pods.run)
    return maintainer, worker_pods


@contextlib.asynccontextmanager
async def _open(
    settings: Settings,
) -> AsyncIterator[tuple[Clock, CheckpointStore, PayloadStore, dict[str, Shard]]]:
    clock = SystemClock()
    async with (
        open_checkpoint_store(settings, clock) as store,
        # The maintainer serves no URLs; the filesystem store only needs a base for signing.
        open_payload_store(settings, clock, base_url="http://maintainer.invalid") as payloads,
        open_shards(settings) as shards,
    ):
        yield clock, store, payloads, shards


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    """The long-running maintainer, with /healthz and /readyz (its counters) for probes.

    HTTP comes up first: loading the caches of a big cluster takes a while (its first lists),
    and a liveness probe that cannot connect meanwhile would restart the pod forever. /readyz
    answers 503 until the caches are loaded and the first sweep has started.
    """
    async with (
        open_foundation(settings) as foundation,
        open_shards(settings) as shards,
        trio.open_nursery() as nursery,
    ):
        await hold_identity(foundation.store, settings, "maintainer")
        running = await start_services(
            nursery, foundation, shards={}, scheduler=False, receiver=False
        )
        running.context.not_ready = lambda: ["the informer caches are loading"]
        maintainer, worker_pods = await _start_maintenance(
            nursery,
            settings=settings,
            clock=foundation.clock,
            store=foundation.store,
            payloads=foundation.payloads,
            shards=shards,
            watch=True,
        )
        running.context.statistics.update(maintainer.statistics())
        for pods in worker_pods:
            running.context.statistics[f"worker_pods:{pods.view.shard}"] = pods.statistics
        running.context.not_ready = list
        task_status.started(running)


async def run_once(settings: Settings) -> PassReport:
    """One full pass, for `nexusd maintainer --once`, within `maintainer.once_timeout`."""
    with trio.move_on_after(settings.maintainer.once_timeout) as deadline:
        report = await _pass(settings)
    if deadline.cancelled_caught:
        raise NexusdError(
            f"the maintainer pass did not finish within {settings.maintainer.once_timeout:g}s "
            "(maintainer.once_timeout); is every cluster and the store reachable?"
        )
    return report


async def _pass(settings: Settings) -> PassReport:
    async with _open(settings) as (clock, store, payloads, shards), trio.open_nursery() as nursery:
        await hold_identity(store, settings, "maintainer --once")
        began = time.process_time()
        maintainer, worker_pods = await _start_maintenance(
            nursery,
            settings=settings,
            clock=clock,
            store=store,
            payloads=payloads,
            shards=shards,
            watch=False,
        )
        caches = time.process_time() - began
        report = await maintainer.once(drain_timeout=settings.shutdown.grace)
        began = time.process_time()
        errors = sum([await pods.once() for pods in worker_pods])
        workers = time.process_time() - began
        nursery.cancel_scope.cancel()
    return attrs.evolve(
        report,
        errors=report.errors + errors,
        cpu={"caches": caches, **report.cpu, "worker pods": workers},
    )


def describe(report: PassReport) -> str:
    """What `--once` prints."""
    collection = report.collection
    collected = (
        f"{collection.jobs} finished Jobs, {collection.checkpoints} old runs, "
        f"{collection.blobs} old blobs"
        if collection is not None
        else "nothing"
    )
    return (
        f"reconciled {report.reconciled} runs; dead schedulers: "
        f"{', '.join(report.sweep.dead_hosts) or 'none'}; resubmitted "
        f"{report.sweep.resubmitted}, lost {report.sweep.lost}; collected {collected}; "
        f"{report.errors} errors; CPU "
        + ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in report.cpu.items())
    )
