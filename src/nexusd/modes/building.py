"""Builders shared by the modes: the concrete store, payload store and shard objects.

Only modes build concrete objects; everything below them receives these through keyword
arguments.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.core.clock import SystemClock
from nexusd.core.errors import ConfigError
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.kube.shards import Shard, shard_name_for
from nexusd.stores.filesystem import FilesystemPayloadStore
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.signing import UrlSigner, load_or_create_secret
from nexusd.stores.sqlite import SqliteCheckpointStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nexusd.core.clock import Clock
    from nexusd.settings import Settings
    from nexusd.stores.checkpoints import CheckpointStore

logger = logging.getLogger(__name__)


@attrs.frozen
class Foundation:
    """What every mode stands on: the bound HTTP socket, the clock and the two stores."""

    settings: Settings
    clock: Clock
    sock: socket.socket
    store: CheckpointStore
    files: FilesystemPayloadStore


@contextlib.asynccontextmanager
async def open_foundation(settings: Settings) -> AsyncIterator[Foundation]:
    """Bind the HTTP socket first (so port 0 resolves to the port URLs name), then open the
    stores; everything is closed again on the way out."""
    clock = SystemClock()
    with bind_socket(settings.http.host, settings.http.port) as sock:
        async with open_checkpoint_store(settings, clock) as store:
            files = await open_payload_store(settings, clock, base_url=external_url(settings, sock))
            yield Foundation(settings=settings, clock=clock, sock=sock, store=store, files=files)


@contextlib.asynccontextmanager
async def open_checkpoint_store(settings: Settings, clock: Clock) -> AsyncIterator[CheckpointStore]:
    if settings.store.kind == "memory":
        yield MemoryCheckpointStore(clock=clock)
        return
    path = settings.sqlite_path
    await trio.to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
    store = await SqliteCheckpointStore.open(
        path=path,
        clock=clock,
        synchronous="FULL" if settings.store.synchronous == "FULL" else "NORMAL",
        batch_size=settings.store.batch_size,
    )
    logger.info("checkpoint store: SQLite at %s", path)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def open_payload_store(
    settings: Settings, clock: Clock, *, base_url: str
) -> FilesystemPayloadStore:
    key_file = settings.sign_key_file
    secret = await trio.to_thread.run_sync(load_or_create_secret, key_file)
    logger.info("payload store: files under %s, URLs under %s", settings.blob_dir, base_url)
    return FilesystemPayloadStore(
        root=settings.blob_dir, signer=UrlSigner(secret, clock), base_url=base_url
    )


@contextlib.asynccontextmanager
async def open_shard(
    settings: Settings, *, kubeconfig: Path | None = None, name: str = ""
) -> AsyncIterator[Shard]:
    """The cluster this process submits to, named as workgroups refer to it."""
    kubeconfig = kubeconfig or settings.kube.kubeconfig
    credentials = await trio.to_thread.run_sync(
        lambda: load_credentials(kubeconfig, context=settings.kube.context or None)
    )
    shard_name = name or settings.kube.shard_name or shard_name_for(kubeconfig)
    client = KubeClient(credentials=credentials, timeout=settings.kube.request_timeout)
    logger.info("shard %s: %s", shard_name, credentials.server)
    try:
        yield Shard(name=shard_name, client=client, namespace=settings.kube.runtime_namespace)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for the HTTP API."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"http.port: cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def external_url(settings: Settings, sock: socket.socket) -> str:
    """The base URL pods use to reach this process, with the port actually bound."""
    if settings.http.external_url:
        return settings.http.external_url.rstrip("/")
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
