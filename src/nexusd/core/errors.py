"""nexusd's exception tree. Library errors are translated into these at the edges.

NexusdError
├── ConfigError              bad or unknown setting (CLI exit code 2)
│   └── OwnershipError       a data directory or identity is held by another live process
├── InvalidTransition        an illegal lifecycle move was asked for
├── StoreError               a checkpoint or payload store failed
│   ├── AlreadyExists        a record with this key exists
│   └── NotFound             no record with this key
└── KubeError                a Kubernetes API call failed
    ├── KubeNotFound         404
    ├── KubeConflict         409 (AlreadyExists or Conflict)
    ├── KubeRejected         a permanent refusal: 400, 403, 422 ...
    └── KubeUnavailable      transient: 429, 5xx, connection errors, timeouts
"""

from __future__ import annotations


class NexusdError(Exception):
    """Base class of every error nexusd raises on purpose."""


class ConfigError(NexusdError):
    """A setting is unknown or its value is invalid; the message names the key."""


class OwnershipError(ConfigError):
    """What this process would own (its data directory, its `node.host_name`) is held by
    another live process; the message names the holder. Like a bad setting, it stops the
    start with exit code 2."""


class InvalidTransition(NexusdError):
    """A lifecycle move that is never legal (for example out of a terminal stage)."""


class StoreError(NexusdError):
    """A checkpoint or payload store operation failed."""


class AlreadyExists(StoreError):
    """A record with the same key is already stored."""


class NotFound(StoreError):
    """No record has this key."""


class KubeError(NexusdError):
    """A Kubernetes API call failed. `status` is the HTTP code, `reason` the Status reason."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """The object does not exist (404)."""


class KubeConflict(KubeError):
    """409: the object already exists, or a stale resourceVersion was sent."""


class KubeRejected(KubeError):
    """A permanent refusal (400, 401, 403, 413, 422...): retrying the same call cannot help."""


class KubeUnavailable(KubeError):
    """A transient failure (429, 5xx, connection error, timeout): retry later.

    `retry_after` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(
        self, message: str, *, status: int = 0, reason: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after
