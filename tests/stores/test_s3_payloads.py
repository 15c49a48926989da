"""`S3PayloadStore` against a real S3 server: SeaweedFS (``weed mini``) on loopback.

Nothing is faked: SeaweedFS checks every signature, so each 403 below is its verdict on a
tampered or expired URL. The pod's side is a plain `httpx` request on the presigned URL, with no
credentials. One exception: virtual-hosted bucket names (``<bucket>.s3.nexusd.test``) do not
resolve on this machine, so those requests are sent to 127.0.0.1 by a transport that keeps the
``Host`` header (which is what SigV4 signs and what SeaweedFS reads the bucket from).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import httpx
import pytest
import trio
from minio.credentials.credentials import Credentials

from nexusd.core.clock import ManualClock, SystemClock
from nexusd.core.errors import StoreError
from nexusd.stores.s3 import MAX_URL_VALIDITY, S3PayloadStore, open_s3_store
from nexusd.stores.s3_settings import S3Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.servers.seaweedfs import SeaweedS3


ALG = "demo-algorithm"
HOUR = dt.timedelta(hours=1)
_prefixes = itertools.count(1)


@pytest.fixture
def settings(seaweedfs: SeaweedS3) -> S3Settings:
    """Static credentials and a prefix of this test's own, so tests never see each other's keys."""
    return S3Settings(
        endpoint=seaweedfs.endpoint,
        bucket=seaweedfs.bucket,
        prefix=f"/test-{os.getpid()}-{next(_prefixes)}/payloads/",
        access_key=seaweedfs.access_key,
        secret_key=seaweedfs.secret_key,
        request_timeout_s=10,
    )


@pytest.fixture
async def store(settings: S3Settings) -> AsyncIterator[S3PayloadStore]:
    async with open_s3_store(settings) as opened:
        yield opened


@pytest.fixture
async def pod() -> AsyncIterator[httpx.AsyncClient]:
    """What the algorithm's pod has: a plain HTTP client and the URLs, no credentials."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


# --- blobs -----------------------------------------------------------------------------------


async def test_put_and_get_round_trip(store: S3PayloadStore, settings: S3Settings) -> None:
    data = b'{"hello_text": "hi", "bytes": "\\u00e9"}'
    await store.put_payload(algorithm=ALG, request_id="run-1", data=data)
    assert await store.get_payload(algorithm=ALG, request_id="run-1") == data
    assert await store.get_payload(algorithm=ALG, request_id="run-2") is None
    await store.put_payload(algorithm=ALG, request_id="run-1", data=b"{}")  # overwrite
    assert await store.get_payload(algorithm=ALG, request_id="run-1") == b"{}"


async def test_keys_follow_upstream_layout(settings: S3Settings) -> None:
    client = httpx.AsyncClient()
    await client.aclose()  # never used: keys are computed locally
    store = S3PayloadStore(
        settings=settings,
        credentials=Credentials("key", "secret"),
        client=client,
        clock=SystemClock(),
    )
    prefix = settings.prefix.strip("/")
    assert store.payload_key(ALG, "r1") == f"{prefix}/algorithm={ALG}/r1"
    assert store.result_key(ALG, "r1") == f"{prefix}/results/algorithm={ALG}/r1"
    bare = S3PayloadStore(
        settings=attrs.evolve(settings, prefix=""),
        credentials=Credentials("key", "secret"),
        client=client,
        clock=SystemClock(),
    )
    assert bare.payload_key(ALG, "r1") == f"algorithm={ALG}/r1"
    with pytest.raises(ValueError, match="request id"):
        store.payload_key(ALG, "../escape")


async def test_payload_url_serves_exact_bytes_to_a_plain_get(
    store: S3PayloadStore, pod: httpx.AsyncClient, settings: S3Settings
) -> None:
    data = bytes(range(256)) * 7
    await store.put_payload(algorithm=ALG, request_id="run-1", data=data)
    url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)

    assert url.startswith(f"{settings.endpoint}/{settings.bucket}/test-")  # path style
    assert f"/algorithm%3D{ALG}/run-1?" in url
    response = await pod.get(url)
    assert response.status_code == 200
    assert response.content == data


