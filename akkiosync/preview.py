"""``akkiosync preview``: what the next run of a job would send, without sending anything."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Any

from akkiosync.config import Job
from akkiosync.cursor import Cursor, decode_cursor
from akkiosync.dataset import planned_schema, schema_drift
from akkiosync.mapping import RecordMapper, Schema, new_columns
from akkiosync.source import make_source
from akkiosync.state import Store


@dataclass(frozen=True, slots=True)
class Preview:
    """The schema (pinned or planned), the cursor, and the next records."""

    schema: Schema
    pinned: bool
    cursor: Cursor | None
    records: list[dict[str, Any]]
    new_columns: list[str]


def preview(job: Job, store: Store, limit: int = 5) -> Preview:
    """The schema and the next ``limit`` records the job would send; sends nothing."""
    state = store.job_state(job.name)
    cursor = decode_cursor(state.cursor_json) if state.cursor_json else None
    with make_source(job.source) as source:
        columns = source.columns()
        schema = (
            Schema.from_json(state.schema_json)
            if state.schema_json
            else planned_schema(job, columns)
        )
        drift = schema_drift(job.columns, schema, job=job.name)  # empty unless pinned
        mapper = RecordMapper(
            schema,
            [c.name for c in columns],
            key=job.source.key or (job.source.watermark,),
            withheld=drift.withheld,
            job=job.name,
        )
        with closing(source.batches(cursor, max(limit, 1))) as batches:
            batch = next(batches, None)
    spec = job.columns
    return Preview(
        schema=schema,
        pinned=state.schema_json is not None,
        cursor=cursor,
        records=mapper.records(batch.rows[:limit]) if batch else [],
        new_columns=new_columns(schema, columns, include=spec.include, exclude=spec.exclude),
    )
