"""Exclusive ownership on one machine: an advisory `flock` on a file that names its holder.

Two processes must never share what one machine's stores give them: `nexusd dev`'s data
directory (the embedded cluster's state and kubeconfig live there), or a scheduler's identity
(`received_by_host`: a process recovers the BUFFERED runs held under its name as its own, so
two live processes with one name would both submit them). The kernel drops an `flock` when its
holder dies, however it dies, so a restart after `kill -9` takes the lock at once; a second
process started while the first lives is refused and told who holds it (the holder writes its
description into the file). The descriptor is not inherited by child processes (Python opens
files close-on-exec), so an algorithm process started by the embedded kubelet cannot keep a
dead nexusd's lock alive.
"""

from __future__ import annotations

import fcntl
import os
from typing import TYPE_CHECKING

from nexusd.core.errors import OwnershipError

if TYPE_CHECKING:
    from pathlib import Path


class FileLock:
    """A held lock; `release` (idempotent) gives it up."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor drops the flock
            self._descriptor = None


def take_lock(path: Path, *, holder: str, what: str, hint: str) -> FileLock:
    """Lock `path` (created if missing) for this process, or raise `OwnershipError` saying
    `what` is held, by whom, and `hint` (what to do). `holder` describes this process to the
    next one that tries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        current = os.read(descriptor, 4096).decode(errors="replace").strip()
        os.close(descriptor)
        raise OwnershipError(
            f"{what} is in use by {current or 'another process'}; {hint}"
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{holder}\n".encode(), 0)
    return FileLock(path, descriptor)


def process_description(mode: str) -> str:
    """How this process names itself to the one its lock refuses."""
    return f"nexusd {mode} (pid {os.getpid()} on {os.uname().nodename})"
