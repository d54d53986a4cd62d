"""Which job and run a log line belongs to, and which warnings a job was already given.

The runner marks the job and run it is working on; a logging filter copies them onto every
record made in that thread, whichever module logs it. Only the CLI installs the filter and
the formatters (``logformat``; configuring logging is the CLI's business).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_job: ContextVar[str | None] = ContextVar("akkiosync_job", default=None)
_run: ContextVar[int | None] = ContextVar("akkiosync_run", default=None)


@contextmanager
def job_context(job: str, run_id: int | None = None) -> Iterator[None]:
    """Mark the log lines made inside with ``job`` (and ``run_id``)."""
    job_token, run_token = _job.set(job), _run.set(run_id)
    try:
        yield
    finally:
        _job.reset(job_token)
        _run.reset(run_token)


def current_job() -> str | None:
    """The job this thread is working on, if any."""
    return _job.get()


class ContextFilter(logging.Filter):
    """Puts ``job`` and ``run_id`` on every record: the thread's, else those the caller passed
    (``extra={"job": ...}``), else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        job, run = _job.get(), _run.get()
        record.job = job if job is not None else getattr(record, "job", None)
        record.run_id = run if run is not None else getattr(record, "run_id", None)
        return True


class Warned:
    """The last text of each kind of warning given per job, so that a daemon repeats a warning
    only when it changes, not on every run. Kept for the life of the process."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()  # jobs run in the daemon's worker threads

    def changed(self, job: str, kind: str, said: object) -> bool:
        """Whether ``said`` differs from what was last said of ``kind`` for ``job`` (and is to
        be logged). An empty ``said`` (the condition is gone) is forgotten, so its return is
        warned of again."""
        with self._lock:
            if not said:
                self._last.pop((job, kind), None)
                return False
            if self._last.get((job, kind)) == said:
                return False
            self._last[(job, kind)] = said
            return True
