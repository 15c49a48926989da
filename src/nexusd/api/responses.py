"""Response helpers: upstream answers errors as text/plain and successes as JSON."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request


def text(status: int, body: str = "", headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, content_type="text/plain; charset=utf-8", headers=headers)


def json_response(status: int, document: Any) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")), status=status, content_type="application/json"
    )


async def body() -> bytes:
    """The raw request body (quart types `get_data` as str | bytes)."""
    data = await request.get_data(as_text=False)
    return data if isinstance(data, bytes) else data.encode()
