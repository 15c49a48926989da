"""Signed, expiring URLs for the payloads and results nexusd serves itself (`/data/v1/...`).

A signature is HMAC-SHA256 over (scope, URL path, expiry in Unix seconds), base64url without
padding, carried in the query string as ``exp=<unix seconds>&sig=<mac>``. The scope
(``payload:get``, ``result:put``, ``result:get``) stops a URL signed for one use (downloading a
payload) from being replayed for another (uploading a result to the same path).

The same key also makes each run's completion token (`CompletionTokens`): HMAC-SHA256 over
(algorithm, request id, attempt), which the scheduler puts in the receiver URL a run's pod is
given and the receiver checks before it records a completion (see `nexusd.api.auth`).

The stdlib `hmac` does the work: the scheme is three fields and a compare, and pulling in a
token library (itsdangerous, JWT) would add a format nobody else needs to read.
"""

from __future__ import annotations

import hmac
import math
import os
import secrets
from base64 import urlsafe_b64encode
from typing import TYPE_CHECKING

from nexusd.core.errors import ConfigError, NexusdError

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping
    from pathlib import Path

    from nexusd.core.clock import Clock

#: Shortest secret accepted (bytes): 128 bits.
MIN_SECRET_BYTES = 16

MISSING = "missing signature"
EXPIRED = "expired"
BAD = "bad signature"


class SignatureError(NexusdError):
    """A signed URL was refused.

    `reason` is one of "missing signature", "expired", "bad signature"; the HTTP layer answers
    403 with it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UrlSigner:
    """Signs and verifies (scope, path) pairs with one secret; expiry comes from `clock`."""

    def __init__(self, secret: bytes, clock: Clock) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the signing secret must have at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._clock = clock

    def sign(self, scope: str, path: str, valid_for: dt.timedelta) -> str:
        """The query string ``exp=...&sig=...`` making `path` usable for `scope`.

        Valid for at least `valid_for` (the expiry is rounded up to a whole second).
        """
        expires = str(math.ceil(self._clock.now().timestamp() + valid_for.total_seconds()))
        # Both values are URL-safe as they are (digits; base64url), so nothing needs quoting.
        return f"exp={expires}&sig={self._mac(scope, path, expires)}"

    def verify(self, scope: str, path: str, query: Mapping[str, str]) -> None:
        """Return if `query` carries a valid, unexpired signature of (scope, path); else raise.

        The signature is checked before the expiry, so a tampered `exp` reads "bad signature".
        """
        expires, signature = query.get("exp"), query.get("sig")
        if not expires or not signature:
            raise SignatureError(MISSING)
        expected = self._mac(scope, path, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise SignatureError(BAD)
        # `expires` is authentic now, so it is the decimal integer `sign` wrote.
        if self._clock.now().timestamp() >= int(expires):
            raise SignatureError(EXPIRED)

    def _mac(self, scope: str, path: str, expires: str) -> str:
        # NUL-separated: a NUL cannot occur in a scope, a URL path or a decimal number, so
        # distinct (scope, path, expiry) triples never produce the same message.
        message = "\0".join(("nexusd-url-v1", scope, path, expires)).encode("utf-8", "replace")
        digest = hmac.digest(self._secret, message, "sha256")
        return urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


#: The attempt of a run in Job mode. nexusd creates a run's Job once: resubmission after a
#: restart or a peer's recovery finds it AlreadyExists, and the Job's own pod retries
#: (backoffLimit) replace a pod that has ended, so one run has one attempt. Warm pools (issue
#: 13) lease a run to a worker: each lease is a new attempt, recorded with the run, whose
#: token replaces the last one, so a worker whose lease was taken away cannot complete it.
JOB_ATTEMPT = 1


class CompletionTokens:
    """Per-run completion tokens: only the pod given a run's token can report its outcome.

    A token is a MAC of (algorithm, request id, attempt): nothing needs storing, and the
    scheduler that makes it and the receiver that checks it only share the key.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the token key must have at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def token(self, *, algorithm: str, request_id: str, attempt: int) -> str:
        """43 URL-safe characters (a path segment as they are)."""
        message = "\0".join(("nexusd-completion-v1", algorithm, request_id, str(attempt)))
        digest = hmac.digest(self._secret, message.encode("utf-8", "replace"), "sha256")
        return urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def matches(self, token: str, *, algorithm: str, request_id: str, attempt: int) -> bool:
        expected = self.token(algorithm=algorithm, request_id=request_id, attempt=attempt)
        return hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace"))

    def attempt_token(self, *, algorithm: str, request_id: str, attempt: int) -> str:
        """The token of one attempt, saying which: attempt 1 is the bare Job-mode token (so a
        first lease and a Job read alike), a later one `"<attempt>.<mac>"`. The receiver reads
        the attempt back with `attempt_of`, checks the MAC, and completes only that attempt."""
        mac = self.token(algorithm=algorithm, request_id=request_id, attempt=attempt)
        return mac if attempt == JOB_ATTEMPT else f"{attempt}.{mac}"

    def pool_token(self, algorithm: str) -> str:
        """The token a warm pool's workers show the scheduler's worker API: it lets them lease
        and report runs of `algorithm` only (a separate message, so it is no run's token)."""
        digest = hmac.digest(self._secret, f"nexusd-pool-v1\0{algorithm}".encode(), "sha256")
        return urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def attempt_of(token: str) -> int:
    """The attempt an `attempt_token` names (a bare MAC: the first); 0 when it is malformed."""
    prefix, dot, _ = token.partition(".")
    if not dot:
        return JOB_ATTEMPT
    return int(prefix) if prefix.isdigit() and prefix[0] != "0" else 0


def load_or_create_secret(path: Path) -> bytes:
    """The signing secret stored at `path`, created (random, mode 0600) if the file is missing.

    The file holds text (surrounding whitespace ignored), so an operator may provide one from a
    Kubernetes Secret. Creation is atomic: the secret is written and fsynced under a temporary
    name, then hard-linked into place, so a concurrent starter either wins or reads the winner's
    complete file, never a partial one.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_urlsafe(32).encode("ascii") + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first; use theirs
        else:
            _fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path}: the signing secret must have at least {MIN_SECRET_BYTES} bytes")
    return secret


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
