"""Bearer tokens on the public API: a static token file and JWTs checked against a JWKS.

Real: `nexusd dev` on loopback (and once as a process started by the CLI), its HTTP API over
real sockets, a JWKS served by a second HTTP server on loopback, keys generated here with
`cryptography` and tokens signed with PyJWT. Nothing is faked.
"""

from __future__ import annotations

import functools
import json
import socket
import time
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from quart_trio import QuartTrio

from nexusd.api.app import serve_http
from nexusd.core.errors import ConfigError
from tests.servers.nexusd import nexusd_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nexusd.modes.services import Running
    from tests.conftest import StartNexus

ISSUER = "https://idp.example.test/"
AUDIENCE = "nexus-api"
PROBE = "/algorithm/v1/results/tags/auth-probe"  # 200 [] for a caller who is let in


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@attrs.define
class Issuer:
    """An OIDC issuer's keys: the JWKS it serves and tokens it signs."""

    keys: dict[str, Any] = attrs.Factory(dict)  # kid -> private key
    served: list[dict[str, Any]] = attrs.Factory(list)
    fetches: int = 0

    def add(self, kid: str, key: Any, algorithm: str) -> None:
        self.keys[kid] = (key, algorithm)
        codec = jwt.algorithms.RSAAlgorithm if algorithm.startswith("RS") else None
        codec = codec or jwt.algorithms.ECAlgorithm
        public = codec.to_jwk(key.public_key(), as_dict=True)
        self.served.append({**public, "kid": kid, "use": "sig", "alg": algorithm})

    def token(self, kid: str = "rsa", **claims: Any) -> str:
        key, algorithm = self.keys[kid]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "jane", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


async def serve_jwks(nursery: trio.Nursery, issuer: Issuer, sock: socket.socket) -> str:
    app = QuartTrio("jwks")

    @app.get("/keys")
    async def keys() -> dict[str, Any]:
        issuer.fetches += 1
        return {"keys": issuer.served}

    sock.bind(("127.0.0.1", 0))
    sock.listen()
    url: str = await nursery.start(functools.partial(serve_http, app, sock=sock))
    return f"{url}/keys"


@pytest.fixture
async def issuer(nursery: trio.Nursery) -> AsyncIterator[tuple[Issuer, str]]:
    keys = Issuer()
    keys.add("rsa", rsa_key(), "RS256")
    keys.add("ec", ec.generate_private_key(ec.SECP256R1()), "ES256")
    with socket.socket() as sock:
        yield keys, await serve_jwks(nursery, keys, sock)


def jwt_settings(jwks: str, **more: str) -> dict[str, str]:
    return {
        "auth.jwks": jwks,
        "auth.issuer": ISSUER,
        "auth.audience": AUDIENCE,
        "auth.clock_skew": "30s",
        "auth.jwks_min_refresh": "0s",
        **more,
    }


async def get(http: httpx.AsyncClient, nexus: Running, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await http.get(f"{nexus.url}{PROBE}", headers=headers)


async def sdk_get(nexus: Running) -> tuple[int, bytes]:
    """GET the probe with the published SDK's empty `Authorization: Bearer ` (trailing space,
    which httpx refuses to send), over a raw connection; the status and the whole answer."""
    host, port = nexus.url.removeprefix("http://").split(":")
    request = (
        f"GET {PROBE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer \r\n"
        "Connection: close\r\n\r\n"
    )
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request.encode())
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def assert_unauthorized(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert reason in response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="nexusd"')
    assert 'error="invalid_token"' in challenge
    assert reason in challenge


async def test_auth_is_off_by_default_and_the_sdks_empty_bearer_is_accepted(
    start_nexus: StartNexus, http: httpx.AsyncClient
) -> None:
    nexus = await start_nexus()
    for headers in ({}, {"Authorization": "Bearer anything"}):
        response = await http.get(f"{nexus.url}{PROBE}", headers=headers)
        assert (response.status_code, response.json()) == (200, [])
    status, answer = await sdk_get(nexus)
    assert status == 200
    assert answer.endswith(b"\r\n\r\n[]")


async def test_a_missing_token_is_401_with_a_bare_challenge(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    nexus = await start_nexus(**jwt_settings(issuer[1]))
    response = await get(http, nexus, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="nexusd"'
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Unauthorized: this API needs an Authorization: Bearer <token> header"
    status, answer = await sdk_get(nexus)  # the SDK's empty token is no token
    assert status == 401
    assert b'www-authenticate: Bearer realm="nexusd"\r\n' in answer
    posted = await http.post(f"{nexus.url}/algorithm/v1/run/hello", json={"x": "y" * 10_000})
    assert posted.status_code == 401


async def test_valid_jwts_of_either_key_are_let_in(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url))
    for kid in ("rsa", "ec"):
        response = await get(http, nexus, keys.token(kid))
        assert (response.status_code, response.json()) == (200, [])
    submitted = await http.post(
        f"{nexus.url}/algorithm/v1/run/hello",
        json={"algorithmParameters": {}},
        headers={"Authorization": f"Bearer {keys.token()}"},
    )
    assert submitted.status_code == 202, submitted.text


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": -60}, "the token has expired"),
        ({"nbf": 120}, "not valid yet"),
        ({"aud": "someone-else"}, f"wrong audience: expected {AUDIENCE!r}"),
        ({"iss": "https://evil.example.test/"}, f"wrong issuer: expected {ISSUER!r}"),
        ({"exp": None}, "the token has no 'exp' claim"),
    ],
)
async def test_claims_are_checked_with_the_reason_in_the_answer(
    start_nexus: StartNexus,
    http: httpx.AsyncClient,
    issuer: tuple[Issuer, str],
    claims: dict[str, Any],
    reason: str,
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url))
    now = int(time.time())
    relative = {
        k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in claims.items()
    }
    assert_unauthorized(await get(http, nexus, keys.token(**relative)), reason)


