"""Observing: what a shard's cluster says about the runs, kept current by informers.

Input: list+watch of the runs' Jobs and Pods (label
`science.sneaksanddata.com/nexus-component=algorithm-run`, which nexusd puts on both) and of
the namespace's Events, through kube/watching.py (relists on 410, reconnects with back-off).
Output: `ClusterView`, a cache the reconciler reads without I/O, and a wake-up for every run
whose Job, pods or events changed (level-triggered: the reconciler looks at the whole state
again, so a missed or duplicated event never matters).

Memory stays bounded by the runs: only Events about Jobs and Pods are kept, and a Job's
Events (and its pods') are dropped with the Job.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

from nexusd.kube.client import EVENTS, JOBS, PODS

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.kube.client import Resource, WatchEvent

logger = logging.getLogger(__name__)

RUN_SELECTOR = "science.sneaksanddata.com/nexus-component=algorithm-run"
ALGORITHM_LABEL = "science.sneaksanddata.com/algorithm-template-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

Obj = dict[str, Any]
RunKey = tuple[str, str]  # (algorithm, request id)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _involved_name(event: Obj) -> str:
    return str((event.get("involvedObject") or {}).get("name") or "")


def _about_a_run(event: Obj) -> bool:
    """Events the rules can use: about Jobs and Pods (not Deployments, Nodes...)."""
    return (event.get("involvedObject") or {}).get("kind") in ("Job", "Pod")


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


class ClusterView:
    """The last known Jobs, pods and events of one shard, indexed by run (request id)."""

    def __init__(self, *, shard: str, on_change: Callable[[RunKey], None]) -> None:
        self.shard = shard
        self._on_change = on_change
        self._jobs: dict[str, Obj] = {}
        self._pods: dict[str, Obj] = {}
        self._events: dict[str, Obj] = {}
        self._pods_by_run: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
        self.synced = False

    # -- what the reconciler reads --------------------------------------------------------

    def job(self, request_id: str) -> Obj | None:
        return self._jobs.get(request_id)

    def pods(self, request_id: str) -> list[Obj]:
        return [self._pods[name] for name in sorted(self._pods_by_run.get(request_id, ()))]

    def events(self, request_id: str) -> list[Obj]:
        """Events about the run's Job or its pods, oldest first."""
        names = {request_id, *self._pods_by_run.get(request_id, ())}
        found = [
            event
            for event in self._events.values()
            if (event.get("involvedObject") or {}).get("name") in names
        ]
        found.sort(key=lambda event: int(event["metadata"].get("resourceVersion") or 0))
        return found

    def jobs(self) -> list[Obj]:
        return list(self._jobs.values())

    # -- the informer sink ----------------------------------------------------------------

    def replace_all(self, resource: Resource, items: list[Obj]) -> None:
        if resource == JOBS:
            self._jobs = {_name(job): job for job in items}
            for job in items:
                self._changed_job(job)
        elif resource == PODS:
            self._pods = {}
            self._pods_by_run.clear()
            for pod in items:
                self._put_pod(pod)
        elif resource == EVENTS:
            self._events = {_name(event): event for event in items if _about_a_run(event)}

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        obj = event.object
        if event.type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        deleted = event.type == "DELETED"
        if resource == JOBS:
            if deleted:
                self._jobs.pop(_name(obj), None)
                self._forget_events(_name(obj))
            else:
                self._jobs[_name(obj)] = obj
            self._changed_job(obj)
        elif resource == PODS:
            if deleted:
                self._drop_pod(obj)
            else:
                self._put_pod(obj)
        elif resource == EVENTS:
            if deleted:
                self._events.pop(_name(obj), None)
            elif _about_a_run(obj):
                self._events[_name(obj)] = obj
                self._changed_event(obj)

    def _put_pod(self, pod: Obj) -> None:
        run = _labels(pod).get(JOB_NAME_LABEL)
        if not run:
            return
        self._pods[_name(pod)] = pod
        self._pods_by_run[run].add(_name(pod))
        self._notify(_labels(pod).get(ALGORITHM_LABEL, ""), run)

    def _drop_pod(self, pod: Obj) -> None:
        self._pods.pop(_name(pod), None)
        run = _labels(pod).get(JOB_NAME_LABEL)
        if run:
            self._pods_by_run[run].discard(_name(pod))
            if not self._pods_by_run[run]:
                del self._pods_by_run[run]
            self._notify(_labels(pod).get(ALGORITHM_LABEL, ""), run)

    def _forget_events(self, request_id: str) -> None:
        names = {request_id, *self._pods_by_run.get(request_id, ())}
        for key in [k for k, e in self._events.items() if _involved_name(e) in names]:
            del self._events[key]

    def _changed_job(self, job: Obj) -> None:
        self._notify(_labels(job).get(ALGORITHM_LABEL, ""), _name(job))

    def _changed_event(self, event: Obj) -> None:
        involved = event.get("involvedObject") or {}
        name = involved.get("name", "")
        if involved.get("kind") == "Job" and name in self._jobs:
            self._changed_job(self._jobs[name])
        elif involved.get("kind") == "Pod" and name in self._pods:
            self._put_pod(self._pods[name])

    def _notify(self, algorithm: str, request_id: str) -> None:
        if algorithm and request_id and self.synced:
            self._on_change((algorithm, request_id))
