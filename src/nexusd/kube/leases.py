"""Lease-based leader election (coordination.k8s.io/v1), as client-go's `leaderelection`.

Several `nexusd controller` replicas run; one leads. Each replica is a `LeaderElector`:

    campaign   every retry_period (+ up to 20 % jitter): GET the Lease; take it (PUT with the
               resourceVersion read, or POST when it does not exist) when it is free (no
               holder: released), already ours, or expired.
    lead       once taken, `lead()` runs in a nursery next to the renewal loop.
    renew      every retry_period; a renewal that keeps failing (API errors, 409s) is retried
               until `renew_deadline` after the last successful one, then leadership is given
               up: `lead()` is cancelled and the replica campaigns again. Seeing another holder
               in the Lease ends leadership at once.
    release    when `run()` is cancelled (a clean stop) or `lead()` raises, the leader empties
               `holderIdentity` (and sets leaseDurationSeconds=1), so a standby takes over at
               its next retry instead of after a whole lease duration.

Expiry is measured as client-go measures it: by the LOCAL monotonic time (`trio.current_time()`)
at which this replica last saw the Lease's spec change, plus the Lease's own
`leaseDurationSeconds`; the remote `renewTime` is never compared with the local clock, so clock
skew between machines does not matter. A replica that just started therefore waits one whole
lease duration before it takes a Lease held by someone else, however old its renewTime looks.
The RFC3339 `acquireTime`/`renewTime` fields are written from a wall `Clock`, for humans and
kubectl only.

Safety rests on renew_deadline < lease_duration: a leader that could not renew stops leading
before any other replica can see its Lease expire. Optimistic concurrency (the resourceVersion
of the Lease read, 409 Conflict otherwise) makes every take-over a single winner.

Errors: KubeUnavailable, KubeConflict and KubeNotFound are transient here (logged, retried at
the next period); anything else (KubeRejected: 403 from missing RBAC, 422) propagates, so a
misconfigured replica fails loudly instead of never leading.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import uuid
from typing import TYPE_CHECKING, Any, Final, NoReturn

import attrs
import trio

from nexusd.core.clock import Clock, SystemClock
from nexusd.core.errors import KubeConflict, KubeError, KubeNotFound, KubeUnavailable
from nexusd.kube.client import KubeClient, Resource

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

LEASES: Final = Resource("coordination.k8s.io", "v1", "leases", "Lease")
#: client-go's JitterFactor: candidates retry after retry_period * [1, 1.2), so two standbys
#: that saw the same release do not always collide on the same PUT.
JITTER: Final = 0.2
#: Errors after which the next period simply tries again.
TRANSIENT: Final = (KubeUnavailable, KubeConflict, KubeNotFound)


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"election {attribute.name} must be > 0 seconds, got {value!r}")


@attrs.frozen
class ElectionSettings:
    """Which Lease, who we are, and the three durations (seconds) of client-go."""

    name: str = "nexusd-controller"
    """The Lease's name."""
    namespace: str = "nexus"
    """The Lease's namespace (the runtime namespace)."""
    identity: str = ""
    """This replica's holderIdentity; empty = host name + "_" + a random suffix."""
    lease_duration: float = attrs.field(default=15.0, validator=_positive)
    """How long a standby waits, from when it last saw the Lease change, before taking it.
    Written as whole seconds (rounded up): leaseDurationSeconds is an integer."""
    renew_deadline: float = attrs.field(default=10.0, validator=_positive)
    """How long the leader keeps retrying a failed renewal before it stops leading."""
    retry_period: float = attrs.field(default=2.0, validator=_positive)
    """How often a standby tries to take the Lease and the leader renews it."""

    def __attrs_post_init__(self) -> None:
        if not self.renew_deadline < self.lease_duration:
            raise ValueError(
                f"election renew_deadline ({self.renew_deadline} s) must be shorter than "
                f"lease_duration ({self.lease_duration} s): a leader that cannot renew must "
                "stop leading before the others may take over"
            )
        if not self.retry_period < self.renew_deadline:
            raise ValueError(
                f"election retry_period ({self.retry_period} s) must be shorter than "
                f"renew_deadline ({self.renew_deadline} s): a renewal needs room for a retry"
            )
        if not self.name or not self.namespace:
            raise ValueError("election needs a Lease name and namespace")

    @property
    def lease_duration_seconds(self) -> int:
        """`spec.leaseDurationSeconds` as written (never below the configured duration)."""
        return math.ceil(self.lease_duration)


