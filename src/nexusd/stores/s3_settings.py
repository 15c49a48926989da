"""Where the S3 payload store keeps its objects and how it authenticates, validated when built:
a bad endpoint, bucket or prefix is a `ValueError` naming the field, never a failed request
later.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import attrs

#: The region signed into requests when none is configured; S3-compatible servers accept it.
DEFAULT_REGION = "us-east-1"
#: Connect/read/write timeout of one S3 request (seconds): long enough for a large payload's
#: write to make progress, short enough that a dead endpoint surfaces as an error.
DEFAULT_REQUEST_TIMEOUT_S = 30.0

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9!_.*'()=-]+")


def _valid_endpoint(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{attribute.name}: {value!r} is not an http(s) URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{attribute.name}: give credentials and paths separately, not in the URL")
    if parts.path not in ("", "/"):
        raise ValueError(f"{attribute.name}: {value!r} must not have a path")


def _valid_bucket(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _BUCKET.fullmatch(value) or ".." in value:
        raise ValueError(f"{attribute.name}: {value!r} is not a valid S3 bucket name")


def _valid_prefix(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    for segment in filter(None, value.split("/")):
        if not _PREFIX_SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ValueError(f"{attribute.name}: {value!r} has an unsafe path segment {segment!r}")


@attrs.frozen
class S3Settings:
    """Where the S3 payload store keeps its objects, and how it authenticates."""

    #: Base URL of the S3 API, without the bucket: ``https://s3.eu-west-1.amazonaws.com``,
    #: ``http://127.0.0.1:8333`` (SeaweedFS, MinIO).
    endpoint: str = attrs.field(validator=_valid_endpoint)
    #: Bucket holding payloads and results; it must exist (nexusd does not create it).
    bucket: str = attrs.field(validator=_valid_bucket)
    #: Key prefix (upstream's ``s3a://bucket/<prefix>``); leading and trailing slashes ignored.
    prefix: str = attrs.field(default="", validator=_valid_prefix)
    #: Region signed into every request; must be the bucket's region on AWS.
    region: str = DEFAULT_REGION
    #: ``True``: ``<endpoint>/<bucket>/<key>`` (what S3-compatible servers expect, and upstream's
    #: choice). ``False``: virtual-hosted ``<bucket>.<endpoint host>/<key>`` (AWS's preference).
    path_style: bool = True
    #: Static credentials. Both or neither; neither means the standard AWS chain (module doc).
    access_key: str | None = None
    #: Never shown in repr, logs or errors.
    secret_key: str | None = attrs.field(default=None, repr=False)
    #: Timeout of one S3 request, seconds (`DEFAULT_REQUEST_TIMEOUT_S`).
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    def __attrs_post_init__(self) -> None:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key must be given together (or neither)")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive")
