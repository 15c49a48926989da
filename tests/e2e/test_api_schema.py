"""The HTTP API answers as its own OpenAPI documents say, for requests schemathesis generates.

Real: `nexusd dev --kubelet scripted` as a process (scheduler + receiver + maintainer, SQLite,
payload files, the embedded cluster), each served version's document fetched from it, every
request sent over loopback. Nothing is faked. Per operation, hypothesis generates valid
requests, invalid ones (parameters and bodies the document rules out) and valid ones naming
the bundled `hello` algorithm, then a stateful exploration follows the document's links from
accepted runs to their other routes. Generation is derandomized (a fixed seed) and bounded.
Every answer must be no 5xx, and its status code, content type, headers and body must be the
documented ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hypothesis
import requests
import schemathesis
import trio
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nexusd.api.versions import VERSIONS
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from hypothesis.strategies import SearchStrategy
    from schemathesis import APIOperation, Case

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Generated requests per operation and kind (valid, invalid, `hello`) under the latest API,
#: and under v1 and v1.2, whose routes are the same handlers (tests/api/test_versions.py shows
#: they answer alike): about a thousand requests in all, well under a minute.
MAX_EXAMPLES = {"latest": 15, "v1": 5, "v1.2": 5}
#: Scenarios of the stateful exploration, and the most calls in one.
SCENARIOS = 20
STEPS = 8
SETTINGS = hypothesis.settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def load(url: str, **config: Any) -> schemathesis.BaseSchema:
    """The document at `url`, with no configuration but `config` (no schemathesis.toml of the
    working directory)."""
    return schemathesis.openapi.from_url(url, config=schemathesis.Config.from_dict(config))


def fuzz(base_url: str) -> list[str]:
    """Every failure found, one report per operation and mode (hypothesis shrinks each to its
    smallest example), then the stateful exploration's."""
    failures: list[str] = []
    with requests.Session() as session:
        for version in VERSIONS:
            schema = load(f"{base_url}{version.prefix}/openapi.json")
            for result in schema.get_all_operations():
                operation = result.ok()
                for name, strategy in _strategies(operation):
                    failure = _fuzz(strategy, MAX_EXAMPLES[version.name], base_url, session)
                    if failure:
                        failures.append(f"{version.name} {operation.label} ({name}): {failure}")
        failure = explore(base_url, session)
        if failure:
            failures.append(f"stateful: {failure}")
    return failures


def explore(base_url: str, session: requests.Session) -> str | None:
    """Follow the document's links: runs of the bundled `hello` submitted, then their result,
    metadata, Job manifest, payload, cancellation and re-tagging, with the ids the 202s gave."""
    schema = load(f"{base_url}/algorithm/openapi.json", parameters={"algorithm": "hello"})

    class Explore(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": base_url, "session": session}

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            kwargs.pop("additional_checks", None)
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    settings = hypothesis.settings(SETTINGS, max_examples=SCENARIOS, stateful_step_count=STEPS)
    try:
        Explore.run(settings=settings)
    except BaseExceptionGroup as group:
        return str(group)
    return None


def _strategies(operation: APIOperation) -> Iterator[tuple[str, SearchStrategy[Case]]]:
    """Valid requests, invalid ones, and valid ones naming the bundled `hello` algorithm (a
    generated name is never a template, so only these reach the 202s)."""
    yield "valid", operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    yield "invalid", operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    if "{algorithm}" in operation.path:
        yield "hello", operation.as_strategy(path_parameters={"algorithm": "hello"})


def _fuzz(
    strategy: SearchStrategy[Case], examples: int, base_url: str, session: requests.Session
) -> str | None:
    @hypothesis.settings(SETTINGS, max_examples=examples)
    @hypothesis.given(case=strategy)
    def check(case: Case) -> None:
        case.call_and_validate(base_url=base_url, session=session, checks=CHECKS)

    try:
        check()
    except hypothesis.errors.Unsatisfiable:  # no invalid request: no parameter, no body
        pass
    except BaseExceptionGroup as group:  # schemathesis' FailureGroup: the failure report
        return str(group)
    return None


async def test_every_answer_matches_the_served_document(tmp_path: Path) -> None:
    async with nexusd_process(
        "dev",
        "--kubelet",
        "scripted",
        "--data-dir",
        str(tmp_path / "data"),
        env={},
        cwd=tmp_path,
        log=tmp_path / "dev.log",
    ) as dev:
        failures = await trio.to_thread.run_sync(fuzz, dev.url)
    assert not failures, "\n\n".join(failures)
