"""Warm pool scaling: the sizing rule, and the scaler against the embedded cluster.

`wanted_replicas` is a pure function: unit and property tests, nothing faked. The scaler runs
against the embedded cluster over HTTP, with a real `ConfigurationCache` fed by watches of the
templates the tests apply there; the tests read the Deployment objects back from the API. The
pools' demand is FAKED: a dict the tests set (the scheduler's pool queues provide it in
production). API failures are the embedded cluster's own fault injection.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import TYPE_CHECKING, Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from nexusd.core.errors import KubeNotFound
from nexusd.devcluster.faults import FaultPlan
from nexusd.kube.client import TEMPLATES
from nexusd.kube.configuration import ConfigurationCache, run_configuration_cache
from nexusd.kube.pools import DEPLOYMENTS, POD_TEMPLATE_HASH, WarmPool, deployment_name
from nexusd.kube.shards import Shard
from nexusd.kube.throttling import ShardThrottle
from nexusd.pipeline.scaling import (
    PoolDemand,
    PoolScaler,
    ScaleDecision,
    run_pool_scaler,
    wanted_replicas,
)
from nexusd.stores.signing import CompletionTokens
from tests.conftest import template
from tests.servers.clusters import WORKGROUP, start_cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from nexusd.devcluster import DevCluster
    from nexusd.kube.client import KubeClient

NONE = PoolDemand(queued=0, oldest_age=0.0, leased=0)

# --- the sizing rule -------------------------------------------------------------------------


def decide(
    pool: WarmPool,
    current: int,
    *,
    queued: int = 0,
    leased: int = 0,
    oldest_age: float = 0.0,
    low_since: float | None = None,
    now: float = 1000.0,
) -> ScaleDecision:
    demand = PoolDemand(queued=queued, oldest_age=oldest_age, leased=leased)
    return wanted_replicas(pool, demand, current, low_since, now, 2.0)


def test_demand_in_workers_of_their_concurrency():
    pool = WarmPool(min_workers=0, max_workers=10, concurrency=4)
    assert decide(pool, 0) == ScaleDecision(replicas=0, low_since=None)
    assert decide(pool, 0, queued=1).replicas == 1
    assert decide(pool, 0, queued=5, leased=3).replicas == 2
    assert decide(pool, 0, queued=9).replicas == 3
    assert decide(pool, 0, queued=400).replicas == 10  # maxWorkers
    assert decide(WarmPool(min_workers=2), 0).replicas == 2  # minWorkers


def test_one_more_when_runs_wait_although_the_pool_has_its_size():
    pool = WarmPool(min_workers=1, max_workers=5, concurrency=1)
    assert decide(pool, 3, queued=1, leased=2, oldest_age=2.5).replicas == 4
    assert decide(pool, 3, queued=1, leased=2, oldest_age=1.0).replicas == 3  # not old yet
    assert decide(pool, 1, queued=1, leased=2, oldest_age=9.0).replicas == 3  # growing anyway
    assert decide(pool, 5, queued=1, leased=4, oldest_age=9.0).replicas == 5  # maxWorkers


def test_down_only_after_the_idle_timeout():
    pool = WarmPool(min_workers=1, max_workers=5, idle_timeout_seconds=60)
    first = decide(pool, 4, queued=1, now=100.0)
    assert first == ScaleDecision(replicas=4, low_since=100.0)
    assert decide(pool, 4, queued=1, low_since=100.0, now=159.0) == first
    assert decide(pool, 4, queued=1, low_since=100.0, now=160.0) == ScaleDecision(1, None)
    # Demand back up to the pool's size: the wait starts again.
    assert decide(pool, 4, queued=4, low_since=100.0, now=150.0) == ScaleDecision(4, None)
    # No timeout: at once.
    assert decide(WarmPool(idle_timeout_seconds=0), 4, now=5.0) == ScaleDecision(1, None)


def test_a_size_outside_the_bounds_is_brought_in_at_once():
    pool = WarmPool(min_workers=2, max_workers=3, idle_timeout_seconds=600)
    assert decide(pool, 8) == ScaleDecision(replicas=3, low_since=1000.0)
    assert decide(pool, 0) == ScaleDecision(replicas=2, low_since=None)


pools = st.builds(
    lambda low, extra, concurrency, idle: WarmPool(
        min_workers=low,
        max_workers=max(1, low + extra),
        concurrency=concurrency,
        idle_timeout_seconds=idle,
    ),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(1, 16),
    st.integers(0, 600),
)
demands = st.builds(
    PoolDemand,
    queued=st.integers(0, 1000),
    oldest_age=st.floats(0, 100, allow_nan=False),
    leased=st.integers(0, 1000),
)


@given(
    pool=pools,
    demand=demands,
    current=st.integers(0, 100),
    waited=st.none() | st.floats(0, 1000, allow_nan=False),
)
def test_sizing_properties(pool, demand, current, waited):
    now = 5000.0
    low_since = None if waited is None else now - waited
    decision = wanted_replicas(pool, demand, current, low_since, now, 2.0)
    assert pool.min_workers <= decision.replicas <= pool.max_workers
    needed = math.ceil((demand.queued + demand.leased) / pool.concurrency)
    clamped = min(pool.max_workers, max(pool.min_workers, current))
    # Never below what the runs need, nor below the size before the idle timeout passed.
    assert decision.replicas >= min(pool.max_workers, needed)
    if decision.replicas < clamped:
        started = now if low_since is None else low_since
        assert now - started >= pool.idle_timeout_seconds
    if decision.low_since is not None:  # waiting to go down: the size stays
        assert decision.replicas == clamped
        assert decision.low_since == (now if low_since is None else low_since)


@given(pool=pools, steps=st.lists(st.tuples(demands, st.floats(0, 100)), max_size=30))
def test_sizing_over_time(pool, steps):
    """Fed its own answers, the size goes up the moment demand needs it and down only after
    demand stayed lower for the idle timeout."""
    now, current, low_since = 0.0, 0, None
    lower_since: float | None = None  # when demand last fell below the size (by the test)
    for demand, elapsed in steps:
        now += elapsed
        needed = math.ceil((demand.queued + demand.leased) / pool.concurrency)
        decision = wanted_replicas(pool, demand, current, low_since, now, 2.0)
        if min(pool.max_workers, needed) > current:
            assert decision.replicas >= min(pool.max_workers, needed)
        if decision.replicas < current:
            started = now if lower_since is None else lower_since
            assert now - started >= pool.idle_timeout_seconds
        if decision.replicas != current or decision.low_since is None:
            lower_since = None
        elif lower_since is None:
            lower_since = now
        current, low_since = decision.replicas, decision.low_since


# --- the scaler against the embedded cluster --------------------------------------------------

NS = "nexus"
RUNNING = {"devcluster.nexusd.io/duration": "3600"}  # the scripted kubelet keeps workers up


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    handle, kube = await start_cluster(nursery, tmp_path / "cluster", WORKGROUP)
    try:
        yield handle, kube
    finally:
        await kube.aclose()


@pytest.fixture
async def kube(cluster: tuple[DevCluster, KubeClient]) -> KubeClient:
    return cluster[1]


@pytest.fixture
async def cache(kube: KubeClient, nursery: trio.Nursery) -> ConfigurationCache:
    configuration = ConfigurationCache()
    await nursery.start(
        functools.partial(run_configuration_cache, client=kube, namespace=NS, cache=configuration)
    )
    return configuration


TOKENS = CompletionTokens(b"0123456789abcdef0123456789abcdef")


class Demands:
    """The faked pool demand: what the tests set, per algorithm."""

    def __init__(self) -> None:
        self.by_algorithm: dict[str, PoolDemand] = {}

    def __call__(self, algorithm: str) -> PoolDemand:
        return self.by_algorithm.get(algorithm, NONE)


def make_scaler(
    kube: KubeClient,
    cache: ConfigurationCache,
    demands: Callable[[str], PoolDemand],
    tokens: CompletionTokens | None = TOKENS,
) -> PoolScaler:
    return PoolScaler(
        shards={"dev": Shard(name="dev", client=kube, namespace=NS)},
        throttles={"dev": ShardThrottle(rate=1000, burst=1000)},
        configuration=cache,
        demand=demands,
        scheduler_url="http://scheduler.test",
        tokens=tokens,
        nexus_version="test",
        scale_up_age=2.0,
    )


def warm_template(name: str, **pool: Any) -> dict[str, Any]:
    return template(name, annotations=RUNNING, warmPool=pool)


async def deployment(kube: KubeClient, algorithm: str) -> dict[str, Any] | None:
    try:
        return await kube.get(DEPLOYMENTS, namespace=NS, name=deployment_name(algorithm))
    except KubeNotFound:
        return None


async def eventually(probe: Callable[[], Any], within: float = 15.0) -> Any:
    """Poll `probe` (async) until it returns something truthy."""
    with trio.fail_after(within):
        while not (value := await probe()):
            await trio.sleep(0.02)
        return value


async def cached(cache: ConfigurationCache, name: str, check: Callable[[Any], bool]) -> None:
    async def probe() -> bool:
        return check(cache.template(name))

    await eventually(probe)


async def replicas(kube: KubeClient, algorithm: str) -> int | None:
    found = await deployment(kube, algorithm)
    return None if found is None else int(found["spec"]["replicas"])


def container(found: dict[str, Any]) -> dict[str, Any]:
    (worker,) = found["spec"]["template"]["spec"]["containers"]
    return dict(worker)


async def start_scaler(
    nursery: trio.Nursery, kube: KubeClient, cache: ConfigurationCache, demands: Demands
) -> PoolScaler:
    scaler: PoolScaler = await nursery.start(
        functools.partial(
            run_pool_scaler,
            shards={"dev": Shard(name="dev", client=kube, namespace=NS)},
            throttles={"dev": ShardThrottle(rate=1000, burst=1000)},
            configuration=cache,
            demand=demands,
            scheduler_url="http://scheduler.test",
            tokens=TOKENS,
            nexus_version="test",
            interval=0.05,
            scale_up_age=2.0,
        )
    )
    return scaler


async def test_the_loop_creates_scales_replaces_and_deletes(
    kube: KubeClient, cache: ConfigurationCache, nursery: trio.Nursery
):
    await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool", concurrency=2))
    await kube.create(TEMPLATES, namespace=NS, body=template("cold"))
    await cached(cache, "pool", bool)
    await cached(cache, "cold", bool)
    demands = Demands()
    scaler = await start_scaler(nursery, kube, cache, demands)

    # Created at minWorkers by the first sweep, for the warm template only.
    found = await deployment(kube, "pool")
    assert found is not None
    assert found["spec"]["replicas"] == 1
    env = {item["name"]: item.get("value") for item in container(found)["env"]}
    assert env["NEXUS__WORKER__TOKEN"] == TOKENS.pool_token("pool")
    assert env["NEXUS__WORKER__SCHEDULER"] == "http://scheduler.test"
    assert await deployment(kube, "cold") is None

    # Up at once: 5 queued + 1 leased at 2 a worker = 3; then maxWorkers (4).
    demands.by_algorithm["pool"] = PoolDemand(queued=5, oldest_age=0.1, leased=1)
    await eventually(lambda: _is(replicas(kube, "pool"), 3))
    demands.by_algorithm["pool"] = PoolDemand(queued=100, oldest_age=0.1, leased=8)
    await eventually(lambda: _is(replicas(kube, "pool"), 4))

    # A changed template: the Deployment is replaced (new image, new hash), size kept.
    before = await deployment(kube, "pool")
    assert before is not None
    changed = await kube.get(TEMPLATES, namespace=NS, name="pool")
    changed["spec"]["container"]["versionTag"] = "2.0.0"
    await kube.replace(TEMPLATES, namespace=NS, name="pool", body=changed)

    async def rolled() -> dict[str, Any] | None:
        found = await deployment(kube, "pool")
        return found if found and container(found)["image"].endswith(":2.0.0") else None

    after = await eventually(rolled)
    assert (
        after["metadata"]["annotations"][POD_TEMPLATE_HASH]
        != (before["metadata"]["annotations"][POD_TEMPLATE_HASH])
    )
    assert after["spec"]["replicas"] == 4

    # Down to minWorkers only after idleTimeoutSeconds without demand.
    changed = await kube.get(TEMPLATES, namespace=NS, name="pool")
    changed["spec"]["warmPool"]["idleTimeoutSeconds"] = 1
    await kube.replace(TEMPLATES, namespace=NS, name="pool", body=changed)
    await cached(cache, "pool", lambda t: t["spec"]["warmPool"].get("idleTimeoutSeconds") == 1)
    demands.by_algorithm["pool"] = NONE
    dropped_at = trio.current_time()
    await eventually(lambda: _is(replicas(kube, "pool"), 1))
    assert trio.current_time() - dropped_at >= 1.0

    # Deleted with its template; the cold template never had one.
    await kube.delete(TEMPLATES, namespace=NS, name="pool")
    await eventually(lambda: _is(deployment(kube, "pool"), None))
    stats = scaler.statistics()
    assert stats.created == 1
    assert stats.replaced >= 1
    assert stats.scaled >= 3
    assert stats.deleted == 1


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def sweep_until(scaler: PoolScaler, probe: Callable[[], Any], sweeps: int = 20) -> Any:
    """Sweep until `probe` holds (a sweep's write may meet a 409 from the cluster's own
    Deployment controller writing the status; the next sweep makes it again)."""
    for _ in range(sweeps):
        await scaler.sweep()
        value = await probe()
        if value:
            return value
    raise AssertionError(f"not after {sweeps} sweeps")


async def test_losing_the_warm_pool_deletes_the_deployment(
    kube: KubeClient, cache: ConfigurationCache
):
    created = await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool"))
    await cached(cache, "pool", bool)
    scaler = make_scaler(kube, cache, Demands())
    await sweep_until(scaler, lambda: deployment(kube, "pool"))
    created = await kube.get(TEMPLATES, namespace=NS, name="pool")
    del created["spec"]["warmPool"]
    await kube.replace(TEMPLATES, namespace=NS, name="pool", body=created)
    await cached(cache, "pool", lambda t: "warmPool" not in t["spec"])
    await sweep_until(scaler, lambda: _is(deployment(kube, "pool"), None))


async def test_an_invalid_template_keeps_its_pool(kube: KubeClient, cache: ConfigurationCache):
    await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool", minWorkers=2))
    await cached(cache, "pool", bool)
    scaler = make_scaler(kube, cache, Demands())
    await sweep_until(scaler, lambda: _is(replicas(kube, "pool"), 2))
    bad = await kube.get(TEMPLATES, namespace=NS, name="pool")
    bad["spec"]["warmPool"]["maxWorkers"] = 1  # below minWorkers: the CRD cannot tell
    await kube.replace(TEMPLATES, namespace=NS, name="pool", body=bad)
    await cached(cache, "pool", lambda t: t["spec"]["warmPool"].get("maxWorkers") == 1)
    for _ in range(3):
        await scaler.sweep()
    assert await replicas(kube, "pool") == 2
    assert scaler.statistics().deleted == 0


async def test_without_tokens_the_worker_token_is_empty(
    kube: KubeClient, cache: ConfigurationCache
):
    await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool", handler="m:f"))
    await cached(cache, "pool", bool)
    scaler = make_scaler(kube, cache, Demands(), tokens=None)
    found = await sweep_until(scaler, lambda: deployment(kube, "pool"))
    env = {item["name"]: item.get("value") for item in container(found)["env"]}
    assert env["NEXUS__WORKER__TOKEN"] == ""
    assert container(found)["command"] == ["nexusd", "worker", "--handler", "m:f"]


async def test_deployments_it_did_not_make_are_left_alone(
    kube: KubeClient, cache: ConfigurationCache
):
    await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool"))
    await cached(cache, "pool", bool)
    scaler = make_scaler(kube, cache, Demands())
    ours = await sweep_until(scaler, lambda: deployment(kube, "pool"))
    other = copy.deepcopy(ours)
    other["metadata"] = {"name": "someone-elses", "labels": ours["metadata"]["labels"]}
    other.pop("status", None)
    await kube.create(DEPLOYMENTS, namespace=NS, body=other)
    await kube.delete(TEMPLATES, namespace=NS, name="pool")
    await cached(cache, "pool", lambda t: t is None)
    await sweep_until(scaler, lambda: _is(deployment(kube, "pool"), None))
    assert await kube.get(DEPLOYMENTS, namespace=NS, name="someone-elses")


async def test_api_failures_are_retried_next_sweep(
    cluster: tuple[DevCluster, KubeClient], cache: ConfigurationCache
):
    handle, kube = cluster
    await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool"))
    await cached(cache, "pool", bool)
    scaler = make_scaler(kube, cache, Demands())
    handle.faults.set(FaultPlan(error_share=1.0, error_code=503, resources={"deployments"}))
    await scaler.sweep()  # the list fails: nothing written, nothing raised
    handle.faults.set(FaultPlan(throttle_share=1.0, verbs={"create"}, resources={"deployments"}))
    await scaler.sweep()  # the create is throttled: the shard slows down
    assert scaler.statistics().failed == 2
    assert scaler.throttles["dev"].statistics().throttled == 1
    assert await deployment(kube, "pool") is None
    handle.faults.clear()
    await sweep_until(scaler, lambda: deployment(kube, "pool"))
    assert scaler.statistics().created == 1


async def test_nothing_is_deleted_before_the_cache_synced(kube: KubeClient):
    await kube.create(TEMPLATES, namespace=NS, body=warm_template("pool"))
    synced = ConfigurationCache()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(run_configuration_cache, client=kube, namespace=NS, cache=synced)
        )
        await sweep_until(make_scaler(kube, synced, Demands()), lambda: deployment(kube, "pool"))
        nursery.cancel_scope.cancel()
    empty = ConfigurationCache()  # never synced: reads as no templates at all
    await make_scaler(kube, empty, Demands()).sweep()
    assert await deployment(kube, "pool") is not None
