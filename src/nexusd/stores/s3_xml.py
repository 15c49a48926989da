"""The XML of the two S3 bucket calls garbage collection makes: ListObjectsV2 and DeleteObjects.

Pure functions over bytes, parsed and built with the standard library's ElementTree (the bodies
are S3's own, a few hundred KiB at most). Tags are matched by local name, so a response with or
without S3's namespace (``http://s3.amazonaws.com/doc/2006-03-01/``) reads the same.

- `list_query`: the query string of one ListObjectsV2 page, already in SigV4 canonical form
  (keys sorted, every value percent-encoded except ``-_.~``), because the signer signs the
  query exactly as given.
- `parse_list`: a page's objects (key, LastModified as aware UTC) and its continuation token.
- `delete_body` / `delete_errors`: a quiet DeleteObjects request (at most `MAX_DELETE_KEYS`
  keys) and the per-key errors of its answer (quiet mode lists only failures).
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ElementTree
from typing import TYPE_CHECKING
from urllib.parse import quote

import attrs

from nexusd.core.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: DeleteObjects takes at most this many keys per request (S3's limit).
MAX_DELETE_KEYS = 1000
_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


@attrs.frozen
class ListedObject:
    key: str
    last_modified: dt.datetime


@attrs.frozen
class ListPage:
    objects: list[ListedObject]
    #: where the next page starts; None on the last page
    next_token: str | None


@attrs.frozen
class DeleteError:
    key: str
    code: str
    message: str


def list_query(*, prefix: str, token: str | None, max_keys: int) -> str:
    params = {"list-type": "2", "max-keys": str(max_keys), "prefix": prefix}
    if token is not None:
        params["continuation-token"] = token
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params.items()))


def parse_list(content: bytes) -> ListPage:
    """One ListObjectsV2 answer; `StoreError` if it is not one."""
    root = _parse(content, "ListBucketResult")
    objects = [
        ListedObject(
            key=_text(entry, "Key"), last_modified=_timestamp(_text(entry, "LastModified"))
        )
        for entry in _children(root, "Contents")
    ]
    truncated = _text(root, "IsTruncated", "false").lower() == "true"
    token = _text(root, "NextContinuationToken", "") or None
    if truncated and token is None:
        raise StoreError("S3 ListObjectsV2: a truncated page without NextContinuationToken")
    return ListPage(objects=objects, next_token=token if truncated else None)


def delete_body(keys: Sequence[str]) -> bytes:
    if not 1 <= len(keys) <= MAX_DELETE_KEYS:
        raise ValueError(f"DeleteObjects takes 1 to {MAX_DELETE_KEYS} keys, not {len(keys)}")
    root = ElementTree.Element("Delete", xmlns=_NAMESPACE)
    ElementTree.SubElement(root, "Quiet").text = "true"
    for key in keys:
        ElementTree.SubElement(ElementTree.SubElement(root, "Object"), "Key").text = key
    body: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def delete_errors(content: bytes) -> list[DeleteError]:
    """The keys a DeleteObjects answer reports as not deleted."""
    root = _parse(content, "DeleteResult")
    return [
        DeleteError(
            key=_text(error, "Key", ""),
            code=_text(error, "Code", ""),
            message=_text(error, "Message", ""),
        )
        for error in _children(root, "Error")
    ]


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse(content: bytes, expected: str) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as exc:
        raise StoreError(f"S3 answered with malformed XML: {exc}") from None
    if _local(root.tag) != expected:
        raise StoreError(f"S3 answered with <{_local(root.tag)}>, expected <{expected}>")
    return root


def _children(element: ElementTree.Element, name: str) -> Iterator[ElementTree.Element]:
    return (child for child in element if _local(child.tag) == name)


def _text(element: ElementTree.Element, name: str, default: str | None = None) -> str:
    for child in _children(element, name):
        return child.text or ""
    if default is None:
        raise StoreError(f"S3 answered without <{name}> in <{_local(element.tag)}>")
    return default


def _timestamp(text: str) -> dt.datetime:
    """S3's ISO 8601 (``2026-03-01T12:00:00.000Z``) as aware UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise StoreError(f"S3 answered with an unreadable LastModified {text!r}") from None
    if value.utcoffset() is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