async def test_clock_skew_forgives_a_little_but_not_more(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url, **{"auth.clock_skew": "60s"}))
    now = int(time.time())
    assert (await get(http, nexus, keys.token(exp=now - 20))).status_code == 200
    assert (await get(http, nexus, keys.token(nbf=now + 20))).status_code == 200
    assert_unauthorized(await get(http, nexus, keys.token(exp=now - 90)), "expired")


async def test_forged_and_unacceptable_tokens_are_refused(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url))
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    # An HMAC token "signed" with the issuer's public key (the classic key-confusion attack).
    public_jwk = next(k for k in keys.served if k["kid"] == "rsa")
    hs = jwt.encode(claims, "n" * 64 + public_jwk["n"], algorithm="HS256", headers={"kid": "rsa"})
    assert_unauthorized(await get(http, nexus, hs), "signed with 'HS256'")
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert_unauthorized(await get(http, nexus, unsigned), "signed with 'none'")
    # Signed by a key the issuer never published, under a published kid.
    impostor = jwt.encode(claims, rsa_key(), algorithm="RS256", headers={"kid": "rsa"})
    assert_unauthorized(await get(http, nexus, impostor), "bad signature")
    assert_unauthorized(await get(http, nexus, "not-a-jwt"), "neither a known token nor a JWT")


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url))
    fetched = keys.fetches
    newcomer = rsa_key()
    keys.keys["new"] = (newcomer, "RS256")  # signs with it before publishing it
    assert_unauthorized(await get(http, nexus, keys.token("new")), "unknown key (kid 'new')")
    assert keys.fetches == fetched + 1  # the unknown kid made it look again
    keys.served.append(
        {
            **jwt.algorithms.RSAAlgorithm.to_jwk(newcomer.public_key(), as_dict=True),
            "kid": "new",
            "alg": "RS256",
        }
    )
    assert (await get(http, nexus, keys.token("new"))).status_code == 200


async def test_unknown_kids_do_not_fetch_more_often_than_the_minimum(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url, **{"auth.jwks_min_refresh": "1h"}))
    keys.keys["nope"] = (rsa_key(), "RS256")
    fetched = keys.fetches
    for _ in range(5):
        assert_unauthorized(await get(http, nexus, keys.token("nope")), "unknown key")
    assert keys.fetches == fetched


async def test_a_valid_token_without_the_required_scope_is_403(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    nexus = await start_nexus(**jwt_settings(url, **{"auth.required_scope": "nexus.run"}))
    refused = await get(http, nexus, keys.token(scope="openid profile"))
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.text == (
        "Forbidden: the token of jane lacks the scope 'nexus.run' this API requires"
    )
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert (await get(http, nexus, keys.token(scope="openid nexus.run"))).status_code == 200
    assert (await get(http, nexus, keys.token(scp=["nexus.run"]))).status_code == 200


async def test_health_metrics_docs_and_the_receiver_stay_open(
    start_nexus: StartNexus, http: httpx.AsyncClient, issuer: tuple[Issuer, str]
) -> None:
    nexus = await start_nexus(**jwt_settings(issuer[1]))
    for path in ("/healthz", "/readyz", "/metrics", "/algorithm/v1/openapi.json"):
        response = await http.get(f"{nexus.url}{path}")
        assert response.status_code == 200, (path, response.text)
    # The receiver's routes need the run's completion token, not a bearer token.
    check = await http.get(f"{nexus.url}/algorithm/v1/check/hello/requests/some-id")
    assert check.status_code == 403
    assert "completion token" in check.text


async def test_a_jwks_file_serves_as_well_as_a_url(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    keys = Issuer()
    keys.add("ec", ec.generate_private_key(ec.SECP256R1()), "ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": keys.served}))
    nexus = await start_nexus(**jwt_settings(str(jwks)))
    assert (await get(http, nexus, keys.token("ec"))).status_code == 200
    assert_unauthorized(await get(http, nexus, keys.token("ec", aud="x")), "wrong audience")


