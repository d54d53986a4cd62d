"""One run of one job: read -> map -> send -> commit, recorded in the run history.

The dataset's schema is planned from the source once and pinned with the dataset id before
the first row is sent; every batch that Akkio accepts advances the cursor in the same store
transaction that counts it, so a failed run leaves the last good checkpoint behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.cursor import Cursor, decode_cursor, encode_cursor
from akkiosync.errors import AkkioSyncError, DatasetNotFoundError, SchemaError
from akkiosync.mapping import RecordMapper, Schema, SourceColumn, new_columns, plan_schema
from akkiosync.redact import redact
from akkiosync.source import Source, open_engine
from akkiosync.state import RunStatus, Store

logger = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The default clock."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run did."""

    job: str
    run_id: int
    status: RunStatus
    rows_read: int
    rows_sent: int
    batches: int
    dataset_id: str | None
    cursor_before: str | None
    cursor_after: str | None
    seconds: float
    error: str | None = None
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass(frozen=True, slots=True)
class Preview:
    """What a run would send next, without sending it."""

    schema: Schema
    pinned: bool
    cursor: Cursor | None
    records: list[dict[str, Any]]
    new_columns: list[str]


def make_source(job: Job) -> Source:
    """The job's source, on a fresh engine (the caller closes it)."""
    spec = job.source
    return Source(
        open_engine(spec.url),
        watermark=spec.watermark,
        key=spec.key,
        table=spec.table,
        query=spec.query,
    )


def planned_schema(job: Job, columns: Sequence[SourceColumn]) -> Schema:
    """The schema a new dataset of this job would get."""
    spec = job.columns
    return plan_schema(
        columns, include=spec.include, exclude=spec.exclude, rename=spec.rename, types=spec.types
    )


def preview(job: Job, store: Store, limit: int = 5) -> Preview:
    """The schema and the next ``limit`` records the job would send; sends nothing."""
    state = store.job_state(job.name)
    cursor = decode_cursor(state.cursor_json) if state.cursor_json else None
    source = make_source(job)
    try:
        columns = source.columns()
        pinned = state.schema_json is not None
        schema = (
            Schema.from_json(state.schema_json)
            if state.schema_json
            else planned_schema(job, columns)
        )
        mapper = RecordMapper(schema, [c.name for c in columns])
        with closing(source.batches(cursor, max(limit, 1))) as batches:
            batch = next(batches, None)
        records = mapper.records(batch.rows[:limit]) if batch else []
        return Preview(
            schema,
            pinned,
            cursor,
            records,
            new_columns(schema, columns, include=job.columns.include, exclude=job.columns.exclude),
        )
    finally:
        source.close()


