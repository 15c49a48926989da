"""Reading JSON request bodies the same way everywhere: one message shape for every problem.

Each caller passes `invalid`, which wraps a message into its own error type with upstream's
prefix ("Algorithm payload is invalid: ...", "Submitted result is invalid: ...").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Invalid = Callable[[str], Exception]


def json_object(body: bytes, invalid: Invalid) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise invalid("body must be a JSON object")
    return document


def string_field(document: dict[str, Any], key: str, invalid: Invalid) -> str:
    """An optional string field; missing or null reads as "" (upstream's Go zero value)."""
    value = document.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string")
    return value
