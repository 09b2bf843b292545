"""One writer per embedded index: an exclusive ``fcntl.flock`` on ``<index>/LOCK`` holding the writer's pid.

The kernel releases the lock when the process dies (even on ``kill -9``), so a crashed writer never leaves a
stale lock behind. Readers do not lock: they read an atomically published snapshot (``meta.json``).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from polymodal.errors import StoreError


class WriterLock:
    """Exclusive advisory lock on a lock file; ``acquire`` waits up to ``timeout`` seconds (0: fail at
    once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock or raise :class:`StoreError` naming the pid that holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise StoreError(
                        f"{self.path.parent}: index locked by pid {holder or '?'}"
                        " (another process is writing;"
                        " wait for it or pass lock_timeout=SECONDS)"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