class Runner:
    """Runs jobs against one store and one Akkio client."""

    def __init__(self, store: Store, client: AkkioClient, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._client = client
        self._clock = clock

    def run(self, job: Job) -> RunResult:
        """Run ``job`` once to the end of its source; failures are recorded, not raised."""
        state = self._store.job_state(job.name)
        run_id = self._store.start_run(job.name, state.cursor_json, self._clock())
        started = time.monotonic()
        progress = _Progress(cursor_json=state.cursor_json)
        logger.info(
            "job %s: run %d started (cursor %s)", job.name, run_id, _show(state.cursor_json)
        )
        status: RunStatus = "success"
        error: str | None = None
        exit_code = 0
        try:
            self._sync(job, run_id, progress)
        except AkkioSyncError as exc:
            status, error, exit_code = "failed", redact(str(exc)), exc.exit_code
        except Exception as exc:
            logger.exception("job %s: run %d crashed", job.name, run_id)
            status, error, exit_code = "failed", redact(f"internal error: {exc!r}"), 1
        self._store.finish_run(
            run_id,
            status=status,
            now=self._clock(),
            rows_read=progress.rows_read,
            rows_sent=progress.rows_sent,
            batches=progress.batches,
            cursor_after=progress.cursor_json,
            error=error,
        )
        seconds = time.monotonic() - started
        if error:
            logger.error("job %s: run %d failed: %s", job.name, run_id, error)
        else:
            logger.info(
                "job %s: run %d done: %d rows in %d batches, %.2fs (cursor %s)",
                job.name, run_id, progress.rows_sent, progress.batches, seconds,
                _show(progress.cursor_json),
            )  # fmt: skip
        return RunResult(
            job=job.name,
            run_id=run_id,
            status=status,
            rows_read=progress.rows_read,
            rows_sent=progress.rows_sent,
            batches=progress.batches,
            dataset_id=progress.dataset_id,
            cursor_before=state.cursor_json,
            cursor_after=progress.cursor_json,
            seconds=seconds,
            error=error,
            exit_code=exit_code,
        )

    def _sync(self, job: Job, run_id: int, progress: _Progress) -> None:
        source = make_source(job)
        try:
            columns = source.columns()
            dataset_id, schema = self._dataset(job, columns)
            progress.dataset_id = dataset_id
            added = new_columns(
                schema, columns, include=job.columns.include, exclude=job.columns.exclude
            )
            if added:
                logger.warning(
                    "job %s: source column(s) %s are not in the dataset's schema and are not sent",
                    job.name, ", ".join(added),
                )  # fmt: skip
            mapper = RecordMapper(schema, [c.name for c in columns])
            cursor = decode_cursor(progress.cursor_json) if progress.cursor_json else None
            for batch in source.batches(cursor, job.batch_size):
                progress.rows_read += len(batch.rows)
                records = mapper.records(batch.rows)
                self._client.add_rows(dataset_id, records)
                cursor_json = encode_cursor(batch.cursor)
                self._store.commit_batch(job.name, cursor_json, len(records), self._clock())
                progress.commit(cursor_json, len(records))
                logger.info(
                    "job %s: run %d batch %d: %d rows sent (cursor %s)",
                    job.name, run_id, progress.batches, len(records), batch.cursor.describe(),
                )  # fmt: skip
        finally:
            source.close()

    def _dataset(self, job: Job, columns: Sequence[SourceColumn]) -> tuple[str, Schema]:
        """The pinned dataset and schema; on the first run, create (or adopt) and pin them."""
        state = self._store.job_state(job.name)
        if state.dataset_id is not None and state.schema_json is not None:
            wanted = job.target.dataset_id or job.target.dataset
            if wanted not in (state.dataset_id, state.dataset_name):
                logger.warning(
                    "job %s: the target changed to %s but the job stays pinned to dataset %s "
                    "(%s); run `akkiosync reset %s` to switch",
                    job.name, wanted, state.dataset_name, state.dataset_id, job.name,
                )  # fmt: skip
            try:
                self._client.get_dataset(state.dataset_id)
            except DatasetNotFoundError:
                raise DatasetNotFoundError(
                    f"dataset {state.dataset_name} ({state.dataset_id}) that job {job.name} writes "
                    f"to no longer exists on Akkio; `akkiosync reset {job.name}` starts over "
                    "with a new dataset"
                ) from None
            return state.dataset_id, Schema.from_json(state.schema_json)
        schema = planned_schema(job, columns)
        if job.target.dataset_id is not None:
            info = self._client.get_dataset(job.target.dataset_id)
            theirs = {f.name for f in info.fields}
            ours = {f.name for f in schema.fields}
            if theirs and theirs != ours:
                raise SchemaError(
                    f"dataset {info.id} has fields {sorted(theirs)} but this job would send "
                    f"{sorted(ours)}; adjust columns.include/exclude/rename"
                )
            dataset_id, name = info.id, info.name
        else:
            assert job.target.dataset is not None  # noqa: S101 - config requires one of the two
            ref = self._client.create_dataset(job.target.dataset)
            dataset_id, name = ref.id, ref.name
            logger.info("job %s: created dataset %s (%s)", job.name, name, dataset_id)
        self._store.pin_dataset(job.name, dataset_id, name, schema.to_json(), self._clock())
        return dataset_id, schema


@dataclass
class _Progress:
    cursor_json: str | None
    rows_read: int = 0
    rows_sent: int = 0
    batches: int = 0
    dataset_id: str | None = None

    def commit(self, cursor_json: str, rows: int) -> None:
        self.cursor_json = cursor_json
        self.rows_sent += rows
        self.batches += 1


def _show(cursor_json: str | None) -> str:
    return decode_cursor(cursor_json).describe() if cursor_json else "start"