async def test_result_upload_url_accepts_a_plain_put(
    store: S3PayloadStore, pod: httpx.AsyncClient
) -> None:
    assert not await store.has_result(algorithm=ALG, request_id="run-1")
    upload = store.result_upload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)

    assert (await pod.put(upload, content=b'{"answer": 42}')).status_code == 200

    assert await store.has_result(algorithm=ALG, request_id="run-1")
    assert await store.get_result(algorithm=ALG, request_id="run-1") == b'{"answer": 42}'
    download = store.result_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
    response = await pod.get(download)
    assert (response.status_code, response.content) == (200, b'{"answer": 42}')
    # The payload tree is separate: no payload appeared under the same id.
    assert await store.get_payload(algorithm=ALG, request_id="run-1") is None


async def test_a_url_works_only_for_its_method(
    store: S3PayloadStore, pod: httpx.AsyncClient
) -> None:
    await store.put_payload(algorithm=ALG, request_id="run-1", data=b"payload")
    download = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
    upload = store.result_upload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)

    assert (await pod.put(download, content=b"overwritten")).status_code == 403
    assert (await pod.get(upload)).status_code == 403
    assert await store.get_payload(algorithm=ALG, request_id="run-1") == b"payload"


# --- refusals by SeaweedFS -------------------------------------------------------------------


def _tamper_signature(url: str) -> str:
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    return _with_query(url, **{"X-Amz-Signature": flipped})


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_tamper_signature, id="signature"),
        pytest.param(lambda url: url.replace("/run-1?", "/run-2?"), id="key"),
        pytest.param(lambda url: url.replace("algorithm%3D", "algorithm%3Dx"), id="path"),
        pytest.param(lambda url: _with_query(url, **{"X-Amz-Expires": "7200"}), id="expiry"),
        pytest.param(lambda url: _with_query(url, **{"X-Amz-Date": "20990101T000000Z"}), id="date"),
        pytest.param(lambda url: url.split("?")[0], id="no-signature"),
    ],
)
async def test_tampered_urls_are_refused(
    store: S3PayloadStore, pod: httpx.AsyncClient, tamper: object
) -> None:
    assert callable(tamper)
    for request_id in ("run-1", "run-2"):
        await store.put_payload(algorithm=ALG, request_id=request_id, data=b"secret payload")
    url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
    assert (await pod.get(url)).status_code == 200

    response = await pod.get(tamper(url))
    assert response.status_code == 403
    assert b"secret payload" not in response.content


async def test_tampered_upload_url_is_refused(
    store: S3PayloadStore, pod: httpx.AsyncClient
) -> None:
    upload = store.result_upload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
    moved = upload.replace("/run-1?", "/run-2?")
    assert (await pod.put(moved, content=b"forged")).status_code == 403
    assert not await store.has_result(algorithm=ALG, request_id="run-2")


async def test_url_signed_in_the_past_is_expired(
    settings: S3Settings, pod: httpx.AsyncClient
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with open_s3_store(settings, clock=clock) as store:
        await store.put_payload(algorithm=ALG, request_id="run-1", data=b"payload")
        clock.advance(-2 * 3600)  # presign as if two hours ago, valid for one hour
        url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)

    response = await pod.get(url)
    assert response.status_code == 403
    assert b"expired" in response.content


async def test_url_expires_in_real_time(store: S3PayloadStore, pod: httpx.AsyncClient) -> None:
    await store.put_payload(algorithm=ALG, request_id="run-1", data=b"payload")
    url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=dt.timedelta(seconds=1))
    await trio.sleep(2.1)  # X-Amz-Date has whole seconds: the URL died within 1 s of signing
    assert (await pod.get(url)).status_code == 403


# --- validity bounds ---------------------------------------------------------------------------


