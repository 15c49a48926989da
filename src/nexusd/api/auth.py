"""Access control in front of the app: bearer tokens for the public API, completion tokens in
the receiver URLs.

Bearer tokens (`BearerAuth`, off unless `auth.token_file` or `auth.jwks` is set). Every
`/algorithm/...` route but the receiver's needs `Authorization: Bearer <token>`, where the
token is a line of the token file or a JWT signed by a key of the JWKS, with the configured
issuer and audience, unexpired (with `auth.clock_skew` leeway) and signed with an allowed
asymmetric algorithm. A missing or invalid token is 401 text/plain with `WWW-Authenticate:
Bearer` saying why (RFC 6750); a valid JWT without `auth.required_scope` is 403. Open to all:
/healthz, /readyz, /metrics, each version's OpenAPI document and docs page, the signed
`/data/v1` URLs (their signature is their access control), and the receiver's routes, which the
published SDK calls from pods with an empty `Authorization: Bearer ` (contract §0.1).

Completion tokens. A run's pod is given `<receiver>/t/<token>` as its receiver base URL
(`nexusd.kube.manifests.ReceiverUrl`); the SDK appends `/algorithm/v1/complete/{alg}/requests/
{id}` to it. `protect` strips `/t/<token>` from such a path and hands the token to the route in
the ASGI scope (`COMPLETION_TOKEN`), where the completer checks it against the route's run.

ASGI middleware rather than a Quart `before_request`: a refused request is answered before the
app reads its body.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import jwt
import trio

from nexusd.core.errors import ConfigError
from nexusd.kube.manifests import TOKEN_SEGMENT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, MutableMapping
    from pathlib import Path

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    App = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger(__name__)

#: ASGI scope key of the completion token a request's path carried (absent: none).
COMPLETION_TOKEN: Final = "nexusd.completion_token"
#: Algorithms a JWT may be signed with: asymmetric only, so a public key can never be used as
#: an HMAC secret, and never `none`.
ASYMMETRIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Shortest static token accepted (characters): shorter ones are guessable.
MIN_TOKEN_CHARS: Final = 16
#: How often the token file's status is looked at, to re-read it when it changed (seconds).
TOKEN_FILE_RECHECK: Final = 1.0

_RECEIVER_ROUTE = r"/algorithm(?:/v[0-9.]+)?/(?:complete|check)/[^/]+/requests/[^/]+"
_RECEIVER = re.compile(_RECEIVER_ROUTE)
_TOKENED = re.compile(rf"/{TOKEN_SEGMENT}/((?:[1-9][0-9]*\.)?[A-Za-z0-9_-]+)({_RECEIVER_ROUTE})")
_OPEN_DOCS = re.compile(r"/algorithm(?:/v[0-9.]+)?/(?:openapi\.json|docs)")


class Unauthenticated(Exception):
    """No valid bearer token: 401, the message says why."""


class Forbidden(Exception):
    """A valid token that may not do this: 403, the message says why."""


def completion_token(scope: Mapping[str, Any]) -> str | None:
    """The completion token the request's path carried (None: a plain receiver URL)."""
    token = scope.get(COMPLETION_TOKEN)
    return token if isinstance(token, str) else None


def needs_bearer(path: str) -> bool:
    """Whether a request to `path` must carry a valid bearer token (when auth is on)."""
    return (
        path.startswith("/algorithm")
        and _RECEIVER.fullmatch(path) is None
        and _OPEN_DOCS.fullmatch(path) is None
    )


# --- static tokens ----------------------------------------------------------------------------


def parse_token_file(text: str, *, source: str) -> dict[bytes, str]:
    """`<token> [name]` lines (blank lines and `#` comments skipped) as sha256(token) -> name.

    Hashes rather than the tokens: a dictionary lookup then compares digests, which tells a
    timing attacker nothing about the tokens themselves.
    """
    tokens: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, _, name = line.partition(" ")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{source}:{number}: a token must have at least {MIN_TOKEN_CHARS} characters"
            )
        tokens[hashlib.sha256(token.encode()).digest()] = name.strip() or f"token {number}"
    return tokens


