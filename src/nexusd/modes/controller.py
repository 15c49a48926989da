"""`nexusd controller`: the configuration controller, wiring only.

One replica at a time leads (a Lease in the runtime namespace); the leader keeps every
template, workgroup and the Secrets/ConfigMaps they reference in step in every shard of
`kube.shards_dir` (nexusd.syncing). Every replica serves `/healthz` and `/readyz`: a standby
is ready (it is where the next leader comes from), the leader once its caches are synced;
both show the election and, on the leader, each shard's state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.api.app import create_app, serve_http
from nexusd.api.context import AppContext, Readiness
from nexusd.kube import leases
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.modes.building import bind_socket
from nexusd.syncing import SyncSettings, SyncStatus, run_configuration_sync

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from nexusd.settings import Settings

logger = logging.getLogger(__name__)


@attrs.define
class Controller:
    """A started controller: its URL, and how to stop it."""

    url: str
    elector: leases.LeaderElector
    status: SyncStatus
    readiness: Readiness
    http_shutdown: trio.Event
    http_stopped: trio.Event

    async def stop(self, grace: float) -> None:
        """Stop serving; the caller's cancel then releases the Lease, so a standby takes
        over at once instead of after `election.lease_duration`."""
        self.readiness.accepting = False
        self.http_shutdown.set()
        with trio.move_on_after(grace):
            await self.http_stopped.wait()


def sync_settings(settings: Settings) -> SyncSettings:
    controller = settings.controller
    return SyncSettings(
        alias=controller.alias,
        namespace=settings.kube.runtime_namespace,
        shards_dir=settings.kube.shards_dir,
        shards_rescan=controller.shards_rescan,
        backoff_base=controller.backoff_base,
        backoff_max=controller.backoff_max,
        resync=settings.kube.resync,
        sweep_interval=controller.sweep_interval,
    )


def election_settings(settings: Settings) -> leases.ElectionSettings:
    election = settings.election
    return leases.ElectionSettings(
        name=election.lease_name,
        namespace=settings.kube.runtime_namespace,
        identity=election.identity,
        lease_duration=election.lease_duration,
        renew_deadline=election.renew_deadline,
        retry_period=election.retry_period,
    )


@contextlib.asynccontextmanager
async def open_controller_client(settings: Settings) -> AsyncIterator[KubeClient]:
    """The controller cluster's client: `kube.kubeconfig`, else in-cluster or $KUBECONFIG."""
    credentials = await trio.to_thread.run_sync(
        functools.partial(
            load_credentials, settings.kube.kubeconfig, context=settings.kube.context or None
        )
    )
    client = KubeClient(credentials=credentials, timeout=settings.kube.request_timeout)
    logger.info("controller cluster: %s", credentials.server)
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def start_controller(
    nursery: trio.Nursery,
    settings: Settings,
    *,
    client: KubeClient,
    extra_shards: Mapping[str, KubeClient] | None = None,
) -> tuple[leases.LeaderElector, SyncStatus]:
    """Campaign for the Lease and, while leading, sync every shard (`extra_shards` besides
    those of `kube.shards_dir`: the embedded shards of `nexusd dev --shards N`)."""
    status = SyncStatus()
    elector = leases.LeaderElector(client, election_settings(settings))
    sync = functools.partial(
        run_configuration_sync,
        controller=client,
        settings=sync_settings(settings),
        status=status,
        extra_shards=extra_shards or {},
    )
    nursery.start_soon(elector.run, sync)
    return elector, status


async def run(
    settings: Settings, *, task_status: trio.TaskStatus[Controller] = trio.TASK_STATUS_IGNORED
) -> None:
    with bind_socket(settings.http.host, settings.http.port) as sock:
        async with open_controller_client(settings) as client, trio.open_nursery() as nursery:
            elector, status = await start_controller(nursery, settings, client=client)
            readiness = Readiness()
            context = AppContext(
                readiness=readiness,
                statistics={"election": elector.details, "sync": status.details},
                not_ready=lambda: (
                    ["the controller caches are not synced yet"]
                    if elector.is_leader and not status.ready()
                    else []
                ),
            )
            shutdown, stopped = trio.Event(), trio.Event()
            url = await nursery.start(
                functools.partial(
                    serve_http,
                    create_app(context, scheduler=False, receiver=False),
                    sock=sock,
                    shutdown=shutdown,
                    stopped=stopped,
                    grace=settings.shutdown.grace,
                    keep_alive_timeout=settings.http.keep_alive_timeout,
                    access_log=settings.http.access_log,
                )
            )
            task_status.started(
                Controller(
                    url=url,
                    elector=elector,
                    status=status,
                    readiness=readiness,
                    http_shutdown=shutdown,
                    http_stopped=stopped,
                )
            )
