"""Scaling warm pools: one Deployment of workers per warm template, sized to its demand.

Input: the configuration cache (every template with a `spec.warmPool` whose workgroup targets
one of this scheduler's shards), and each pool's demand (`PoolDemand`: runs waiting in its
queue, how long the oldest has waited, runs leased to workers), read through a callable:
`pipeline/pool_demand.StoreDemand`, the store's figures, the same for every scheduler sharing
the store, so that their scalers agree on each pool's size.
Output: every `interval`, in each shard, the pool Deployments (`nexusd.kube.pools`) as the
templates say: created when missing, replaced when the template's pod changed (the hash
annotation differs), `spec.replicas` rewritten when the wanted size changed, deleted when the
template is gone or has no warmPool any more. Sizing is `wanted_replicas`: up at once, down
only after demand stayed lower for the pool's idleTimeoutSeconds.
Transition: none; runs are not touched (workers lease them, pipeline/leasing.py).
Failure: an API error (unavailable, conflict, refusal) is logged and the write tried again the
next interval; a 429 also slows the shard's throttle down, as for Jobs. A template that is
invalid, or whose workgroup is unknown, keeps its Deployment as it is: a bad edit must not take
away the workers of the runs already waiting. Nothing is deleted before the cache has synced.

Writes are PUTs of the whole object with its resourceVersion (`KubeClient` has no PATCH): a
Deployment changed meanwhile (its controller writes the status) answers 409 and the change is
made again from the next list.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import math
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from nexusd.core.errors import KubeConflict, KubeError, KubeNotFound, KubeUnavailable
from nexusd.kube.manifests import LABEL_TEMPLATE_NAME
from nexusd.kube.overrides import validate_template_spec
from nexusd.kube.pools import (
    DEPLOYMENTS,
    POD_TEMPLATE_HASH,
    POOL_SELECTOR,
    WarmPool,
    build_pool_deployment,
    deployment_name,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from nexusd.kube.configuration import ConfigurationCache
    from nexusd.kube.shards import Shard
    from nexusd.kube.throttling import ShardThrottle
    from nexusd.stores.signing import CompletionTokens

logger = logging.getLogger(__name__)


@attrs.frozen
class PoolDemand:
    """What one pool's runs ask of it right now."""

    #: runs waiting in the pool's queue
    queued: int
    #: seconds the oldest of them has waited (0 when none waits)
    oldest_age: float
    #: runs leased to the pool's workers
    leased: int


@attrs.frozen
class ScaleDecision:
    """`wanted_replicas`' answer: the size to set, and the state to give its next call."""

    replicas: int
    #: since when (trio time) demand has been below the pool's size; None = it is not
    low_since: float | None


def wanted_replicas(
    pool: WarmPool,
    demand: PoolDemand,
    current: int,
    low_since: float | None,
    now: float,
    scale_up_age: float,
) -> ScaleDecision:
    """The size a pool should have: what its runs need, within [minWorkers, maxWorkers].

    Needed = ceil((queued + leased) / concurrency), one more when runs have waited longer than
    `scale_up_age` although the pool has that many workers (they are slow to start or to
    lease). More than `current`: at once. Less: only once demand has stayed lower than the
    pool's size for idleTimeoutSeconds (`low_since` says since when; pass back what the
    previous decision returned), so a burst that comes and goes does not restart workers.
    A size outside the bounds (a template edit) is brought within them at once.
    """
    needed = math.ceil((demand.queued + demand.leased) / pool.concurrency)
    if demand.queued > 0 and demand.oldest_age > scale_up_age and current >= needed:
        needed += 1
    target = min(pool.max_workers, max(pool.min_workers, needed))
    size = min(pool.max_workers, max(pool.min_workers, current))
    if target >= size:
        return ScaleDecision(replicas=target, low_since=None)
    since = now if low_since is None else low_since
    if now - since >= pool.idle_timeout_seconds:
        return ScaleDecision(replicas=target, low_since=None)
    return ScaleDecision(replicas=size, low_since=since)


@attrs.frozen
class ScalerStatistics:
    created: int
    replaced: int
    scaled: int
    deleted: int
    #: API calls that failed (tried again the next interval)
    failed: int


@attrs.frozen
class _Managed:
    """A warm template this scheduler keeps a Deployment of, in shard `shard`."""

    shard: str
    pool: WarmPool
    #: the Deployment as the template makes it (not to be modified: copied per write)
    body: dict[str, Any]


#: A warm template whose Deployment is left as it is (invalid, or its workgroup unknown).
_KEEP = "keep"
_Verdict = _Managed | str | None


