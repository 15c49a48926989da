"""Each API version's OpenAPI document (`{prefix}/openapi.json`) and a docs page
(`{prefix}/docs`) rendered from it on the server as plain HTML: no script, no stylesheet
from a CDN, so it works where the cluster has no internet access."""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response, current_app, render_template_string

from nexusd.api.openapi import Answer, document, json_answer, operation
from nexusd.api.responses import json_response
from nexusd.api.versions import current_version

blueprint = Blueprint("docs", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ doc.info.title }}</title>
<style>
body { font-family: sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; }
code, pre { background: #f4f4f4; } pre { padding: .5em; overflow-x: auto; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .2em .5em; }
h3 code { font-size: 1.1em; }
</style></head>
<body>
<h1>{{ doc.info.title }}</h1>
<p>{{ doc.info.description }}</p>
<p>The same as JSON: <a href="openapi.json">openapi.json</a> (OpenAPI {{ doc.openapi }}).</p>
{% for tag in doc.tags %}<h2>{{ tag.name }}</h2>
{% for path, methods in doc.paths.items() %}{% for method, op in methods.items() %}
{% if tag.name in op.tags %}
<h3 id="{{ op.operationId }}"><code>{{ method | upper }} {{ path }}</code></h3>
<p>{{ op.summary }}</p>{% if op.description %}<p>{{ op.description }}</p>{% endif %}
{% if op.parameters %}<table><tr><th>parameter</th><th>in</th><th>required</th>
<th>schema</th><th>description</th></tr>
{% for p in op.parameters %}<tr><td><code>{{ p.name }}</code></td><td>{{ p.in }}</td>
<td>{{ "yes" if p.required else "no" }}</td><td><code>{{ pretty(p.schema) }}</code></td>
<td>{{ p.description }}</td></tr>{% endfor %}</table>{% endif %}
{% if op.requestBody %}<p>Request body ({{ op.requestBody.content | join(", ") }}):</p>
{% for media in op.requestBody.content.values() %}<pre>{{ pretty(media.schema, 2) }}</pre>
{% endfor %}{% endif %}
<table><tr><th>status</th><th>content type</th><th>description</th><th>body</th></tr>
{% for status, answer in op.responses.items() %}
{% for media_type, media in (answer.content or {"": {}}).items() %}<tr><td>{{ status }}</td>
<td>{{ media_type }}</td><td>{{ answer.description }}</td>
<td>{% if media.schema %}<pre>{{ pretty(media.schema, 2) }}</pre>{% endif %}</td></tr>
{% endfor %}{% endfor %}</table>
{% for status, answer in op.responses.items() if answer.links %}<p>After {{ status }}:</p><ul>
{% for link in answer.links.values() %}<li><a href="#{{ link.operationId }}">{{
link.operationId }}</a>: {{ link.description }}</li>{% endfor %}</ul>{% endfor %}
{% endif %}{% endfor %}{% endfor %}{% endfor %}
</body></html>
"""


def _pretty(schema: Any, indent: int | None = None) -> str:
    return json.dumps(schema, indent=indent, ensure_ascii=False)


def _own_document() -> dict[str, Any]:
    version = current_version()
    assert version is not None, "the docs blueprint is mounted only under a version"
    return document(current_app, version)


@blueprint.get("/openapi.json")
@operation(
    summary="This version's OpenAPI 3.1 document: the routes this process serves.",
    tag="documentation",
    responses={200: json_answer("The OpenAPI document", {"type": "object"})},
)
async def openapi_document() -> Response:
    return json_response(200, _own_document())


@blueprint.get("/docs")
@operation(
    summary="This version's routes as an HTML page, rendered from the OpenAPI document.",
    tag="documentation",
    responses={200: Answer(description="The page", content={"text/html": {"type": "string"}})},
)
async def docs_page() -> Response:
    page = await render_template_string(_PAGE, doc=_own_document(), pretty=_pretty)
    return Response(page, status=200, content_type="text/html; charset=utf-8")
