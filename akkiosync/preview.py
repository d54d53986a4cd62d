"""``akkiosync preview``: what the next run of a job would send, without sending anything."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Any

from akkiosync.adopt import adopted_schema, existing_dataset, planned_schema
from akkiosync.akkio import AkkioClient, DatasetInfo
from akkiosync.config import Job
from akkiosync.cursor import Cursor, decode_cursor
from akkiosync.mapping import Schema, new_columns
from akkiosync.readplan import ReadPlan
from akkiosync.results import Clock, utc_now
from akkiosync.source import make_source
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
    job: Job,
    store: Store,
    limit: int = 5,
    *,
    client: AkkioClient | None = None,
    clock: Clock = utc_now,
) -> Preview:
    """The schema and the first ``limit`` records the job's next run would send (read through
    the run's own plan: the same bounds, ledger, mapper); sends nothing and writes nothing. A
    job not pinned yet that writes into an existing dataset reads that dataset's fields with
    ``client`` (the only request made); ``clock``: the run's time, for ``columns.synced_at``."""
    whole = job.mode == "replace"  # every run: the whole source into a new, planned dataset
    state = JobState(job.name) if whole else store.job_state(job.name)
    cursor = decode_cursor(state.cursor_json) if state.cursor_json else None
    existing = None
    records: list[dict[str, Any]] = []
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
        plan = ReadPlan(job, source, schema, whole=whole)
        mapper = plan.mapper(clock())
        # The run's own batches: a lookback job's window is skipped through as fast.
        with closing(plan.steps(store, cursor, job.batch_size)) as steps:
            for step in steps:
                records += mapper.records(step.rows[: limit - len(records)])
                if len(records) >= limit:
                    break
    spec = job.columns
    return Preview(
        schema=schema,
        pinned=state.schema_json is not None,
        cursor=cursor,
        records=records,
        new_columns=new_columns(schema, columns, include=spec.include, exclude=spec.exclude),
        mapped_onto=existing,
        needs_key=not state.schema_json and job.target.existing and client is None,
    )
