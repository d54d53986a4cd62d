"""Mode append: the rows past the checkpoint, into the job's own dataset, exactly once.

Before the first batch the job's cursor columns must still fit (``identity``), its dataset is
pinned with its schema (``dataset``), column drift is warned of, and a batch a killed run left
in flight is settled (``Delivery.recover``). Then the batches are read ahead and sent in order
(``pipeline``); a source connection that drops is reopened from the last checkpoint; after
the last batch the dataset's row count is verified.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.cursor import decode_cursor, encode_cursor
from akkiosync.dataset import pinned_dataset
from akkiosync.delivery import Delivery
from akkiosync.errors import SourceError, SourceUnavailableError
from akkiosync.identity import CursorColumns, check_cursor_columns
from akkiosync.inferred import check_inferred_types
from akkiosync.logcontext import Warned
from akkiosync.mapping import RecordMapper, SourceColumn, new_columns
from akkiosync.pacing import RetryPolicy
from akkiosync.pipeline import Prepared, send_all
from akkiosync.progress import ProgressHook, RunProgress
from akkiosync.readplan import REOPEN_AFTER, ReadPlan
from akkiosync.results import Clock, utc_now
from akkiosync.source import Source
from akkiosync.state import Store

logger = logging.getLogger(__name__)
SOURCE_ATTEMPTS = 3  # reopen a dropped source connection this many times per run


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a runner runs its jobs: its injected clock and pauses, and what it measures."""

    clock: Clock = utc_now
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    stop: threading.Event = field(default_factory=threading.Event)
    on_retry: Callable[[], None] = lambda: None
    measure_lag: bool = False
    progress: ProgressHook | None = None
    count_limit: int = 0  # rows to go are counted up to this many (see Source.rows_after)
    reopen_after: float = REOPEN_AFTER  # seconds a read stays open (see ReadPlan)


