"""Reading JSON request bodies the same way everywhere: one message shape for every problem.

Each caller passes `invalid`, which wraps a message into its own error type with upstream's
prefix ("Algorithm payload is invalid: ...", "Submitted result is invalid: ...").

The JSON is strict: `NaN`, `Infinity` and `-Infinity`, which Python's `json` accepts by
default, are refused (they are not JSON, and the Go SDKs and algorithms cannot read them back),
and a document nested deeper than the parser can follow is a 400, not a RecursionError.

`object_members` also tells where each top-level member's value lies in the body, so intake can
store `algorithmParameters` as the client sent it instead of decoding and encoding it again.
The standard library has the pieces (`JSONDecoder.raw_decode` at an offset, `scanstring`) but no
such call, and no JSON library on PyPI that we already depend on offers spans; the walk over the
top-level object below is the whole of it.
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable
from typing import Any, NoReturn

import attrs

Invalid = Callable[[str], Exception]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: A \\uD800-\\uDFFF escape: half of a UTF-16 pair, or (alone) no character at all.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
#: `json.decoder.scanstring` (the C one): not in typeshed, public in the module since 2.6
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


@attrs.frozen
class Member:
    """One top-level member of a JSON object body: its value and its span in the body text."""

    value: Any
    start: int
    end: int


def _text(body: bytes, invalid: Invalid) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError as exc:
        raise invalid(f"body is not valid JSON: not UTF-8 ({exc.reason})") from None


def _decode_at(text: str, index: int, what: str, invalid: Invalid) -> tuple[Any, int]:
    """Decode the JSON value at `index`; every problem names `what` (a member, or "body")."""
    try:
        value, end = _DECODER.raw_decode(text, index)
    except RecursionError:
        raise invalid(f"{what} nests too deeply to be parsed") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # sys.get_int_max_str_digits()
            raise invalid(f"{what} holds a number of more than 4300 digits") from None
        raise invalid(f"{what} is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text, index, end) and not _encodable(value):
        raise invalid(
            f"{what} holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is "
            "not a character"
        )
    return value, end


def _encodable(value: Any) -> bool:
    """Whether every string in `value` is valid Unicode (json escapes pair up into one)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def json_object(body: bytes, invalid: Invalid) -> dict[str, Any]:
    """The body as a JSON object, or `invalid(...)` saying why it is not one (naming the
    member at fault)."""
    return {key: member.value for key, member in object_members(body, invalid)[1].items()}


class _Walk:
    """A cursor over a JSON text, for walking a top-level object or array one member at a time
    (the values themselves are decoded by the standard library's C scanner)."""

    def __init__(self, text: str, invalid: Invalid) -> None:
        self.text = text
        self.invalid = invalid

    def skip(self, index: int) -> int:
        return _WHITESPACE.match(self.text, index).end()  # type: ignore[union-attr]

    def at(self, index: int, token: str) -> bool:
        return self.text[index : index + 1] == token

    def expect(self, index: int, token: str, wanted: str) -> int:
        if not self.at(index, token):
            text = self.text
            found = repr(text[index]) if index < len(text) else "the end of the body"
            raise self.invalid(
                f"body is not valid JSON: expected {wanted} at char {index}, found {found}"
            )
        return index + 1

    def members(self, index: int) -> tuple[dict[str, Member], int]:
        """The members of the object starting at `index` (a '{'), and the index after it."""
        members: dict[str, Member] = {}
        index = self.skip(self.expect(index, "{", "'{'"))
        if self.at(index, "}"):
            return members, index + 1
        while True:
            index = self.expect(index, '"', "a member name in double quotes")
            try:
                key, index = _scanstring(self.text, index)
            except ValueError as exc:
                raise self.invalid(f"body is not valid JSON: {exc}") from None
            index = self.skip(self.expect(self.skip(index), ":", "':'"))
            value, end = _decode_at(self.text, index, key, self.invalid)
            members[key] = Member(value=value, start=index, end=end)
            index = self.skip(end)
            if not self.at(index, ","):
                return members, self.expect(index, "}", "',' or '}'")
            index = self.skip(index + 1)

    def finish(self, index: int) -> None:
        if self.skip(index) != len(self.text):
            raise self.invalid(f"body is not valid JSON: extra data at char {index}")


