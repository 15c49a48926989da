"""`FilesystemPayloadStore`: payloads and results as files, served by nexusd itself.

Layout (upstream's `algorithm=<name>` prefix convention)::

    <root>/payloads/algorithm=<algorithm>/<request id>
    <root>/results/algorithm=<algorithm>/<request id>

URLs point at nexusd's own data routes and are signed with `UrlSigner` (HMAC + expiry):

    payload download  GET {base_url}/data/v1/payloads/{algorithm}/requests/{id}?exp=..&sig=..
                      scope "payload:get"
    result upload     PUT {base_url}/data/v1/results/{algorithm}/requests/{id}?exp=..&sig=..
                      scope "result:put"
    result download   GET, same path as the upload, scope "result:get"

The signature covers the route path (``/data/v1/...``), not `base_url`, so nexusd may sit
behind a proxy that adds a path prefix. The HTTP layer checks a request with
``store.verify(scope, request_path, query)``, where `request_path` is the route path as above.

Algorithm names and request ids are checked against a strict pattern (letters, digits,
``.``, ``_``, ``-``; not starting with a dot) so that no name can leave `root`.

Every write is atomic and durable: a temporary file in the target directory, fsync, rename over
the target, fsync of the directory. Blocking file I/O runs in trio worker threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import trio

from nexusd.stores.validation import check_aware, check_limit

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator, Mapping

    from nexusd.stores.signing import UrlSigner

PAYLOAD_GET = "payload:get"
RESULT_PUT = "result:put"
RESULT_GET = "result:get"

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,252}")


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a safe single path component, else raise `ValueError`."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid {kind} {value!r}: use 1-253 letters, digits, '.', '_' or '-', "
            "not starting with '.'"
        )
    return value


def payload_path(algorithm: str, request_id: str) -> str:
    """The route path of a run's payload (what `payload_url` signs)."""
    return _route("payloads", algorithm, request_id)


def result_path(algorithm: str, request_id: str) -> str:
    """The route path of a run's result (what `result_upload_url` and `result_url` sign)."""
    return _route("results", algorithm, request_id)


def _route(kind: str, algorithm: str, request_id: str) -> str:
    algorithm = quote(check_name("algorithm", algorithm), safe="")
    request_id = quote(check_name("request id", request_id), safe="")
    return f"/data/v1/{kind}/{algorithm}/requests/{request_id}"


class FilesystemPayloadStore:
    """The `PayloadStore` protocol on a local directory, plus the server-side result calls."""

    def __init__(self, *, root: Path, signer: UrlSigner, base_url: str) -> None:
        self._root = root
        self._signer = signer
        self._base_url = base_url.rstrip("/")

    # --- blobs ---------------------------------------------------------------------------

    async def put_payload(self, *, algorithm: str, request_id: str, data: bytes) -> None:
        await trio.to_thread.run_sync(
            _write_atomic, self._file("payloads", algorithm, request_id), data
        )

    async def get_payload(self, *, algorithm: str, request_id: str) -> bytes | None:
        return await trio.to_thread.run_sync(_read, self._file("payloads", algorithm, request_id))

    async def put_result(self, *, algorithm: str, request_id: str, data: bytes) -> None:
        """Store a run's result (the HTTP layer calls this on a verified ``result:put``)."""
        await trio.to_thread.run_sync(
            _write_atomic, self._file("results", algorithm, request_id), data
        )

    async def get_result(self, *, algorithm: str, request_id: str) -> bytes | None:
        return await trio.to_thread.run_sync(_read, self._file("results", algorithm, request_id))

    async def has_result(self, *, algorithm: str, request_id: str) -> bool:
        return await trio.to_thread.run_sync(self._file("results", algorithm, request_id).is_file)

    async def delete_run(self, *, algorithm: str, request_id: str) -> None:
        paths = [self._file(kind, algorithm, request_id) for kind in ("payloads", "results")]
        await trio.to_thread.run_sync(_unlink_all, paths)

    async def purge_older_than(self, *, before: dt.datetime, limit: int = 1000) -> int:
        """Delete up to `limit` files (mtime before `before`) under payloads/ and results/.

        Leftover temporary files of interrupted writes count too: they are garbage of the
        same age. Directories are kept (a concurrent write may be about to use one).
        """
        check_aware("before", before)
        check_limit(limit)
        return await trio.to_thread.run_sync(_purge, self._root, before.timestamp(), limit)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    # --- URLs ----------------------------------------------------------------------------

    def payload_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        return self._url(PAYLOAD_GET, payload_path(algorithm, request_id), valid_for)

    def result_upload_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        return self._url(RESULT_PUT, result_path(algorithm, request_id), valid_for)

    def result_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        return self._url(RESULT_GET, result_path(algorithm, request_id), valid_for)

    def verify(self, scope: str, path: str, query: Mapping[str, str]) -> None:
        """Check a request's route path and query; raise `SignatureError` if refused."""
        self._signer.verify(scope, path, query)

    def _url(self, scope: str, path: str, valid_for: dt.timedelta) -> str:
        return f"{self._base_url}{path}?{self._signer.sign(scope, path, valid_for)}"

    def _file(self, kind: str, algorithm: str, request_id: str) -> Path:
        check_name("algorithm", algorithm)
        check_name("request id", request_id)
        return self._root / kind / f"algorithm={algorithm}" / request_id


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _purge(root: Path, cutoff: float, limit: int) -> int:
    """Blocking: unlink up to `limit` files under root/{payloads,results}/algorithm=*/ older
    than `cutoff` (POSIX seconds). Entries that vanish meanwhile are skipped."""
    deleted = 0
    for kind in ("payloads", "results"):
        for directory in _scan(root / kind):
            if not (
                directory.name.startswith("algorithm=") and directory.is_dir(follow_symlinks=False)
            ):
                continue
            for entry in _scan(Path(directory.path)):
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                deleted += 1
                if deleted >= limit:
                    return deleted
    return deleted


def _scan(directory: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of `directory`, lazily (a purge stops early), or none if it is missing."""
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return
    with entries:
        yield from entries


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, never a mix."""
    directory = path.parent
    if not directory.is_dir():
        _make_directories(directory)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _make_directories(directory: Path) -> None:
    """Create `directory` and missing parents, fsyncing each parent so the entries persist."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        _fsync_directory(created.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


if TYPE_CHECKING:
    from nexusd.stores.payloads import PayloadStore

    def _conforms(store: FilesystemPayloadStore) -> PayloadStore:
        return store  # mypy checks the protocol here