async def test_validity_is_capped_at_seven_days(
    store: S3PayloadStore, pod: httpx.AsyncClient
) -> None:
    await store.put_payload(algorithm=ALG, request_id="run-1", data=b"payload")
    url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=MAX_URL_VALIDITY)
    assert "X-Amz-Expires=604800" in url
    assert (await pod.get(url)).status_code == 200

    too_long = MAX_URL_VALIDITY + dt.timedelta(seconds=1)
    for presign in (store.payload_url, store.result_upload_url, store.result_url):
        with pytest.raises(ValueError, match="7 days"):
            presign(algorithm=ALG, request_id="run-1", valid_for=too_long)
    with pytest.raises(ValueError, match="at least 1 s"):
        store.payload_url(algorithm=ALG, request_id="run-1", valid_for=dt.timedelta(0))


async def test_presigning_does_no_network_io(settings: S3Settings) -> None:
    """Any request at all (GetBucketLocation, a credential lookup...) would hit this transport."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"presigning sent {request.method} {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        store = S3PayloadStore(
            settings=attrs.evolve(settings, endpoint="https://s3.invalid", region="eu-north-1"),
            credentials=Credentials("AKIDEXAMPLE", "not-the-real-secret"),
            client=client,
            clock=SystemClock(),
        )
        url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
    assert url.startswith("https://s3.invalid/")
    assert "%2Feu-north-1%2Fs3%2Faws4_request" in url
    assert "not-the-real-secret" not in url


# --- URL styles --------------------------------------------------------------------------------


class _ToLoopback(httpx.AsyncBaseTransport):
    """Connect every request to 127.0.0.1, keeping its Host header (`*.s3.nexusd.test`)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_virtual_hosted_style(settings: S3Settings, seaweedfs: SeaweedS3) -> None:
    port = urlsplit(seaweedfs.endpoint).port
    virtual = attrs.evolve(settings, endpoint=f"http://{seaweedfs.domain}:{port}", path_style=False)
    async with (
        httpx.AsyncClient(transport=_ToLoopback(), timeout=10) as client,
        httpx.AsyncClient(transport=_ToLoopback(), timeout=10) as pod,
    ):
        store = S3PayloadStore(
            settings=virtual,
            credentials=Credentials(seaweedfs.access_key, seaweedfs.secret_key),
            client=client,
            clock=SystemClock(),
        )
        await store.check_bucket()
        await store.put_payload(algorithm=ALG, request_id="run-1", data=b"virtual")
        url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
        bucket_host = f"{seaweedfs.bucket}.{seaweedfs.domain}:{port}"
        assert url.startswith(f"http://{bucket_host}/{settings.prefix.strip('/')}/algorithm%3D")

        response = await pod.get(url)
        assert (response.status_code, response.content) == (200, b"virtual")
        assert (await pod.get(_tamper_signature(url))).status_code == 403
        upload = store.result_upload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
        assert (await pod.put(upload, content=b"result")).status_code == 200
        assert await store.has_result(algorithm=ALG, request_id="run-1")


# --- opening: credentials and misconfiguration -----------------------------------------------


async def test_wrong_secret_is_refused_without_leaking_it(settings: S3Settings) -> None:
    wrong = attrs.evolve(settings, secret_key="wrong-secret-do-not-print-me")
    with pytest.raises(StoreError) as caught:
        await S3PayloadStore.open(wrong)
    message = str(caught.value)
    assert "refused access" in message
    assert settings.endpoint in message
    assert settings.bucket in message
    assert "wrong-secret-do-not-print-me" not in message
    assert "wrong-secret-do-not-print-me" not in repr(wrong)


async def test_missing_bucket(settings: S3Settings) -> None:
    with pytest.raises(StoreError, match=r"'no-such-bucket' at http://127\.0\.0\.1:\d+ does not"):
        await S3PayloadStore.open(attrs.evolve(settings, bucket="no-such-bucket"))