def default_identity() -> str:
    """client-go's usual identity: the host name plus a unique suffix."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(moment: dt.datetime) -> str:
    """RFC3339 with microseconds, UTC (metav1.MicroTime): `2026-12-02T07:00:00.000000Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One candidate for one Lease. `run(lead)` campaigns forever; see the module docstring."""

    def __init__(
        self, client: KubeClient, settings: ElectionSettings, *, clock: Clock | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        self.identity = settings.identity or default_identity()
        #: The holder seen in the Lease at the last read ("" = free, or never read).
        self.holder = ""
        self._leading = False
        self._observed: dict[str, Any] | None = None  # the last Lease object read or written
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = -math.inf  # trio.current_time() when the spec last changed
        self._renewed_at = -math.inf  # when the last successful take/renewal was sent
        self._terms = 0

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads now (it holds the Lease and `lead()` is running)."""
        return self._leading

    def details(self) -> dict[str, Any]:
        """The election's state, for /readyz."""
        spec = self._observed_spec or {}
        renewed = trio.current_time() - self._renewed_at if self._leading else None
        return {
            "lease": f"{self._settings.namespace}/{self._settings.name}",
            "identity": self.identity,
            "leader": self._leading,
            "holder": self.holder,
            "transitions": spec.get("leaseTransitions", 0),
            "terms": self._terms,
            "last_renewal_s_ago": None if renewed is None else round(renewed, 3),
        }

    async def run(self, lead: Callable[[], Awaitable[object]]) -> NoReturn:
        """Forever: campaign; once leader, run `lead()` in a cancel scope while renewing;
        when leadership is lost, cancel lead() and campaign again. Cancelled: release.

        If `lead()` returns, leadership is kept (and renewed) until lost; if it raises, the
        Lease is released and the error propagates (in the ExceptionGroup of the nursery that
        ran it next to the renewals).
        """
        logger.info(
            "leader election for Lease %s/%s as %s",
            self._settings.namespace,
            self._settings.name,
            self.identity,
        )
        try:
            while True:
                await self._campaign()
                await self._lead(lead)
        finally:
            await self._release()

    # -- phases -------------------------------------------------------------------------------

    async def _campaign(self) -> None:
        """Return once the Lease is ours."""
        while True:
            if await self._try_acquire_or_renew():
                break
            await trio.sleep(self._settings.retry_period * (1 + JITTER * random.random()))
        self._leading = True
        self._terms += 1
        logger.info("%s became the leader (Lease %s)", self.identity, self._settings.name)

    async def _lead(self, lead: Callable[[], Awaitable[object]]) -> None:
        """Run `lead()` next to the renewal loop until leadership is lost."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew_until_lost, nursery.cancel_scope)
            await lead()
            await trio.sleep_forever()  # lead() returned: keep the Lease until lost

    async def _renew_until_lost(self, leadership: trio.CancelScope) -> None:
        settings = self._settings
        while True:
            await trio.sleep(settings.retry_period)
            with trio.move_on_at(self._renewed_at + settings.renew_deadline):
                while not await self._try_acquire_or_renew():
                    if self.holder not in ("", self.identity):
                        break  # someone else holds it: lost now, no point in retrying
                    await trio.sleep(settings.retry_period)
                else:
                    continue  # renewed
            self._leading = False
            logger.warning(
                "%s stopped leading: %s",
                self.identity,
                f"the Lease is held by {self.holder}"
                if self.holder not in ("", self.identity)
                else f"could not renew within {settings.renew_deadline} s",
            )
            leadership.cancel()
            return

    async def _release(self) -> None:
        """Give the Lease up (clean stop), so a standby need not wait for it to expire."""
        if not self._leading or self._observed is None:
            return
        self._leading = False
        with trio.move_on_after(self._settings.renew_deadline, shield=True) as scope:
            try:
                released = await self._write_release(self._observed)
                if released is None:  # 409: re-read once; release if it is still ours
                    lease = await self._client.get(
                        LEASES, namespace=self._settings.namespace, name=self._settings.name
                    )
                    released = await self._write_release(lease)
            except KubeError as exc:
                logger.warning("%s could not release the Lease: %s", self.identity, exc)
            else:
                if released:
                    logger.info("%s released the Lease %s", self.identity, self._settings.name)
        if scope.cancelled_caught:
            logger.warning("%s: releasing the Lease timed out", self.identity)

    async def _write_release(self, lease: dict[str, Any]) -> bool | None:
        """Empty the holder of `lease` if it is ours: True done, False not ours, None 409."""
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return False
        now = micro_time(self._clock.now())
        record = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": spec.get("leaseTransitions", 0),
        }
        try:
            self._observe(await self._replace({**lease, "spec": record}))
        except KubeConflict:
            return None
        return True

    # -- one attempt ----------------------------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        """One read and, when allowed, one write: True when the Lease is ours afterwards."""
        settings = self._settings
        sent_at = trio.current_time()
        now = micro_time(self._clock.now())
        try:
            lease = await self._client.get(LEASES, namespace=settings.namespace, name=settings.name)
        except KubeNotFound:
            return await self._create(now, sent_at)
        except KubeUnavailable as exc:
            logger.info("%s: reading the Lease failed: %s", self.identity, exc)
            return False
        spec = self._observe(lease)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and not self._expired(spec):
            return False
        mine = holder == self.identity
        record = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": settings.lease_duration_seconds,
            "acquireTime": spec.get("acquireTime", now) if mine else now,
            "renewTime": now,
            "leaseTransitions": spec.get("leaseTransitions", 0) + (0 if mine else 1),
        }
        try:
            written = await self._replace({**lease, "spec": record})
        except TRANSIENT as exc:
            logger.info("%s: writing the Lease failed: %s", self.identity, exc)
            return False
        return self._won(written, sent_at)

    async def _create(self, now: str, sent_at: float) -> bool:
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self._settings.name, "namespace": self._settings.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._settings.lease_duration_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._client.create(
                LEASES, namespace=self._settings.namespace, body=body
            )
        except TRANSIENT as exc:  # 409 AlreadyExists: another candidate created it first
            logger.info("%s: creating the Lease failed: %s", self.identity, exc)
            return False
        return self._won(created, sent_at)

    async def _replace(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion of the Lease read (409 when it changed since)."""
        return await self._client.replace(
            LEASES, namespace=self._settings.namespace, name=self._settings.name, body=body
        )

    def _observe(self, lease: dict[str, Any]) -> dict[str, Any]:
        """Remember the Lease; restart the expiry clock when its spec changed."""
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_at = trio.current_time()
        self._observed = lease
        holder = spec.get("holderIdentity") or ""
        if holder != self.holder:
            logger.info("Lease %s holder: %s", self._settings.name, holder or "(none)")
        self.holder = holder
        return spec

    def _expired(self, spec: dict[str, Any]) -> bool:
        """Whether the Lease seen is past its duration, by this replica's own observation."""
        duration = spec.get("leaseDurationSeconds") or self._settings.lease_duration_seconds
        return trio.current_time() >= self._observed_at + float(duration)

    def _won(self, lease: dict[str, Any], sent_at: float) -> bool:
        self._observe(lease)
        self._renewed_at = sent_at
        return True