@attrs.define
class PoolScaler:
    """One scheduler's pool Deployments, in all its shards; `sweep` is one interval's work."""

    shards: Mapping[str, Shard]
    throttles: Mapping[str, ShardThrottle]
    configuration: ConfigurationCache
    demand: Callable[[str], PoolDemand]
    scheduler_url: str
    tokens: CompletionTokens | None
    nexus_version: str
    scale_up_age: float
    failed: int = 0
    #: writes done, by what ("create", "replace", "scale", "delete")
    _writes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    #: (shard, algorithm) -> since when its demand is below its size
    _low_since: dict[tuple[str, str], float] = attrs.field(factory=dict)
    #: algorithm -> (template object, workgroup object, verdict): the cache replaces an
    #: object when it changes, so the objects themselves are the version the verdict is of
    _verdicts: dict[str, tuple[object, object, _Verdict]] = attrs.field(factory=dict)
    #: (shard, deployment) -> the last error logged for it (the same one is not logged again)
    _errors: dict[tuple[str, str], str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        missing = sorted(set(self.shards) - set(self.throttles))
        if missing:
            raise ValueError(f"no throttle for shard(s) {', '.join(missing)}")

    async def sweep(self) -> None:
        """Bring every shard's pool Deployments in line with the templates, once."""
        if not self.configuration.synced:
            return  # an empty cache would read as "every template deleted"
        managed: dict[str, dict[str, _Managed]] = {name: {} for name in self.shards}
        kept: set[str] = set()
        for algorithm in self.configuration.template_names():
            verdict = self._verdict(algorithm)
            if isinstance(verdict, _Managed):
                managed[verdict.shard][algorithm] = verdict
            elif verdict == _KEEP:
                kept.add(algorithm)
        for algorithm in set(self._verdicts) - set(self.configuration.template_names()):
            del self._verdicts[algorithm]
        async with trio.open_nursery() as nursery:
            for name, shard in self.shards.items():
                nursery.start_soon(self._sweep_shard, shard, managed[name], kept)

    def _verdict(self, algorithm: str) -> _Verdict:
        """What to do with a template's pool: manage it (in which shard), keep it, or none."""
        template = self.configuration.template(algorithm)
        spec = (template or {}).get("spec") or {}
        if not isinstance(spec, dict) or spec.get("warmPool") is None:
            return None
        ref = spec.get("workgroupRef")
        workgroup_name = ref.get("name") if isinstance(ref, dict) else None
        workgroup = self.configuration.workgroup(str(workgroup_name))
        known = self._verdicts.get(algorithm)
        if known is not None and known[0] is template and known[1] is workgroup:
            return known[2]
        verdict = self._judge(algorithm, spec, workgroup)
        self._verdicts[algorithm] = (template, workgroup, verdict)
        return verdict

    def _judge(
        self, algorithm: str, spec: dict[str, Any], workgroup: dict[str, Any] | None
    ) -> _Verdict:
        problems = validate_template_spec(spec)
        if problems:
            logger.warning(
                "warm template %s is invalid; its pool is left as it is: %s",
                algorithm,
                "; ".join(problems),
            )
            return _KEEP
        if workgroup is None:
            logger.warning("warm template %s: unknown workgroup; pool left as it is", algorithm)
            return _KEEP
        workgroup_spec = workgroup.get("spec") or {}
        shard = self.shards.get(str(workgroup_spec.get("cluster", "")))
        if shard is None:
            return None  # another scheduler's shard: none of this one's has its pool
        token = self.tokens.pool_token(algorithm) if self.tokens is not None else ""
        body = build_pool_deployment(
            algorithm=algorithm,
            spec=spec,
            workgroup=workgroup_spec,
            namespace=shard.namespace,
            scheduler_url=self.scheduler_url,
            pool_token=token,
            nexus_version=self.nexus_version,
        )
        pool = WarmPool.from_spec(spec)
        assert pool is not None  # validated above, and warmPool is set
        return _Managed(shard=shard.name, pool=pool, body=body)

    async def _sweep_shard(
        self, shard: Shard, managed: dict[str, _Managed], kept: set[str]
    ) -> None:
        try:
            listed = await shard.client.list(
                DEPLOYMENTS, namespace=shard.namespace, label_selector=POOL_SELECTOR
            )
        except KubeError as exc:
            self._failed(shard, "*", "list pool Deployments", exc)
            return
        existing = {item["metadata"]["name"]: item for item in listed.get("items") or []}
        for algorithm, wanted in managed.items():
            await self._reconcile(
                shard, algorithm, wanted, existing.get(deployment_name(algorithm))
            )
        for name, item in existing.items():
            algorithm = (item["metadata"].get("labels") or {}).get(LABEL_TEMPLATE_NAME, "")
            if name != deployment_name(algorithm) or algorithm in managed or algorithm in kept:
                continue  # not one this scheduler made, or still wanted
            await self._delete(shard, algorithm)
        for key in [key for key in self._low_since if key[0] == shard.name]:
            if key[1] not in managed:
                del self._low_since[key]

    async def _reconcile(
        self, shard: Shard, algorithm: str, wanted: _Managed, current: dict[str, Any] | None
    ) -> None:
        """Create, replace or resize one pool's Deployment; at most one write."""
        key = (shard.name, algorithm)
        replicas = 0 if current is None else int(current["spec"].get("replicas", 1))
        decision = wanted_replicas(
            wanted.pool,
            self.demand(algorithm),
            replicas,
            self._low_since.get(key),
            trio.current_time(),
            self.scale_up_age,
        )
        name = deployment_name(algorithm)
        if current is None:
            body = _with_replicas(wanted.body, decision.replicas)
            what, call = "create", _create(shard, body)
        elif _annotation(current) != _annotation(wanted.body):
            body = _with_replicas(wanted.body, decision.replicas)
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            what, call = "replace", _replace(shard, name, body)
        elif decision.replicas != replicas:
            body = _with_replicas(current, decision.replicas)
            body.update(apiVersion=DEPLOYMENTS.api_version, kind=DEPLOYMENTS.kind)
            what, call = "scale", _replace(shard, name, body)
        else:
            self._remember(key, decision)
            return
        if await self._write(shard, name, what, call):
            self._remember(key, decision)  # a failed scale-down waits no longer next time
            logger.info(
                "pool %s: %s Deployment %s (%d -> %d replicas)",
                algorithm,
                what,
                name,
                replicas,
                decision.replicas,
            )

    def _remember(self, key: tuple[str, str], decision: ScaleDecision) -> None:
        if decision.low_since is None:
            self._low_since.pop(key, None)
        else:
            self._low_since[key] = decision.low_since

    async def _delete(self, shard: Shard, algorithm: str) -> None:
        name = deployment_name(algorithm)

        async def call() -> None:
            with contextlib.suppress(KubeNotFound):  # gone already: what was wanted
                await shard.client.delete(
                    DEPLOYMENTS,
                    namespace=shard.namespace,
                    name=name,
                    propagation_policy="Background",
                )

        if await self._write(shard, name, "delete", call):
            logger.info("pool %s: deleted Deployment %s (no warm template)", algorithm, name)

    async def _write(
        self, shard: Shard, name: str, what: str, call: Callable[[], Awaitable[Any]]
    ) -> bool:
        """One mutating call through the shard's throttle; False (logged) when it failed."""
        throttle = self.throttles[shard.name]
        try:
            async with throttle.mutating():
                await call()
        except KubeError as exc:  # unavailable, conflict, refused: all tried again next time
            if isinstance(exc, KubeUnavailable) and exc.status == 429:
                await throttle.throttled()
            self._failed(shard, name, f"{what} Deployment {name}", exc)
            return False
        throttle.succeeded()
        self._writes[what] += 1
        self._errors.pop((shard.name, name), None)
        return True

    def _failed(self, shard: Shard, name: str, what: str, exc: KubeError) -> None:
        self.failed += 1
        message = f"{type(exc).__name__}: {exc}"
        repeated = self._errors.get((shard.name, name)) == message
        self._errors[(shard.name, name)] = message
        # A 409 is the Deployment changed since the list (its controller wrote the status).
        quiet = repeated or isinstance(exc, KubeConflict)
        logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "shard %s: cannot %s (%s); trying again next interval",
            shard.name,
            what,
            message,
        )

    def statistics(self) -> ScalerStatistics:
        return ScalerStatistics(
            created=self._writes["create"],
            replaced=self._writes["replace"],
            scaled=self._writes["scale"],
            deleted=self._writes["delete"],
            failed=self.failed,
        )


