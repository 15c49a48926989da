"""Every Prometheus metric nexusd exposes, defined once per process.

The metrics live at module level in the default `prometheus_client` registry, so a process
registers each of them exactly once however many modes it runs (`nexusd dev` runs them all in
one process) and however many apps it builds (tests build hundreds); `GET /metrics`
(`nexusd.api.metrics`) only exposes the registry. This module sits in the core layer so that
pipeline, stores, kube and syncing can record into it without depending on each other.

Two kinds of source:

- events, counted where they happen: a run accepted, a stage transition, a Kubernetes call,
  a store operation, a maintainer verdict, a completion. The hot paths (intake answers a run
  in about a millisecond of CPU) reach a labelled child through a dict keyed by the label
  values (`_Children`), not through `.labels()` per event;
- state, read at scrape time from the statistics the stages already keep for `/readyz`
  (queues, throttles, submitters, the controller's shards) while they run, so a stopped
  mode leaves nothing behind and nothing is computed between scrapes.

Labels stay low-cardinality: algorithm (a deployed template), shard, stage, verb, resource,
HTTP code, store operation, rule name, outcome. Never a request id.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import time
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from prometheus_client.metrics import MetricWrapperBase
    from prometheus_client.metrics_core import Metric

    from nexusd.core.records import Transition

    #: algorithm -> (runs waiting, seconds the oldest waited, runs leased), of each warm pool
    PoolDemands = Callable[[], dict[str, tuple[int, float, int]]]

_T = TypeVar("_T")

#: Seconds from a run's acceptance to its Job being created: a queue that is empty and
#: unthrottled answers in milliseconds, a throttled shard in minutes.
SUBMISSION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
#: Seconds of one store call: group commits take a few milliseconds, scans of big tables more.
STORE_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# The `_created` series the text format shows as gauges of their own double the series and
# tell nothing a counter's resets do not (Prometheus reads them only from OpenMetrics).
disable_created_metrics()  # type: ignore[no-untyped-call]

RUNS_ACCEPTED: Final = Counter(
    "nexusd_runs_accepted_total",
    "Runs accepted (durable and queued, dry runs included), by algorithm.",
    ["algorithm"],
)
RUN_TRANSITIONS: Final = Counter(
    "nexusd_run_transitions_total",
    "Stage transitions applied to runs; from_stage is 'unknown' where the writer does not "
    "know it (completions and cancellations move any non-terminal stage).",
    ["from_stage", "to_stage"],
)
SUBMISSION_LATENCY: Final = Histogram(
    "nexusd_submission_latency_seconds",
    "Seconds from a run's acceptance by this process to its Job being created, by shard "
    "(retries and throttling included; runs recovered from another process are not counted).",
    ["shard"],
    buckets=SUBMISSION_BUCKETS,
)
QUEUE_FULL: Final = Counter(
    "nexusd_queue_full_total",
    "Runs refused with 429 because their shard's submission queue was full.",
    ["shard"],
)
KUBE_REQUESTS: Final = Counter(
    "nexusd_kube_requests_total",
    "Kubernetes API calls by verb, resource and HTTP status code (0: no response).",
    ["verb", "resource", "code"],
)
STORE_OPERATIONS: Final = Histogram(
    "nexusd_store_operation_duration_seconds",
    "Seconds one checkpoint store operation took, failures included, by operation.",
    ["operation"],
    buckets=STORE_BUCKETS,
)
MAINTAINER_VERDICTS: Final = Counter(
    "nexusd_maintainer_verdicts_total",
    "Maintainer verdicts applied to runs, by the rule that decided and the stage it set.",
    ["rule", "stage"],
)
COMPLETIONS: Final = Counter(
    "nexusd_completions_total",
    "Completion reports from algorithms, by outcome: completed, failed, or ignored (the run "
    "had already finished).",
    ["outcome"],
)


class _Children(dict[Any, Any]):
    """A metric's labelled children by label values (a string, or a tuple of strings),
    created on first use: one dict lookup per event instead of `.labels()`."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: Any) -> Any:
        values = map(str, key) if isinstance(key, tuple) else (str(key),)
        child = self._metric.labels(*values)
        self[key] = child
        return child


_accepted = _Children(RUNS_ACCEPTED)
_transitions = _Children(RUN_TRANSITIONS)
_latency = _Children(SUBMISSION_LATENCY)
_queue_full = _Children(QUEUE_FULL)
_kube = _Children(KUBE_REQUESTS)
_verdicts = _Children(MAINTAINER_VERDICTS)
_completions = _Children(COMPLETIONS)


def run_accepted(algorithm: str) -> None:
    _accepted[algorithm].inc()


