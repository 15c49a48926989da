"""`FilesystemPayloadStore` on a real directory (tmp_path); time from `ManualClock`."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import pytest

from nexusd.stores.filesystem import (
    PAYLOAD_GET,
    RESULT_GET,
    RESULT_PUT,
    FilesystemPayloadStore,
    payload_path,
    result_path,
)
from nexusd.stores.signing import SignatureError, UrlSigner

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nexusd.core.clock import ManualClock

ALGO = "demo-algorithm"
RUN = "6f1c4a52-3c1e-4f57-9d4a-0b7f1c2d3e4f"
DAY = dt.timedelta(days=1)


@pytest.fixture
def payloads(tmp_path: Path, clock: ManualClock) -> FilesystemPayloadStore:
    signer = UrlSigner(b"0123456789abcdef0123456789abcdef", clock)
    return FilesystemPayloadStore(
        root=tmp_path / "data", signer=signer, base_url="https://nexus.example.test/prefix/"
    )


async def test_payload_round_trip_and_layout(
    payloads: FilesystemPayloadStore, tmp_path: Path
) -> None:
    assert await payloads.get_payload(algorithm=ALGO, request_id=RUN) is None
    await payloads.put_payload(algorithm=ALGO, request_id=RUN, data=b'{"x": 1}')
    assert await payloads.get_payload(algorithm=ALGO, request_id=RUN) == b'{"x": 1}'
    on_disk = tmp_path / "data" / "payloads" / f"algorithm={ALGO}" / RUN
    assert on_disk.read_bytes() == b'{"x": 1}'
    assert [p.name for p in on_disk.parent.iterdir()] == [RUN]  # no temporary left behind


async def test_result_round_trip_and_overwrite(
    payloads: FilesystemPayloadStore, tmp_path: Path
) -> None:
    assert not await payloads.has_result(algorithm=ALGO, request_id=RUN)
    assert await payloads.get_result(algorithm=ALGO, request_id=RUN) is None
    await payloads.put_result(algorithm=ALGO, request_id=RUN, data=b"first")
    await payloads.put_result(algorithm=ALGO, request_id=RUN, data=b"\x00second\xff")
    assert await payloads.has_result(algorithm=ALGO, request_id=RUN)
    assert await payloads.get_result(algorithm=ALGO, request_id=RUN) == b"\x00second\xff"
    assert (tmp_path / "data" / "results" / f"algorithm={ALGO}" / RUN).is_file()
    assert await payloads.get_payload(algorithm=ALGO, request_id=RUN) is None


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../etc", "a/b", "a\\b", "/abs", ".hidden", "a\x00b", "x" * 254]
)
async def test_names_that_could_escape_root_are_refused(
    payloads: FilesystemPayloadStore, name: str
) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await payloads.put_payload(algorithm=name, request_id=RUN, data=b"x")
    with pytest.raises(ValueError, match="invalid"):
        await payloads.get_result(algorithm=ALGO, request_id=name)
    with pytest.raises(ValueError, match="invalid"):
        payloads.result_upload_url(algorithm=ALGO, request_id=name, valid_for=DAY)


URL_CASES: list[tuple[str, str, Callable[[str, str], str]]] = [
    ("payload_url", PAYLOAD_GET, payload_path),
    ("result_upload_url", RESULT_PUT, result_path),
    ("result_url", RESULT_GET, result_path),
]


@pytest.mark.parametrize(("method", "scope", "route"), URL_CASES)
def test_urls_are_well_formed_and_verify(
    payloads: FilesystemPayloadStore,
    method: str,
    scope: str,
    route: Callable[[str, str], str],
) -> None:
    url = getattr(payloads, method)(algorithm=ALGO, request_id=RUN, valid_for=DAY)
    parts = urlsplit(url)
    kind = "payloads" if scope == PAYLOAD_GET else "results"
    assert (parts.scheme, parts.netloc) == ("https", "nexus.example.test")
    assert parts.path == f"/prefix/data/v1/{kind}/{ALGO}/requests/{RUN}"
    query = dict(parse_qsl(parts.query, strict_parsing=True))
    assert set(query) == {"exp", "sig"}

    payloads.verify(scope, route(ALGO, RUN), query)  # the route path, without base_url's prefix
    other_scopes = {PAYLOAD_GET, RESULT_PUT, RESULT_GET} - {scope}
    for other in other_scopes:
        with pytest.raises(SignatureError, match="bad signature"):
            payloads.verify(other, route(ALGO, RUN), query)


def test_urls_expire(payloads: FilesystemPayloadStore, clock: ManualClock) -> None:
    url = payloads.result_upload_url(
        algorithm=ALGO, request_id=RUN, valid_for=dt.timedelta(minutes=5)
    )
    query = dict(parse_qsl(urlsplit(url).query))
    clock.advance(301)
    with pytest.raises(SignatureError, match="expired"):
        payloads.verify(RESULT_PUT, result_path(ALGO, RUN), query)


# --- garbage collection ----------------------------------------------------------------------


async def test_delete_run_removes_payload_and_result_and_is_idempotent(
    payloads: FilesystemPayloadStore,
) -> None:
    await payloads.put_payload(algorithm=ALGO, request_id=RUN, data=b"p")
    await payloads.put_result(algorithm=ALGO, request_id=RUN, data=b"r")
    await payloads.put_payload(algorithm=ALGO, request_id="other", data=b"keep")

    await payloads.delete_run(algorithm=ALGO, request_id=RUN)

    assert await payloads.get_payload(algorithm=ALGO, request_id=RUN) is None
    assert not await payloads.has_result(algorithm=ALGO, request_id=RUN)
    assert await payloads.get_payload(algorithm=ALGO, request_id="other") == b"keep"
    await payloads.delete_run(algorithm=ALGO, request_id=RUN)  # already gone: fine
    await payloads.delete_run(algorithm="never-seen", request_id=RUN)
    with pytest.raises(ValueError, match="invalid"):
        await payloads.delete_run(algorithm=ALGO, request_id="../escape")


def _age(tmp_path: Path, kind: str, algorithm: str, request_id: str, when: dt.datetime) -> None:
    path = tmp_path / "data" / kind / f"algorithm={algorithm}" / request_id
    os.utime(path, (when.timestamp(), when.timestamp()))


async def test_purge_older_than_deletes_by_mtime_and_respects_limit(
    payloads: FilesystemPayloadStore, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    cutoff = now - DAY
    old = [
        (kind, algorithm, f"old-{index}")
        for index in range(3)
        for kind, algorithm in (("payloads", ALGO), ("results", "other-algo"))
    ]
    new = [("payloads", ALGO, "new-0"), ("results", ALGO, "new-1")]
    for kind, algorithm, request_id in [*old, *new]:
        put = payloads.put_payload if kind == "payloads" else payloads.put_result
        await put(algorithm=algorithm, request_id=request_id, data=b"x")
    for index, (kind, algorithm, request_id) in enumerate(old):
        _age(tmp_path, kind, algorithm, request_id, cutoff - dt.timedelta(seconds=index + 1))
    _age(tmp_path, *new[0], cutoff)  # exactly at the cutoff: kept
    stray = tmp_path / "data" / "payloads" / "not-an-algorithm-dir"
    stray.write_bytes(b"left alone")
    os.utime(stray, (0, 0))

    assert await payloads.purge_older_than(before=cutoff, limit=4) == 4
    assert await payloads.purge_older_than(before=cutoff, limit=4) == 2
    assert await payloads.purge_older_than(before=cutoff) == 0

    for kind, algorithm, request_id in old:
        assert not (tmp_path / "data" / kind / f"algorithm={algorithm}" / request_id).exists()
    assert await payloads.get_payload(algorithm=ALGO, request_id="new-0") == b"x"
    assert await payloads.has_result(algorithm=ALGO, request_id="new-1")
    assert stray.exists()


async def test_purge_older_than_on_an_empty_store(
    payloads: FilesystemPayloadStore, tmp_path: Path
) -> None:
    assert not (tmp_path / "data").exists()
    assert await payloads.purge_older_than(before=dt.datetime.now(dt.UTC)) == 0
    with pytest.raises(ValueError, match="limit"):
        await payloads.purge_older_than(before=dt.datetime.now(dt.UTC), limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await payloads.purge_older_than(before=dt.datetime(2026, 1, 1))
