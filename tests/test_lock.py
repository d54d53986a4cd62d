"""One run per job at a time, across processes, released even by kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from akkiosync.lock import JobLock

HOLD = """
import sys, time
from pathlib import Path
from akkiosync.lock import JobLock
lock = JobLock(Path(sys.argv[1]), "orders")
assert lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


class TestJobLock:
    """A job's lock is exclusive, names its holder, and dies with it."""

    def test_exclusive(self, tmp_path: Path) -> None:
        """A second holder is refused until the first releases."""
        first, second = JobLock(tmp_path, "orders"), JobLock(tmp_path, "orders")
        assert first.acquire()
        assert not second.acquire()
        first.release()
        assert second.acquire()
        second.release()

    def test_jobs_are_independent(self, tmp_path: Path) -> None:
        """Different jobs never block each other; odd names map to safe file names."""
        with JobLock(tmp_path, "a/b") as a, JobLock(tmp_path, "a.b") as b:
            assert a.acquire()
            assert b.acquire()
            assert a.path.parent == tmp_path

    def test_wait_polls_until_deadline(self, tmp_path: Path) -> None:
        """With a wait, acquire polls until its deadline, on an injected clock."""
        now = [0.0]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        with JobLock(tmp_path, "orders") as held:
            assert held.acquire()
            waiting = JobLock(tmp_path, "orders")
            assert not waiting.acquire(1.0, clock=lambda: now[0], sleep=sleep)
        assert 9 <= len(slept) <= 11
        assert now[0] >= 1.0

    def test_released_by_kill_9(self, tmp_path: Path) -> None:
        """A holder killed with SIGKILL leaves no stale lock; its pid was readable meanwhile."""
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"held\n"
            lock = JobLock(tmp_path, "orders")
            assert not lock.acquire()
            assert lock.holder() == str(holder.pid)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.communicate()
        deadline = time.monotonic() + 10
        while not lock.acquire():
            assert time.monotonic() < deadline, "the lock outlived its killed holder"
            time.sleep(0.01)
        lock.release()
