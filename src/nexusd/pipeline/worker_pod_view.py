"""What a shard's cluster says about its warm pools' pods, kept current by an informer.

Input: list+watch of the pods labelled `science.sneaksanddata.com/nexus-component=warm-worker`
(`kube.pools.POOL_SELECTOR`: every pool pod of nexusd), and the Events about them the rules read
(the kubelet's `Failed` ones: the registry's own words about an image that cannot be pulled are
in those, not in the waiting state), which the maintainer's Event informer shares with this view
(`Fanout`).
Output: `WorkerPodView`, a cache `pipeline/worker_pods.py` reads without I/O, plus what changed
since it last looked (`take`): pods updated, pods gone (with their pool), pools to look at.

A pod that vanishes between two lists counts as gone, as a DELETED event does: its runs must be
given back either way. Malformed objects read as empty and are skipped (one bad object must not
stop the maintainer). Memory is bounded by the pods: a pod's Events are forgotten with it, and
Events about pods not (yet) listed are kept up to `STRAY_EVENTS`.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nexusd.kube.client import EVENTS, PODS
from nexusd.kube.manifests import LABEL_TEMPLATE_NAME
from nexusd.kube.pools import deployment_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from nexusd.kube.client import Resource, WatchEvent
    from nexusd.kube.watching import Sink

Obj = dict[str, Any]

#: Events kept per pod (the latest); the rules read the newest informative one.
EVENTS_PER_POD: Final = 8
#: Events about pool pods this view does not hold (yet); oldest dropped first.
STRAY_EVENTS: Final = 500
_POOL_POD_PREFIX: Final = deployment_name("")
KUBELET_FAILED: Final = frozenset({"Failed"})


def pod_name(obj: Obj) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def algorithm_of(pod: Obj) -> str:
    metadata = pod.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    value = labels.get(LABEL_TEMPLATE_NAME) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else ""


def _about_pool_pod(event: Obj, reasons: frozenset[str]) -> str:
    """The pool pod an Event of one of `reasons` is about, or ""."""
    involved = event.get("involvedObject")
    if not isinstance(involved, dict) or event.get("reason") not in reasons:
        return ""
    name = involved.get("name")
    if involved.get("kind") != "Pod" or not isinstance(name, str):
        return ""
    return name if name.startswith(_POOL_POD_PREFIX) else ""


@attrs.frozen
class Ended:
    """One ended instance of a container: `state.terminated` or `lastState.terminated`."""

    container: str
    terminated: Obj = attrs.field(hash=False)
    finished: dt.datetime | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (
            self.container,
            str(self.terminated.get("containerID") or ""),
            str(self.terminated.get("finishedAt") or ""),
        )

    def held(self, sent_at: dt.datetime | None, now: dt.datetime) -> bool:
        """A run leased at `sent_at` was leased before this instance finished."""
        if sent_at is None:
            return True
        end = self.finished or now
        if end.microsecond == 0:
            end += dt.timedelta(seconds=1)  # metav1.Time is whole seconds: all of it counts
        return sent_at < end


def terminations(pod: Obj) -> list[Ended]:
    """Every ended container instance the pod shows, earliest first."""
    found: list[Ended] = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for holder in (status.get("lastState") or {}, status.get("state") or {}):
            terminated = holder.get("terminated")
            if isinstance(terminated, dict):
                finished = _time(terminated.get("finishedAt"))
                found.append(Ended(str(status.get("name") or ""), terminated, finished))
    never = dt.datetime.max.replace(tzinfo=dt.UTC)
    found.sort(key=lambda e: e.finished or never)
    return found


class WorkerPodView:
    """One shard's worker pods by name, their Events, and what changed since `take`."""

    def __init__(self, *, shard: str, event_reasons: frozenset[str] = KUBELET_FAILED) -> None:
        self.shard = shard
        #: the Events kept: the kubelet's `Failed` ones (the `{event_message}` of a rule) and
        #: those the rules excuse a pod for (`unless_event`, say `TriggeredScaleUp`)
        self.event_reasons = event_reasons
        self.pods: dict[str, Obj] = {}
        #: pods gone since the last look -> their pool (algorithm)
        self.gone: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._dirty_pools: set[str] = set()
        self._events: dict[str, collections.OrderedDict[str, Obj]] = {}
        self._strays: collections.OrderedDict[str, Obj] = collections.OrderedDict()
        self._wake = trio.Event()

    # -- what worker_pods.py reads --------------------------------------------------------

    def pool(self, algorithm: str) -> list[Obj]:
        """The pool's pods, by name."""
        return [self.pods[n] for n in sorted(self.pods) if algorithm_of(self.pods[n]) == algorithm]

    def pools(self) -> set[str]:
        return {algorithm_of(pod) for pod in self.pods.values()} - {""}

    def events(self, name: str) -> list[Obj]:
        """The pod's latest Events of `event_reasons`, oldest first."""
        return list(self._events.get(name, {}).values())

    async def changed(self) -> None:
        """Return once something changed since the last `take` (at once if it has)."""
        while not (self._dirty or self.gone or self._dirty_pools):
            self._wake = trio.Event()
            await self._wake.wait()

    def take(self) -> tuple[set[str], dict[str, str], set[str]]:
        """(pods changed, pods gone -> pool, pools changed) since the last call, emptied."""
        taken = (self._dirty, self.gone, self._dirty_pools)
        self._dirty, self.gone, self._dirty_pools = set(), {}, set()
        return taken

    def statistics(self) -> dict[str, int]:
        return {"worker_pods": len(self.pods), "worker_pod_events": len(self._strays)}

    # -- the informer sink ----------------------------------------------------------------

    def replace_all(self, resource: Resource, items: list[Obj]) -> None:
        if resource == PODS:
            listed = {pod_name(pod): pod for pod in items if pod_name(pod)}
            for name in set(self.pods) - set(listed):
                self._drop(name)
            for pod in listed.values():
                self._put(pod)
        elif resource == EVENTS:
            self._events.clear()
            self._strays.clear()
            for event in items:
                self._put_event(event)

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        obj = event.object
        if event.type not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(obj, dict):
            return
        if resource == PODS and pod_name(obj):
            if event.type == "DELETED":
                self._drop(pod_name(obj))
            else:
                self._put(obj)
        elif resource == EVENTS and event.type != "DELETED":
            self._put_event(obj)

    def resync(self, resource: Resource) -> None:
        """Time alone may end a grace, and a failed action is retried: look at all again."""
        if resource == PODS:
            self._dirty |= set(self.pods)
            self._dirty_pools |= self.pools()
            self._wake.set()

    # -- upkeep ---------------------------------------------------------------------------

    def _put(self, pod: Obj) -> None:
        name = pod_name(pod)
        self.pods[name] = pod
        self.gone.pop(name, None)
        self._dirty.add(name)
        if algorithm_of(pod):
            self._dirty_pools.add(algorithm_of(pod))
        for event_name, event in list(self._strays.items()):
            if _about_pool_pod(event, self.event_reasons) == name:
                del self._strays[event_name]
                self._put_event(event)
        self._wake.set()

    def _drop(self, name: str) -> None:
        pod = self.pods.pop(name, None)
        self._events.pop(name, None)
        self._dirty.discard(name)
        if pod is None:
            return
        self.gone[name] = algorithm_of(pod)
        if algorithm_of(pod):
            self._dirty_pools.add(algorithm_of(pod))
        self._wake.set()

    def _put_event(self, event: Obj) -> None:
        pod, name = _about_pool_pod(event, self.event_reasons), pod_name(event)
        if not pod or not name:
            return
        if pod not in self.pods:
            self._strays[name] = event
            while len(self._strays) > STRAY_EVENTS:
                self._strays.popitem(last=False)
            return
        kept = self._events.setdefault(pod, collections.OrderedDict())
        kept.pop(name, None)
        kept[name] = event
        while len(kept) > EVENTS_PER_POD:
            kept.popitem(last=False)


class Fanout:
    """One informer's objects delivered to several sinks (one watch, several caches). A sink
    that raises does not keep the object from the others; the first error is raised after."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def replace_all(self, resource: Resource, items: list[Obj]) -> None:
        self._each(lambda sink: sink.replace_all(resource, items))

    def apply(self, resource: Resource, event: WatchEvent) -> None:
        self._each(lambda sink: sink.apply(resource, event))

    def resync(self, resource: Resource) -> None:
        self._each(lambda sink: sink.resync(resource))

    def _each(self, deliver: Callable[[Sink], None]) -> None:
        error: Exception | None = None
        for sink in self.sinks:
            try:
                deliver(sink)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