def object_members(body: bytes, invalid: Invalid) -> tuple[str, dict[str, Member]]:
    """The body (decoded text) and its top-level members with their spans in that text.

    A repeated key keeps its last value, as `json.loads` does.
    """
    walk = _Walk(_text(body, invalid), invalid)
    index = walk.skip(0)
    if not walk.at(index, "{"):
        _, end = _decode_at(walk.text, index, "body", invalid)  # invalid JSON says so first
        walk.finish(end)
        raise invalid("body must be a JSON object")
    members, end = walk.members(index)
    walk.finish(end)
    return walk.text, members


def array_members(body: bytes, invalid: Invalid) -> tuple[str, list[dict[str, Member] | Exception]]:
    """The body (decoded text) and, for each item of its top-level array, the item's members
    with their spans, or the item's own error (`invalid(...)`): a bad run is that run's
    problem, and the others stand. Only a body that is not a well-formed array is refused
    whole, naming the run where it breaks."""
    walk = _Walk(_text(body, invalid), invalid)
    index = walk.skip(0)
    if not walk.at(index, "["):
        _decode_at(walk.text, index, "body", invalid)  # invalid JSON says so first
        raise invalid("body must be a JSON array of runs")
    items: list[dict[str, Member] | Exception] = []
    index = walk.skip(index + 1)
    if walk.at(index, "]"):
        walk.finish(index + 1)
        return walk.text, items
    while True:
        index = _item(walk, index, items, invalid)
        index = walk.skip(index)
        if not walk.at(index, ","):
            walk.finish(walk.expect(index, "]", "',' or ']'"))
            return walk.text, items
        index = walk.skip(index + 1)


class _Problem(Exception):
    """A run's problem, before it is known to be that run's own or the whole batch's."""


def _item(
    walk: _Walk, index: int, items: list[dict[str, Member] | Exception], invalid: Invalid
) -> int:
    """Read the run at `index` into `items`; return the index after it."""
    if not walk.at(index, "{"):
        _, end = _decode_at(walk.text, index, f"run {len(items)}", invalid)
        items.append(invalid("a run must be a JSON object"))
        return end
    try:
        members, end = _Walk(walk.text, _Problem).members(index)
    except _Problem as problem:
        end = _end_of(walk.text, index)
        if end < 0:  # not even well-formed: where the next run starts is unknown
            raise invalid(f"run {len(items)}: {problem}") from None
        items.append(invalid(str(problem)))
        return end
    items.append(members)
    return end


#: What `_end_of` steps through: whole strings (escapes included), and brackets.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _end_of(text: str, index: int) -> int:
    """The index after the object or array opening at `index`, found without recursion (so
    also for input nested too deep to decode); -1 when it is not closed."""
    depth = 0
    for match in _TOKEN.finditer(text, index):
        if match.group() in "[{":
            depth += 1
        elif match.group() in "]}":
            depth -= 1
            if depth == 0:
                return match.end()
    return -1


def string_field(document: dict[str, Any], key: str, invalid: Invalid) -> str:
    """An optional string field; missing or null reads as "" (upstream's Go zero value)."""
    return text_value(document.get(key), key, invalid)


def text_value(value: Any, key: str, invalid: Invalid) -> str:
    """`value` as a text field of a record: a string (None reads as ""), without NUL (which
    PostgreSQL text cannot hold; the store would refuse it with a StoreError, a 503)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string")
    if "\0" in value:
        raise invalid(f"{key} must not contain NUL characters")
    return value
