"""`Idempotency-Key` on the latest API's run and batch routes, over loopback.

The same key with the same request answers the first answer again (202, the same body,
`Idempotent-Replayed: true`) and stores nothing new; with a different request it is a 409
naming the key; the versioned SDK routes ignore the header. Concurrent duplicates, in one
scheduler and across two schedulers sharing PostgreSQL, get one run.

Real: `nexusd dev` on loopback (SQLite, or PostgreSQL on a throwaway server, and payload files),
the embedded cluster over HTTP with its scripted kubelet. Nothing is faked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import trio

from nexusd.devcluster import ANNOTATION_DURATION
from nexusd.modes import dev
from nexusd.stores.postgres_admin import migrate
from tests.conftest import StartNexus, dev_settings, template, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 40


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    return write_manifests(
        tmp_path / "manifests", template("slow", annotations={ANNOTATION_DURATION: "60"})
    )


@pytest.fixture
async def nexus(start_nexus: StartNexus, manifests: Path) -> Running:
    return await start_nexus(
        **{"dev.manifests": str(manifests), "http.max_idempotency_key": MAX_KEY}
    )


def run_body(tag: str, **parameters: Any) -> dict[str, Any]:
    return {"algorithmParameters": {"tag": tag, **parameters}, "tag": tag}


async def post(
    http: httpx.AsyncClient,
    url: str,
    body: Any,
    key: str | bytes | None,
    route: str = "/algorithm/run/slow",
    **params: str,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if key is not None:
        headers[KEY] = key
    return await http.post(f"{url}{route}", content=content, headers=headers, params=params)


async def tagged(http: httpx.AsyncClient, url: str, tag: str) -> list[str]:
    response = await http.get(f"{url}/algorithm/v1/results/tags/{tag}")
    assert response.status_code == 200, response.text
    return sorted(item["requestId"] for item in response.json())


async def test_a_retry_with_the_same_key_answers_the_first_run(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    body = run_body("retry", n=1, nested={"b": 2, "a": [1, 2]})
    first = await post(http, nexus.url, body, "key-1")
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    # the same request, serialised otherwise (key order, whitespace): the same request
    respelled = json.dumps(
        {
            "tag": "retry",
            "algorithmParameters": {"nested": {"a": [1, 2], "b": 2}, "n": 1, "tag": "retry"},
        },
        indent=2,
    ).encode()
    for again in (body, respelled):
        replay = await post(http, nexus.url, again, "key-1")
        assert replay.status_code == 202, replay.text
        assert replay.content == first.content
        assert replay.headers["content-type"] == first.headers["content-type"]
        assert replay.headers[REPLAYED] == "true"
    assert await tagged(http, nexus.url, "retry") == [first.json()["requestId"]]


async def test_the_same_key_with_another_request_is_a_409_naming_the_key(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    first = await post(http, nexus.url, run_body("conflict", n=1), "key-2")
    assert first.status_code == 202, first.text
    for other, params in (
        (run_body("conflict", n=2), {}),  # another value
        (run_body("conflict", n=1), {"dryRun": "true"}),  # a dry run is another request
    ):
        refused = await post(http, nexus.url, other, "key-2", **params)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("text/plain")
        assert "Idempotency-Key 'key-2'" in refused.text
        assert first.json()["requestId"] in refused.text
    # the batch route under the same key is another request too
    batch = await post(
        http, nexus.url, [run_body("conflict", n=1)], "key-2", "/algorithm/batch/slow"
    )
    assert batch.status_code == 409, batch.text
    assert await tagged(http, nexus.url, "conflict") == [first.json()["requestId"]]
    # keys are per algorithm: another algorithm's run may use it (and is refused for its own reason)
    unknown = await post(http, nexus.url, run_body("conflict"), "key-2", "/algorithm/run/nope")
    assert unknown.status_code == 400
    assert "No valid configuration found for: nope" in unknown.text


async def test_the_versioned_sdk_routes_ignore_the_header(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    for prefix in ("/algorithm/v1", "/algorithm/v1.2"):
        tag = "sdk" + prefix.rsplit("/", 1)[1].replace(".", "")
        ids = []
        for key in ("same", "same", "x" * (MAX_KEY + 1), "ü"):  # not even validated there
            response = await post(
                http, nexus.url, run_body(tag), key.encode(), f"{prefix}/run/slow"
            )
            assert response.status_code == 202, response.text
            assert list(response.json()) == ["requestId"]
            assert REPLAYED not in response.headers
            ids.append(response.json()["requestId"])
        assert len(set(ids)) == 4
        assert await tagged(http, nexus.url, tag) == sorted(ids)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (b"", "must not be empty"),
        (b"k" * (MAX_KEY + 1), f"longer than {MAX_KEY} characters (http.max_idempotency_key)"),
        ("clé".encode(), "printable ASCII"),
        (b"tab\there", "printable ASCII"),
    ],
    ids=["empty", "too-long", "not-ascii", "control"],
)
@pytest.mark.parametrize("route", ["/algorithm/run/slow", "/algorithm/batch/slow"])
async def test_a_bad_key_is_a_400_naming_the_header(
    nexus: Running, http: httpx.AsyncClient, key: bytes, problem: str, route: str
) -> None:
    body: Any = run_body("bad-key")
    if route.startswith("/algorithm/batch"):
        body = [body]
    response = await post(http, nexus.url, body, key, route)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("Idempotency-Key ")
    assert problem in response.text
    assert await tagged(http, nexus.url, "bad-key") == []
    longest = await post(http, nexus.url, body, b"k" * MAX_KEY + b" ~", route)
    assert longest.status_code == 400  # MAX_KEY + 2 characters
    fits = await post(http, nexus.url, body, b"k ~" + b"k" * (MAX_KEY - 3), route)
    assert fits.status_code == 202, fits.text


async def test_a_batch_replay_answers_the_whole_first_answer(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    batch = [run_body("batch", n=1), {"algorithmParameters": 5}, run_body("batch", n=2)]
    first = await post(http, nexus.url, batch, "batch-1", "/algorithm/batch/slow")
    assert first.status_code == 202, first.text
    answer = first.json()
    assert (answer["accepted"], answer["refused"]) == (2, 1)
    assert answer["runs"][1]["status"] == 400
    replay = await post(http, nexus.url, batch, "batch-1", "/algorithm/batch/slow")
    assert replay.status_code == 202, replay.text
    assert replay.json() == answer
    assert replay.headers[REPLAYED] == "true"
    accepted = sorted(item["requestId"] for item in answer["runs"] if "requestId" in item)
    assert await tagged(http, nexus.url, "batch") == accepted

    changed = await post(http, nexus.url, batch[:2], "batch-1", "/algorithm/batch/slow")
    assert changed.status_code == 409, changed.text
    assert "Idempotency-Key 'batch-1'" in changed.text
    single = await post(http, nexus.url, batch[0], "batch-1")
    assert single.status_code == 409, single.text
    assert await tagged(http, nexus.url, "batch") == accepted


async def test_a_batch_that_accepted_nothing_holds_no_key(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    refused = await post(
        http, nexus.url, [{"algorithmParameters": 5}], "batch-2", "/algorithm/batch/slow"
    )
    assert refused.status_code == 400, refused.text
    # nothing was stored under the key, so another request may take it
    accepted = await post(
        http, nexus.url, [run_body("batch-2")], "batch-2", "/algorithm/batch/slow"
    )
    assert accepted.status_code == 202, accepted.text
    assert REPLAYED not in accepted.headers


async def test_concurrent_duplicates_get_one_run(nexus: Running, http: httpx.AsyncClient) -> None:
    answers: list[httpx.Response] = []

    async def submit() -> None:
        answers.append(await post(http, nexus.url, run_body("race"), "race-1"))

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(submit)
    assert {response.status_code for response in answers} == {202}
    ids = {response.json()["requestId"] for response in answers}
    assert len(ids) == 1
    assert sum(REPLAYED in response.headers for response in answers) == 11
    assert await tagged(http, nexus.url, "race") == sorted(ids)


async def test_two_schedulers_sharing_postgres_give_one_run_for_one_key(
    nursery: trio.Nursery,
    tmp_path: Path,
    manifests: Path,
    postgres_dsn: str,
    http: httpx.AsyncClient,
) -> None:
    await migrate(postgres_dsn)
    schedulers: list[Running] = []
    for n in range(2):
        settings = dev_settings(
            tmp_path / f"data-{n}",
            **{
                "dev.manifests": str(manifests),
                "store.kind": "postgres",
                "postgres.dsn": postgres_dsn,
                "node.host_name": f"scheduler-{n}",
            },
        )
        schedulers.append(await nursery.start(dev.run, settings))
    answers: list[httpx.Response] = []

    async def submit(url: str) -> None:
        answers.append(await post(http, url, run_body("shared"), "shared-1"))

    async with trio.open_nursery() as racers:
        for n in range(10):
            racers.start_soon(submit, schedulers[n % 2].url)
    assert {response.status_code for response in answers} == {202}, [r.text for r in answers]
    ids = {response.json()["requestId"] for response in answers}
    assert len(ids) == 1
    for running in schedulers:
        assert await tagged(http, running.url, "shared") == sorted(ids)
        different = await post(http, running.url, run_body("shared", n=2), "shared-1")
        assert different.status_code == 409, different.text
