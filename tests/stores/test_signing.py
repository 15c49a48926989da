"""`UrlSigner` and `load_or_create_secret`: real HMACs and real files; time from `ManualClock`."""

from __future__ import annotations

import datetime as dt
import os
import stat
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import pytest

from nexusd.core.errors import ConfigError, NexusdError
from nexusd.stores.signing import SignatureError, UrlSigner, load_or_create_secret

if TYPE_CHECKING:
    from pathlib import Path

    from nexusd.core.clock import ManualClock

SECRET = b"0123456789abcdef0123456789abcdef"
PATH = "/data/v1/payloads/algo/requests/id-1"
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def signer(clock: ManualClock) -> UrlSigner:
    return UrlSigner(SECRET, clock)


def signed(signer: UrlSigner, scope: str = "payload:get", path: str = PATH) -> dict[str, str]:
    return dict(parse_qsl(signer.sign(scope, path, HOUR), strict_parsing=True))


def reason_of(signer: UrlSigner, scope: str, path: str, query: dict[str, str]) -> str:
    with pytest.raises(SignatureError) as raised:
        signer.verify(scope, path, query)
    return raised.value.reason


def test_a_signed_query_verifies(signer: UrlSigner, clock: ManualClock) -> None:
    query = signed(signer)
    assert set(query) == {"exp", "sig"}
    assert int(query["exp"]) == int(clock.now().timestamp()) + 3600 + 1  # rounded up
    assert "=" not in query["sig"]
    assert "+" not in query["sig"]
    assert "/" not in query["sig"]
    signer.verify("payload:get", PATH, query)


def test_signature_error_is_a_nexusd_error() -> None:
    assert issubclass(SignatureError, NexusdError)
    assert str(SignatureError("expired")) == "expired"


@pytest.mark.parametrize("missing", ["exp", "sig"])
def test_missing_parts_are_refused(signer: UrlSigner, missing: str) -> None:
    query = signed(signer)
    del query[missing]
    assert reason_of(signer, "payload:get", PATH, query) == "missing signature"
    assert reason_of(signer, "payload:get", PATH, {}) == "missing signature"


def test_tampering_is_refused(signer: UrlSigner) -> None:
    query = signed(signer)
    flipped = ("A" if query["sig"][0] != "A" else "B") + query["sig"][1:]
    later = str(int(query["exp"]) + 3600)
    cases = [
        ("payload:get", PATH + "x", query),
        ("payload:get", "/data/v1/payloads/algo/requests/id-2", query),
        ("result:put", PATH, query),
        ("payload:get", PATH, {**query, "sig": flipped}),
        ("payload:get", PATH, {**query, "sig": query["sig"][:-1]}),
        ("payload:get", PATH, {**query, "sig": "ü" * 43}),
        ("payload:get", PATH, {**query, "exp": later}),
        ("payload:get", PATH, {**query, "exp": "not-a-number"}),
    ]
    for scope, path, tampered in cases:
        assert reason_of(signer, scope, path, tampered) == "bad signature", (scope, path, tampered)


def test_another_secret_does_not_verify(signer: UrlSigner, clock: ManualClock) -> None:
    other = UrlSigner(b"another secret, long enough!", clock)
    assert reason_of(other, "payload:get", PATH, signed(signer)) == "bad signature"


def test_expiry_follows_the_clock(signer: UrlSigner, clock: ManualClock) -> None:
    query = signed(signer)
    clock.advance(3600)
    signer.verify("payload:get", PATH, query)  # valid for at least the hour asked
    clock.advance(1)
    assert reason_of(signer, "payload:get", PATH, query) == "expired"


def test_short_secrets_are_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UrlSigner(b"short", clock)


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "url-signing.key"
    first = load_or_create_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_an_operator_secret_is_read_as_given(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"  an operator supplied secret value\n")
    assert load_or_create_secret(path) == b"an operator supplied secret value"


def test_a_short_secret_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"tiny\n")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_or_create_secret(path)
