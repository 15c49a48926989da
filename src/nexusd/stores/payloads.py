"""The `PayloadStore` protocol: where run payloads and results live, and the URLs that reach them.

The pod gets a GET URL for its payload (through the template's `--sas-uri=%s` argument) and a PUT
URL for its result (`NEXUS__RESULT_UPLOAD_URL`), so it needs no storage credentials. URLs expire;
a tampered or expired URL is refused (403) by whoever serves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import datetime as dt


class PayloadStore(Protocol):
    async def put_payload(self, *, algorithm: str, request_id: str, data: bytes) -> None:
        """Durably store a run's payload (the JSON of `algorithmParameters`)."""
        ...

    async def get_payload(self, *, algorithm: str, request_id: str) -> bytes | None: ...

    def payload_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        """A URL that answers GET with the payload until `valid_for` from now."""
        ...

    def result_upload_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        """A URL that accepts PUT of the run's result until `valid_for` from now."""
        ...

    def result_url(self, *, algorithm: str, request_id: str, valid_for: dt.timedelta) -> str:
        """A URL that answers GET with the run's result until `valid_for` from now."""
        ...

    async def has_result(self, *, algorithm: str, request_id: str) -> bool: ...

    async def delete_run(self, *, algorithm: str, request_id: str) -> None:
        """Delete the run's payload and result; either or both missing is fine (idempotent)."""
        ...

    async def purge_older_than(self, *, before: dt.datetime, limit: int = 1000) -> int:
        """Delete up to `limit` payload and result blobs last written before `before` (aware).

        Returns how many were deleted. Not necessarily the oldest first: call again until it
        returns less than `limit`. Garbage collection for runs whose checkpoints are gone.
        """
        ...

    async def aclose(self) -> None: ...
