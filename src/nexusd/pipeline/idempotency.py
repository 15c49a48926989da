"""Idempotent submission: the `Idempotency-Key` request header of the latest API's run and batch
routes (`POST /algorithm/run/{alg}`, `POST /algorithm/batch/{alg}`; the versioned routes
ignore it, the SDK contract has no such header).

Input: the header's value, the raw body, dryRun and the parsed request(s).
Output: the request ids, as `Intake.accept` / `accept_batch` give them, and whether they are
a replay of an earlier request's answer.
Failure: a bad header is a 400 naming it, raised before anything is read or written; the same
key with a different request is a 409 (`KeyConflict`) naming the key, and stores nothing.

A key covers one whole request, and is held by that request's first accepted run: a single
run, or a batch's first accepted run, which also stores the batch's whole answer. The stores
keep ONE unique index on `(algorithm, key)`, so the accept path costs what it costs without a
key, one insert (the key rides in it), and the schedulers sharing a store need no lock:

- first request with a key: the insert holds it. One durable write, no read.
- a replay (same key, same fingerprint): the insert fails with `KeyTaken` having stored
  nothing (the payload blob of a large payload stays unreferenced until garbage collection),
  then ONE read of the index answers the holder's id, or the batch's stored answer.
- a concurrent duplicate, in this process or another scheduler: the same; the loser's insert
  fails only once the winner committed, so the read finds the winner.
- a keyed request refused before its insert (full queue, template gone, nothing accepted in a
  batch): one read, so a retry of an accepted request still gets its answer.

The fingerprint is a SHA-256 of the request's canonical content: the route, dryRun and the body
as JSON with sorted keys and no insignificant whitespace, so re-serialising a body does not
make it a different request, while any change of a value does. A batch's runs that were
refused the first time are refused again by a replay (its answer is the first one); submit
them in a new request with a new key. Keys live as long as the run holding them: garbage
collection deletes the run (`maintainer` retention) and the key with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, TypeVar

from nexusd.core.records import IdempotencyKey
from nexusd.pipeline.intake import IntakeError, batch_results
from nexusd.stores.checkpoints import KeyTaken

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from nexusd.core.records import KeyedRun
    from nexusd.pipeline.intake import Intake, ParsedRequest

_T = TypeVar("_T")

HEADER = "Idempotency-Key"
#: Inserts tried before giving up: a second is needed only when the holder seen by a failed
#: insert was deleted (garbage collection) before the read.
_ATTEMPTS = 2


class KeyConflict(IntakeError):
    """The key is held by a different request (409)."""

    def __init__(self, key: str, algorithm: str, holder: str) -> None:
        super().__init__(
            f"{HEADER} {key!r} was already used for a different request to {algorithm} (run "
            f"{holder}); send a new key with a new request.",
            status=409,
        )


def parse_key(value: str | None, *, longest: int) -> str | None:
    """The header's key, None without one; a 400 naming the header when it is no key.

    Printable ASCII (space to `~`) is what an HTTP field value carries safely and what the
    IETF draft's sf-string allows; the key is compared as sent, byte for byte.
    """
    if value is None:
        return None
    if not value:
        raise IntakeError(f"{HEADER} must not be empty")
    if len(value) > longest:
        raise IntakeError(
            f"{HEADER} is longer than {longest} characters (http.max_idempotency_key)"
        )
    if not all(" " <= char <= "~" for char in value):
        raise IntakeError(f"{HEADER} must be printable ASCII (space to '~')")
    return value


def fingerprint(body: bytes, *, route: str, dry_run: bool) -> str:
    """SHA-256 of the request's canonical content (see the module docstring). The body was
    parsed already; one the canonical form cannot hold (too deep for `json`) counts as its
    exact bytes."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256(f"{route}\n{'dry' if dry_run else 'run'}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


async def key_for(
    intake: Intake, key: str, body: bytes, *, route: str, dry_run: bool
) -> IdempotencyKey:
    """The key with its request's fingerprint (hashed off the event loop when large)."""
    found = await intake.off_loop(
        lambda: fingerprint(body, route=route, dry_run=dry_run), size=len(body)
    )
    return IdempotencyKey(key=key, fingerprint=found)


async def accept_once(
    intake: Intake,
    *,
    algorithm: str,
    request: ParsedRequest,
    dry_run: bool,
    idempotency: IdempotencyKey,
) -> tuple[str, bool]:
    """`Intake.accept` holding `idempotency`; return the request id and whether it is the
    answer of an earlier request with this key."""

    async def accept() -> str:
        return await intake.accept(
            algorithm=algorithm, request=request, dry_run=dry_run, idempotency=idempotency
        )

    return await _once(intake, algorithm, idempotency, accept, lambda held: held.request_id)


async def accept_batch_once(
    intake: Intake,
    *,
    algorithm: str,
    requests: Sequence[ParsedRequest | IntakeError],
    dry_run: bool,
    idempotency: IdempotencyKey,
) -> tuple[list[str | IntakeError], bool]:
    """`Intake.accept_batch` holding `idempotency`; return the results and whether they are
    an earlier request's answer. A batch that accepted nothing wrote nothing, so the key
    may be held from before: it is looked up."""

    async def accept() -> list[str | IntakeError]:
        return await intake.accept_batch(
            algorithm=algorithm, requests=requests, dry_run=dry_run, idempotency=idempotency
        )

    def accepted(results: list[str | IntakeError]) -> bool:
        return any(isinstance(result, str) for result in results)

    return await _once(intake, algorithm, idempotency, accept, _answer, accepted)


async def _once(
    intake: Intake,
    algorithm: str,
    idempotency: IdempotencyKey,
    accept: Callable[[], Awaitable[_T]],
    replay: Callable[[KeyedRun], _T],
    accepted: Callable[[_T], bool] = lambda _: True,
) -> tuple[_T, bool]:
    """`accept` holding the key, or `replay` of the run that holds it: (answer, replayed).

    A taken key (`KeyTaken`, nothing stored) or a refusal before the insert is answered by
    the holder, if there is one; an answer that stored nothing (`accepted` False) too.
    """
    for _ in range(_ATTEMPTS):
        try:
            result = await accept()
        except KeyTaken:
            pass
        except IntakeError:
            held = await _holder(intake, algorithm, idempotency)
            if held is None:
                raise
            return replay(held), True
        else:
            if accepted(result):
                return result, False
            held = await _holder(intake, algorithm, idempotency)
            return (result, False) if held is None else (replay(held), True)
        held = await _holder(intake, algorithm, idempotency)
        if held is not None:
            return replay(held), True
    raise _vanished(idempotency)


async def _holder(intake: Intake, algorithm: str, idempotency: IdempotencyKey) -> KeyedRun | None:
    """The run holding the key, if any; `KeyConflict` when it holds it for another request."""
    held = await intake.store.by_idempotency_key(algorithm=algorithm, key=idempotency.key)
    if held is not None and held.idempotency.fingerprint != idempotency.fingerprint:
        raise KeyConflict(idempotency.key, algorithm, held.request_id)
    return held


def _answer(held: KeyedRun) -> list[str | IntakeError]:
    # Same fingerprint, so a batch's holder: it stored the answer.
    answer = held.idempotency.answer
    return batch_results(answer) if answer is not None else [held.request_id]


def _vanished(idempotency: IdempotencyKey) -> IntakeError:
    return IntakeError(
        f"The run holding {HEADER} {idempotency.key!r} was deleted while this request was "
        "accepted; please retry.",
        status=503,
        retry_after=1,
    )
