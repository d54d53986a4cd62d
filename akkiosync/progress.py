"""A run's progress while it goes: rows sent, rows to go, rate and ETA, per committed batch.

The runner calls a ``ProgressHook`` when a run starts reading and after each committed batch.
``ProgressLog`` writes a progress log line every ``interval`` seconds (not every batch);
``ProgressDisplay`` draws a live ``rich`` display per job on a terminal; ``Metrics`` is a hook
too (the daemon's figures move with every batch).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from akkiosync.cursor import Cursor, lag
from akkiosync.state import RunCounts

logger = logging.getLogger(__name__)


@dataclass
class RunProgress:
    """One run's figures as it goes, kept by the runner and the run's mode (append, replace)."""

    cursor_json: str | None
    rows_read: int = 0
    rows_sent: int = 0
    batches: int = 0
    dataset_id: str | None = None
    rows_skipped: int = 0
    lag: float | None = None
    nulled: dict[str, int] = dataclasses.field(default_factory=dict)  # on_bad_value: null
    to_go: int | None = None  # rows past the checkpoint when the read started (progress)
    newest: Any = None  # the source's newest watermark then (the lag after each batch)

    def counts(self, run_id: int, rows: int) -> RunCounts:
        """The run's figures once a batch of ``rows`` more is committed."""
        return RunCounts(run_id, self.rows_read, self.rows_sent + rows, self.batches + 1)

    def sent(self, job: str, rows: int, after: Cursor) -> Sent:
        """What a hook hears of the batch of ``rows`` just committed, up to ``after``."""
        to_go = None if self.to_go is None else max(self.to_go - self.rows_read, 0)
        lagged = lag(self.newest, after) if self.newest is not None else None
        return Sent(job, rows, self.rows_sent, self.batches, to_go, lagged)


@dataclass(frozen=True, slots=True)
class Sent:
    """One committed batch of a run, and the run's figures after it."""

    job: str
    rows: int  # in this batch
    rows_sent: int  # by this run so far
    batches: int  # by this run so far
    to_go: int | None  # rows past the checkpoint still to read (an estimate); None: unknown
    lag: float | None = None  # the checkpoint behind the source's newest watermark, if measured


class ProgressHook(Protocol):
    """What the runner tells of a run as it goes."""

    def started(self, job: str, to_go: int | None) -> None:
        """The run starts reading, ``to_go`` rows past its checkpoint (None: not counted)."""

    def sent(self, batch: Sent) -> None:
        """A batch was committed."""


class Hooks:
    """Several hooks as one."""

    def __init__(self, hooks: Sequence[ProgressHook]) -> None:
        self._hooks = tuple(hooks)

    def started(self, job: str, to_go: int | None) -> None:
        for hook in self._hooks:
            hook.started(job, to_go)

    def sent(self, batch: Sent) -> None:
        for hook in self._hooks:
            hook.sent(batch)


@dataclass(frozen=True, slots=True)
class Figures:
    """Rows sent and to go, rate and ETA: what both the log line and the display show."""

    rows_sent: int
    to_go: int | None
    rate: float  # rows per second
    eta: float | None  # seconds

    def fields(self) -> dict[str, Any]:
        return {
            "rows_total": self.rows_sent,
            "rows_to_go": self.to_go,
            "rows_per_second": round(self.rate, 1),
            "eta_seconds": None if self.eta is None else round(self.eta),
        }

    def __str__(self) -> str:
        to_go = "?" if self.to_go is None else f"{self.to_go:,}"
        return (
            f"{self.rows_sent:,} rows sent, {to_go} to go, {self.rate:,.0f} rows/s, "
            f"ETA {_duration(self.eta)}"
        )


def figures(rows_sent: int, to_go: int | None, seconds: float) -> Figures:
    """The figures of a run that sent ``rows_sent`` rows in ``seconds``."""
    rate = rows_sent / seconds if seconds > 0 else 0.0
    eta = None if to_go is None or rate <= 0 else to_go / rate
    return Figures(rows_sent, to_go, rate, eta)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLog:
    """A progress log line per job every ``interval`` seconds of a run (0: none)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval, self._clock = interval, clock
        self._started: dict[str, float] = {}
        self._logged: dict[str, float] = {}

    def started(self, job: str, to_go: int | None) -> None:
        self._started[job] = self._logged[job] = self._clock()

    def sent(self, batch: Sent) -> None:
        now = self._clock()
        start = self._started.setdefault(batch.job, now)
        if self._interval <= 0 or now - self._logged.setdefault(batch.job, now) < self._interval:
            return
        self._logged[batch.job] = now
        shown = figures(batch.rows_sent, batch.to_go, now - start)
        logger.info("progress: %s", shown, extra={"event": "progress", **shown.fields()})


class ProgressDisplay:
    """A live display on the terminal, one line per job (``rich``); log lines print above it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console  # noqa: PLC0415 - only a terminal needs rich
        from rich.progress import BarColumn, Progress, TextColumn  # noqa: PLC0415

        self._clock = clock
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[figures]}"),
            console=Console(file=sys.stderr),
            redirect_stderr=True,
            transient=False,
        )
        self._tasks: dict[str, tuple[Any, float]] = {}

    def started(self, job: str, to_go: int | None) -> None:
        task = self._progress.add_task(job, total=to_go, figures=str(figures(0, to_go, 0)))
        self._tasks[job] = (task, self._clock())

    def sent(self, batch: Sent) -> None:
        task, start = self._tasks.get(batch.job) or (None, self._clock())
        if task is None:
            return
        shown = figures(batch.rows_sent, batch.to_go, self._clock() - start)
        total = None if batch.to_go is None else batch.rows_sent + batch.to_go
        self._progress.update(task, completed=batch.rows_sent, total=total, figures=str(shown))

    @contextmanager
    def shown(self) -> Iterator[ProgressDisplay]:
        """Draw while inside; log handlers on stderr write above the display meanwhile."""
        original = sys.stderr
        self._progress.start()
        moved = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is original
        ]
        for handler in moved:
            handler.setStream(sys.stderr)  # rich's proxy: prints above the live display
        try:
            yield self
        finally:
            for handler in moved:
                handler.setStream(original)
            self._progress.stop()