@attrs.define
class StaticTokens:
    """The tokens of `auth.token_file`, re-read when the file changes (a mounted Secret is
    replaced by the kubelet); a file that turns unreadable or invalid keeps the last tokens."""

    path: Path
    _tokens: dict[bytes, str] = attrs.field(factory=dict, init=False)
    _seen: tuple[int, int, int] | None = attrs.field(default=None, init=False)
    _checked: float = attrs.field(default=-float("inf"), init=False)

    async def load(self) -> None:
        """Read the file; raises ConfigError when it cannot be (at start)."""
        try:
            status = await trio.Path(self.path).stat()
            text = await trio.Path(self.path).read_text()
        except OSError as exc:
            raise ConfigError(f"auth.token_file: cannot read {self.path}: {exc.strerror}") from None
        self._tokens = parse_token_file(text, source=str(self.path))
        self._seen = (status.st_ino, status.st_mtime_ns, status.st_size)
        self._checked = trio.current_time()

    async def name_of(self, token: str) -> str | None:
        await self._refresh()
        return self._tokens.get(hashlib.sha256(token.encode()).digest())

    async def _refresh(self) -> None:
        if trio.current_time() - self._checked < TOKEN_FILE_RECHECK:
            return
        self._checked = trio.current_time()
        try:
            status = await trio.Path(self.path).stat()
            if (status.st_ino, status.st_mtime_ns, status.st_size) != self._seen:
                await self.load()
                logger.info("auth.token_file %s changed: %d tokens", self.path, len(self._tokens))
        except (OSError, ConfigError) as exc:
            logger.error("auth.token_file: keeping the tokens read before: %s", exc)


# --- JWKS and JWTs ----------------------------------------------------------------------------


