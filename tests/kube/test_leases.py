"""Leader election over a real Lease: two `LeaderElector`s against one embedded cluster.

Real: the embedded cluster on loopback, reached over HTTP by `KubeClient` (one per elector),
the real clock, the real Lease with its resourceVersion conflicts. Faked: only each elector's
network, through a `Wire` transport that can be cut (every request then fails to connect, as
for a crashed or partitioned replica) and can run a hook before a PUT (to race a write).
Durations are short (lease 2 s, renew deadline 1 s, retry 0.2 s); every wait is a poll under
`trio.fail_after`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.kube.leases import LEASES, ElectionSettings, LeaderElector, micro_time

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

NS = "nexus"
LEASE = 2.0
RENEW = 1.0
RETRY = 0.2
SETTINGS = ElectionSettings(
    name="test-lease",
    namespace=NS,
    lease_duration=LEASE,
    renew_deadline=RENEW,
    retry_period=RETRY,
)


class Wire(httpx.AsyncBaseTransport):
    """A real HTTP transport that a test can cut, or interpose on before PUTs."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.cut = False
        self.before_put: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("cut by the test", request=request)
        if request.method == "PUT" and self.before_put is not None:
            hook, self.before_put = self.before_put, None
            await hook()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Candidate:
    """One elector, its wire, and a `lead()` that records whether it is running."""

    def __init__(self, client: KubeClient, wire: Wire, identity: str) -> None:
        self.client = client
        self.wire = wire
        self.elector = LeaderElector(client, attrs.evolve(SETTINGS, identity=identity))
        self.leading = False
        self.leads = 0
        self.scope = trio.CancelScope()

    async def lead(self) -> None:
        self.leads += 1
        self.leading = True
        try:
            await trio.sleep_forever()
        finally:
            self.leading = False

    async def run(self) -> None:
        with self.scope:
            await self.elector.run(self.lead)


@pytest.fixture
async def make_candidate(dev_cluster: Any) -> AsyncIterator[Callable[[str], Candidate]]:
    credentials = await trio.to_thread.run_sync(load_credentials, dev_cluster.kubeconfig_path)
    clients: list[KubeClient] = []

    def make(identity: str) -> Candidate:
        wire = Wire()
        client = KubeClient(credentials=credentials, timeout=5.0, transport=wire)
        clients.append(client)
        return Candidate(client, wire, identity)

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


async def wait_until(predicate: Callable[[], bool], *, within: float) -> float:
    """Poll until `predicate()` holds; returns the seconds it took (fails after `within`)."""
    start = trio.current_time()
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(0.01)
    return trio.current_time() - start


async def read_lease(client: KubeClient) -> dict[str, Any]:
    return await client.get(LEASES, namespace=NS, name=SETTINGS.name)


