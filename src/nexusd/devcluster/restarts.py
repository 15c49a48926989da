"""Restarting an exited container in place: the kubelet's restart policy and CrashLoopBackOff.

Under `restartPolicy: Always` every exit restarts the container, a clean exit 0 included;
under `OnFailure` only a non-zero one (a 0 ends the pod Succeeded); under `Never` none.
The delay is the kubelet's per-container `flowcontrol.Backoff`: the first exit restarts at
once, each later one waits `base` (10 s), then twice that, up to `cap` (300 s); a container
that ran longer than twice the cap (10 min) before exiting starts over with an immediate
restart. Exit code does not matter: a worker that exits 0 to be recycled backs off exactly like
one that crashed (real Kubernetes behaviour, kept on purpose). While it waits the container is
`waiting: CrashLoopBackOff` ("back-off 10s restarting failed container=<c> pod=<p>"), with
the exited instance as `lastState.terminated`; `restartCount` grows when the next instance
starts. Intervals use `trio.current_time()`, so autojump-clock tests run them instantly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .objects import Obj
    from .runtimes import Outcome

DEFAULT_BASE = 10.0
DEFAULT_CAP = 300.0


def restarts(policy: str, outcome: Outcome) -> bool:
    """Whether `policy` restarts a container that ended with `outcome` (evictions excluded)."""
    if outcome.evicted:
        return False
    return policy == "Always" or (policy == "OnFailure" and outcome.exit_code != 0)


@attrs.define
class RestartBackoff:
    """One container's back-off entry (delay None: no entry yet, or expired)."""

    base: float = DEFAULT_BASE
    cap: float = DEFAULT_CAP
    delay: float | None = None
    last_restart: float = 0.0

    def delay_for(self, exited: float) -> float:
        """Seconds to wait before restarting a container that exited at trio time `exited`."""
        if self.delay is None or exited - self.last_restart > 2 * self.cap:
            self.delay = None
            return 0.0
        return self.delay

    def restarted(self, now: float) -> None:
        """The next instance started at `now`: the following exit waits longer."""
        self.delay = self.base if self.delay is None else min(self.delay * 2, self.cap)
        self.last_restart = now


def go_duration(seconds: float) -> str:
    """Go's time.Duration spelling, as the kubelet prints its back-off: 10s, 1m20s, 100ms."""
    if seconds < 1:
        return f"{_trim(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}h{int(minutes)}m{_trim(secs)}s"
    if minutes:
        return f"{int(minutes)}m{_trim(secs)}s"
    return f"{_trim(secs)}s"


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def pod_ref(pod: Obj) -> str:
    """format.Pod: `<name>_<namespace>(<uid>)`."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta['namespace']}({meta['uid']})"


def exited_status(cs: Obj, outcome: Outcome, now: str) -> Obj:
    """A running container status turned into its exited instance (`state.terminated`)."""
    running = (cs.get("state") or {}).get("running") or {}
    terminated: Obj = {
        "exitCode": outcome.exit_code,
        "reason": outcome.reason,
        "startedAt": running.get("startedAt", now),
        "finishedAt": now,
    }
    if cs.get("containerID"):
        terminated["containerID"] = cs["containerID"]
    return {**cs, "state": {"terminated": terminated}, "ready": False, "started": False}


def crashloop_status(cs: Obj, pod: Obj, delay: float) -> Obj:
    """An exited container status (`exited_status`) waiting out its back-off."""
    name = cs["name"]
    message = f"back-off {go_duration(delay)} restarting failed container={name} pod={pod_ref(pod)}"
    return {
        **cs,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
        "lastState": cs["state"],
    }


def not_ready(conditions: list[Obj], names: list[str], now: str) -> list[Obj]:
    """Pod conditions with Ready and ContainersReady False (ContainersNotReady)."""
    out = []
    for c in conditions:
        if c["type"] in ("Ready", "ContainersReady") and c.get("status") == "True":
            c = {
                **c,
                "status": "False",
                "lastTransitionTime": now,
                "reason": "ContainersNotReady",
                "message": f"containers with unready status: [{' '.join(names)}]",
            }
        out.append(c)
    return out
