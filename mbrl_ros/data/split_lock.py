"""Which splits under ``.partial/`` a live recorder still writes: one lock file per session.

A recorder holds an exclusive ``flock`` on ``.partial/<session>.lock`` for its whole life and
names its splits ``<session>_<index>``. The kernel drops the lock when the process ends, however
it ends (SIGKILL included), so a split whose session lock can be taken, or that has no lock file
at all (a recorder that predates the lock), was abandoned by a dead recorder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

LOCK_SUFFIX = ".lock"
"""Suffix of a session's lock file in ``.partial/``."""
INDEX_SEPARATOR = "_"
"""Separates the session from the split index in a split name."""


class SessionLock:
    """An exclusive, non-blocking ``flock`` on a lock file; released when the process dies."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: Optional[int] = fd

    @classmethod
    def try_acquire(cls, path: Path, create: bool = True) -> Optional["SessionLock"]:
        """The lock on ``path``, or None when another live process (or open file) holds it
        or, with ``create`` False, when there is no such file."""
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    def release(self, remove: bool = True) -> None:
        """Drop the lock (idempotent); ``remove`` deletes the file first, while still held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if remove:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def session_lock_path(partial_split: Path) -> Path:
    """The lock file of the session that wrote ``partial_split`` (``.partial/<name>``)."""
    session = partial_split.name.rsplit(INDEX_SEPARATOR, 1)[0]
    return partial_split.parent / f"{session}{LOCK_SUFFIX}"


def is_locked(partial_split: Path) -> bool:
    """True while a live recorder holds the session lock of ``partial_split``."""
    lock = SessionLock.try_acquire(session_lock_path(partial_split), create=False)
    if lock is None:
        return session_lock_path(partial_split).exists()
    lock.release(remove=False)
    return False
