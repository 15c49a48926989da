"""Liveness and readiness: `/healthz` (the process serves HTTP) and `/readyz` (it should get
traffic: caches synced, not shutting down), with each stage's statistics as details."""

from __future__ import annotations

from typing import Any

import attrs
from quart import Blueprint, Response

from nexusd.api.context import current_context
from nexusd.api.responses import json_response, text

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    return text(200, "ok")


@blueprint.get("/readyz")
async def readyz() -> Response:
    context = current_context()
    details: dict[str, Any] = {
        name: _jsonable(_plain(snapshot())) for name, snapshot in context.statistics.items()
    }
    reasons = [] if context.readiness.accepting else ["shutting down"]
    reasons += context.not_ready()
    ready = not reasons
    document = {"ready": ready, "reasons": reasons, "details": details}
    return json_response(200 if ready else 503, document)


def _plain(snapshot: Any) -> Any:
    return attrs.asdict(snapshot) if attrs.has(type(snapshot)) else snapshot


def _jsonable(value: Any) -> Any:
    """Counters keyed by tuples (verb, resource, code) become "verb resource code" keys."""
    if isinstance(value, dict):
        return {
            " ".join(map(str, key)) if isinstance(key, tuple) else key: _jsonable(item)
            for key, item in value.items()
        }
    return value
