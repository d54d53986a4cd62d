"""The checkpoint store: each job's dataset, schema, cursor and counters, and every run.

SQLAlchemy Core on SQLite in WAL mode, with portable Core types only, so that a PostgreSQL store
needs no rewrite. The tables and their migrations are in ``_schema``; each migration runs
in a transaction of its own. Every public method is one short transaction: a crash leaves each write
whole or absent. The JSON columns are opaque text whose meaning belongs to the runner. The store
never reads the clock (callers pass ``now``) and never holds a secret (error texts are redacted).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.pool import ConnectionPoolEntry

from akkiosync.errors import StateError
from akkiosync.redact import redact
from akkiosync.state import _schema as schema
from akkiosync.state._history import write_run_counts
from akkiosync.state._records import Creation, Intent, JobState, RunCounts
from akkiosync.state._refreshes import Refreshes

_PRAGMAS = (
    "PRAGMA busy_timeout = 30000",  # first, so that switching to WAL waits for other openers
    "PRAGMA journal_mode = WAL",
    # NORMAL in WAL mode may lose the last commits on power loss; a lost checkpoint is a resend.
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)


def _configure_sqlite(engine: sa.Engine) -> None:
    """Make each SQLite connection durable, and let SQLAlchemy decide where transactions begin."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _: ConnectionPoolEntry) -> None:
        # pysqlite's own implicit BEGIN skips SELECT and DDL; "begin" below emits ours instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Writers take the write lock up front: in WAL mode a deferred reader that later writes
        # can fail with SQLITE_BUSY_SNAPSHOT, which busy_timeout does not wait out.
        mode = connection.get_execution_options().get("akkiosync_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Store(Refreshes):
    """The checkpoint store. Safe to share between threads: each call has its own connection.

    The run history's methods come from ``RunHistory``, the full refreshes' from
    ``Refreshes``."""

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open the SQLite store at ``path``, creating it and applying missing migrations."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StateError(redact(f"checkpoint store {path}: {error}")) from error
        engine = sa.create_engine(sa.URL.create("sqlite", database=str(path)))
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        store = cls(engine, str(path))
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _migrate(self) -> None:
        while True:
            with self._transaction(write=True) as connection:
                schema.meta.create(connection, checkfirst=True)
                version = _schema_version(connection)
                if version > len(schema.MIGRATIONS):
                    raise StateError(
                        f"checkpoint store {self._name} has schema version {version}, newer than "
                        f"this akkiosync knows ({len(schema.MIGRATIONS)}): upgrade akkiosync"
                    )
                if version == len(schema.MIGRATIONS):
                    return
                schema.MIGRATIONS[version](connection)
                connection.execute(
                    sa.delete(schema.meta).where(schema.meta.c.key == "schema_version")
                )
                connection.execute(
                    sa.insert(schema.meta).values(key="schema_version", value=str(version + 1))
                )

    def job_state(self, job: str) -> JobState:
        """The job's state; defaults (all ``None``/0) for a job the store does not know."""
        with self._transaction() as connection:
            row = connection.execute(
                sa.select(schema.jobs).where(schema.jobs.c.name == job)
            ).one_or_none()
        return JobState(job=job) if row is None else _job_state(row)

    def job_states(self) -> list[JobState]:
        """Every job the store knows, ordered by name."""
        with self._transaction() as connection:
            rows = connection.execute(sa.select(schema.jobs).order_by(schema.jobs.c.name)).all()
        return [_job_state(row) for row in rows]

    def pin_dataset(
        self,
        job: str,
        dataset_id: str,
        dataset_name: str,
        schema_json: str,
        now: datetime,
        *,
        rows_at_pin: int = 0,
        adopted: bool = False,
    ) -> None:
        """Record the dataset the job writes to (``adopted``: one it did not make) and its
        schema, and forget the pending creation; the cursor and counters stay."""
        values = {
            "dataset_id": dataset_id,
            "dataset_name": dataset_name,
            "schema_json": schema_json,
            "rows_at_pin": rows_at_pin,
            "new_dataset_ok": 0,
            "adopted": int(adopted),
            "updated_at": schema.utc(now),
        }
        with self._transaction(write=True) as connection:
            _update_or_insert(connection, job, values, values)
            connection.execute(sa.delete(schema.creations).where(schema.creations.c.job == job))

    def commit_batch(
        self,
        job: str,
        cursor_json: str,
        rows: int,
        now: datetime,
        *,
        ledger: Sequence[tuple[str, float]] = (),
        prune_below: float | None = None,
        run: RunCounts | None = None,
    ) -> None:
        """One transaction: set the cursor, rows_sent += rows, batches_sent += 1, clear the
        job's intent, record the batch's ``ledger`` entries (lookback jobs), drop the entries
        ordered below ``prune_below``, and write the running ``run``'s counts so far."""
        if rows < 0:
            raise ValueError(f"a batch cannot have {rows} rows")
        values = {"cursor_json": cursor_json, "updated_at": schema.utc(now)}
        added = {
            "rows_sent": schema.jobs.c.rows_sent + rows,
            "batches_sent": schema.jobs.c.batches_sent + 1,
        }
        table = schema.ledger
        with self._transaction(write=True) as connection:
            _update_or_insert(
                connection, job, values | added, values | {"rows_sent": rows, "batches_sent": 1}
            )
            connection.execute(sa.delete(schema.intents).where(schema.intents.c.job == job))
            if prune_below is not None:
                old = sa.and_(table.c.job == job, table.c.wm_order < prune_below)
                connection.execute(sa.delete(table).where(old))
            if ledger:
                connection.execute(
                    sa.insert(table),
                    [{"job": job, "entry": e, "wm_order": o} for e, o in ledger],
                )
            if run is not None:
                write_run_counts(connection, run, cursor_json)

    def ledger_entries(self, job: str, since: float | None = None) -> set[str]:
        """The job's ledger: rows sent whose watermark is ordered at or after ``since``."""
        table = schema.ledger
        query = sa.select(table.c.entry).where(table.c.job == job)
        if since is not None:
            query = query.where(table.c.wm_order >= since)
        with self._transaction() as connection:
            return set(connection.execute(query).scalars())

    def record_intent(self, intent: Intent) -> None:
        """Write the job's intent (replacing any older one) before its batch is sent."""
        values = {
            "dataset_id": intent.dataset_id,
            "rows": intent.rows,
            "rows_before": intent.rows_before,
            "cursor_before": intent.cursor_before,
            "cursor_after": intent.cursor_after,
            "created_at": schema.utc(intent.created_at),
            "ledger_json": intent.ledger_json,
        }
        table = schema.intents
        with self._transaction(write=True) as connection:
            connection.execute(sa.delete(table).where(table.c.job == intent.job))
            connection.execute(sa.insert(table).values(values | {"job": intent.job}))

    def pending_intent(self, job: str) -> Intent | None:
        """The job's batch whose fate is unknown, if any."""
        table = schema.intents
        with self._transaction() as connection:
            row = connection.execute(sa.select(table).where(table.c.job == job)).one_or_none()
        return None if row is None else Intent(**row._mapping)

    def clear_intent(self, job: str) -> None:
        """Forget the job's intent: its batch is known not to have landed."""
        with self._transaction(write=True) as connection:
            connection.execute(sa.delete(schema.intents).where(schema.intents.c.job == job))

    def record_creation(
        self, job: str, dataset_name: str, known_ids: Sequence[str], now: datetime
    ) -> None:
        """Note, before asking Akkio to create it, that the job is creating a dataset."""
        table = schema.creations
        values = {
            "job": job,
            "dataset_name": dataset_name,
            "known_ids_json": json.dumps(list(known_ids)),
            "created_at": schema.utc(now),
        }
        with self._transaction(write=True) as connection:
            connection.execute(sa.delete(table).where(table.c.job == job))
            connection.execute(sa.insert(table).values(values))

    def pending_creation(self, job: str) -> Creation | None:
        """The job's dataset creation whose answer never arrived, if any."""
        table = schema.creations
        with self._transaction() as connection:
            row = connection.execute(sa.select(table).where(table.c.job == job)).one_or_none()
        if row is None:
            return None
        known = tuple(json.loads(row.known_ids_json))
        return Creation(row.job, row.dataset_name, known, row.created_at)

    def reset(self, job: str, now: datetime) -> None:
        """Forget the job's dataset, schema, cursor, counters, intents, ledger and refresh (runs
        stay), and let its next run create a dataset even if the name is taken (the old one's)."""
        with self._transaction(write=True) as connection:
            for table, column in (
                (schema.jobs, schema.jobs.c.name),
                (schema.intents, schema.intents.c.job),
                (schema.creations, schema.creations.c.job),
                (schema.ledger, schema.ledger.c.job),
                (schema.refreshes, schema.refreshes.c.job),
            ):
                connection.execute(sa.delete(table).where(column == job))
            connection.execute(
                sa.insert(schema.jobs).values(
                    name=job, new_dataset_ok=1, updated_at=schema.utc(now)
                )
            )

    def allow_new_dataset(self, job: str, now: datetime) -> None:
        """Let the job's next dataset creation take a name that is already in use."""
        values = {"new_dataset_ok": 1, "updated_at": schema.utc(now)}
        with self._transaction(write=True) as connection:
            _update_or_insert(connection, job, values, values)

    def set_cursor_columns(self, job: str, columns_json: str, now: datetime) -> None:
        """Record which columns (and types) the job's cursor belongs to."""
        values = {"cursor_columns_json": columns_json, "updated_at": schema.utc(now)}
        with self._transaction(write=True) as connection:
            _update_or_insert(connection, job, values, values)

    def set_batch_limit(self, job: str, limit_json: str | None, now: datetime) -> None:
        """Record the rows per batch a server's 413 taught the job (None: forget it)."""
        values = {"batch_limit_json": limit_json, "updated_at": schema.utc(now)}
        with self._transaction(write=True) as connection:
            _update_or_insert(connection, job, values, values)

    def set_type_warnings(self, job: str, warnings_json: str, now: datetime) -> None:
        """Record where Akkio inferred other types than planned for the job's dataset
        (``type_warnings_json``: a JSON list of [field, planned, inferred]; "[]": none)."""
        values = {"type_warnings_json": warnings_json, "updated_at": schema.utc(now)}
        with self._transaction(write=True) as connection:
            _update_or_insert(connection, job, values, values)

    def restart_cursor(self, job: str, now: datetime) -> None:
        """Keep the job's dataset and schema but forget its cursor, the columns it belongs to,
        its intent and ledger: the next run reads from the start (or ``initial_watermark``)
        into the same dataset, whose current rows become the count expected before it."""
        jobs = schema.jobs
        with self._transaction(write=True) as connection:
            connection.execute(
                sa.update(jobs)
                .where(jobs.c.name == job)
                .values(
                    rows_at_pin=jobs.c.rows_at_pin + jobs.c.rows_sent,
                    rows_sent=0,
                    cursor_json=None,
                    cursor_columns_json=None,
                    updated_at=schema.utc(now),
                )
            )
            for table in (schema.intents, schema.ledger):
                connection.execute(sa.delete(table).where(table.c.job == job))

    def accept_count(self, job: str, count: int, now: datetime) -> None:
        """Take ``count`` as the dataset's right row count: the job's expected count becomes
        it, and a batch whose fate is unknown is forgotten (its rows are read again)."""
        jobs = schema.jobs
        with self._transaction(write=True) as connection:
            connection.execute(
                sa.update(jobs)
                .where(jobs.c.name == job)
                .values(rows_at_pin=count - jobs.c.rows_sent, updated_at=schema.utc(now))
            )
            connection.execute(sa.delete(schema.intents).where(schema.intents.c.job == job))


def _schema_version(connection: sa.Connection) -> int:
    query = sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
    value = connection.execute(query).scalar_one_or_none()
    return 0 if value is None else int(value)


def _update_or_insert(
    connection: sa.Connection, job: str, changes: dict[str, Any], first: dict[str, Any]
) -> None:
    """Apply ``changes`` to the job's row, or create the row from ``first``."""
    # Portable Core, not a dialect's upsert: the write transaction (BEGIN IMMEDIATE on SQLite)
    # keeps other writers out between the UPDATE and the INSERT.
    result = connection.execute(
        sa.update(schema.jobs).where(schema.jobs.c.name == job).values(changes)
    )
    if result.rowcount == 0:
        connection.execute(sa.insert(schema.jobs).values({**first, "name": job}))


def _job_state(row: sa.Row[Any]) -> JobState:
    values = dict(row._mapping)
    del values["updated_at"]
    values["new_dataset_ok"] = bool(values["new_dataset_ok"])
    values["adopted"] = bool(values["adopted"])
    return JobState(job=values.pop("name"), **values)
