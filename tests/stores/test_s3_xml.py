"""The ListObjectsV2 / DeleteObjects XML codec on S3's documented bodies (no server needed;
test_s3_payloads.py runs the same code against SeaweedFS)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ElementTree

import pytest

from nexusd.core.errors import StoreError
from nexusd.stores.s3_xml import (
    MAX_DELETE_KEYS,
    DeleteError,
    ListedObject,
    delete_body,
    delete_errors,
    list_query,
    parse_list,
)

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def test_list_query_is_canonical() -> None:
    query = list_query(prefix="p/algorithm=", token="a+b/c==", max_keys=2)
    assert query == (
        "continuation-token=a%2Bb%2Fc%3D%3D&list-type=2&max-keys=2&prefix=p%2Falgorithm%3D"
    )
    assert list_query(prefix="", token=None, max_keys=1000) == "list-type=2&max-keys=1000&prefix="


@pytest.mark.parametrize("namespace", [NS, ""])
def test_parse_list_reads_keys_times_and_the_token(namespace: str) -> None:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
    <ListBucketResult {namespace}><Name>b</Name><IsTruncated>true</IsTruncated>
      <Contents><Key>p/algorithm=a/r&amp;1</Key><LastModified>2026-03-01T12:00:00.123Z</LastModified></Contents>
      <Contents><Key>p/algorithm=a/r2</Key><LastModified>2026-03-01T12:00:01Z</LastModified></Contents>
      <NextContinuationToken>tok</NextContinuationToken></ListBucketResult>""".encode()
    page = parse_list(body)
    assert page.objects == [
        ListedObject("p/algorithm=a/r&1", dt.datetime(2026, 3, 1, 12, 0, 0, 123000, dt.UTC)),
        ListedObject("p/algorithm=a/r2", dt.datetime(2026, 3, 1, 12, 0, 1, tzinfo=dt.UTC)),
    ]
    assert page.next_token == "tok"
    last = parse_list(
        f"<ListBucketResult {namespace}><IsTruncated>false</IsTruncated>"
        "</ListBucketResult>".encode()
    )
    assert (last.objects, last.next_token) == ([], None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not xml", "malformed"),
        (b"<Error><Code>AccessDenied</Code></Error>", "expected <ListBucketResult>"),
        (b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", "truncated"),
        (b"<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>", "LastModified"),
    ],
)
def test_parse_list_refuses_what_is_not_a_listing(body: bytes, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        parse_list(body)


def test_delete_body_and_errors_round_trip() -> None:
    body = delete_body(["a&b", "c<d"])
    root = ElementTree.fromstring(body)
    keys = [key.text for key in root.iter("{http://s3.amazonaws.com/doc/2006-03-01/}Key")]
    assert keys == ["a&b", "c<d"]
    with pytest.raises(ValueError, match="keys"):
        delete_body([])
    with pytest.raises(ValueError, match="keys"):
        delete_body(["k"] * (MAX_DELETE_KEYS + 1))

    answer = f"""<DeleteResult {NS}><Deleted><Key>x</Key></Deleted>
      <Error><Key>c&lt;d</Key><Code>AccessDenied</Code><Message>no</Message></Error>
    </DeleteResult>""".encode()
    assert delete_errors(answer) == [DeleteError("c<d", "AccessDenied", "no")]
    assert delete_errors(f"<DeleteResult {NS}/>".encode()) == []
