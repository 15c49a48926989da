"""OpenAPI 3.1 documents, one per served API version, built from the app's own routes.

Each handler declares what it reads and answers with `@operation(...)` right under its route
decorator (the schemas are in `nexusd.api.schemas`). `document(app, version)` walks the routes
the app really mounted for that version (`nexusd.api.versions`), so a scheduler's document
lists the scheduler's routes, a receiver's the receiver's, and `nexusd dev` both; a route is
described once and appears under every version that serves it. A versioned route without a
declaration is an error when the document is built (tests build every document).

Answers every route can give are added here rather than repeated per handler: 503 when the
checkpoint store is unavailable (`api.app`), and for a route with a request body 413 (too
large) and 429 (the process holds `http.max_body_memory` of bodies already), both of which
the ASGI guard (`api.asgi`) may give before the app sees the request, so without the
`Nexus-Api-Version` header. When the process checks bearer tokens (`auth.token_file` or
`auth.jwks`), every route that needs one (`api.auth.needs_bearer`) declares the bearer security
scheme and its 401 and 403, which the auth middleware gives before the app as well.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from nexusd.api.auth import needs_bearer
from nexusd.api.schemas import PATH_PARAMETERS, TEXT
from nexusd.api.versions import HEADER, VERSIONS, version_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from quart import Quart
    from werkzeug.routing import Rule

    from nexusd.api.schemas import Schema
    from nexusd.api.versions import ApiVersion

View = TypeVar("View", bound="Callable[..., Any]")

#: The attribute `@operation` sets on a handler.
DECLARATION = "__nexusd_operation__"
OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
PLAIN = "text/plain"
_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_RETRY_AFTER: Schema = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 0},
}


@attrs.frozen
class Answer:
    """One response: its media types with their body schemas, and its headers."""

    description: str
    content: Mapping[str, Schema] = attrs.field(factory=dict)
    headers: Mapping[str, Schema] = attrs.field(factory=dict)
    #: it can come from the ASGI guard, before the app (and its version header)
    before_app: bool = False
    #: OpenAPI links: the operations a client calls next with what this answer holds
    links: Mapping[str, Schema] = attrs.field(factory=dict)

    def __or__(self, other: Answer) -> Answer:
        """The same status code with either body (e.g. a JSON verdict or a text refusal), or
        with more headers (an answer without a description adds only its headers)."""
        return Answer(
            description="; or ".join(filter(None, (self.description, other.description))),
            content={**self.content, **other.content},
            headers={**self.headers, **other.headers},
            before_app=self.before_app or other.before_app,
            links={**self.links, **other.links},
        )


def json_answer(description: str, schema: Schema, **links: Schema) -> Answer:
    return Answer(description=description, content={JSON: schema}, links=links)


def link(operation_id: str, description: str, **parameters: str) -> Schema:
    """An OpenAPI link to `operation_id` (a handler's name), its parameters given by runtime
    expressions such as `$response.body#/requestId`."""
    return {"operationId": operation_id, "description": description, "parameters": parameters}


def text_answer(description: str, *, retry_after: bool = False, **headers: Schema) -> Answer:
    """A text/plain answer, upstream's shape for every refusal (the body is the message)."""
    if retry_after:
        headers["Retry-After"] = _RETRY_AFTER
    return Answer(description=description, content={PLAIN: TEXT}, headers=headers)


@attrs.frozen
class Operation:
    """What one handler reads and answers, as `@operation` declares it."""

    summary: str
    tag: str
    responses: Mapping[int, Answer]
    description: str = ""
    #: query and header parameters (path parameters come from the route itself)
    parameters: tuple[Schema, ...] = ()
    #: the JSON request body, if the route reads one (always required: an empty body is a 400)
    body: Schema | None = None
    #: parameters and answers only the versions with the experimental extensions have
    experimental_parameters: tuple[Schema, ...] = ()
    experimental_responses: Mapping[int, Answer] = attrs.field(factory=dict)


def operation(
    *,
    summary: str,
    tag: str,
    responses: Mapping[int, Answer],
    description: str = "",
    parameters: Iterable[Schema] = (),
    body: Schema | None = None,
    experimental_parameters: Iterable[Schema] = (),
    experimental_responses: Mapping[int, Answer] | None = None,
) -> Callable[[View], View]:
    """Declare a handler's OpenAPI operation; put it under the route decorator."""
    declared = Operation(
        summary=summary,
        tag=tag,
        responses=responses,
        description=description,
        parameters=tuple(parameters),
        body=body,
        experimental_parameters=tuple(experimental_parameters),
        experimental_responses=experimental_responses or {},
    )

    def declare(view: View) -> View:
        setattr(view, DECLARATION, declared)
        return view

    return declare


def declaration(view: Callable[..., Any]) -> Operation | None:
    found: Operation | None = getattr(view, DECLARATION, None)
    return found


#: What every versioned route may answer.
_STORE_UNAVAILABLE = text_answer("The checkpoint store is unavailable", retry_after=True)
#: What every route that reads a body may answer, possibly from the ASGI guard.
_TOO_LARGE = attrs.evolve(
    text_answer("The request body is larger than http.max_payload_size"), before_app=True
)
_BODIES_IN_FLIGHT = attrs.evolve(
    text_answer(
        "This process holds http.max_body_memory of request bodies already", retry_after=True
    ),
    before_app=True,
)

#: What a route behind bearer auth may answer (`api.auth`), before the app.
_UNAUTHENTICATED = attrs.evolve(
    text_answer("No valid bearer token; the body says why"),
    headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    before_app=True,
)
_FORBIDDEN = attrs.evolve(
    text_answer("The bearer token is valid but lacks auth.required_scope"), before_app=True
)
BEARER = "bearer"


def document(app: Quart, version: ApiVersion) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes `app` serves under `version`."""
    paths: dict[str, dict[str, Any]] = {}
    tags: set[str] = set()
    context = app.config.get("NEXUSD")
    authenticated = getattr(context, "bearer", None) is not None
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if version_of(rule.endpoint) != version:
            continue
        declared = declaration(app.view_functions[rule.endpoint])
        if declared is None:
            raise LookupError(f"route {rule.rule} ({rule.endpoint}) has no @operation")
        tags.add(declared.tag)
        guarded = authenticated and needs_bearer(_path(rule))
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(_path(rule), {})[method.lower()] = _operation(
                rule, declared, version, guarded=guarded
            )
    rendered: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"nexusd API {version.name}",
            "version": version.name,
            "description": f"{version.summary} Served versions: "
            + ", ".join(f"{served.name} at {served.prefix}" for served in VERSIONS)
            + f". Every answer of these routes names the version in its {HEADER} header.",
        },
        "tags": [{"name": tag} for tag in sorted(tags)],
        "paths": paths,
    }
    if authenticated:
        rendered["components"] = {"securitySchemes": {BEARER: {"type": "http", "scheme": "bearer"}}}
    return rendered


def _path(rule: Rule) -> str:
    """`/algorithm/v1/results/tags/<path:tag>` as `/algorithm/v1/results/tags/{tag}`."""
    return _ARGUMENT.sub(r"{\1}", rule.rule)


def _operation(
    rule: Rule, declared: Operation, version: ApiVersion, *, guarded: bool
) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, **PATH_PARAMETERS[name]}
        for name in _ARGUMENT.findall(rule.rule)
    ]
    parameters += declared.parameters
    responses = dict(declared.responses)
    more = {503: _STORE_UNAVAILABLE}
    if declared.body is not None:
        more |= {413: _TOO_LARGE, 429: _BODIES_IN_FLIGHT}
    if guarded:
        more |= {401: _UNAUTHENTICATED, 403: _FORBIDDEN}
    if version.experimental:
        parameters += declared.experimental_parameters
        for status, answer in declared.experimental_responses.items():
            more[status] = more[status] | answer if status in more else answer
    for status, answer in more.items():
        responses[status] = responses[status] | answer if status in responses else answer
    rendered: dict[str, Any] = {
        "operationId": rule.endpoint.rsplit(".", 1)[-1],
        "tags": [declared.tag],
        "summary": declared.summary,
        "parameters": parameters,
        "responses": {
            str(status): _response(responses[status], version) for status in sorted(responses)
        },
    }
    if declared.description:
        rendered["description"] = declared.description
    if guarded:
        rendered["security"] = [{BEARER: []}]
    if declared.body is not None:
        rendered["requestBody"] = {"required": True, "content": {JSON: {"schema": declared.body}}}
    return rendered


def _response(answer: Answer, version: ApiVersion) -> dict[str, Any]:
    stamp = {
        "description": "The API version that served the request.",
        "required": not answer.before_app,
        "schema": {"type": "string", "const": version.name},
    }
    rendered: dict[str, Any] = {
        "description": answer.description,
        "headers": {HEADER: stamp, **answer.headers},
    }
    if answer.content:
        rendered["content"] = {
            media_type: {"schema": schema} for media_type, schema in answer.content.items()
        }
    if answer.links:
        rendered["links"] = dict(answer.links)
    return rendered
