"""Observing: what a shard's cluster says about the runs, kept current by informers.

Input: list+watch of the runs' Jobs and Pods (label
`science.sneaksanddata.com/nexus-component=algorithm-run`, which nexusd puts on both) and of
the namespace's Events, through kube/watching.py (re-lists only on 410 or a watch that cannot
resume; its periodic resync replays this cache through `resync`).
Output: `ClusterView`, a cache the reconciler reads without I/O, and a wake-up for every run
whose Job, pods or events changed (level-triggered: the reconciler looks at the whole state
again, so a missed or duplicated event never matters).

The cache is indexed by involved object, so a reconcile costs the run's own objects, not the
cache's size: pods by Job (`batch.kubernetes.io/job-name`), Events by (kind, name) of the Job or
Pod they are about. Memory stays bounded by the runs: only Events about a run's Job or pods
are kept (an Event about a Pod that is not listed yet waits in a small bounded buffer of
strays until its Pod or Job arrives), and a Job's Events (and its pods') are forgotten with the
Job through the index.

Events are ordered by when they last happened (`lastTimestamp`, else `eventTime`, else
`metadata.creationTimestamp`), then by name; `resourceVersion` is opaque (Kubernetes API
conventions) and never compared. Any object may be malformed: a field that is missing or of the
wrong type reads as empty, so a surprising object is skipped or kept as "unknown", never raised
on (failure isolation is the maintainer's rule: one bad object must not end it).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Final

from nexusd.kube.client import EVENTS, JOBS, PODS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nexusd.kube.client import Resource, WatchEvent

logger = logging.getLogger(__name__)

RUN_SELECTOR = "science.sneaksanddata.com/nexus-component=algorithm-run"
ALGORITHM_LABEL = "science.sneaksanddata.com/algorithm-template-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

#: Events about a Job or Pod this view does not hold yet (the three watches are not ordered
#: with each other). Oldest are dropped first; a dropped one is only a missed hint.
STRAY_EVENTS: Final = 2_000

Obj = dict[str, Any]
RunKey = tuple[str, str]  # (algorithm, request id)
ObjectRef = tuple[str, str]  # (kind, name) of an Event's involvedObject

_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)

#: Reasons of the routine Events of every run (Job controller, scheduler, kubelet): a few per
#: run, they are most of a namespace's Events. No default rule looks at them (`Started` only
#: for a BUFFERED run), so the maintainer's Event watch leaves them out (`event_selector`).
ROUTINE_EVENT_REASONS: Final = (
    "SuccessfulCreate",
    "SuccessfulDelete",
    "Completed",
    "Scheduled",
    "Pulling",
    "Pulled",
    "Created",
    "Started",
    "Killing",
)


def event_selector(reasons: frozenset[str] | None) -> str | None:
    """The field selector of the Event watch: every Event but the routine ones no rule of
    the table looks at (`RuleTable.event_reasons`; None = the rules look at any reason, so
    every Event). Fewer watch events per run, and a cache that holds the Events that can
    change a verdict, not a namespace's history."""
    if reasons is None:
        return None
    left_out = [reason for reason in ROUTINE_EVENT_REASONS if reason not in reasons]
    return ",".join(f"reason!={reason}" for reason in left_out) or None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _name(obj: Obj) -> str:
    return _text(_mapping(obj.get("metadata")).get("name"))


def _labels(obj: Obj) -> dict[str, str]:
    labels = _mapping(_mapping(obj.get("metadata")).get("labels"))
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def _involved(event: Obj) -> ObjectRef:
    involved = _mapping(event.get("involvedObject"))
    return _text(involved.get("kind")), _text(involved.get("name"))


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def event_order(event: Obj) -> tuple[dt.datetime, str]:
    """When an Event last happened (see module doc), then its name: a total, crash-free order."""
    for when in (event.get("lastTimestamp"), event.get("eventTime")):
        found = _time(when)
        if found is not None:
            return found, _name(event)
    created = _time(_mapping(event.get("metadata")).get("creationTimestamp"))
    return created or _NEVER, _name(event)


def _job_of_pod_name(pod_name: str) -> str:
    """`<job>-<suffix>`: the Job a pod of that name would belong to (the Job controller's
    naming), to recognise an Event about a pod the pod watch has not delivered yet."""
    return pod_name.rpartition("-")[0]