def write_tokens(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_token_file_tokens_are_let_in_and_changes_are_picked_up(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    tokens = write_tokens(
        tmp_path / "tokens",
        "# CI and the nightly job\nci-0123456789abcdef ci\n\nnightly-0123456789ab\n",
    )
    nexus = await start_nexus(**{"auth.token_file": str(tokens)})
    assert (await get(http, nexus, "ci-0123456789abcdef")).status_code == 200
    assert (await get(http, nexus, "nightly-0123456789ab")).status_code == 200
    assert_unauthorized(await get(http, nexus, "ci-0123456789abcdeX"), "unknown token")
    write_tokens(tokens, "rotated-0123456789abcdef ci\n")
    with trio.fail_after(10):  # the file is looked at again at most every second
        while (await get(http, nexus, "rotated-0123456789abcdef")).status_code != 200:
            await trio.sleep(0.1)
    assert_unauthorized(await get(http, nexus, "ci-0123456789abcdef"), "unknown token")
    write_tokens(tokens, "short\n")  # invalid: the tokens read before stay
    await trio.sleep(1.2)
    assert (await get(http, nexus, "rotated-0123456789abcdef")).status_code == 200


async def test_token_file_and_jwts_together(
    start_nexus: StartNexus, http: httpx.AsyncClient, tmp_path: Path, issuer: tuple[Issuer, str]
) -> None:
    keys, url = issuer
    tokens = write_tokens(tmp_path / "tokens", "static-0123456789abcdef\n")
    nexus = await start_nexus(**jwt_settings(url, **{"auth.token_file": str(tokens)}))
    assert (await get(http, nexus, "static-0123456789abcdef")).status_code == 200
    assert (await get(http, nexus, keys.token())).status_code == 200


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth.jwks": "JWKS", "auth.audience": AUDIENCE}, "auth.issuer: required"),
        (
            {
                "auth.jwks": "JWKS",
                "auth.issuer": ISSUER,
                "auth.audience": AUDIENCE,
                "auth.algorithms": "RS256,HS256",
            },
            "auth.algorithms: HS256 not accepted",
        ),
        (
            {
                "auth.jwks": "http://127.0.0.1:9/none",
                "auth.issuer": ISSUER,
                "auth.audience": AUDIENCE,
            },
            "auth.jwks: cannot read http://127.0.0.1:9/none",
        ),
        ({"auth.token_file": "TOKENS"}, "a token must have at least 16 characters"),
    ],
)
async def test_bad_auth_settings_stop_the_start(
    start_nexus: StartNexus,
    tmp_path: Path,
    issuer: tuple[Issuer, str],
    settings: dict[str, str],
    message: str,
) -> None:
    tokens = write_tokens(tmp_path / "short-tokens", "abc\n")
    values = {
        key: value.replace("JWKS", issuer[1]).replace("TOKENS", str(tokens))
        for key, value in settings.items()
    }
    with pytest.RaisesGroup(pytest.RaisesExc(ConfigError, match=message), flatten_subgroups=True):
        await start_nexus(**values)


async def test_the_cli_reads_auth_settings_from_the_environment(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", "cli-token-0123456789 operator\n")
    env = {
        "NEXUS__DATA__DIR": str(tmp_path / "data"),
        "NEXUS__HTTP__HOST": "127.0.0.1",
        "NEXUS__AUTH__TOKEN_FILE": str(tokens),
    }
    async with (
        nexusd_process(
            "dev", "--kubelet", "scripted", env=env, cwd=tmp_path, log=tmp_path / "log"
        ) as nexus,
        httpx.AsyncClient(timeout=10) as http,
    ):
        refused = await http.get(f"{nexus.url}{PROBE}")
        assert refused.status_code == 401
        allowed = await http.get(
            f"{nexus.url}{PROBE}", headers={"Authorization": "Bearer cli-token-0123456789"}
        )
        assert (allowed.status_code, allowed.json()) == (200, [])