@contextlib.asynccontextmanager
async def two_candidates(
    nursery: trio.Nursery, make: Callable[[str], Candidate]
) -> AsyncIterator[tuple[Candidate, Candidate]]:
    """Start a and b together; yield (leader, standby) once one leads."""
    a, b = make("a"), make("b")
    nursery.start_soon(a.run)
    nursery.start_soon(b.run)
    await wait_until(lambda: a.leading or b.leading, within=LEASE)
    yield (a, b) if a.leading else (b, a)
    a.scope.cancel()
    b.scope.cancel()


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"renew_deadline": 15.0}, "renew_deadline (15.0 s) must be shorter than lease_duration"),
        ({"retry_period": 10.0}, "retry_period (10.0 s) must be shorter than renew_deadline"),
        ({"lease_duration": 0.0}, "lease_duration must be > 0"),
        ({"name": ""}, "needs a Lease name"),
    ],
)
def test_settings_are_validated(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ElectionSettings(**changes)


def test_defaults_and_identity() -> None:
    settings = ElectionSettings()
    assert (settings.name, settings.namespace) == ("nexusd-controller", "nexus")
    assert settings.lease_duration_seconds == 15
    short = ElectionSettings(lease_duration=1.5, renew_deadline=1.0, retry_period=0.5)
    assert short.lease_duration_seconds == 2  # whole seconds on the wire, rounded up
    moment = dt.datetime(2026, 12, 2, 7, 0, 0, 5, tzinfo=dt.UTC)
    assert micro_time(moment) == "2026-12-02T07:00:00.000005Z"


async def test_an_empty_identity_is_the_host_name_and_a_suffix(
    make_candidate: Callable[[str], Candidate],
) -> None:
    candidate = make_candidate("")
    one = candidate.elector.identity
    two = LeaderElector(candidate.client, SETTINGS).identity
    assert one.startswith(socket.gethostname() + "_")
    assert one != two


# --- election ------------------------------------------------------------------------------


async def test_exactly_one_leads_and_the_lease_names_it(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate]
) -> None:
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        # Several renewals: never both leading, the leader's lead() started once.
        with trio.move_on_after(RENEW * 1.5):
            while True:
                assert not (leader.leading and standby.leading)
                assert leader.elector.is_leader
                assert not standby.elector.is_leader
                await trio.sleep(0.01)
        assert (leader.leads, standby.leads) == (1, 0)
        lease = await read_lease(leader.client)
        spec = lease["spec"]
        assert spec["holderIdentity"] == leader.elector.identity
        assert spec["leaseDurationSeconds"] == 2
        assert spec["leaseTransitions"] == 0
        assert spec["renewTime"] > spec["acquireTime"]  # renewed since it was taken
        assert spec["renewTime"].endswith("Z")
        assert len(spec["renewTime"]) == len("2026-12-02T07:00:00.000000Z")
        assert standby.elector.holder == leader.elector.identity
        details = leader.elector.details()
        assert details["leader"] is True
        assert details["holder"] == details["identity"] == leader.elector.identity
        assert details["lease"] == f"{NS}/test-lease"
        assert standby.elector.details()["leader"] is False
        # Both raced to create the Lease: the loser got 409 AlreadyExists, or read it first.
        created = leader.client.statistics().total(verb="create", status=201)
        assert created + standby.client.statistics().total(verb="create", status=201) == 1


async def test_a_clean_stop_hands_over_at_once(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate]
) -> None:
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        leader.scope.cancel()
        took = await wait_until(lambda: standby.leading, within=LEASE)
        assert took < LEASE / 2, f"took {took:.2f} s: the Lease was not released"
        assert not leader.leading
        assert not leader.elector.is_leader
        spec = (await read_lease(standby.client))["spec"]
        assert spec["holderIdentity"] == standby.elector.identity
        assert spec["leaseTransitions"] == 1


async def test_a_clean_stop_releases_even_after_someone_touched_the_lease(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate]
) -> None:
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        # A new resourceVersion the leader has not seen: its release PUT gets a 409, re-reads
        # the Lease, finds itself still the holder and releases it.
        lease = await read_lease(standby.client)
        lease["metadata"]["annotations"] = {"touched": "yes"}
        await standby.client.replace(LEASES, namespace=NS, name=SETTINGS.name, body=lease)
        leader.scope.cancel()
        took = await wait_until(lambda: standby.leading, within=LEASE)
        assert took < LEASE / 2, f"took {took:.2f} s: the Lease was not released"


async def test_a_crashed_leader_is_replaced_after_the_lease_duration(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate]
) -> None:
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        # A crash: the process goes away without releasing (its network is gone too).
        leader.wire.cut = True
        leader.scope.cancel()
        await wait_until(lambda: not leader.leading, within=1.0)
        start = trio.current_time()
        held = (await read_lease(standby.client))["spec"]["holderIdentity"]
        assert held == leader.elector.identity  # not released
        await wait_until(lambda: standby.leading, within=LEASE + 3 * RETRY + 1.0)
        took = trio.current_time() - start
        # Not before the Lease expired by the standby's own observation.
        assert took > LEASE - 2 * RETRY, f"took over after {took:.2f} s, before expiry"
        spec = (await read_lease(standby.client))["spec"]
        assert spec["holderIdentity"] == standby.elector.identity
        assert spec["leaseTransitions"] == 1