def transitioned(outcome: Transition, *, source: object, to: object) -> Transition:
    """Count `outcome` if it applied (`source`, `to`: stages, or "unknown"); return it."""
    if outcome.applied:
        _transitions[(source, to)].inc()
    return outcome


def submitted(shard: str, accepted_at: float | None, now: float) -> None:
    """A Job was created for a run accepted at `accepted_at` (`trio.current_time()`; None
    for a run this process did not accept)."""
    if accepted_at is not None:
        _latency[shard].observe(now - accepted_at)


def queue_full(shard: str) -> None:
    _queue_full[shard].inc()


def kube_request(verb: str, resource: str, code: int) -> None:
    _kube[(verb, resource, code)].inc()


def verdict(rule: str, stage: object) -> None:
    _verdicts[(rule, stage)].inc()


def completion(outcome: Transition, *, to: object) -> Transition:
    """Count a completion report that moved its run to `to` (or was ignored); return it."""
    _completions[str(to).lower() if outcome.applied else "ignored"].inc()
    return transitioned(outcome, source="unknown", to=to)


def time_operations(target: _T, operations: Iterable[str]) -> _T:
    """Replace each of `target`'s methods named in `operations` (coroutine functions) by one
    that also observes its duration in `nexusd_store_operation_duration_seconds`."""
    for name in operations:
        method = getattr(target, name, None)
        if method is not None:
            setattr(target, name, _timed(method, STORE_OPERATIONS.labels(name)))
    return target


def _timed(
    method: Callable[..., Awaitable[Any]], histogram: Histogram
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - began)

    return timed


# --- state read at scrape time -----------------------------------------------------------


class _Shard(Protocol):
    @property
    def name(self) -> str: ...


class Submitting(Protocol):
    """What a shard's submitter offers (pipeline/submitting.py `Submitter`)."""

    @property
    def shard(self) -> _Shard: ...
    @property
    def queue(self) -> Any: ...  # statistics() -> queueing.QueueStatistics
    @property
    def throttle(self) -> Any: ...  # statistics() -> throttling.ThrottleStatistics
    def statistics(self) -> Any: ...  # submitting.SubmitterStatistics


class Syncing(Protocol):
    """What the controller keeps per shard (syncing/status.py `ShardState`)."""

    name: str
    reachable: bool
    last_sync: dt.datetime | None
    results: dict[Any, Any]  # key -> KeyResult (.ok)
    pending: Callable[[], int]


