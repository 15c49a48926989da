"""Builders shared by the modes: the concrete store, payload store and shard objects.

Only modes build concrete objects; everything below them receives these through keyword
arguments.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from typing import TYPE_CHECKING

import attrs
import trio

from nexusd.api.auth import BearerAuth, Jwks, JwtRules, StaticTokens, validated_algorithms
from nexusd.core.clock import SystemClock
from nexusd.core.errors import ConfigError
from nexusd.kube.client import KubeClient
from nexusd.kube.credentials import load_credentials
from nexusd.kube.shards import Shard, shard_name_for
from nexusd.stores.filesystem import FilesystemPayloadStore
from nexusd.stores.locking import process_description, take_lock
from nexusd.stores.memory import MemoryCheckpointStore
from nexusd.stores.postgres import PostgresCheckpointStore
from nexusd.stores.s3 import open_s3_store
from nexusd.stores.s3_settings import S3Settings
from nexusd.stores.signing import CompletionTokens, UrlSigner, load_or_create_secret
from nexusd.stores.sqlite import SqliteCheckpointStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nexusd.core.clock import Clock
    from nexusd.settings import Settings
    from nexusd.stores.checkpoints import CheckpointStore
    from nexusd.stores.payloads import PayloadStore

logger = logging.getLogger(__name__)


@attrs.frozen
class Foundation:
    """What every mode stands on: the bound HTTP socket, the clock and the two stores."""

    settings: Settings
    clock: Clock
    sock: socket.socket
    store: CheckpointStore
    payloads: PayloadStore
    #: the same payload store when it is the filesystem one, whose URLs nexusd serves itself
    files: FilesystemPayloadStore | None


@contextlib.asynccontextmanager
async def open_foundation(settings: Settings) -> AsyncIterator[Foundation]:
    """Bind the HTTP socket first (so port 0 resolves to the port URLs name), then open the
    stores; everything is closed again on the way out."""
    clock = SystemClock()
    with bind_socket(settings.http.host, settings.http.port) as sock:
        async with (
            open_checkpoint_store(settings, clock) as store,
            open_payload_store(settings, clock, base_url=external_url(settings, sock)) as payloads,
        ):
            files = payloads if isinstance(payloads, FilesystemPayloadStore) else None
            yield Foundation(
                settings=settings,
                clock=clock,
                sock=sock,
                store=store,
                payloads=payloads,
                files=files,
            )


async def hold_identity(store: CheckpointStore, settings: Settings, mode: str) -> None:
    """Own this process's `node.host_name` in the store for as long as it is open (exit 2
    naming the holder when another live process has it): the runs held under a name are
    recovered as its own, so no two live processes may share one."""
    await store.hold_identity(host=settings.host_name, holder=process_description(mode))


@contextlib.asynccontextmanager
async def own_directory(directory: Path, mode: str) -> AsyncIterator[None]:
    """Hold `directory` for this process alone (a single-machine data directory)."""
    lock = await trio.to_thread.run_sync(
        functools.partial(
            take_lock,
            directory / "nexusd.lock",
            holder=process_description(mode),
            what=f"data directory {directory}",
            hint="stop it first, or start this one with another --data-dir",
        )
    )
    try:
        yield
    finally:
        lock.release()


def postgres_dsn(settings: Settings) -> str:
    if not settings.postgres.dsn:
        raise ConfigError('postgres.dsn: required when store.kind = "postgres"')
    return settings.postgres.dsn


@contextlib.asynccontextmanager
async def open_checkpoint_store(settings: Settings, clock: Clock) -> AsyncIterator[CheckpointStore]:
    if settings.store.kind == "memory":
        yield MemoryCheckpointStore(clock=clock)
        return
    if settings.store.kind == "postgres":
        postgres = await PostgresCheckpointStore.open(
            dsn=postgres_dsn(settings),
            clock=clock,
            min_size=settings.postgres.pool_min,
            max_size=settings.postgres.pool_max,
        )
        logger.info("checkpoint store: PostgreSQL %s", postgres.where)
        try:
            yield postgres
        finally:
            with trio.CancelScope(shield=True):
                await postgres.aclose()
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


@contextlib.asynccontextmanager
async def open_payload_store(
    settings: Settings, clock: Clock, *, base_url: str
) -> AsyncIterator[PayloadStore]:
    """S3 (presigned URLs, checked reachable at start) or files served by nexusd at base_url."""
    if settings.payloads.kind == "s3":
        s3 = settings.s3
        if not s3.bucket:
            raise ConfigError('s3.bucket: required when payloads.kind = "s3"')
        if bool(s3.access_key_id) != bool(s3.secret_access_key):
            raise ConfigError("s3.access_key_id and s3.secret_access_key: give both or neither")
        endpoint = s3.endpoint or f"https://s3.{s3.region}.amazonaws.com"
        try:
            config = S3Settings(
                endpoint=endpoint,
                bucket=s3.bucket,
                prefix=s3.prefix,
                region=s3.region,
                path_style=s3.path_style,
                access_key=s3.access_key_id or None,
                secret_key=s3.secret_access_key or None,
                request_timeout_s=settings.kube.request_timeout,
            )
        except ValueError as exc:  # the message starts with the field: endpoint, bucket...
            raise ConfigError(f"s3.{exc}") from None
        async with open_s3_store(config, clock=clock) as store:
            logger.info("payload store: S3 bucket %s at %s", s3.bucket, endpoint)
            yield store
        return
    secret = await trio.to_thread.run_sync(load_or_create_secret, settings.sign_key_file)
    logger.info("payload store: files under %s, URLs under %s", settings.blob_dir, base_url)
    yield FilesystemPayloadStore(
        root=settings.blob_dir, signer=UrlSigner(secret, clock), base_url=base_url
    )


async def load_completion_tokens(settings: Settings) -> CompletionTokens | None:
    """The runs' completion tokens (None when `auth.completion_tokens` is off). The key is
    made if missing, as the URL key is: schedulers and receivers must share the file."""
    if not settings.auth.completion_tokens:
        return None
    path = settings.completion_key_file
    if not await trio.Path(path).exists():
        logger.warning(
            "no completion token key at %s: making one; every scheduler and receiver must "
            "share it (auth.completion_key_file), or completions are refused",
            path,
        )
    secret = await trio.to_thread.run_sync(load_or_create_secret, path)
    return CompletionTokens(secret)


async def load_bearer_auth(settings: Settings) -> BearerAuth | None:
    """The public API's bearer check, its token file read and its JWKS fetched (None: auth is
    off, neither `auth.token_file` nor `auth.jwks` is set). Bad settings are a ConfigError."""
    auth = settings.auth
    if auth.token_file is None and not auth.jwks:
        return None
    bearer = BearerAuth()
    if auth.token_file is not None:
        bearer.static = StaticTokens(auth.token_file)
    if auth.jwks:
        missing = [key for key in ("issuer", "audience") if not getattr(auth, key)]
        if missing:
            raise ConfigError(f"auth.{missing[0]}: required when auth.jwks is set")
        algorithms = validated_algorithms(auth.algorithms)
        bearer.keys = Jwks(
            source=auth.jwks,
            algorithms=algorithms,
            refresh=auth.jwks_refresh,
            min_refresh=auth.jwks_min_refresh,
            timeout=auth.jwks_timeout,
        )
        bearer.rules = JwtRules(
            issuer=auth.issuer,
            audience=auth.audience,
            algorithms=algorithms,
            clock_skew=auth.clock_skew,
            required_scope=auth.required_scope,
        )
    await bearer.load()
    logger.info(
        "bearer tokens required on the API: %s",
        " and ".join(
            what
            for what, on in (("token file", bearer.static), ("JWTs", bearer.keys))
            if on is not None
        ),
    )
    return bearer


@contextlib.asynccontextmanager
async def open_shards(
    settings: Settings, *, kubeconfig: Path | None = None, name: str = ""
) -> AsyncIterator[dict[str, Shard]]:
    """Every cluster this process submits to, by the name workgroups use (`spec.cluster`).

    The first is the scheduler's own cluster (`kubeconfig`, else `kube.kubeconfig`, else
    in-cluster credentials or $KUBECONFIG), where templates and workgroups live; then one shard
    per `*.kubeconfig` file in `kube.shards_dir`, named as upstream names them (the file name
    before its first dot).
    """
    home = kubeconfig or settings.kube.kubeconfig
    sources = [(name or settings.kube.shard_name or shard_name_for(home), home)]
    if settings.kube.shards_dir is not None:
        sources += [(shard_name_for(path), path) for path in list_shard_files(settings)]
    names = [shard_name for shard_name, _ in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"kube.shards_dir: two clusters share a shard name: {sorted(names)}")
    async with contextlib.AsyncExitStack() as stack:
        shards = {}
        for shard_name, path in sources:
            credentials = await trio.to_thread.run_sync(
                functools.partial(load_credentials, path, context=settings.kube.context or None)
            )
            client = KubeClient(credentials=credentials, timeout=settings.kube.request_timeout)
            stack.push_async_callback(_close_shielded, client)
            logger.info("shard %s: %s", shard_name, credentials.server)
            shards[shard_name] = Shard(
                name=shard_name, client=client, namespace=settings.kube.runtime_namespace
            )
        yield shards


def list_shard_files(settings: Settings) -> list[Path]:
    directory = settings.kube.shards_dir
    assert directory is not None
    if not directory.is_dir():
        raise ConfigError(f"kube.shards_dir: {directory} is not a directory")
    return sorted(directory.glob("*.kubeconfig"))


async def _close_shielded(client: KubeClient) -> None:
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