async def test_a_leader_that_cannot_renew_stops_leading_within_the_deadline(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate]
) -> None:
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        leader.wire.cut = True  # partitioned from the API server, still running
        stopped = await wait_until(lambda: not leader.leading, within=RENEW + RETRY + 0.5)
        assert stopped <= RENEW + 0.3
        assert not leader.elector.is_leader
        # Only after the Lease expires for the standby does it lead: never both at once.
        await wait_until(lambda: standby.leading, within=LEASE + 3 * RETRY + 1.0)
        # Back on the network, the old leader stays a standby: the Lease is held and renewed.
        leader.wire.cut = False
        await wait_until(lambda: leader.elector.holder == standby.elector.identity, within=1.0)
        with trio.move_on_after(LEASE + RETRY):
            while True:
                assert standby.leading
                assert not leader.leading
                await trio.sleep(0.02)
        assert leader.leads == 1


async def test_a_conflicting_write_costs_one_renewal_not_the_leadership(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate], dev_cluster: Any
) -> None:
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        raced = trio.Event()

        async def someone_else_writes() -> None:
            # Between the leader's GET and its PUT, another client changes the Lease (a label:
            # a new resourceVersion, the same spec), so the leader's PUT is stale.
            lease = await read_lease(standby.client)
            lease["metadata"].setdefault("labels", {})["touched"] = "yes"
            await standby.client.replace(LEASES, namespace=NS, name=SETTINGS.name, body=lease)
            raced.set()

        before = leader.client.statistics().total(verb="replace", status=409)
        leader.wire.before_put = someone_else_writes
        with trio.fail_after(RENEW):
            await raced.wait()
        await wait_until(
            lambda: leader.client.statistics().total(verb="replace", status=409) > before,
            within=RENEW,
        )
        renewed = leader.client.statistics().total(verb="replace", status=200)
        await wait_until(
            lambda: leader.client.statistics().total(verb="replace", status=200) > renewed,
            within=RENEW,
        )
        assert leader.leading
        assert leader.elector.is_leader
        assert not standby.leading
        lease = await read_lease(leader.client)
        assert lease["metadata"]["labels"] == {"touched": "yes"}
        assert lease["spec"]["holderIdentity"] == leader.elector.identity


async def test_a_lease_taken_by_another_holder_ends_leadership_at_once(
    nursery: trio.Nursery, make_candidate: Callable[[str], Candidate]
) -> None:
    """An operator (or a replica with a wrong clock setting) overwrites the holder: the leader
    sees it at its next renewal and stops, without waiting for the renew deadline."""
    async with two_candidates(nursery, make_candidate) as (leader, standby):
        standby.scope.cancel()  # not leading: stops without touching the Lease
        await wait_until(lambda: standby.elector.details()["leader"] is False, within=1.0)
        lease = await read_lease(standby.client)
        lease["spec"]["holderIdentity"] = "operator"
        await standby.client.replace(LEASES, namespace=NS, name=SETTINGS.name, body=lease)
        took = await wait_until(lambda: not leader.leading, within=RENEW)
        assert took < RETRY * 2 + 0.3
        assert leader.elector.holder == "operator"
        # It campaigns again but waits for the operator's Lease to expire.
        assert (await read_lease(leader.client))["spec"]["holderIdentity"] == "operator"


async def test_a_raising_lead_releases_and_propagates(
    make_candidate: Callable[[str], Candidate],
) -> None:
    candidate = make_candidate("a")

    async def broken() -> None:
        raise RuntimeError("lead failed")

    with pytest.RaisesGroup(
        pytest.RaisesExc(RuntimeError, match="lead failed"), flatten_subgroups=True
    ):
        with trio.fail_after(5):
            await candidate.elector.run(broken)
    spec = (await read_lease(candidate.client))["spec"]
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert not candidate.elector.is_leader
