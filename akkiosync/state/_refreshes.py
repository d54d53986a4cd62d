"""Full refreshes (``mode: replace``) as the store records them, one per job at most.

A refresh moves through ``creating`` (recorded before the create request, with the ids its
dataset name already had, so that a creation whose answer was lost can be told apart),
``filling`` (its batches commit here, not to the job's own counters) and ``deleting`` (the job
was switched to the new dataset; the previous one is still to be deleted). A base of ``Store``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from akkiosync.errors import StateError
from akkiosync.state import _schema as schema
from akkiosync.state._history import RunHistory, write_run_counts
from akkiosync.state._records import Refresh, RunCounts


class Refreshes(RunHistory):
    """The ``refreshes`` table, and the switch of a job to the dataset its refresh filled."""

    def refresh(self, job: str) -> Refresh | None:
        """The job's refresh under way, if any."""
        table = schema.refreshes
        with self._transaction() as connection:
            row = connection.execute(sa.select(table).where(table.c.job == job)).one_or_none()
        return None if row is None else Refresh(**row._mapping)

    def begin_refresh(
        self,
        job: str,
        dataset_name: str,
        previous_id: str | None,
        known_ids: Sequence[str],
        now: datetime,
    ) -> None:
        """Before asking Akkio for the new dataset: the refresh, in phase ``creating``, and the
        ids its name has now (a later list that shows one more found the lost creation)."""
        creation = {
            "job": job,
            "dataset_name": dataset_name,
            "known_ids_json": json.dumps(list(known_ids)),
            "created_at": schema.utc(now),
        }
        refresh = {
            "job": job,
            "dataset_id": None,
            "dataset_name": dataset_name,
            "previous_id": previous_id,
            "phase": "creating",
            "rows_sent": 0,
            "cursor_json": None,
            "started_at": schema.utc(now),
        }
        with self._transaction(write=True) as connection:
            for table in (schema.refreshes, schema.creations):
                connection.execute(sa.delete(table).where(table.c.job == job))
            connection.execute(sa.insert(schema.creations).values(creation))
            connection.execute(sa.insert(schema.refreshes).values(refresh))

    def refresh_created(self, job: str, dataset_id: str) -> None:
        """The new dataset exists: the refresh fills it."""
        table = schema.refreshes
        with self._transaction(write=True) as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.job == job)
                .values(dataset_id=dataset_id, phase="filling")
            )
            connection.execute(sa.delete(schema.creations).where(schema.creations.c.job == job))

    def commit_refresh_batch(
        self, job: str, cursor_json: str, rows: int, *, run: RunCounts | None = None
    ) -> None:
        """One transaction: the refresh's cursor and rows_sent += rows, the job's intent
        cleared and the running ``run``'s counts written (what ``commit_batch`` does for the
        job's own dataset)."""
        if rows < 0:
            raise ValueError(f"a batch cannot have {rows} rows")
        table = schema.refreshes
        with self._transaction(write=True) as connection:
            updated = connection.execute(
                sa.update(table)
                .where(table.c.job == job, table.c.phase == "filling")
                .values(cursor_json=cursor_json, rows_sent=table.c.rows_sent + rows)
            )
            if updated.rowcount != 1:  # a batch of no refresh: a bug, never a guess
                raise StateError(f"job {job} has no refresh being filled to commit a batch to")
            connection.execute(sa.delete(schema.intents).where(schema.intents.c.job == job))
            if run is not None:
                write_run_counts(connection, run, cursor_json)

    def switch_refresh(
        self,
        job: str,
        schema_json: str,
        cursor_columns_json: str | None,
        *,
        batches: int,
        now: datetime,
    ) -> Refresh:
        """One transaction: the job's dataset becomes the refreshed one, with its schema, its
        rows as the job's counters and ``replaced_at``; the refresh moves on to ``deleting``
        the previous dataset (or ends, when there is none). Returns the refresh as it was."""
        table, jobs = schema.refreshes, schema.jobs
        with self._transaction(write=True) as connection:
            row = connection.execute(sa.select(table).where(table.c.job == job)).one_or_none()
            refresh = None if row is None else Refresh(**row._mapping)
            if refresh is None or refresh.phase != "filling" or refresh.dataset_id is None:
                raise StateError(f"job {job} has no filled refresh to switch to")
            values = {
                "dataset_id": refresh.dataset_id,
                "dataset_name": refresh.dataset_name,
                "schema_json": schema_json,
                "cursor_json": refresh.cursor_json,
                "cursor_columns_json": cursor_columns_json,
                "rows_at_pin": 0,
                "adopted": 0,  # the refresh made it
                "rows_sent": refresh.rows_sent,
                "batches_sent": batches,
                "new_dataset_ok": 0,
                "replaced_at": schema.utc(now),
                "type_warnings_json": None,  # they were the previous dataset's
                "updated_at": schema.utc(now),
            }
            changed = connection.execute(sa.update(jobs).where(jobs.c.name == job).values(values))
            if changed.rowcount == 0:
                connection.execute(sa.insert(jobs).values({**values, "name": job}))
            connection.execute(sa.delete(schema.intents).where(schema.intents.c.job == job))
            if refresh.previous_id is None:
                connection.execute(sa.delete(table).where(table.c.job == job))
            else:
                connection.execute(
                    sa.update(table).where(table.c.job == job).values(phase="deleting")
                )
        return refresh

    def end_refresh(self, job: str) -> None:
        """Forget the job's refresh (done, or its partial dataset deleted), with its pending
        creation and any intent of a batch sent to it."""
        with self._transaction(write=True) as connection:
            for table in (schema.refreshes, schema.creations, schema.intents):
                connection.execute(sa.delete(table).where(table.c.job == job))
