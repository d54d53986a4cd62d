"""One run per job at a time, across processes, released even by kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from akkiosync.config import Settings
from akkiosync.lock import JobLock, locks_dir

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


def symlinked_file(tmp_path: Path) -> tuple[Path, Path]:
    """``link.db`` -> ``state/real.db`` (not created yet: the first run creates it)."""
    (tmp_path / "state").mkdir()
    real = tmp_path / "state" / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    return link, real


def symlinked_directory(tmp_path: Path) -> tuple[Path, Path]:
    """``linked/akkiosync.db`` where ``linked`` -> ``state``."""
    (tmp_path / "state").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "state", target_is_directory=True)
    return tmp_path / "linked" / "akkiosync.db", tmp_path / "state" / "akkiosync.db"


def relative_path(tmp_path: Path) -> tuple[Path, Path]:
    """``state/akkiosync.db`` from the working directory (``tmp_path``), and its absolute path."""
    assert Path.cwd() == tmp_path.resolve()
    return Path("state/akkiosync.db"), tmp_path / "state" / "akkiosync.db"


TwoPaths = Callable[[Path], tuple[Path, Path]]
TWO_PATHS = pytest.mark.parametrize(
    "two_paths",
    [symlinked_file, symlinked_directory, relative_path],
    ids=["symlinked-file", "symlinked-directory", "relative-absolute"],
)


class TestLockLocation:
    """Every path to one store gives the same lock files, beside the real store file."""

    @TWO_PATHS
    def test_same_directory(self, tmp_path: Path, two_paths: TwoPaths) -> None:
        """Both paths give one lock directory, named after the real file, beside it."""
        one, other = two_paths(tmp_path)
        real = other.resolve()
        assert locks_dir(one) == locks_dir(other) == real.with_name(real.name + ".locks")

    @TWO_PATHS
    def test_one_path_excludes_the_other(self, tmp_path: Path, two_paths: TwoPaths) -> None:
        """A job's lock taken through one path refuses a second taken through the other."""
        one, other = two_paths(tmp_path)
        with JobLock(locks_dir(one), "orders") as first:
            assert first.acquire()
            assert not JobLock(locks_dir(other), "orders").acquire()
        with JobLock(locks_dir(other), "orders") as second:
            assert second.acquire()

    def test_existing_store_through_symlink(self, tmp_path: Path) -> None:
        """Once the store exists the link still leads to the real file's locks."""
        link, real = symlinked_file(tmp_path)
        real.write_bytes(b"")
        assert locks_dir(link) == locks_dir(real) == real.resolve().with_name("real.db.locks")

    def test_settings_follow_the_real_file(self, tmp_path: Path) -> None:
        """The settings' lock directory and daemon file are keyed by the real store file."""
        link, real = symlinked_file(tmp_path)
        through_link = Settings(akkiosync_state=link)
        direct = Settings(akkiosync_state=real)
        assert through_link.locks_dir == direct.locks_dir == locks_dir(real)
        assert through_link.daemon_file == direct.daemon_file
        assert through_link.daemon_file.parent == real.resolve().parent