@attrs.define
class Jwks:
    """The issuer's signing keys, from a URL (fetched with httpx) or a file, cached for
    `refresh` seconds; a token naming a key not in the cache fetches again, at most every
    `min_refresh` seconds. A failed refresh keeps the keys fetched before."""

    source: str
    algorithms: frozenset[str]
    refresh: float
    min_refresh: float
    timeout: float
    _keys: dict[str, jwt.PyJWK] = attrs.field(factory=dict, init=False)
    _fetched: float = attrs.field(default=-float("inf"), init=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)

    async def load(self) -> None:
        """Fetch the keys; raises ConfigError when they cannot be had (at start)."""
        self._fetched = trio.current_time()
        document = await self._read()
        try:
            keys = jwt.PyJWKSet.from_dict(document).keys
        except jwt.PyJWTError as exc:
            raise ConfigError(f"auth.jwks: {self.source}: {exc}") from None
        usable = {key.key_id or "": key for key in keys if key.algorithm_name in self.algorithms}
        if not usable:
            raise ConfigError(
                f"auth.jwks: {self.source} has no key for the allowed algorithms "
                f"{', '.join(sorted(self.algorithms))} (auth.algorithms)"
            )
        self._keys = usable

    async def key(self, kid: str) -> jwt.PyJWK | None:
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # not fetched meanwhile by a request that held the lock
                    try:
                        await self.load()
                    except ConfigError as exc:
                        logger.error("JWKS refresh failed, keeping the keys had before: %s", exc)
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:  # a token without kid, an issuer with one key
            return next(iter(self._keys.values()))
        return None

    def _due(self, kid: str) -> bool:
        age = trio.current_time() - self._fetched
        return age >= self.refresh or (kid not in self._keys and age >= self.min_refresh)

    async def _read(self) -> dict[str, Any]:
        try:
            if self.source.startswith(("https://", "http://")):
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.get(self.source)
                    response.raise_for_status()
                    text = response.text
            else:
                text = await trio.Path(self.source).read_text()
            document = json.loads(text)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise ConfigError(f"auth.jwks: cannot read {self.source}: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"auth.jwks: {self.source} is not a JWKS document")
        return document


@attrs.frozen
class JwtRules:
    issuer: str
    audience: str
    algorithms: frozenset[str]
    clock_skew: float
    required_scope: str


async def verify_jwt(token: str, *, keys: Jwks, rules: JwtRules) -> str:
    """The token's subject, once it is valid and carries the required scope; raises
    Unauthenticated or Forbidden with a reason a client can act on."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthenticated("the bearer token is neither a known token nor a JWT") from None
    algorithm = header.get("alg")
    if algorithm not in rules.algorithms:
        accepted = ", ".join(sorted(rules.algorithms))
        raise Unauthenticated(f"the token is signed with {algorithm!r}; accepted: {accepted}")
    kid = header.get("kid") or ""
    key = await keys.key(str(kid))
    if key is None:
        raise Unauthenticated(f"the token is signed by an unknown key (kid {kid!r})")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=rules.audience,
            issuer=rules.issuer,
            leeway=rules.clock_skew,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated("the token is not valid yet (nbf/iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise Unauthenticated(f"wrong audience: expected {rules.audience!r}") from None
    except jwt.InvalidIssuerError:
        raise Unauthenticated(f"wrong issuer: expected {rules.issuer!r}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated("bad signature") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    subject = str(claims.get("sub", ""))
    if rules.required_scope and rules.required_scope not in _scopes(claims):
        raise Forbidden(
            f"the token of {subject or 'this client'} lacks the scope {rules.required_scope!r} "
            "this API requires"
        )
    return subject


def _scopes(claims: dict[str, Any]) -> set[str]:
    """OAuth 2 `scope` (space-separated) and Azure/Okta-style `scp` (a list or a string)."""
    scopes: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(str(item) for item in value)
    return scopes


# --- the bearer check and the middleware ------------------------------------------------------


@attrs.define
class BearerAuth:
    """Who may call the public API: the token file's tokens, then JWTs of the JWKS."""

    static: StaticTokens | None = None
    keys: Jwks | None = None
    rules: JwtRules | None = None

    async def load(self) -> None:
        """Read the token file and fetch the JWKS once, at start (ConfigError if either fails)."""
        if self.static is not None:
            await self.static.load()
        if self.keys is not None:
            await self.keys.load()

    async def authenticate(self, authorization: str) -> str:
        """The caller's name for an `Authorization` header value; raises Unauthenticated or
        Forbidden."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("")  # no token at all: RFC 6750 gives no error code
        if self.static is not None:
            name = await self.static.name_of(token)
            if name is not None:
                return name
        if self.keys is None or self.rules is None:
            raise Unauthenticated("unknown token")
        return await verify_jwt(token, keys=self.keys, rules=self.rules)


def protect(app: App, *, bearer: BearerAuth | None) -> App:
    """`app` behind the completion-token path rewrite and, when `bearer` is given, the
    bearer-token check (see the module docstring)."""

    async def protected(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(f"/{TOKEN_SEGMENT}/"):
            match = _TOKENED.fullmatch(path)
            if match is None:
                await _answer(send, 404, "Not Found: a /t/<token> URL serves only the receiver")
                return
            route = match.group(2)
            scope = {**scope, "path": route, "raw_path": route.encode(), COMPLETION_TOKEN: match[1]}
        elif bearer is not None and needs_bearer(path):
            refusal = await _refusal(bearer, scope)
            if refusal is not None:
                await _answer(send, *refusal)
                return
        await app(scope, receive, send)

    return protected


async def _refusal(bearer: BearerAuth, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
    authorization = ""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            authorization = value.decode("latin-1")
            break
    try:
        who = await bearer.authenticate(authorization)
    except Unauthenticated as exc:
        reason = str(exc)
        if not reason:
            return (
                401,
                "Unauthorized: this API needs an Authorization: Bearer <token> header",
                {"WWW-Authenticate": 'Bearer realm="nexusd"'},
            )
        quoted = reason.replace("\\", "\\\\").replace('"', '\\"')
        challenge = f'Bearer realm="nexusd", error="invalid_token", error_description="{quoted}"'
        return 401, f"Unauthorized: {reason}", {"WWW-Authenticate": challenge}
    except Forbidden as exc:
        challenge = 'Bearer realm="nexusd", error="insufficient_scope"'
        return 403, f"Forbidden: {exc}", {"WWW-Authenticate": challenge}
    logger.debug("request authenticated as %s", who)
    return None


async def _answer(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = message.encode()
    # The request's body is never read: closing the connection keeps it from being taken for
    # the next request (as `nexusd.api.asgi` does).
    raw = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [
        (name.lower().encode(), value.encode("latin-1")) for name, value in (headers or {}).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def validated_algorithms(listed: str) -> frozenset[str]:
    """`auth.algorithms` as a set; ConfigError for `none`, HMAC or unknown names."""
    names = frozenset(name.strip() for name in listed.split(",") if name.strip())
    wrong = sorted(names - ASYMMETRIC)
    if wrong or not names:
        raise ConfigError(
            f"auth.algorithms: {', '.join(wrong) or 'empty'} not accepted; choose among "
            f"{', '.join(sorted(ASYMMETRIC))} (never none or HS*: a JWKS holds public keys)"
        )
    return names
