"""``akkiosync preview``: what the next run of a job would send, without sending anything."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from akkiosync.adopt import adopted_schema, existing_dataset
from akkiosync.akkio import AkkioClient, DatasetInfo
from akkiosync.config import Job
from akkiosync.cursor import Cursor, decode_cursor
from akkiosync.dataset import planned_schema, schema_drift
from akkiosync.mapping import RecordMapper, Schema, new_columns
from akkiosync.source import Bounds, coerce, make_source
from akkiosync.state import JobState, Store


@dataclass(frozen=True, slots=True)
class Preview:
    """The schema (pinned, planned, or mapped onto an existing dataset), the cursor, and the
    next records; ``needs_key``: the job writes into an existing dataset whose fields decide
    the schema, but there was no client to read them (the schema shown is planned)."""

    schema: Schema
    pinned: bool
    cursor: Cursor | None
    records: list[dict[str, Any]]
    new_columns: list[str]
    mapped_onto: DatasetInfo | None = None
    needs_key: bool = False


def preview(
    job: Job, store: Store, limit: int = 5, *, client: AkkioClient | None = None
) -> Preview:
    """The schema and the next ``limit`` records the job would send; sends nothing. A job not
    pinned yet that writes into an existing dataset reads that dataset's fields with
    ``client`` (the only request made)."""
    state = store.job_state(job.name)
    if job.mode == "replace":  # every run: the whole source into a new, freshly planned dataset
        state = JobState(job.name)
    cursor = decode_cursor(state.cursor_json) if state.cursor_json else None
    existing = None
    with make_source(job.source) as source:
        columns = source.columns()
        schema = (
            Schema.from_json(state.schema_json)
            if state.schema_json
            else planned_schema(job, columns)
        )
        if not state.schema_json and job.target.existing and client is not None:
            existing = existing_dataset(job, client)
            if existing is not None:
                schema = adopted_schema(job, columns, existing).schema
        drift = schema_drift(job.columns, schema, job=job.name)  # empty unless pinned
        mapper = RecordMapper(
            schema,
            columns,
            key=job.source.key or (job.source.watermark,),
            withheld=drift.withheld,
            job=job.name,
            on_bad_value=job.on_bad_value,
            synced_at=datetime.now(UTC),  # columns.synced_at: as if the run started now
        )
        initial = job.source.initial_watermark
        # As the run reads: from initial_watermark, rows older than settle (a lookback job's
        # re-read window aside: only rows past its cursor are shown).
        bounds = Bounds(
            after=cursor,
            since=None if initial is None else coerce(initial, source.watermark()),
            settle=job.source.settle,
        )
        with closing(source.batches(bounds, max(limit, 1))) as batches:
            batch = next(batches, None)
    spec = job.columns
    return Preview(
        schema=schema,
        pinned=state.schema_json is not None,
        cursor=cursor,
        records=mapper.records(batch.rows[:limit]) if batch else [],
        new_columns=new_columns(schema, columns, include=spec.include, exclude=spec.exclude),
        mapped_onto=existing,
        needs_key=not state.schema_json and job.target.existing and client is None,
    )
