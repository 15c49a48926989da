"""What both SQL stores share: upstream's column list, and the point and index reads.

SQLite and PostgreSQL differ in their placeholder (`?` / `%s`), in how they run a query (the
SQLite read pool, the PostgreSQL connection pool) and in how a row decodes (text timestamps vs
`timestamptz`); the queries and their ordering are the same, and so must their answers be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from nexusd.core.lifecycle import Stage

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from nexusd.core.records import Checkpoint, SubmissionEntry


#: upstream's `checkpoints` columns (contract §4.1), in the order the row decoders expect
COLUMNS = (
    "algorithm",
    "id",
    "lifecycle_stage",
    "payload_uri",
    "result_uri",
    "algorithm_failure_cause",
    "algorithm_failure_details",
    "received_by_host",
    "received_at",
    "sent_at",
    "applied_configuration",
    "configuration_overrides",
    "content_hash",
    "last_modified",
    "tag",
    "api_version",
    "job_uid",
    "parent",
    "payload_valid_for",
)
COLUMN_LIST = ", ".join(COLUMNS)


class SqlReads:
    """Mixin: `heartbeats`, `get`, `get_submission`, `by_tag`, `by_host_and_stage` over
    `_select`."""

    #: the driver's placeholder
    MARK: ClassVar[str]

    @staticmethod
    def _decode_checkpoint(row: Sequence[Any]) -> Checkpoint:
        raise NotImplementedError

    @staticmethod
    def _decode_submission(row: Sequence[Any]) -> SubmissionEntry:
        raise NotImplementedError

    @staticmethod
    def _decode_time(value: Any) -> dt.datetime:
        raise NotImplementedError

    async def _select(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def heartbeats(self) -> dict[str, dt.datetime]:
        rows = await self._select("SELECT host, last_seen FROM scheduler_heartbeats", ())
        return {host: self._decode_time(last_seen) for host, last_seen in rows}

    async def get(self, *, algorithm: str, request_id: str) -> Checkpoint | None:
        rows = await self._select(
            f"SELECT {COLUMN_LIST} FROM checkpoints WHERE algorithm = {self.MARK} "
            f"AND id = {self.MARK}",
            (algorithm, request_id),
        )
        return self._decode_checkpoint(rows[0]) if rows else None

    async def get_submission(self, *, algorithm: str, request_id: str) -> SubmissionEntry | None:
        rows = await self._select(
            "SELECT algorithm, id, cluster, template FROM submission_buffer "
            f"WHERE algorithm = {self.MARK} AND id = {self.MARK}",
            (algorithm, request_id),
        )
        return self._decode_submission(rows[0]) if rows else None

    async def by_tag(self, *, tag: str) -> list[Checkpoint]:
        rows = await self._select(
            f"SELECT {COLUMN_LIST} FROM checkpoints WHERE tag = {self.MARK} "
            "ORDER BY received_at, algorithm, id",
            (tag,),
        )
        return [self._decode_checkpoint(row) for row in rows]

    async def by_host_and_stage(self, *, host: str, stage: Stage) -> list[Checkpoint]:
        rows = await self._select(
            f"SELECT {COLUMN_LIST} FROM checkpoints "
            f"WHERE received_by_host = {self.MARK} AND lifecycle_stage = {self.MARK} "
            "ORDER BY received_at, algorithm, id",
            (host, str(Stage(stage))),
        )
        return [self._decode_checkpoint(row) for row in rows]
