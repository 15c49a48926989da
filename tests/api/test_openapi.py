"""The OpenAPI 3.1 document and docs page of every served version: valid documents (checked
by openapi-spec-validator) listing exactly the routes the process serves, whose answers are
the ones real requests get (status, content type, version header, body schema).

Real: `nexusd dev` on loopback with SQLite and payload files, and the embedded cluster over
HTTP with its scripted kubelet. The scheduler-only and receiver-only route sets are read from
the app of that mode through Quart's test client (building the app needs no backend).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from openapi_spec_validator import validate

from nexusd.api.app import create_app
from nexusd.api.context import AppContext, Readiness
from nexusd.api.versions import HEADER, VERSIONS, ApiVersion
from nexusd.devcluster import ANNOTATION_DURATION
from tests.api.test_versions import receiver_url
from tests.conftest import StartNexus, template, wait_for_stage, write_manifests

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from nexusd.modes.services import Running

SCHEDULER = {"run", "batch", "cancel", "results", "metadata", "buffer", "payload"}
RECEIVER = {"complete", "check"}
DOCS = {"openapi.json", "docs"}


@pytest.fixture
async def nexus(start_nexus: StartNexus, tmp_path: Path) -> Running:
    manifests = write_manifests(
        tmp_path / "manifests", template("slow", annotations={ANNOTATION_DURATION: "60"})
    )
    return await start_nexus(**{"dev.manifests": str(manifests)})


async def fetch_document(http: httpx.AsyncClient, url: str, version: ApiVersion) -> Any:
    response = await http.get(f"{url}{version.prefix}/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers[HEADER] == version.name
    return response.json()


def route_names(document: dict[str, Any], version: ApiVersion) -> set[str]:
    """The first path segment after the version prefix of every documented route."""
    return {path.removeprefix(version.prefix + "/").split("/")[0] for path in document["paths"]}


@pytest.mark.parametrize("version", VERSIONS, ids=lambda version: version.name)
async def test_the_dev_document_is_valid_and_lists_every_route(
    nexus: Running, http: httpx.AsyncClient, version: ApiVersion
) -> None:
    document = await fetch_document(http, nexus.url, version)
    validate(document)
    assert document["openapi"] == "3.1.0"
    expected = SCHEDULER | RECEIVER | DOCS
    assert route_names(document, version) == (
        expected if version.experimental else expected - {"batch"}
    )
    operations = [op for methods in document["paths"].values() for op in methods.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    links = [
        link
        for op in operations
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert links  # an accepted run leads to its other routes
    assert {link["operationId"] for link in links} <= set(ids)


@pytest.mark.parametrize(
    ("scheduler", "receiver", "expected"),
    [(True, False, SCHEDULER | DOCS), (False, True, RECEIVER | DOCS)],
    ids=["scheduler", "receiver"],
)
@pytest.mark.parametrize("version", VERSIONS, ids=lambda version: version.name)
async def test_each_mode_documents_only_the_routes_it_serves(
    scheduler: bool, receiver: bool, expected: set[str], version: ApiVersion
) -> None:
    app = create_app(AppContext(readiness=Readiness()), scheduler=scheduler, receiver=receiver)
    response = await app.test_client().get(f"{version.prefix}/openapi.json")
    document = await response.get_json()
    validate(document)
    if not version.experimental:
        expected = expected - {"batch"}
    assert route_names(document, version) == expected


@pytest.mark.parametrize("version", VERSIONS, ids=lambda version: version.name)
async def test_idempotency_key_is_documented_only_on_latest(
    nexus: Running, http: httpx.AsyncClient, version: ApiVersion
) -> None:
    document = await fetch_document(http, nexus.url, version)
    with_key = {
        (path.removeprefix(version.prefix), method)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if any(p["name"] == "Idempotency-Key" for p in operation["parameters"])
    }
    if version.experimental:
        assert with_key == {("/run/{algorithm}", "post"), ("/batch/{algorithm}", "post")}
    else:
        assert with_key == set()


class Conformance:
    """Checks real answers against one version's document: the status code and content type
    are documented for the route, the version header is there, the body fits the schema."""

    def __init__(self, document: dict[str, Any], version: ApiVersion) -> None:
        self.document = document
        self.version = version
        self.schema = schemathesis.openapi.from_dict(document)
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, response: httpx.Response) -> None:
        method = response.request.method.lower()
        path = re.sub(r"^/t/[^/]+", "", response.request.url.path)  # a completion token
        template = self._template(path)
        responses = self.document["paths"][template][method]["responses"]
        status = str(response.status_code)
        assert status in responses, (method, path, status, response.text)
        media_type = response.headers["Content-Type"].split(";")[0]
        assert media_type in responses[status]["content"], (method, path, media_type)
        assert response.headers[HEADER] == self.version.name
        self.schema[template][method.upper()].validate_response(response)
        self.checked.add((template, method, response.status_code))

    def _template(self, path: str) -> str:
        for documented in self.document["paths"]:
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(documented))
            if "{tag}" in documented:
                pattern = pattern.replace("[^/]+", ".+")
            if re.fullmatch(pattern, path):
                return documented
        raise AssertionError(f"{path} is not documented")


@pytest.mark.parametrize("version", VERSIONS, ids=lambda version: version.name)
async def test_real_answers_are_the_documented_ones(
    nexus: Running, http: httpx.AsyncClient, version: ApiVersion
) -> None:
    conformance = Conformance(await fetch_document(http, nexus.url, version), version)
    api = f"{nexus.url}{version.prefix}"

    async def call(method: str, path: str, *, base: str = api, **kwargs: Any) -> httpx.Response:
        response = await http.request(method, base + path, **kwargs)
        conformance.check(response)
        return response

    parent = await call("POST", "/run/slow", json={"algorithmParameters": {"p": 1}})
    parent_id = parent.json()["requestId"]
    await wait_for_stage(http, nexus.url, "slow", parent_id, "RUNNING")
    receiver = await receiver_url(nexus, http, parent_id) + version.prefix
    child = await call(
        "POST",
        "/run/slow",
        params={"dryRun": "true"},
        json={
            "algorithmParameters": {"c": [1, 2]},
            "tag": "docs/tag",
            "customConfiguration": {"container": {"versionTag": "2.0.0"}},
            "parentRequest": {"requestId": parent_id, "algorithmName": "slow"},
        },
    )
    child_id = child.json()["requestId"]
    await call("POST", "/run/slow", content=b"{")
    await call("POST", "/run/nope", json={"algorithmParameters": {}})
    for request_id in (parent_id, child_id, "nope"):
        await call("GET", f"/results/slow/requests/{request_id}")
        await call("GET", f"/metadata/slow/requests/{request_id}")
        await call("GET", f"/buffer/slow/requests/{request_id}")
        await call("GET", f"/payload/slow/requests/{request_id}")
        await call("GET", f"/check/slow/requests/{request_id}")
    await call("GET", "/results/tags/docs/tag")
    await call("POST", f"/metadata/tags/slow/requests/{child_id}", json={"newTag": "other"})
    await call("POST", f"/metadata/tags/slow/requests/{child_id}", json={})
    await call("GET", f"/check/slow/requests/{parent_id}", base=receiver)
    await call("POST", f"/complete/slow/requests/{parent_id}", base=receiver, content=b"[]")
    done = {"resultUri": "https://r", "errorCause": "", "errorDetails": ""}
    await call("POST", f"/complete/slow/requests/{parent_id}", base=receiver, json=done)
    await call("POST", f"/complete/slow/requests/{parent_id}", base=receiver, json={})
    await call("GET", f"/check/slow/requests/{parent_id}", base=receiver)
    await call("POST", "/complete/slow/requests/nope", json={})
    await call("POST", f"/cancel/slow/requests/{child_id}", json={"cancellationPolicy": "x"})
    await call("POST", "/cancel/slow/requests/nope", json={})
    await call("GET", "/openapi.json")
    await call("GET", "/docs")
    if version.experimental:
        batch = [{"algorithmParameters": {}}, {"tag": "no parameters"}]
        await call("POST", "/batch/slow", json=batch)
        await call("POST", "/batch/slow", json=[{}])
        await call("POST", "/batch/slow", json={})
    checked = {
        (path.removeprefix(version.prefix), method, status)
        for path, method, status in conformance.checked
    }
    ids = "{algorithm}/requests/{request_id}"
    assert {
        ("/run/{algorithm}", "post", 202),
        ("/run/{algorithm}", "post", 400),
        (f"/results/{ids}", "get", 200),
        (f"/metadata/{ids}", "get", 200),
        (f"/buffer/{ids}", "get", 200),
        (f"/payload/{ids}", "get", 302),
        ("/results/tags/{tag}", "get", 200),
        (f"/metadata/tags/{ids}", "post", 200),
        (f"/check/{ids}", "get", 200),
        (f"/complete/{ids}", "post", 202),
        (f"/complete/{ids}", "post", 400),
        (f"/cancel/{ids}", "post", 404),
    } <= checked, checked


async def test_the_docs_page_shows_every_operation_without_outside_resources(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    for version in VERSIONS:
        document = await fetch_document(http, nexus.url, version)
        response = await http.get(f"{nexus.url}{version.prefix}/docs")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers[HEADER] == version.name
        page = response.text
        for path, methods in document["paths"].items():
            for method in methods:
                assert f"<code>{method.upper()} {path}</code>" in page
        assert "<script" not in page
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched


async def test_with_bearer_auth_on_the_document_says_which_routes_need_a_token(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("docs-0123456789abcdef\n")
    nexus = await start_nexus(**{"auth.token_file": str(tokens)})
    version = VERSIONS[0]
    document = await fetch_document(http, nexus.url, version)  # the documents stay open
    validate(document)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    run = document["paths"][f"{version.prefix}/run/{{algorithm}}"]["post"]
    assert run["security"] == [{"bearer": []}]
    assert {"401", "403"} <= run["responses"].keys()
    assert "WWW-Authenticate" in run["responses"]["401"]["headers"]
    # the receiver's routes are guarded by completion tokens, not bearer tokens
    complete = document["paths"][f"{version.prefix}/complete/{{algorithm}}/requests/{{request_id}}"]
    assert "security" not in complete["post"]
    # and a token-less call really gets the documented 401
    refused = await http.post(f"{nexus.url}{version.prefix}/run/hello", json={})
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("text/plain")


async def test_without_auth_no_route_declares_a_token(
    nexus: Running, http: httpx.AsyncClient
) -> None:
    document = await fetch_document(http, nexus.url, VERSIONS[0])
    assert "components" not in document
    operations = [op for methods in document["paths"].values() for op in methods.values()]
    assert not any("security" in op or "401" in op["responses"] for op in operations)