class Appender:
    """Runs the append part of a job's run, on an open source."""

    def __init__(
        self,
        store: Store,
        client: AkkioClient,
        *,
        options: RunOptions,
        delivery: Callable[[str], Delivery],
        warned: Warned,
        null_rows: Callable[[Source], int],
    ) -> None:
        """``delivery``: the exactly-once delivery to a dataset id; ``warned``: warnings said
        once per change; ``null_rows``: rows the read never takes (counted, or failing)."""
        self._store, self._client = store, client
        self._options = options
        self._delivery, self._warned, self._null_rows = delivery, warned, null_rows

    def run(
        self,
        job: Job,
        run_id: int,
        source: Source,
        columns: Sequence[SourceColumn],
        progress: RunProgress,
        read_at: dt.datetime,
    ) -> None:
        """Send the rows past the job's checkpoint, as read at ``read_at``, into its dataset."""
        clock = self._options.clock
        self._check_cursor_columns(job, columns)
        dataset_id, schema, rows = pinned_dataset(job, columns, self._store, self._client, clock)
        progress.dataset_id = dataset_id
        plan = ReadPlan(job, source, schema, reopen_after=self._options.reopen_after)
        self._warn_of_columns(job, plan, columns)
        delivery = self._delivery(dataset_id)
        delivery.recover(rows)  # may commit a batch a crashed run had sent
        progress.cursor_json = self._store.job_state(job.name).cursor_json
        progress.rows_skipped = self._null_rows(source)
        if self._options.progress is not None:
            self._start_progress(job, source, progress, self._options.progress)
        mapper = plan.mapper(read_at)
        progress.nulled = mapper.nulled  # counted as batches are mapped
        for attempt in range(1, SOURCE_ATTEMPTS + 1):
            try:
                self._stream(job, run_id, plan, mapper, delivery, progress)
            except SourceUnavailableError as exc:
                if attempt == SOURCE_ATTEMPTS:
                    raise
                wait = self._options.retry.delay(attempt)
                self._options.on_retry()
                logger.warning(
                    "source connection lost (%s); reopening in %.1fs from the last checkpoint",
                    exc, wait,
                    extra={"event": "source_reconnect", "error": str(exc), "seconds": wait},
                )  # fmt: skip
                self._options.sleep(wait)
            else:
                break
        if progress.batches or delivery.recovered is not None:
            delivery.verify()  # the dataset holds exactly what the job delivered, or loud

    def _warn_of_columns(self, job: Job, plan: ReadPlan, columns: Sequence[SourceColumn]) -> None:
        """Column drift (``columns:`` edited after pinning) and source columns not sent."""
        drift = plan.drift
        if self._warned.changed(job.name, "column_drift", drift.warnings):
            for warning in drift.warnings:
                logger.warning("%s", warning, extra={"event": "column_drift"})
        spec = job.columns
        added = new_columns(plan.schema, columns, include=spec.include, exclude=spec.exclude)
        added = [c for c in added if c not in (spec.include or ())]  # drift warned of those
        if self._warned.changed(job.name, "columns_not_sent", added):
            logger.warning(
                "source column(s) %s are not in the dataset's schema and are not sent",
                ", ".join(added), extra={"event": "columns_not_sent", "columns": added},
            )  # fmt: skip

    def _check_cursor_columns(self, job: Job, columns: Sequence[SourceColumn]) -> None:
        """Fail before reading when the job's watermark or key no longer fit its cursor."""
        state = self._store.job_state(job.name)
        now = CursorColumns.of(job.source.watermark, job.source.key, columns)
        if check_cursor_columns(job.name, state.cursor_columns_json, state.cursor_json, now):
            self._store.set_cursor_columns(job.name, now.to_json(), self._options.clock())

    def _stream(
        self,
        job: Job,
        run_id: int,
        plan: ReadPlan,
        mapper: RecordMapper,
        delivery: Delivery,
        progress: RunProgress,
    ) -> None:
        cursor = decode_cursor(progress.cursor_json) if progress.cursor_json else None

        def send(batch: Prepared) -> None:
            self._send(job, run_id, delivery, batch, progress)

        options = self._options
        if not send_all(
            plan, mapper, cursor, send,
            store=self._store, clock=options.clock, progress=progress, stop=options.stop,
        ):  # fmt: skip
            logger.info("stops early: shutting down", extra={"event": "run_stopping"})

    def _send(
        self, job: Job, run_id: int, delivery: Delivery, batch: Prepared, progress: RunProgress
    ) -> None:
        """Send one batch and commit it, then tell the progress hook and the log."""
        rows, after = batch.body.count, batch.step.cursor
        cursor_json = encode_cursor(after)
        delivery.send(
            batch.body,
            progress.cursor_json,
            cursor_json,
            ledger=batch.step.entries,
            prune_below=batch.step.prune_below,
            run=progress.counts(run_id, rows),  # `logs` shows a running run's
        )
        progress.cursor_json = cursor_json
        progress.rows_sent += rows
        progress.batches += 1
        if self._options.progress is not None:
            self._options.progress.sent(progress.sent(job.name, rows, after))
        logger.info(
            "batch %d: %d rows sent (cursor %s)",
            progress.batches, rows, after.describe(),
            extra={
                "event": "batch_sent", "batch": progress.batches, "rows": rows,
                "rows_total": progress.rows_sent, "cursor": after.describe(),
            },
        )  # fmt: skip
        if progress.batches == 1:  # a new dataset's fields are typed by its first rows
            check_inferred_types(
                job.name, progress.dataset_id, self._store, self._client, self._options.clock
            )

    def _start_progress(
        self, job: Job, source: Source, progress: RunProgress, hook: ProgressHook
    ) -> None:
        cursor = decode_cursor(progress.cursor_json) if progress.cursor_json else None
        try:  # figures for progress only: failing to get them does not fail the run
            progress.to_go = source.rows_after(cursor, self._options.count_limit)
            progress.newest = source.newest_watermark() if self._options.measure_lag else None
        except SourceError as exc:
            logger.debug("no progress figures: %s", exc)
        hook.started(job.name, progress.to_go)
