"""Which job and run a log line belongs to, and the two line formats (JSON, text).

The runner marks the job and run it is working on; a logging filter copies them onto every
record made in that thread, whichever module logs it. Only the CLI installs the filter and
the formatters (configuring logging is the CLI's business).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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
    """Puts ``job`` and ``run_id`` on every record (None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = _job.get()
        record.run_id = _run.get()
        return True


class TextFormatter(logging.Formatter):
    """``time level [job#run] logger: message`` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(where)s%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job, run = getattr(record, "job", None), getattr(record, "run_id", None)
        record.where = f"[{job}#{run}] " if job and run else f"[{job}] " if job else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job": getattr(record, "job", None),
            "run_id": getattr(record, "run_id", None),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
