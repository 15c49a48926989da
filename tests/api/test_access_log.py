"""The access log: one line per request on `nexusd.access`, naming the run it is about.

Real: `nexusd dev` on loopback (hypercorn, the ASGI stack `serve_http` builds, SQLite, the
embedded cluster), requests from an httpx client over one keep-alive connection; the lines
are formatted by the handler `nexusd.logs` gives every mode, into a buffer.
"""

from __future__ import annotations

import io
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import pytest

from nexusd.logs import make_handler

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from tests.conftest import StartNexus


class Capture:
    def __init__(self) -> None:
        self.plain = io.StringIO()
        self.json = io.StringIO()

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.json.getvalue().splitlines()]

    def lines(self) -> list[str]:
        return self.plain.getvalue().splitlines()


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Iterator[Capture]:
    """The `nexusd.access` lines, in both formats."""
    caplog.set_level(logging.INFO, logger="nexusd.access")
    capture = Capture()
    handlers = [
        make_handler(fmt="plain", mode="dev", stream=capture.plain),
        make_handler(fmt="json", mode="dev", stream=capture.json),
    ]
    logger = logging.getLogger("nexusd.access")
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield capture
    finally:
        for handler in handlers:
            logger.removeHandler(handler)


async def test_every_request_is_one_line_naming_its_run(
    start_nexus: StartNexus, http: httpx.AsyncClient, access: Capture
) -> None:
    nexus = await start_nexus()
    url = nexus.url
    accepted = await http.post(f"{url}/algorithm/v1/run/hello", json={"algorithmParameters": {}})
    assert accepted.status_code == 202
    request_id = accepted.json()["requestId"]
    results = f"{url}/algorithm/v1/results/hello/requests/{request_id}"
    assert (await http.get(results)).status_code == 200
    assert (await http.get(f"{url}/healthz")).status_code == 200  # same connection, no run
    assert (await http.get(f"{url}/nowhere?x=1")).status_code == 404
    # Refused by the body budget before the app sees it: logged all the same.
    too_big = await http.post(
        f"{url}/algorithm/v1/run/hello", content=b"x" * (nexus.context.max_payload_size + 1)
    )
    assert too_big.status_code == 413

    documents = [d for d in access.documents() if d["http"]["path"] != "/readyz"]
    assert [(d["http"]["method"], d["http"]["path"], d["http"]["status"]) for d in documents] == [
        ("POST", "/algorithm/v1/run/hello", 202),
        ("GET", f"/algorithm/v1/results/hello/requests/{request_id}", 200),
        ("GET", "/healthz", 200),
        ("GET", "/nowhere?x=1", 404),
        ("POST", "/algorithm/v1/run/hello", 413),
    ]
    for document in documents:
        assert document["logger"] == "nexusd.access"
        assert document["level"] == "INFO"
        assert document["http"]["duration_ms"] > 0
        assert re.fullmatch(r"127\.0\.0\.1:\d+", document["http"]["remote"])
    posted, read, health, missing, refused = documents
    for document in (posted, read):
        assert (document["request_id"], document["algorithm"]) == (request_id, "hello")
    for document in (health, missing):
        assert "request_id" not in document
        assert "algorithm" not in document
    assert "request_id" not in refused  # never reached a route

    lines = [line for line in access.lines() if " /readyz " not in line]
    assert len(lines) == 5
    assert re.search(
        r" INFO +dev nexusd\.access: POST /algorithm/v1/run/hello 202 \d+\.\dms from "
        rf"127\.0\.0\.1:\d+ \[request_id={request_id} algorithm=hello\]$",
        lines[0],
    ), lines[0]
    assert re.search(r"nexusd\.access: GET /healthz 200 \d+\.\dms from 127\.0\.0\.1:\d+$", lines[2])


async def test_the_access_log_can_be_turned_off(
    start_nexus: StartNexus, http: httpx.AsyncClient, access: Capture
) -> None:
    nexus = await start_nexus(**{"http.access_log": False})
    assert (await http.get(f"{nexus.url}/healthz")).status_code == 200
    assert access.lines() == []


async def test_tokens_and_signatures_are_not_logged(
    start_nexus: StartNexus, http: httpx.AsyncClient, access: Capture
) -> None:
    nexus = await start_nexus()
    token_path = "/t/SECRET-TOKEN/algorithm/v1/check/hello/requests/nope"
    await http.get(f"{nexus.url}{token_path}")
    await http.get(f"{nexus.url}/data/v1/payloads/hello/requests/nope?exp=1&sig=SECRET-SIG")
    # a line is written once its request's handler has returned: the next request on the
    # same connection is read after that
    await http.get(f"{nexus.url}/healthz")
    skipped = {"/readyz", "/healthz"}
    paths = [d["http"]["path"] for d in access.documents() if d["http"]["path"] not in skipped]
    assert paths == [
        "/t/<redacted>/algorithm/v1/check/hello/requests/nope",
        "/data/v1/payloads/hello/requests/nope?exp=1&sig=<redacted>",
    ]
    assert "SECRET" not in access.plain.getvalue()