async def test_unreachable_endpoint(settings: S3Settings) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens on this port now
    with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{port} failed: ConnectError") as caught:
        await S3PayloadStore.open(attrs.evolve(settings, endpoint=f"http://127.0.0.1:{port}"))
    assert settings.secret_key is not None
    assert settings.secret_key not in str(caught.value)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="together"):
        S3Settings(endpoint="http://127.0.0.1:1", bucket="abc", access_key="only-the-key")
    with pytest.raises(ValueError, match="not a valid S3 bucket"):
        S3Settings(endpoint="http://127.0.0.1:1", bucket="Bad_Bucket")
    with pytest.raises(ValueError, match="path"):
        S3Settings(endpoint="http://127.0.0.1:1/bucket", bucket="abc")
    with pytest.raises(ValueError, match="unsafe"):
        S3Settings(endpoint="http://127.0.0.1:1", bucket="abc", prefix="a/../b")


async def test_credentials_from_environment(
    settings: S3Settings, seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chain = attrs.evolve(settings, access_key=None, secret_key=None)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    async with open_s3_store(chain) as store:
        await store.put_payload(algorithm=ALG, request_id="run-1", data=b"env")
        assert await store.get_payload(algorithm=ALG, request_id="run-1") == b"env"


async def test_credentials_from_profile(
    settings: S3Settings, seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chain = attrs.evolve(settings, access_key=None, secret_key=None)
    profiles = tmp_path / "credentials"
    profiles.write_text(
        "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n"
        f"[nexusd]\naws_access_key_id = {seaweedfs.access_key}\n"
        f"aws_secret_access_key = {seaweedfs.secret_key}\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(profiles))
    monkeypatch.setenv("AWS_PROFILE", "nexusd")
    async with open_s3_store(chain) as store:
        assert await store.get_payload(algorithm=ALG, request_id="run-1") is None


async def test_no_credentials_anywhere(
    settings: S3Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    with pytest.raises(StoreError, match="no S3 credentials found"):
        await S3PayloadStore.open(attrs.evolve(settings, access_key=None, secret_key=None))


async def test_expiring_credentials_are_renewed(
    settings: S3Settings,
    seaweedfs: SeaweedS3,
    monkeypatch: pytest.MonkeyPatch,
    pod: httpx.AsyncClient,
) -> None:
    """Temporary credentials near expiry are replaced by a fresh lookup of the chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    clock = ManualClock(dt.datetime.now(dt.UTC))
    stale = Credentials(
        "stale-key", "stale-secret", expiration=clock.now() + dt.timedelta(minutes=1)
    )
    async with httpx.AsyncClient(timeout=10) as client:
        store = S3PayloadStore(
            settings=attrs.evolve(settings, access_key=None, secret_key=None),
            credentials=stale,
            client=client,
            clock=clock,
        )
        clock.advance(120)  # the held credentials have expired now
        with pytest.raises(StoreError, match="expired"):
            store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
        # An async call renews them before signing.
        await store.put_payload(algorithm=ALG, request_id="run-1", data=b"renewed")
        url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
        assert seaweedfs.access_key in url
    assert (await pod.get(url)).content == b"renewed"


# --- size and concurrency ----------------------------------------------------------------------


async def test_large_payload(store: S3PayloadStore, pod: httpx.AsyncClient) -> None:
    data = os.urandom(20 * 1024 * 1024)
    await store.put_payload(algorithm=ALG, request_id="big", data=data)
    url = store.payload_url(algorithm=ALG, request_id="big", valid_for=HOUR)
    digest = hashlib.sha256()
    size = 0
    async with pod.stream("GET", url) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert (size, digest.digest()) == (len(data), hashlib.sha256(data).digest())


async def test_concurrent_puts(store: S3PayloadStore) -> None:
    async with trio.open_nursery() as nursery:
        for index in range(32):
            put = functools.partial(
                store.put_payload,
                algorithm=ALG,
                request_id=f"run-{index}",
                data=f'{{"i": {index}}}'.encode(),
            )
            nursery.start_soon(put)
    for index in range(32):
        payload = await store.get_payload(algorithm=ALG, request_id=f"run-{index}")
        assert payload == f'{{"i": {index}}}'.encode()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await trio.lowlevel.checkpoint()
        yield data[start : start + size]


async def test_streamed_payload(store: S3PayloadStore, pod: httpx.AsyncClient) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    await store.put_payload_stream(
        algorithm=ALG, request_id="run-1", chunks=_chunks(data, 64 * 1024), length=len(data)
    )
    url = store.payload_url(algorithm=ALG, request_id="run-1", valid_for=HOUR)
    assert (await pod.get(url)).content == data


@pytest.mark.parametrize("declared", [99, 101])
async def test_streamed_payload_of_the_wrong_length_fails(
    store: S3PayloadStore, declared: int
) -> None:
    with pytest.raises(StoreError):
        await store.put_payload_stream(
            algorithm=ALG, request_id="run-1", chunks=_chunks(b"x" * 100, 30), length=declared
        )
    assert await store.get_payload(algorithm=ALG, request_id="run-1") is None


# --- garbage collection ------------------------------------------------------------------------


async def test_delete_run_removes_payload_and_result_and_is_idempotent(
    store: S3PayloadStore,
) -> None:
    await store.put_payload(algorithm=ALG, request_id="run-1", data=b"p")
    await store.put_result(algorithm=ALG, request_id="run-1", data=b"r")
    await store.put_payload(algorithm=ALG, request_id="run-2", data=b"keep")

    await store.delete_run(algorithm=ALG, request_id="run-1")

    assert await store.get_payload(algorithm=ALG, request_id="run-1") is None
    assert not await store.has_result(algorithm=ALG, request_id="run-1")
    assert await store.get_payload(algorithm=ALG, request_id="run-2") == b"keep"
    await store.delete_run(algorithm=ALG, request_id="run-1")  # already gone: fine
    await store.delete_run(algorithm="never-seen", request_id="run-9")


async def _put_runs(store: S3PayloadStore, names: list[str]) -> None:
    for name in names:
        await store.put_payload(algorithm=ALG, request_id=name, data=b"p")
        await store.put_result(algorithm="other-algo", request_id=name, data=b"r")


async def test_purge_older_than_respects_the_cutoff_limit_and_prefix(
    store: S3PayloadStore, settings: S3Settings
) -> None:
    names = [f"run-{index}" for index in range(3)]
    await _put_runs(store, names)  # 6 objects: 3 payloads, 3 results
    neighbour_settings = attrs.evolve(settings, prefix=settings.prefix.rstrip("/") + "-x/")
    async with open_s3_store(neighbour_settings) as neighbour:
        await neighbour.put_payload(algorithm=ALG, request_id="run-0", data=b"not ours")
        now = dt.datetime.now(dt.UTC)
        store._list_page = 2  # several ListObjectsV2 pages per tree

        assert await store.purge_older_than(before=now - HOUR) == 0  # all younger than that
        assert await store.purge_older_than(before=now + HOUR, limit=4) == 4
        assert await store.purge_older_than(before=now + HOUR, limit=4) == 2
        assert await store.purge_older_than(before=now + HOUR) == 0

        for name in names:
            assert await store.get_payload(algorithm=ALG, request_id=name) is None
            assert not await store.has_result(algorithm="other-algo", request_id=name)
        assert await neighbour.get_payload(algorithm=ALG, request_id="run-0") == b"not ours"


async def test_purge_older_than_keeps_objects_written_after_the_cutoff(
    store: S3PayloadStore,
) -> None:
    """S3's LastModified has (at best) millisecond precision: the cutoff is a whole second
    between the old and the new writes, so truncation cannot move an object across it."""
    await _put_runs(store, ["old-0", "old-1"])
    cutoff = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    await trio.sleep((cutoff - dt.datetime.now(dt.UTC)).total_seconds() + 0.05)
    await _put_runs(store, ["new-0"])

    assert await store.purge_older_than(before=cutoff) == 4

    assert await store.get_payload(algorithm=ALG, request_id="old-0") is None
    assert await store.get_payload(algorithm=ALG, request_id="new-0") == b"p"
    assert await store.has_result(algorithm="other-algo", request_id="new-0")


async def test_purge_older_than_validates_its_arguments(store: S3PayloadStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.purge_older_than(before=dt.datetime.now(dt.UTC), limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.purge_older_than(before=dt.datetime(2026, 1, 1))
