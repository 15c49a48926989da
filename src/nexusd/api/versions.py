"""The served API versions: one table, which mounts the scheduler's and the receiver's routes.

| version  | prefix             | what it is                                                     |
|----------|--------------------|----------------------------------------------------------------|
| `v1.2`   | `/algorithm/v1.2`  | production upstream before 2025-08; the old Go receiver client |
| `v1`     | `/algorithm/v1`    | what the published SDKs call (contract §0.1)                   |
| `latest` | `/algorithm`       | the v1 routes plus the experimental extensions (batch, ...)    |

`v1.2` and `v1` are one wire contract: the same handlers, the same bodies, byte for byte. The
unversioned `latest` adds the routes and request headers marked experimental. `v1.0`, the
pre-2025 .NET API, is not served: the reference (contract §1.2) names it but records none of
its routes or bodies, so there is nothing to be compatible with. Any version not in the table
(`/algorithm/v1.0/...`, `/algorithm/v9/...`) answers 404 text/plain naming the served ones.

Every response of a versioned route carries the version it was served under in the
`Nexus-Api-Version` header, never in the body (the SDKs require the bodies as they are).
Each version is one parent blueprint named by `ApiVersion.key`; a handler learns the version
it serves from its endpoint (`current_version`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from quart import Blueprint, Response, request
from werkzeug.routing import BaseConverter, ValidationError

from nexusd.api.responses import text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from quart import Quart

HEADER = "Nexus-Api-Version"


@attrs.frozen
class ApiVersion:
    """One row of the table."""

    #: as in the URL and the `Nexus-Api-Version` header
    name: str
    #: the URL prefix its routes are mounted under
    prefix: str
    #: whether it serves the experimental extensions (routes, request headers)
    experimental: bool
    summary: str

    @property
    def key(self) -> str:
        """Its blueprint name (blueprint names cannot hold dots), the first part of the
        endpoint of each of its routes."""
        return "api_" + self.name.replace(".", "_")


V1_2 = ApiVersion(
    name="v1.2",
    prefix="/algorithm/v1.2",
    experimental=False,
    summary="Production v1 wire contract, under upstream's former production prefix (the old "
    "Go receiver client calls /algorithm/v1.2/complete/...).",
)
V1 = ApiVersion(
    name="v1",
    prefix="/algorithm/v1",
    experimental=False,
    summary="The v1 wire contract as the published SDKs call it.",
)
LATEST = ApiVersion(
    name="latest",
    prefix="/algorithm",
    experimental=True,
    summary="The latest API: the v1 routes plus the experimental extensions (batch submission, "
    "Idempotency-Key), which may still change.",
)
#: Every served version, production first.
VERSIONS: tuple[ApiVersion, ...] = (V1_2, V1, LATEST)
_BY_KEY = {version.key: version for version in VERSIONS}


def version_of(endpoint: str | None) -> ApiVersion | None:
    """The version an endpoint (`api_v1_2.runs.create_run`) is served under, if any."""
    if endpoint is None:
        return None
    return _BY_KEY.get(endpoint.split(".", 1)[0])


def current_version() -> ApiVersion | None:
    """The version the current request is served under (None outside the versioned routes):
    what a handler asks to honour an experimental extension only on `latest`."""
    return version_of(request.endpoint)


def _supported() -> str:
    """The served versions, as a 404 names them."""
    named = [f"{version.prefix} ({version.name})" for version in VERSIONS]
    return ", ".join(named)


def register(
    app: Quart,
    *,
    stable: Sequence[Blueprint],
    experimental: Sequence[Blueprint],
    meta: Sequence[Blueprint] = (),
) -> None:
    """Mount `stable` under every version, `experimental` only under those that serve the
    extensions, and `meta` (each version's OpenAPI document and docs page) under every
    version; then answer unsupported versions with a 404 naming the served ones."""
    for version in VERSIONS:
        parent = Blueprint(version.key, __name__, url_prefix=version.prefix)
        for blueprint in (*stable, *(experimental if version.experimental else ()), *meta):
            parent.register_blueprint(blueprint)
        parent.after_request(_stamp(version))
        app.register_blueprint(parent)
    app.url_map.converters["unsupported_version"] = UnsupportedVersion
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    for rule in (
        "/algorithm/<unsupported_version:version>",
        "/algorithm/<unsupported_version:version>/<path:rest>",
    ):
        app.add_url_rule(
            rule, "unsupported_version", unsupported_version, methods=methods, strict_slashes=False
        )


def _stamp(version: ApiVersion) -> Callable[[Response], Awaitable[Response]]:
    async def stamp(response: Response) -> Response:
        response.headers[HEADER] = version.name
        return response

    return stamp


class UnsupportedVersion(BaseConverter):
    """A URL segment that looks like an API version (`v1.0`, `v9`) but is not served. The
    static segments of the served versions' routes match first; a served version's name is
    refused here as well, so a wrong method or path under it stays werkzeug's 405 or 404."""

    regex = r"v\d+(?:\.\d+)*"  # v1, v1.2, v10.0.3

    def to_python(self, value: str) -> str:
        if any(version.name == value for version in VERSIONS):
            raise ValidationError
        return value


async def unsupported_version(version: str, rest: str = "") -> Response:
    del rest
    return text(
        404,
        f"API version {version} is not served. Supported versions: {_supported()}.",
    )
