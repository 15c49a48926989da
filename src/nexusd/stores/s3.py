"""`S3PayloadStore`: payloads and results as objects in an S3 bucket, reached by presigned URLs.

Object keys (upstream's ``algorithm=<name>`` convention, contract §6.2)::

    <prefix>/algorithm=<algorithm>/<request id>            the payload (JSON of algorithmParameters)
    <prefix>/results/algorithm=<algorithm>/<request id>    the result the algorithm uploads

With an empty prefix the keys start at ``algorithm=`` and ``results/``. A payload key never
starts with ``results/`` (its first segment after the prefix is ``algorithm=...``), so the two
trees cannot collide.

URLs handed out (SigV4 query-string presigning, ``X-Amz-SignedHeaders=host``):

    payload_url         GET the payload          (the pod's ``--sas-uri``)
    result_upload_url   PUT the result           (the pod's ``NEXUS__RESULT_UPLOAD_URL``)
    result_url          GET the result           (the client, through the results route)

S3 caps a presigned URL at 7 days (`MAX_URL_VALIDITY`); a longer `valid_for` raises
`ValueError`. With temporary credentials (a session token: web identity, SSO, an assumed role)
a URL also stops working when those credentials expire, whatever `valid_for` says: S3 checks
the session token on every use. That is S3's rule, not ours.

The store's own calls (put, get, HEAD) are SigV4-signed requests (``Authorization`` header,
the payload's SHA-256 in ``x-amz-content-sha256``, so the server checks the body arrived intact)
sent with one shared `httpx.AsyncClient`. Signing comes from the ``minio`` package
(`minio.signer`), which is pure computation: presigning never touches the network because the
region is always given (no GetBucketLocation). minio's own client is synchronous urllib3 and is
not used; botocore is not used because it cannot be installed next to ``kubernetes>=37`` (both
pin python-dateutil, to incompatible majors).

Credentials: `S3Settings.access_key`/`secret_key` when set; otherwise the standard AWS chain,
tried in order: the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``), the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE`` or
``~/.aws/credentials``, profile ``AWS_PROFILE`` or ``default``), then, only when its variables
are set, web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``: EKS IRSA) or the ECS
container endpoint. The EC2 instance metadata service is not probed: off EC2 that probe hangs for
minutes before failing. Lookups read files or call STS, so they run in a worker thread; temporary
credentials are renewed by the async calls once they are within `CREDENTIALS_REFRESH_MARGIN` of
expiry. The presigning methods are synchronous (the `PayloadStore` protocol) and use the
credentials held; the pipeline always stores a payload (an async call) before presigning its
URLs, and `ensure_fresh_credentials` is there for callers that presign without one.

The secret key never appears in an error message, a log line or the settings' repr.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import SplitResult, quote, urlsplit

import httpx
import trio
from minio.credentials.credentials import Credentials
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    IamAwsProvider,
    Provider,
)
from minio.signer import presign_v4, sign_v4_s3
from minio.time import to_amz_date

from nexusd.core.clock import SystemClock
from nexusd.core.errors import StoreError
from nexusd.stores.filesystem import check_name
from nexusd.stores.s3_xml import (
    MAX_DELETE_KEYS,
    delete_body,
    delete_errors,
    list_query,
    parse_list,
)
from nexusd.stores.validation import check_aware, check_limit

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from nexusd.core.clock import Clock
    from nexusd.stores.s3_settings import S3Settings

logger = logging.getLogger(__name__)

#: S3's limit on a presigned URL's lifetime (SigV4 ``X-Amz-Expires`` is at most 604800 s).
MAX_URL_VALIDITY = dt.timedelta(days=7)
#: Temporary credentials are renewed when they expire within this margin: any URL signed with
#: them stays usable for at least that long, and STS has time to answer.
CREDENTIALS_REFRESH_MARGIN = dt.timedelta(minutes=5)

#: Bodies at least this large are hashed in a worker thread (hashlib releases the GIL), so a
#: 20 MiB payload does not stall the trio loop for its ~15 ms of SHA-256.
_HASH_IN_THREAD_BYTES = 256 * 1024
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: Keep as many idle connections as may be open: the submission workers put payloads in bursts,
#: and httpx's default (20 kept of 100) makes a burst of 32 reconnect a third of its requests.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
_WEB_IDENTITY_VARIABLES = (
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class S3PayloadStore:
    """The `PayloadStore` protocol on an S3 bucket. Open it with `open_s3_store`."""

    def __init__(
        self,
        *,
        settings: S3Settings,
        credentials: Credentials,
        client: httpx.AsyncClient,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._client = client
        self._clock = clock
        self._refresh_lock = trio.Lock()
        #: keys per ListObjectsV2 page (S3's maximum; tests lower it to exercise paging)
        self._list_page = MAX_DELETE_KEYS
        self._prefix = "/".join(filter(None, settings.prefix.split("/")))
        endpoint = urlsplit(settings.endpoint)
        self._scheme = endpoint.scheme
        self._netloc = _netloc(endpoint)
        if settings.path_style:
            self._bucket_netloc, self._bucket_path = self._netloc, f"/{settings.bucket}"
        else:
            self._bucket_netloc, self._bucket_path = f"{settings.bucket}.{self._netloc}", ""

    @classmethod
    async def open(cls, settings: S3Settings, *, clock: Clock | None = None) -> S3PayloadStore:
        """Resolve credentials and check that the bucket answers; raise `StoreError` if not."""
        credentials = await _resolve_credentials(settings)
        client = httpx.AsyncClient(timeout=settings.request_timeout_s, limits=_LIMITS)
        store = cls(
            settings=settings, credentials=credentials, client=client, clock=clock or SystemClock()
        )
        try:
            await store.check_bucket()
        except BaseException:
            with trio.CancelScope(shield=True):  # also when the open itself was cancelled
                await client.aclose()
            raise
        return store

    # --- blobs ---------------------------------------------------------------------------

    async def put_payload(self, *, algorithm: str, request_id: str, data: bytes) -> None:
        await self._put(self.payload_key(algorithm, request_id), data)

    async def put_payload_stream(
        self, *, algorithm: str, request_id: str, chunks: AsyncIterable[bytes], length: int
    ) -> None:
        """Store a payload from an async iterator of chunks totalling exactly `length` bytes.

        S3's PutObject needs the length up front (it takes no chunked transfer encoding), and
        the body is not hashed (``UNSIGNED-PAYLOAD``): integrity rests on TCP/TLS. A stream
        that yields more or fewer bytes than `length` fails with `StoreError`.
        """
        key = self.payload_key(algorithm, request_id)
        body = _exactly(chunks, length, f"s3://{self._settings.bucket}/{key}")
        response = await self._send("PUT", key, body, _UNSIGNED_PAYLOAD, length=length)
        if response.status_code != 200:
            self._fail("PUT", key, response)

    async def get_payload(self, *, algorithm: str, request_id: str) -> bytes | None:
        return await self._get(self.payload_key(algorithm, request_id))

    async def put_result(self, *, algorithm: str, request_id: str, data: bytes) -> None:
        """Store a run's result directly (the pod normally PUTs it through its URL)."""
        await self._put(self.result_key(algorithm, request_id), data)

    async def get_result(self, *, algorithm: str, request_id: str) -> bytes | None:
        return await self._get(self.result_key(algorithm, request_id))

    async def has_result(self, *, algorithm: str, request_id: str) -> bool:
        key = self.result_key(algorithm, request_id)
        response = await self._send("HEAD", key)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            self._fail("HEAD", key, response)
        return True

    async def delete_run(self, *, algorithm: str, request_id: str) -> None:
        """DELETE the payload and the result; an object already gone is fine (S3 says 204)."""
        for key in (
            self.payload_key(algorithm, request_id),
            self.result_key(algorithm, request_id),
        ):
            response = await self._send("DELETE", key)
            if response.status_code not in (200, 204, 404):
                self._fail("DELETE", key, response)

    async def purge_older_than(self, *, before: dt.datetime, limit: int = 1000) -> int:
        """Delete up to `limit` payloads and results whose LastModified is before `before`.

        Lists the payload tree, then the result tree (ListObjectsV2, paginated), then deletes
        what it picked with DeleteObjects, `MAX_DELETE_KEYS` at a time. Keys S3 reports as not
        deleted are logged and not counted; the next pass retries them.
        """
        check_aware("before", before)
        check_limit(limit)
        doomed: list[str] = []
        for tree in (self._tree(""), self._tree("results")):
            doomed += await self._list_older(tree, before, limit - len(doomed))
            if len(doomed) >= limit:
                break
        deleted = 0
        for start in range(0, len(doomed), MAX_DELETE_KEYS):
            deleted += await self._delete_objects(doomed[start : start + MAX_DELETE_KEYS])
        return deleted

    async def check_bucket(self) -> None:
        """HEAD the bucket: raise `StoreError` naming endpoint and bucket if it cannot be used."""
        response = await self._send("HEAD", None)
        if response.status_code == 200:
            return
        status = response.status_code
        where = f"S3 bucket {self._settings.bucket!r} at {self._settings.endpoint}"
        if status == 404:
            raise StoreError(f"{where} does not exist")
        if status in (401, 403):
            raise StoreError(
                f"{where} refused access (HTTP {status}): check the access key "
                f"{self._credentials.access_key!r}, its secret, and the bucket policy"
            )
        if status in (301, 400) and (region := response.headers.get("x-amz-bucket-region")):
            raise StoreError(f"{where} is in region {region!r}, not {self._settings.region!r}")
        raise StoreError(f"{where} answered HEAD with HTTP {status}")

    async def ensure_fresh_credentials(self) -> None:
        """Renew temporary credentials that expire within `CREDENTIALS_REFRESH_MARGIN`."""
        if not self._expires_within(CREDENTIALS_REFRESH_MARGIN):
            return
        async with self._refresh_lock:
            if self._expires_within(CREDENTIALS_REFRESH_MARGIN):  # nobody renewed them meanwhile
                self._credentials = await _resolve_credentials(self._settings)
                logger.info("renewed S3 credentials for %s", self._settings.endpoint)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- URLs ----------------------------------------------------------------------------

    def payload_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        return self._presign("GET", self.payload_key(algorithm, request_id), valid_for)

    def result_upload_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        return self._presign("PUT", self.result_key(algorithm, request_id), valid_for)

    def result_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        return self._presign("GET", self.result_key(algorithm, request_id), valid_for)

    def payload_key(self, algorithm: str, request_id: str) -> str:
        return self._key(algorithm, request_id)

    def result_key(self, algorithm: str, request_id: str) -> str:
        return self._key(algorithm, request_id, "results")

    # --- internals -----------------------------------------------------------------------

    def _key(self, algorithm: str, request_id: str, kind: str = "") -> str:
        check_name("algorithm", algorithm)
        check_name("request id", request_id)
        return "/".join(filter(None, (self._prefix, kind, f"algorithm={algorithm}", request_id)))

    def _tree(self, kind: str) -> str:
        """The key prefix of every payload (`kind` "") or every result (`kind` "results")."""
        return "/".join(filter(None, (self._prefix, kind, "algorithm=")))

    async def _list_older(self, prefix: str, before: dt.datetime, limit: int) -> list[str]:
        """Up to `limit` keys under `prefix` last written before `before`, page by page."""
        found: list[str] = []
        token: str | None = None
        while True:
            query = list_query(prefix=prefix, token=token, max_keys=self._list_page)
            response = await self._send("GET", None, query=query)
            if response.status_code != 200:
                self._fail("GET (ListObjectsV2)", prefix, response)
            page = parse_list(response.content)
            for listed in page.objects:
                if listed.last_modified < before:
                    found.append(listed.key)
                    if len(found) >= limit:
                        return found
            if page.next_token is None:
                return found
            token = page.next_token

    async def _delete_objects(self, keys: list[str]) -> int:
        """One quiet DeleteObjects call; how many of `keys` are gone."""
        body = delete_body(keys)
        headers = {
            # S3 requires an integrity header on DeleteObjects.
            "Content-MD5": base64.b64encode(
                hashlib.md5(body, usedforsecurity=False).digest()
            ).decode(),
            "Content-Type": "application/xml",
        }
        response = await self._send(
            "POST",
            None,
            body,
            _sha256(body),
            length=len(body),
            query="delete=",
            extra_headers=headers,
        )
        if response.status_code != 200:
            self._fail("POST (DeleteObjects)", keys[0], response)
        errors = delete_errors(response.content)
        if errors:
            first = errors[0]
            logger.warning(
                "S3 did not delete %d of %d objects (first: %s: %s %s)",
                len(errors),
                len(keys),
                first.key,
                first.code,
                first.message,
            )
        return len(keys) - len(errors)

    def _url(self, key: str | None) -> SplitResult:
        # SigV4 signs the URI-encoded path; '=' in ``algorithm=...`` must travel as %3D.
        path = self._bucket_path + ("/" + quote(key, safe="/") if key else "/")
        return SplitResult(self._scheme, self._bucket_netloc, path, "", "")

    def _presign(self, method: str, key: str, valid_for: dt.timedelta) -> str:
        seconds = math.ceil(valid_for.total_seconds())
        if seconds < 1:
            raise ValueError(f"a URL must be valid for at least 1 s, not {valid_for}")
        if valid_for > MAX_URL_VALIDITY:
            raise ValueError(f"S3 presigned URLs are valid for at most 7 days, not {valid_for}")
        if self._expires_within(dt.timedelta(0)):
            raise StoreError(
                f"the S3 credentials for {self._settings.endpoint} have expired and were not "
                "renewed (await ensure_fresh_credentials() before presigning)"
            )
        url = self._url(key)
        if token := self._credentials.session_token:
            url = url._replace(query="X-Amz-Security-Token=" + quote(token, safe=""))
        signed = presign_v4(
            method=method,
            url=url,
            region=self._settings.region,
            credentials=self._credentials,
            date=self._clock.now(),
            expires=seconds,
        )
        return signed.geturl()

    async def _put(self, key: str, data: bytes) -> None:
        if len(data) >= _HASH_IN_THREAD_BYTES:
            digest = await trio.to_thread.run_sync(_sha256, data)
        else:
            digest = _sha256(data)
        response = await self._send("PUT", key, data, digest, length=len(data))
        if response.status_code != 200:
            self._fail("PUT", key, response)

    async def _get(self, key: str) -> bytes | None:
        response = await self._send("GET", key)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._fail("GET", key, response)
        return response.content

    async def _send(
        self,
        method: str,
        key: str | None,
        body: bytes | AsyncIterable[bytes] = b"",
        digest: str = _EMPTY_SHA256,
        *,
        length: int | None = None,
        query: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one SigV4-signed request; transport failures become `StoreError`.

        `query` must already be in SigV4 canonical form (sorted, percent-encoded): it is
        signed and sent exactly as given.
        """
        await self.ensure_fresh_credentials()
        url = self._url(key)._replace(query=query)
        date = self._clock.now()
        headers: dict[str, str] = {
            "Host": url.netloc,
            "x-amz-date": to_amz_date(date),
            "x-amz-content-sha256": digest,
            **(extra_headers or {}),
        }
        if self._credentials.session_token:
            headers["X-Amz-Security-Token"] = self._credentials.session_token
        if length is not None:
            headers["Content-Length"] = str(length)  # httpx then sends no Transfer-Encoding
        signed = sign_v4_s3(
            method=method,
            url=url,
            region=self._settings.region,
            headers=dict(headers),
            credentials=self._credentials,
            content_sha256=digest,
            date=date,
        )
        try:
            return await self._client.request(
                method, url.geturl(), content=body or None, headers=_flat(signed)
            )
        except httpx.HTTPError as error:
            what = f"{method} s3://{self._settings.bucket}/{key or ''}"
            raise StoreError(
                f"{what} at {self._settings.endpoint} failed: {type(error).__name__}: {error}"
            ) from None

    def _fail(self, method: str, key: str, response: httpx.Response) -> NoReturn:
        code, message = _error_of(response)
        raise StoreError(
            f"{method} s3://{self._settings.bucket}/{key} at {self._settings.endpoint} failed: "
            f"HTTP {response.status_code} {code}: {message}".rstrip(": ")
        )

    def _expires_within(self, margin: dt.timedelta) -> bool:
        expiration = self._credentials.expiration  # naive UTC (minio's convention)
        if expiration is None:
            return False
        return expiration.replace(tzinfo=dt.UTC) - self._clock.now() <= margin


@asynccontextmanager
async def open_s3_store(
    settings: S3Settings, *, clock: Clock | None = None
) -> AsyncIterator[S3PayloadStore]:
    """`S3PayloadStore.open` as an async context manager that always closes the store."""
    store = await S3PayloadStore.open(settings, clock=clock)
    try:
        yield store
    finally:
        await store.aclose()


async def _resolve_credentials(settings: S3Settings) -> Credentials:
    if settings.access_key is not None and settings.secret_key is not None:
        return Credentials(settings.access_key, settings.secret_key)
    return await trio.to_thread.run_sync(_credentials_from_chain, settings.region)


def _credentials_from_chain(region: str) -> Credentials:
    """Blocking: the first credentials the AWS chain yields (a new chain: no stale cache)."""
    providers: list[Provider] = [EnvAWSProvider(), AWSConfigProvider()]
    if any(os.environ.get(name) for name in _WEB_IDENTITY_VARIABLES):
        providers.append(IamAwsProvider(region=region))
    try:
        return ChainedProvider(providers).retrieve()
    except ValueError:
        raise StoreError(
            "no S3 credentials found: set access_key and secret_key, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials (AWS_PROFILE), or "
            "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN"
        ) from None
    except Exception as error:  # STS or the container endpoint failed
        raise StoreError(f"fetching S3 credentials failed: {type(error).__name__}") from None


def _netloc(endpoint: SplitResult) -> str:
    """Host[:port] as an HTTP client sends it in ``Host`` (no default port), which SigV4 signs."""
    host = (endpoint.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if endpoint.scheme == "https" else 80
    return host if endpoint.port in (None, default) else f"{host}:{endpoint.port}"


async def _exactly(chunks: AsyncIterable[bytes], length: int, what: str) -> AsyncIterator[bytes]:
    """Pass `chunks` on, failing before the HTTP layer would if they are not `length` bytes."""
    sent = 0
    try:
        async for chunk in chunks:
            sent += len(chunk)
            if sent > length:
                raise StoreError(
                    f"PUT {what}: the stream has more than the declared {length} bytes"
                )
            yield chunk
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
    if sent != length:
        raise StoreError(f"PUT {what}: the stream ended after {sent} of {length} bytes")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flat(headers: dict[str, str | list[str] | tuple[str]]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else ",".join(value) for key, value in headers.items()
    }


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The S3 error code and message of a failed response (empty for HEAD, which has no body)."""
    try:
        root = ElementTree.fromstring(response.content[: 64 * 1024])
    except ElementTree.ParseError:
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""


if TYPE_CHECKING:
    from nexusd.stores.payloads import PayloadStore

    def _conforms(store: S3PayloadStore) -> PayloadStore:
        return store  # mypy checks the protocol here