def _annotation(deployment: Mapping[str, Any]) -> str | None:
    annotations = deployment["metadata"].get("annotations") or {}
    value = annotations.get(POD_TEMPLATE_HASH)
    return value if isinstance(value, str) else None


def _with_replicas(deployment: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    body = copy.deepcopy(dict(deployment))
    body["spec"]["replicas"] = replicas
    return body


def _create(shard: Shard, body: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    return lambda: shard.client.create(DEPLOYMENTS, namespace=shard.namespace, body=body)


def _replace(shard: Shard, name: str, body: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    return lambda: shard.client.replace(
        DEPLOYMENTS, namespace=shard.namespace, name=name, body=body
    )


async def run_pool_scaler(
    *,
    shards: dict[str, Shard],
    throttles: Mapping[str, ShardThrottle],
    configuration: ConfigurationCache,
    demand: Callable[[str], PoolDemand],
    scheduler_url: str,
    tokens: CompletionTokens | None,
    nexus_version: str,
    interval: float,
    scale_up_age: float,
    task_status: trio.TaskStatus[PoolScaler] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Sweep the pool Deployments every `interval` seconds; started (with the scaler, for its
    statistics) after the first sweep."""
    scaler = PoolScaler(
        shards=shards,
        throttles=throttles,
        configuration=configuration,
        demand=demand,
        scheduler_url=scheduler_url,
        tokens=tokens,
        nexus_version=nexus_version,
        scale_up_age=scale_up_age,
    )
    logger.info("pool scaler started for shards %s", ", ".join(sorted(shards)) or "none")
    await scaler.sweep()
    task_status.started(scaler)
    while True:
        await trio.sleep(interval)
        await scaler.sweep()
