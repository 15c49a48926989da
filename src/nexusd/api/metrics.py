"""`GET /metrics`: the process's Prometheus metrics (`nexusd.core.metrics`), on every mode.

The metrics are process-wide, so this blueprint only renders the registry: any number of apps
(one per mode in `nexusd dev`, hundreds in tests) expose the same numbers without registering
anything twice. The format follows the scraper's `Accept` header (Prometheus text, or
OpenMetrics when asked for), as prometheus-client negotiates it.
"""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from quart import Blueprint, Response, request

import nexusd.core.metrics  # noqa: F401  (defines the metrics this exposes)

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(REGISTRY), status=200, content_type=content_type)