class _StateCollector(Collector):
    """Gauges and counters computed at scrape time from the stages' own statistics, summed
    over the running sources of each shard (`nexusd dev` runs two submitters per shard: the
    scheduler's and the maintainer's, for recovered runs)."""

    def __init__(self) -> None:
        self._submitters: dict[int, Submitting] = {}
        self._syncs: dict[int, Syncing] = {}
        self._pools: dict[int, PoolDemands] = {}

    @contextlib.contextmanager
    def watching_submitter(self, submitter: Submitting) -> Iterator[None]:
        """Report `submitter`'s queue, throttle and counts while the block runs."""
        self._submitters[id(submitter)] = submitter
        try:
            yield
        finally:
            del self._submitters[id(submitter)]

    def watch_sync(self, state: Syncing) -> None:
        """Report a controller shard's state until `unwatch_sync`."""
        self._syncs[id(state)] = state

    def unwatch_sync(self, state: Syncing) -> None:
        self._syncs.pop(id(state), None)

    @contextlib.contextmanager
    def watching_pools(self, demands: PoolDemands) -> Iterator[None]:
        """Report a scheduler's warm pools (pipeline/leasing.py) while the block runs."""
        self._pools[id(demands)] = demands
        try:
            yield
        finally:
            del self._pools[id(demands)]

    def collect(self) -> Iterator[Metric]:
        yield from self._submission()
        yield from self._sync()
        yield from self._warm()

    def _warm(self) -> Iterator[Metric]:
        families = [
            GaugeMetricFamily(name, documentation, labels=["algorithm"])
            for name, documentation in (
                ("nexusd_pool_queued", "Runs waiting in a warm pool's queue for a worker."),
                ("nexusd_pool_oldest_age_seconds", "Seconds the longest-waiting run of a warm "
                 "pool has waited (0: none waits)."),
                ("nexusd_pool_leased", "Runs this scheduler leased to a warm pool's workers "
                 "and not yet saw end."),
            )
        ]  # fmt: skip
        totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
        for demands in list(self._pools.values()):
            for algorithm, (queued, oldest, leased) in demands().items():
                total = totals[algorithm]
                total[0] += queued
                total[1] = max(total[1], oldest)
                total[2] += leased
        for algorithm, values in sorted(totals.items()):
            for family, value in zip(families, values, strict=True):
                family.add_metric([algorithm], value)
        yield from families

    def _submission(self) -> Iterator[Metric]:
        shards: dict[str, dict[str, float]] = {}
        for submitter in list(self._submitters.values()):
            queue = submitter.queue.statistics()
            throttle = submitter.throttle.statistics()
            counts = submitter.statistics()
            shard = shards.setdefault(submitter.shard.name, collections.defaultdict(float))
            shard["normal"] += queue.queued - queue.priority_queued
            shard["priority"] += queue.priority_queued
            shard["capacity"] += queue.capacity
            shard["oldest"] = max(shard["oldest"], queue.oldest_age)
            # Throttles of one shard in one process share the shard's budget by default:
            # the highest says what the shard allows.
            shard["rate"] = max(shard["rate"], throttle.rate)
            shard["ceiling"] = max(shard["ceiling"], throttle.ceiling)
            shard["waiting"] += throttle.waiting
            shard["throttled"] += throttle.throttled
            shard["created"] += counts.submitted
            shard["already_existed"] += counts.already_existed
            shard["rejected"] += counts.rejected
            shard["retried"] += counts.retries
        families = [
            (GaugeMetricFamily, "nexusd_queue_depth", "Runs waiting in a shard's submission "
             "queue, by lane (normal: new runs; priority: recovered and delayed runs, taken "
             "first).", ("normal", "priority"), "lane"),
            (GaugeMetricFamily, "nexusd_queue_capacity", "Runs a shard's normal lane holds at "
             "most.", ("capacity",), ""),
            (GaugeMetricFamily, "nexusd_queue_oldest_age_seconds", "Seconds the "
             "longest-waiting queued run of a shard has waited (0: empty).", ("oldest",), ""),
            (GaugeMetricFamily, "nexusd_throttle_rate_per_second", "Mutating Kubernetes calls "
             "per second a shard's throttle allows now (cut by 429s).", ("rate",), ""),
            (GaugeMetricFamily, "nexusd_throttle_ceiling_per_second", "The configured most "
             "calls per second of a shard's throttle.", ("ceiling",), ""),
            (GaugeMetricFamily, "nexusd_throttle_waiting", "Calls waiting for a token of a "
             "shard's throttle.", ("waiting",), ""),
            (CounterMetricFamily, "nexusd_throttled", "429 answers of a shard's API server "
             "that cut its throttle's rate.", ("throttled",), ""),
            (CounterMetricFamily, "nexusd_submissions", "Job submissions by shard and "
             "outcome: created, already_existed (counts as created), rejected (the run ends "
             "SCHEDULING_FAILED), retried (transient error).",
             ("created", "already_existed", "rejected", "retried"), "outcome"),
        ]  # fmt: skip
        for kind, name, documentation, keys, label in families:
            family = kind(name, documentation, labels=["shard", label] if label else ["shard"])
            for shard_name, shard in sorted(shards.items()):
                for key in keys:
                    family.add_metric([shard_name, key] if label else [shard_name], shard[key])
            yield family

    def _sync(self) -> Iterator[Metric]:
        reachable = GaugeMetricFamily(
            "nexusd_sync_shard_reachable",
            "Whether the configuration controller reaches a shard's API server (1) or not (0).",
            labels=["shard"],
        )
        pending = GaugeMetricFamily(
            "nexusd_sync_pending_keys",
            "Templates and workgroups waiting to be synced to a shard.",
            labels=["shard"],
        )
        objects = GaugeMetricFamily(
            "nexusd_sync_objects",
            "Templates and workgroups by shard and the state of their last sync (synced, failed).",
            labels=["shard", "state"],
        )
        last = GaugeMetricFamily(
            "nexusd_sync_last_success_timestamp_seconds",
            "When a sync to a shard last succeeded (Unix time; absent: not since start).",
            labels=["shard"],
        )
        for state in sorted(self._syncs.values(), key=lambda state: state.name):
            synced = sum(1 for result in state.results.values() if result.ok)
            reachable.add_metric([state.name], 1.0 if state.reachable else 0.0)
            pending.add_metric([state.name], state.pending())
            objects.add_metric([state.name, "synced"], synced)
            objects.add_metric([state.name, "failed"], len(state.results) - synced)
            if state.last_sync is not None:
                last.add_metric([state.name], state.last_sync.timestamp())
        yield from (reachable, pending, objects, last)


_state = _StateCollector()
REGISTRY.register(_state)

watching_submitter = _state.watching_submitter
watching_pools = _state.watching_pools
watch_sync = _state.watch_sync
unwatch_sync = _state.unwatch_sync
