"""Fault injection for the embedded API server: 429s, 5xx, latency and cut watch streams.

A `FaultPlan` is a frozen description (what to inject, for which verbs and resources); a
`Faults` object holds the active plan plus its seeded RNG and token bucket, and is what the
server consults once per HTTP request, after routing (so injected answers are counted under
the real verb and resource) and before the request body is read or the store is touched.

The plan comes from `DevClusterConfig.faults` at start-up and can be replaced at run time,
from Python (`cluster.faults.set(FaultPlan(...))`) or over HTTP (`PUT /devcluster/v1/faults`
with the plan as JSON, see `plan_from_json`), so a test in another process can flip it.

What the injected answers look like (golden files 12a/12c and 09):

* 429 is the max-in-flight / APF rejection: **text/plain** `Too many requests, please try again
  later.\\n` with `Retry-After: 1` and `X-Content-Type-Options: nosniff` — not a Status.
* 500 is a `metav1.Status` with reason `InternalError`; 503 one with reason
  `ServiceUnavailable`, both as the real server's `NewInternalError`/`NewServiceUnavailable`.
* Latency is added before the request is handled.
* A cut watch stops after N events or S seconds without the terminating chunk, as when a
  load balancer or the API server itself drops the connection.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .objects import ApiError, status_body

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Verbs that APF / max-mutating-inflight count as mutating.
MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
TOO_MANY_REQUESTS_BODY = "Too many requests, please try again later.\n"
TOO_MANY_REQUESTS_HEADERS = [("retry-after", "1"), ("x-content-type-options", "nosniff")]


def _frozenset(value: Any) -> frozenset[str]:
    return frozenset(value or ())


def _mapping(value: Any) -> Mapping[str, float]:
    return {str(k): float(v) for k, v in dict(value or {}).items()}


@attrs.frozen
class FaultPlan:
    """What to inject. All shares are probabilities in [0, 1]; the default injects nothing.

    Scope: `verbs` and `resources` restrict every fault of the plan (empty means all).
    Verbs are the Kubernetes verbs (`get`, `list`, `watch`, `create`, `update`, `patch`,
    `delete`, `deletecollection`); resources are plurals with an optional subresource
    (`jobs`, `pods/status`), matched also by their plural alone (`pods` matches `pods/status`).
    """

    seed: int = 0
    """Seed of the RNG behind the shares, so a run's fault pattern is reproducible."""
    throttle_share: float = 0.0
    """Share of matching requests answered 429 (text/plain, `Retry-After: 1`)."""
    error_share: float = 0.0
    """Share of matching requests answered `error_code` with a metav1.Status body."""
    error_code: int = attrs.field(default=500, validator=attrs.validators.in_((500, 503)))
    """500 (InternalError) or 503 (ServiceUnavailable)."""
    mutating_rate: float | None = None
    """Token bucket on mutating verbs (requests per second); excess requests get 429, like
    `--max-mutating-requests-inflight` or an APF Reject priority level. None: no limit."""
    mutating_burst: int = 1
    """Bucket capacity: mutating requests allowed back to back before the rate applies."""
    latency: float = 0.0
    """Seconds added to every matching request."""
    latency_by_verb: Mapping[str, float] = attrs.field(factory=dict, converter=_mapping)
    """Seconds added per verb, on top of `latency`."""
    watch_cut_after_events: int | None = None
    """Close matching watch streams abruptly after this many events."""
    watch_cut_after_seconds: float | None = None
    """Close matching watch streams abruptly after this many seconds."""
    verbs: frozenset[str] = attrs.field(factory=frozenset, converter=_frozenset)
    resources: frozenset[str] = attrs.field(factory=frozenset, converter=_frozenset)

    def matches(self, verb: str, resource: str) -> bool:
        if self.verbs and verb not in self.verbs:
            return False
        if self.resources:
            return resource in self.resources or resource.split("/")[0] in self.resources
        return True

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["verbs"] = sorted(self.verbs)
        out["resources"] = sorted(self.resources)
        out["latency_by_verb"] = dict(self.latency_by_verb)
        return out


def plan_from_json(data: Any) -> FaultPlan:
    """A plan from its JSON form (the field names of `FaultPlan`); ValueError on bad input."""
    if not isinstance(data, dict):
        raise ValueError("a fault plan is a JSON object")
    known = {f.name for f in attrs.fields(FaultPlan)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown fault plan fields: {', '.join(unknown)}")
    try:
        return FaultPlan(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


@attrs.frozen
class WatchCut:
    """Limits a watch stream is cut at (None: not cut)."""

    events: int | None = None
    seconds: float | None = None


class Faults:
    """The active plan, its RNG and token bucket. Replace the plan with `set`; `clear` ends it."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.set(plan or FaultPlan())

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set(self, plan: FaultPlan | None = None, **changes: Any) -> FaultPlan:
        """Install `plan` (or the current one with `changes`); reseeds RNG, refills the bucket."""
        base = plan if plan is not None else getattr(self, "_plan", FaultPlan())
        self._plan = attrs.evolve(base, **changes) if changes else base
        self._rng = random.Random(self._plan.seed)
        self._tokens = float(self._plan.mutating_burst)
        self._refilled_at: float | None = None
        return self._plan

    def clear(self) -> None:
        self.set(FaultPlan())

    async def before(self, verb: str, resource: str) -> None:
        """Apply the plan to one request: sleep, then maybe raise the injected ApiError."""
        plan = self._plan
        if not plan.matches(verb, resource):
            return
        delay = plan.latency + plan.latency_by_verb.get(verb, 0.0)
        if delay > 0:
            await trio.sleep(delay)
        if plan.mutating_rate is not None and verb in MUTATING_VERBS and not self._take_token():
            raise too_many_requests()
        if plan.throttle_share and self._rng.random() < plan.throttle_share:
            raise too_many_requests()
        if plan.error_share and self._rng.random() < plan.error_share:
            raise server_error(plan.error_code)

    def watch_cut(self, resource: str) -> WatchCut:
        plan = self._plan
        if not plan.matches("watch", resource):
            return WatchCut()
        return WatchCut(plan.watch_cut_after_events, plan.watch_cut_after_seconds)

    def _take_token(self) -> bool:
        plan = self._plan
        assert plan.mutating_rate is not None
        now = trio.current_time()
        if self._refilled_at is not None:
            elapsed = now - self._refilled_at
            self._tokens = min(plan.mutating_burst, self._tokens + elapsed * plan.mutating_rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def too_many_requests() -> ApiError:
    """The max-in-flight / APF 429 (golden 12a, 12c): plain text, not a Status."""
    return ApiError(429, TOO_MANY_REQUESTS_BODY, list(TOO_MANY_REQUESTS_HEADERS))


def server_error(code: int) -> ApiError:
    if code == 503:
        msg = "the server is currently unable to handle the request (injected fault)"
        return ApiError(503, status_body(503, "ServiceUnavailable", msg))
    msg = "Internal error occurred: injected fault"
    details = {"causes": [{"message": "injected fault"}]}
    return ApiError(500, status_body(500, "InternalError", msg, details))
