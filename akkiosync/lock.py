"""One run per job at a time, across processes: an advisory ``flock`` per job.

The operating system releases a ``flock`` when its holder dies, even by ``kill -9``, so a crash
never leaves a stale lock behind. The lock files live beside the checkpoint store's real file,
which is what every process syncing the same jobs shares: found through a symlink, a relative
path or a bind mount of its directory, one store has one set of lock files.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from akkiosync.errors import StateError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def locks_dir(store: Path) -> Path:
    """The directory of the per-job locks of the store file ``store``: beside the file it names
    once every symlink is followed (the file need not exist yet), so every path gives one."""
    real = store.resolve()
    return real.with_name(real.name + ".locks")


class JobLock:
    """An exclusive lock on one job's runs."""

    def __init__(self, directory: Path, job: str) -> None:
        self.path = directory / f"{_UNSAFE.sub('_', job)}.lock"
        self._fd: int | None = None

    def acquire(
        self,
        wait: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[str], None] | None = None,
    ) -> bool:
        """Take the lock, polling for up to ``wait`` seconds; ``False`` if another holds it.

        ``on_wait`` is called with the holder's pid once, when the lock is found held and there
        is time to wait for it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc.strerror}") from None
        deadline = clock() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if clock() >= deadline:
                    os.close(fd)
                    return False
                if on_wait is not None:
                    on_wait(self.holder())
                    on_wait = None
                sleep(min(0.1, max(deadline - clock(), 0.0)))
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return True

    def holder(self) -> str:
        """The pid written by the current holder, for messages ('unknown' if unreadable)."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
