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

    async def aclose(self) -> None: ...
