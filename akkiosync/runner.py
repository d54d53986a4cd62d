"""One run of one job: lock -> read -> map -> deliver -> commit, recorded in the run history.

The dataset's schema is pinned before the first row is sent (``dataset``); each batch goes
through the exactly-once protocol (``delivery``); a failed run leaves the last good checkpoint
behind. A source connection that drops mid-run is reopened from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from akkiosync.akkio import AkkioClient
from akkiosync.append import Appender, RunOptions
from akkiosync.config import Job
from akkiosync.cursor import decode_cursor, lag
from akkiosync.delivery import Delivery, ReconcilePolicy
from akkiosync.errors import AkkioSyncError, SourceError
from akkiosync.lock import JobLock
from akkiosync.logcontext import Warned, job_context
from akkiosync.pacing import RetryPolicy
from akkiosync.progress import ProgressHook, RunProgress
from akkiosync.readplan import REOPEN_AFTER
from akkiosync.redact import redact
from akkiosync.refresh import Refresher
from akkiosync.results import Clock, RunResult, utc_now
from akkiosync.source import Source, make_source
from akkiosync.state import Store

logger = logging.getLogger(__name__)
SOURCE_ATTEMPTS = 3  # reopen a dropped source connection this many times per run


class Runner:
    """Runs jobs against one store and one Akkio client."""

    def __init__(
        self,
        store: Store,
        client: AkkioClient,
        *,
        clock: Clock = utc_now,
        locks: Path | None = None,
        lock_wait: float = 0.0,
        retry: RetryPolicy | None = None,
        reconcile: ReconcilePolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        on_retry: Callable[[], None] | None = None,
        measure_lag: bool = False,
        progress: ProgressHook | None = None,
        count_limit: int = 0,
        reopen_after: float = REOPEN_AFTER,
    ) -> None:
        """``locks`` is the directory of the per-job locks (``None``: no cross-process lock);
        once ``stop`` is set, runs end after the batch in flight is committed;
        ``reopen_after``: seconds a read stays open before it is opened again from its last
        batch's cursor (``ReadPlan``)."""
        self._store = store
        self._client = client
        self._locks = locks
        self._lock_wait = lock_wait
        self._reconcile = reconcile or ReconcilePolicy()
        self._options = options = RunOptions(
            clock=clock,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            stop=stop or threading.Event(),
            on_retry=on_retry or (lambda: None),
            measure_lag=measure_lag,
            progress=progress,
            count_limit=count_limit,
            reopen_after=reopen_after,
        )
        # The ones the runner itself uses, by their short names.
        self._clock, self._sleep, self._stop = options.clock, options.sleep, options.stop
        self._warned = Warned()  # a daemon's runs repeat a warning only when it changes

    @property
    def reports_progress(self) -> bool:
        """Whether a hook hears of each committed batch (then metrics count them as sent)."""
        return self._options.progress is not None

    def run(self, job: Job, *, new_dataset: bool = False) -> RunResult:
        """Run ``job`` once to the end of its source; failures are recorded, not raised.
        ``new_dataset``: if it creates its dataset, the name may already be in use."""
        with job_context(job.name):
            if self._stop.is_set():
                return RunResult(job.name, None, "skipped", error="shutting down")
            if self._locks is None:
                return self._run(job, new_dataset=new_dataset)
            lock = JobLock(self._locks, job.name)
            if not lock.acquire(self._lock_wait, sleep=self._sleep):
                message = f"already running in another process (pid {lock.holder()})"
                logger.warning(
                    "skipped: %s", message, extra={"event": "run_skipped", "error": message}
                )
                return RunResult(job.name, None, "skipped", error=message)
            with lock:
                # Holding the lock, any run still marked running was cut short (kill -9).
                self._store.end_interrupted_runs(job.name, self._clock())
                return self._run(job, new_dataset=new_dataset)

    def _run(self, job: Job, *, new_dataset: bool) -> RunResult:
        if new_dataset:
            self._store.allow_new_dataset(job.name, self._clock())
        state = self._store.job_state(job.name)
        run_id = self._store.start_run(job.name, state.cursor_json, self._clock())
        with job_context(job.name, run_id):
            return self._run_recorded(job, run_id, state.cursor_json)

    def _run_recorded(self, job: Job, run_id: int, cursor_before: str | None) -> RunResult:
        started = time.monotonic()
        progress = RunProgress(cursor_json=cursor_before)
        logger.debug(  # DEBUG: an idle run is one line, its end
            "run started (cursor %s)", _show(cursor_before),
            extra={"event": "run_started", "cursor": _show(cursor_before)},
        )  # fmt: skip
        error: str | None = None
        try:
            self._sync(job, run_id, progress)
        except AkkioSyncError as exc:
            error = redact(str(exc))
        except Exception as exc:
            logger.exception("run crashed", extra={"event": "run_crashed"})
            error = redact(f"internal error: {exc!r}")
        if progress.nulled:  # once per run, whether it ended well or not
            nulled = sum(progress.nulled.values())
            logger.warning(
                "sent %d value(s) as null that their fields cannot hold (on_bad_value: null): %s",
                nulled,
                ", ".join(f"{column} ({n})" for column, n in sorted(progress.nulled.items())),
                extra={"event": "values_nulled", "values": nulled},
            )  # fmt: skip
        # Cut short by the stop signal: recorded as such, yet no failure of the job (exit 0).
        interrupted = not error and self._stop.is_set()
        self._store.finish_run(
            run_id,
            status="failed" if error else "interrupted" if interrupted else "success",
            now=self._clock(),
            rows_read=progress.rows_read,
            rows_sent=progress.rows_sent,
            batches=progress.batches,
            cursor_after=progress.cursor_json,
            error=error,
            rows_skipped=progress.rows_skipped,
        )
        seconds = time.monotonic() - started
        end = {
            "rows": progress.rows_sent,
            "batches": progress.batches,
            "seconds": round(seconds, 3),
            "cursor": _show(progress.cursor_json),
            "dataset_id": progress.dataset_id,
        }
        lag = _lag_fields(progress.lag, progress.cursor_json)
        end.update(lag)
        if error:
            logger.error(
                "run failed: %s", error, extra={"event": "run_failed", "error": error, **end}
            )
        else:
            logger.info(
                "run done: %d rows in %d batches, %.2fs (cursor %s%s)",
                progress.rows_sent, progress.batches, seconds, end["cursor"],
                "".join(f"; lag {v:g}{'s' if k == 'lag_seconds' else ''}" for k, v in lag.items()),
                extra={"event": "run_done", **end},
            )  # fmt: skip
        return RunResult(
            job=job.name,
            run_id=run_id,
            status="failed" if error else "success",
            rows_read=progress.rows_read,
            rows_sent=progress.rows_sent,
            batches=progress.batches,
            dataset_id=progress.dataset_id,
            cursor_before=cursor_before,
            cursor_after=progress.cursor_json,
            seconds=seconds,
            error=error,
            rows_skipped=progress.rows_skipped,
            lag=progress.lag,
        )

    def _sync(self, job: Job, run_id: int, progress: RunProgress) -> None:
        with make_source(job.source) as source:
            columns = source.columns()
            read_at = self._clock()  # columns.synced_at: when this run read its rows
            if job.mode == "replace":  # a full refresh into a new dataset: refresh.py
                progress.rows_skipped = self._null_cursor_rows(job, source)
                self._refresher(job).run(job, run_id, source, columns, progress, read_at)
                if self._options.measure_lag:
                    progress.lag = self._lag(source, progress.cursor_json)
                return
            self._refresher(job).settle(job.name)  # left by a killed run in mode: replace
            self._appender(job).run(job, run_id, source, columns, progress, read_at)
            if self._options.measure_lag:
                progress.lag = self._lag(source, progress.cursor_json)

    def _delivery(self, job: Job, dataset_id: str, *, refresh: bool = False) -> Delivery:
        """The exactly-once delivery of ``job``'s batches to ``dataset_id``."""
        return Delivery(
            self._store,
            self._client,
            job=job.name,
            dataset_id=dataset_id,
            policy=dataclasses.replace(self._reconcile, on_mismatch=job.on_mismatch),
            retry=self._options.retry,
            clock=self._clock,
            sleep=self._sleep,
            on_retry=self._options.on_retry,
            refresh=refresh,
            stop=self._stop,
        )

    def _appender(self, job: Job) -> Appender:
        return Appender(
            self._store,
            self._client,
            options=self._options,
            delivery=lambda dataset_id: self._delivery(job, dataset_id),
            warned=self._warned,
            null_rows=lambda source: self._null_cursor_rows(job, source),
        )

    def _refresher(self, job: Job) -> Refresher:
        return Refresher(
            self._store,
            self._client,
            delivery=lambda dataset_id: self._delivery(job, dataset_id, refresh=True),
            clock=self._clock,
            sleep=self._sleep,
            stop=self._stop,
            grace=self._reconcile.grace,
        )

    @staticmethod
    def _lag(source: Source, cursor_json: str | None) -> float | None:
        """How far the checkpoint is behind the source's newest watermark, on the read's own
        engine; a failure to measure it does not fail the run."""
        try:
            newest = source.newest_watermark()
        except SourceError:
            return None
        return lag(newest, decode_cursor(cursor_json) if cursor_json else None)

    def _null_cursor_rows(self, job: Job, source: Source) -> int:
        """Rows with a NULL watermark or key are never read: count them, and fail if the job
        says so."""
        nulls = source.null_cursor_rows()
        columns = " or ".join((job.source.watermark, *job.source.key))
        if nulls and job.source.null_watermark == "fail":
            raise SourceError(
                f"{nulls} row(s) have a NULL {columns} and are never read; fill it in, or set "
                "source.null_watermark: skip"
            )
        if self._warned.changed(job.name, "null_cursor_rows", nulls and (nulls, columns)):
            logger.warning(
                "%d row(s) with a NULL %s are skipped (source.null_watermark: skip)",
                nulls, columns, extra={"event": "null_cursor_rows", "rows": nulls},
            )  # fmt: skip
        return nulls


def _show(cursor_json: str | None) -> str:
    return decode_cursor(cursor_json).describe() if cursor_json else "start"


def _lag_fields(measured: float | None, cursor_json: str | None) -> dict[str, float]:
    """The lag as a log field: ``lag_seconds`` for a time watermark, ``lag`` (in the
    watermark's own units) for a number; none when it was not measured."""
    if measured is None or not cursor_json:
        return {}
    watermark = decode_cursor(cursor_json).watermark
    number = isinstance(watermark, int | float | Decimal) and not isinstance(watermark, bool)
    return {"lag": measured} if number else {"lag_seconds": measured}
