"""The run history: every run of every job, as the store records it.

A base of ``Store``: it owns the engine and the transaction helper that both use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa

from akkiosync.errors import StateError
from akkiosync.redact import redact
from akkiosync.state import _schema as schema
from akkiosync.state._records import RunCounts, RunRecord, RunStatus


class RunHistory:
    """The ``runs`` table, and the engine and transactions the whole store shares."""

    def __init__(self, engine: sa.Engine, name: str) -> None:
        """Wrap an engine that ``Store.open`` has configured; ``name`` appears in errors."""
        self._engine = engine
        self._writer = engine.execution_options(akkiosync_begin="IMMEDIATE")
        self._name = name

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        try:
            with (self._writer if write else self._engine).begin() as connection:
                yield connection
        except sa.exc.DBAPIError as error:  # the database failed; mistakes in our SQL propagate
            raise StateError(redact(f"checkpoint store {self._name}: {error.orig}")) from error

    def start_run(self, job: str, cursor_before: str | None, now: datetime) -> int:
        """Record a run that starts now, with status 'running'; return its id."""
        run = {
            "job": job,
            "started_at": schema.utc(now),
            "status": "running",
            "cursor_before": cursor_before,
        }
        with self._transaction(write=True) as connection:
            result = connection.execute(sa.insert(schema.runs).values(run))
            key = result.inserted_primary_key
            if key is None:  # never for a single-row INSERT; says so to the type checker
                raise StateError(f"checkpoint store {self._name} returned no run id")
            return int(key[0])

    def finish_run(
        self,
        run_id: int,
        *,
        status: RunStatus,
        now: datetime,
        rows_read: int,
        rows_sent: int,
        batches: int,
        cursor_after: str | None,
        error: str | None = None,
        rows_skipped: int = 0,
    ) -> None:
        """Record how the run ended; ``error`` is stored redacted."""
        values = {
            "status": status,
            "ended_at": schema.utc(now),
            "rows_read": rows_read,
            "rows_sent": rows_sent,
            "batches": batches,
            "cursor_after": cursor_after,
            "error": None if error is None else redact(error),
            "rows_skipped": rows_skipped,
        }
        with self._transaction(write=True) as connection:
            result = connection.execute(
                sa.update(schema.runs).where(schema.runs.c.id == run_id).values(values)
            )
            if result.rowcount == 0:
                raise StateError(f"checkpoint store {self._name} has no run {run_id}")

    def end_interrupted_runs(self, job: str, now: datetime) -> int:
        """Mark the job's runs still 'running' as failed: their process ended mid-run (only
        call this while holding the job's lock, so that none of them is really running)."""
        table = schema.runs
        interrupted = sa.and_(table.c.job == job, table.c.status == "running")
        values = {
            "status": "failed",
            "ended_at": schema.utc(now),
            "error": "interrupted: the process ended before the run finished",
        }
        with self._transaction(write=True) as connection:
            return int(
                connection.execute(sa.update(table).where(interrupted).values(values)).rowcount
            )

    def runs(
        self,
        job: str | None = None,
        limit: int = 50,
        *,
        since: datetime | None = None,
        failed: bool = False,
        after_id: int | None = None,
    ) -> list[RunRecord]:
        """The last ``limit`` runs, of ``job`` or of every job, newest first; only those started
        at or after ``since``, only failed ones, only those whose id is above ``after_id``."""
        table = schema.runs
        query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(table.c.job == job)
        if since is not None:  # fixed-width UTC text: compared as text, ordered as time
            query = query.where(table.c.started_at >= schema.utc(since))
        if failed:
            query = query.where(table.c.status == "failed")
        if after_id is not None:
            query = query.where(table.c.id > after_id)
        with self._transaction() as connection:
            rows = connection.execute(query).all()
        return [RunRecord(**row._mapping) for row in rows]

    def last_run(self, job: str) -> RunRecord | None:
        """The job's newest run, or ``None`` if it never ran."""
        runs = self.runs(job, limit=1)
        return runs[0] if runs else None

    def run(self, run_id: int) -> RunRecord | None:
        """One run, or ``None`` if there is none with that id (any more)."""
        table = schema.runs
        with self._transaction() as connection:
            row = connection.execute(sa.select(table).where(table.c.id == run_id)).one_or_none()
        return None if row is None else RunRecord(**row._mapping)

    def running_runs(self, job: str | None = None) -> list[RunRecord]:
        """The runs still marked running, of ``job`` or of every job, oldest first."""
        table = schema.runs
        query = sa.select(table).where(table.c.status == "running").order_by(table.c.id)
        if job is not None:
            query = query.where(table.c.job == job)
        with self._transaction() as connection:
            rows = connection.execute(query).all()
        return [RunRecord(**row._mapping) for row in rows]

    def prune_runs(self, *, older_than: datetime, keep_per_job: int) -> int:
        """Delete the finished runs started before ``older_than`` and, per job, all but the
        newest ``keep_per_job`` runs; return how many were deleted. Running runs stay, and so
        do each job's newest run (``status`` shows it, and SQLite would give a deleted highest
        id to the next run: ``logs --follow`` tells new runs by a higher id), its newest run
        that sent rows (the last backfill's record, not pushed out by idle runs) and its
        newest failed run, however old."""
        if keep_per_job < 1:
            raise ValueError(f"keep_per_job must be at least 1, not {keep_per_job}")
        table = schema.runs
        deleted = 0
        with self._transaction(write=True) as connection:
            jobs = connection.execute(sa.select(table.c.job).distinct()).scalars().all()
            for job in jobs:
                newest = sa.select(table.c.id).where(table.c.job == job).order_by(table.c.id.desc())
                kept = connection.execute(newest.limit(keep_per_job)).scalars().all()
                lasting = {kept[0]}
                for which in (table.c.rows_sent > 0, table.c.status == "failed"):
                    found = connection.execute(newest.where(which).limit(1)).scalar()
                    if found is not None:
                        lasting.add(found)
                old = table.c.started_at < schema.utc(older_than)
                if len(kept) == keep_per_job:
                    old = sa.or_(old, table.c.id < kept[-1])
                prunable = sa.and_(
                    table.c.job == job,
                    table.c.status != "running",
                    table.c.id.not_in(lasting),
                    old,
                )
                deleted += connection.execute(sa.delete(table).where(prunable)).rowcount
        return deleted


def write_run_counts(connection: sa.Connection, run: RunCounts, cursor: str | None) -> None:
    """Inside a batch's commit: the running run's counts and cursor so far."""
    values = {
        "rows_read": run.rows_read,
        "rows_sent": run.rows_sent,
        "batches": run.batches,
        "cursor_after": cursor,
    }
    table = schema.runs
    connection.execute(sa.update(table).where(table.c.id == run.run_id).values(values))