class ClusterView:
    """The last known Jobs, pods and events of one shard, indexed by run (request id)."""

    def __init__(
        self,
        *,
        shard: str,
        on_change: Callable[[RunKey], object],
        on_resync: Callable[[], object] | None = None,
        event_reasons: frozenset[str] | None = None,
    ) -> None:
        self.shard = shard
        self._on_change = on_change
        self._on_resync = on_resync
        #: Events of these reasons wake their run (None: every reason); the others are only
        #: kept for the reconcile something else wakes (`RuleTable.event_reasons`)
        self._event_reasons = event_reasons
        self._jobs: dict[str, Obj] = {}
        self._pods: dict[str, Obj] = {}
        self._pod_run: dict[str, str] = {}  # pod name -> the run it was indexed under
        self._pods_by_run: dict[str, set[str]] = {}
        self._events: dict[str, Obj] = {}
        self._event_ref: dict[str, ObjectRef] = {}  # event name -> its index key
        self._events_by_ref: dict[ObjectRef, set[str]] = {}
        # strays, oldest first, and by the run they would belong to (Job name, pod-name prefix)
        self._strays: collections.OrderedDict[str, Obj] = collections.OrderedDict()
        self._strays_by_run: dict[str, set[str]] = {}
        self.synced = False

    # -- what the reconciler reads --------------------------------------------------------

    def job(self, request_id: str) -> Obj | None:
        return self._jobs.get(request_id)

    def pods(self, request_id: str) -> list[Obj]:
        return [self._pods[name] for name in sorted(self._pods_by_run.get(request_id, ()))]

    def events(self, request_id: str) -> list[Obj]:
        """Events about the run's Job or its pods, oldest first (see `event_order`)."""
        refs = [("Job", request_id)]
        refs.extend(("Pod", pod) for pod in self._pods_by_run.get(request_id, ()))
        found = [self._events[name] for ref in refs for name in self._events_by_ref.get(ref, ())]
        found.sort(key=event_order)
        return found

    def jobs(self) -> list[Obj]:
        return list(self._jobs.values())

    def statistics(self) -> dict[str, int]:
        return {
            "jobs": len(self._jobs),
            "pods": len(self._pods),
            "events": len(self._events),
            "stray_events": len(self._strays),
        }

    # -- the informer sink ----------------------------------------------------------------

    def replace_all(self, resource: Resource, items: list[Obj]) -> None:
        """A (re-)list: the cache becomes exactly `items`; every run in it is woken."""
        if resource == JOBS:
            self._jobs = {}
            for job in items:
                if _name(job):
                    self._jobs[_name(job)] = job
                    self._changed_job(job)
        elif resource == PODS:
            self._pods, self._pod_run, self._pods_by_run = {}, {}, {}
            for pod in items:
                self._put_pod(pod)
        elif resource == EVENTS:
            self._events, self._event_ref, self._events_by_ref = {}, {}, {}
            self._strays.clear()
            self._strays_by_run.clear()
            for event in items:
                self._put_event(event)

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        """One watch event; a malformed object is logged and skipped."""
        obj = event.object
        if event.type not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(obj, dict):
            return
        deleted = event.type == "DELETED"
        if resource == JOBS:
            self._apply_job(obj, deleted=deleted)
        elif resource == PODS:
            if deleted:
                self._drop_pod(_name(obj))
            else:
                self._put_pod(obj)
        elif resource == EVENTS:
            if deleted:
                self._drop_event(_name(obj))
            elif self._put_event(obj) and self._wakes(obj):
                self._changed_event(obj)

    def resync(self, resource: Resource) -> None:
        """The informer's periodic resync (no re-list): wake the runs whose grace is now due.

        Nothing in the cache changed, so only time can have changed a verdict; `on_resync`
        (the maintainer's work queue) knows which runs wait on a grace. Called once per
        resource; the Jobs' resync stands for the shard.
        """
        if resource == JOBS and self._on_resync is not None and self.synced:
            self._on_resync()

    # -- index upkeep ---------------------------------------------------------------------

    def _apply_job(self, job: Obj, *, deleted: bool) -> None:
        name = _name(job)
        if not name:
            logger.warning("skipping a Job without a name in shard %s", self.shard)
            return
        if deleted:
            self._jobs.pop(name, None)
            self._forget_events(name)
        else:
            self._jobs[name] = job
            self._adopt_strays(name)
        self._changed_job(job)

    def _put_pod(self, pod: Obj) -> None:
        name, run = _name(pod), _labels(pod).get(JOB_NAME_LABEL, "")
        if not name or not run:
            return
        if self._pod_run.get(name, run) != run:
            self._drop_pod(name)  # relabelled: index it anew
        self._pods[name] = pod
        self._pod_run[name] = run
        self._pods_by_run.setdefault(run, set()).add(name)
        self._adopt_strays(run)
        self._notify(_labels(pod).get(ALGORITHM_LABEL, ""), run)

    def _drop_pod(self, name: str) -> None:
        pod = self._pods.pop(name, None)
        run = self._pod_run.pop(name, None)
        if pod is None or run is None:
            return
        names = self._pods_by_run.get(run)
        if names is not None:
            names.discard(name)
            if not names:
                del self._pods_by_run[run]
        if run not in self._jobs:  # the Job went first: nothing will ask for these any more
            for event_name in list(self._events_by_ref.get(("Pod", name), ())):
                self._drop_event(event_name)
        self._notify(_labels(pod).get(ALGORITHM_LABEL, ""), run)

    def _about_a_run(self, ref: ObjectRef) -> bool:
        kind, name = ref
        if kind == "Job":
            return name in self._jobs
        return kind == "Pod" and (name in self._pods or _job_of_pod_name(name) in self._jobs)

    def _put_event(self, event: Obj) -> bool:
        """Index an Event if it is about a run (else hold it as a stray); True if indexed."""
        name, ref = _name(event), _involved(event)
        if not name or ref[0] not in ("Job", "Pod") or not ref[1]:
            return False
        self._drop_event(name)
        if not self._about_a_run(ref):
            self._hold_stray(name, ref, event)
            return False
        self._events[name] = event
        self._event_ref[name] = ref
        self._events_by_ref.setdefault(ref, set()).add(name)
        return True

    def _drop_event(self, name: str) -> None:
        self._drop_stray(name)
        self._events.pop(name, None)
        ref = self._event_ref.pop(name, None)
        if ref is not None:
            names = self._events_by_ref.get(ref)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._events_by_ref[ref]

    @staticmethod
    def _stray_run(ref: ObjectRef) -> str:
        kind, name = ref
        return name if kind == "Job" else _job_of_pod_name(name)

    def _hold_stray(self, name: str, ref: ObjectRef, event: Obj) -> None:
        self._strays[name] = event
        self._strays_by_run.setdefault(self._stray_run(ref), set()).add(name)
        while len(self._strays) > STRAY_EVENTS:
            self._drop_stray(next(iter(self._strays)))

    def _drop_stray(self, name: str) -> None:
        event = self._strays.pop(name, None)
        if event is None:
            return
        run = self._stray_run(_involved(event))
        names = self._strays_by_run.get(run)
        if names is not None:
            names.discard(name)
            if not names:
                del self._strays_by_run[run]

    def _adopt_strays(self, run: str) -> None:
        """Index the held Events about `run`'s Job or pods, now that one of them is known."""
        for name in list(self._strays_by_run.get(run, ())):
            event = self._strays[name]
            if self._about_a_run(_involved(event)):
                self._drop_stray(name)
                self._put_event(event)

    def _forget_events(self, request_id: str) -> None:
        refs: Iterable[ObjectRef] = [
            ("Job", request_id),
            *(("Pod", pod) for pod in self._pods_by_run.get(request_id, ())),
        ]
        for ref in refs:
            for name in list(self._events_by_ref.get(ref, ())):
                self._drop_event(name)

    # -- wake-ups -------------------------------------------------------------------------

    def _changed_job(self, job: Obj) -> None:
        self._notify(_labels(job).get(ALGORITHM_LABEL, ""), _name(job))

    def _wakes(self, event: Obj) -> bool:
        return self._event_reasons is None or _text(event.get("reason")) in self._event_reasons

    def _changed_event(self, event: Obj) -> None:
        kind, name = _involved(event)
        if kind == "Job" and name in self._jobs:
            self._changed_job(self._jobs[name])
        elif kind == "Pod" and name in self._pods:
            pod = self._pods[name]
            self._notify(_labels(pod).get(ALGORITHM_LABEL, ""), self._pod_run[name])

    def _notify(self, algorithm: str, request_id: str) -> None:
        if algorithm and request_id and self.synced:
            self._on_change((algorithm, request_id))
