"""The checkpoint store: each job's dataset, schema, cursor and counters, and every run.

SQLAlchemy Core on SQLite in WAL mode, with portable Core types only, so that a PostgreSQL store
needs no rewrite. The schema version lives in ``meta``; ``MIGRATIONS`` upgrades it one
transaction per step. Every public method is one short transaction: a crash leaves each write
whole or absent. The JSON columns are opaque text whose meaning belongs to the runner. The store
never reads the clock (callers pass ``now``) and never holds a secret (error texts are redacted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import sqlalchemy as sa
from sqlalchemy.pool import ConnectionPoolEntry

from akkiosync.errors import StateError
from akkiosync.redact import redact

RunStatus = Literal["running", "success", "failed"]


@dataclass(frozen=True, slots=True)
class JobState:
    """What the store knows about one job; all ``None``/0 for a job it has never seen."""

    job: str
    dataset_id: str | None = None
    dataset_name: str | None = None
    schema_json: str | None = None
    cursor_json: str | None = None
    rows_sent: int = 0
    batches_sent: int = 0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one job, as recorded in the store."""

    id: int
    job: str
    started_at: datetime
    ended_at: datetime | None
    status: RunStatus
    rows_read: int
    rows_sent: int
    batches: int
    cursor_before: str | None
    cursor_after: str | None
    error: str | None


class _Timestamp(sa.TypeDecorator[datetime]):
    """An aware datetime as fixed-width ISO 8601 text in UTC: lossless, portable, sortable."""

    impl = sa.String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else _utc(value).isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs an aware one")
    return value.astimezone(UTC)


# SQLite makes only INTEGER PRIMARY KEY an auto-incrementing rowid; elsewhere a BIGINT is wanted.
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _define_v1(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The tables of schema version 1. Frozen: a later change gets its own migration."""
    jobs = sa.Table(
        "jobs",
        metadata,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("dataset_id", sa.String(255)),
        sa.Column("dataset_name", sa.String(255)),
        sa.Column("schema_json", sa.Text),
        sa.Column("cursor_json", sa.Text),
        sa.Column("rows_sent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("batches_sent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", _Timestamp, nullable=False),
    )
    runs = sa.Table(
        "runs",
        metadata,
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("started_at", _Timestamp, nullable=False),
        sa.Column("ended_at", _Timestamp),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_sent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("batches", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cursor_before", sa.Text),
        sa.Column("cursor_after", sa.Text),
        sa.Column("error", sa.Text),
        sa.CheckConstraint("status IN ('running', 'success', 'failed')", name="ck_runs_status"),
        sa.Index("ix_runs_job_id", "job", "id"),
    )
    return jobs, runs


# The tables as the code queries them: today exactly version 1. When a migration changes a
# table, define its current shape here and leave _define_v1 as it was.
_metadata = sa.MetaData()
_meta = sa.Table(
    "meta",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
_jobs, _runs = _define_v1(_metadata)


def _create_v1(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    _define_v1(metadata)
    metadata.create_all(connection, checkfirst=False)


# MIGRATIONS[n] upgrades a store from schema version n to n + 1. Append only.
MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (_create_v1,)

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


class Store:
    """The checkpoint store. Safe to share between threads: each call has its own connection."""

    def __init__(self, engine: sa.Engine, name: str) -> None:
        """Wrap an engine that ``open`` has configured; ``name`` appears in error messages."""
        self._engine = engine
        self._writer = engine.execution_options(akkiosync_begin="IMMEDIATE")
        self._name = name

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

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        try:
            with (self._writer if write else self._engine).begin() as connection:
                yield connection
        except sa.exc.DBAPIError as error:  # the database failed; mistakes in our SQL propagate
            raise StateError(redact(f"checkpoint store {self._name}: {error.orig}")) from error

    def _migrate(self) -> None:
        while True:
            with self._transaction(write=True) as connection:
                _meta.create(connection, checkfirst=True)
                version = _schema_version(connection)
                if version > len(MIGRATIONS):
                    raise StateError(
                        f"checkpoint store {self._name} has schema version {version}, newer than "
                        f"this akkiosync knows ({len(MIGRATIONS)}): upgrade akkiosync"
                    )
                if version == len(MIGRATIONS):
                    return
                MIGRATIONS[version](connection)
                connection.execute(sa.delete(_meta).where(_meta.c.key == "schema_version"))
                connection.execute(
                    sa.insert(_meta).values(key="schema_version", value=str(version + 1))
                )

    def job_state(self, job: str) -> JobState:
        """The job's state; defaults (all ``None``/0) for a job the store does not know."""
        with self._transaction() as connection:
            row = connection.execute(sa.select(_jobs).where(_jobs.c.name == job)).one_or_none()
        return JobState(job=job) if row is None else _job_state(row)

    def job_states(self) -> list[JobState]:
        """Every job the store knows, ordered by name."""
        with self._transaction() as connection:
            rows = connection.execute(sa.select(_jobs).order_by(_jobs.c.name)).all()
        return [_job_state(row) for row in rows]

    def pin_dataset(
        self, job: str, dataset_id: str, dataset_name: str, schema_json: str, now: datetime
    ) -> None:
        """Record the dataset the job writes to and its schema; the cursor and counters stay."""
        values = {
            "dataset_id": dataset_id,
            "dataset_name": dataset_name,
            "schema_json": schema_json,
            "updated_at": _utc(now),
        }
        with self._transaction(write=True) as connection:
            _update_or_insert(connection, job, values, values)

    def commit_batch(self, job: str, cursor_json: str, rows: int, now: datetime) -> None:
        """One transaction: set the cursor, rows_sent += rows, batches_sent += 1."""
        if rows < 0:
            raise ValueError(f"a batch cannot have {rows} rows")
        values = {"cursor_json": cursor_json, "updated_at": _utc(now)}
        added = {"rows_sent": _jobs.c.rows_sent + rows, "batches_sent": _jobs.c.batches_sent + 1}
        with self._transaction(write=True) as connection:
            _update_or_insert(
                connection, job, values | added, values | {"rows_sent": rows, "batches_sent": 1}
            )

    def reset(self, job: str) -> None:
        """Forget the job's dataset, schema, cursor and counters; its run history stays."""
        with self._transaction(write=True) as connection:
            connection.execute(sa.delete(_jobs).where(_jobs.c.name == job))

    def start_run(self, job: str, cursor_before: str | None, now: datetime) -> int:
        """Record a run that starts now, with status 'running'; return its id."""
        run = {
            "job": job,
            "started_at": _utc(now),
            "status": "running",
            "cursor_before": cursor_before,
        }
        with self._transaction(write=True) as connection:
            result = connection.execute(sa.insert(_runs).values(run))
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
    ) -> None:
        """Record how the run ended; ``error`` is stored redacted."""
        values = {
            "status": status,
            "ended_at": _utc(now),
            "rows_read": rows_read,
            "rows_sent": rows_sent,
            "batches": batches,
            "cursor_after": cursor_after,
            "error": None if error is None else redact(error),
        }
        with self._transaction(write=True) as connection:
            result = connection.execute(sa.update(_runs).where(_runs.c.id == run_id).values(values))
            if result.rowcount == 0:
                raise StateError(f"checkpoint store {self._name} has no run {run_id}")

    def runs(self, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The last ``limit`` runs, of ``job`` or of every job, newest first."""
        query = sa.select(_runs).order_by(_runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(_runs.c.job == job)
        with self._transaction() as connection:
            rows = connection.execute(query).all()
        return [RunRecord(**row._mapping) for row in rows]

    def last_run(self, job: str) -> RunRecord | None:
        """The job's newest run, or ``None`` if it never ran."""
        runs = self.runs(job, limit=1)
        return runs[0] if runs else None


def _schema_version(connection: sa.Connection) -> int:
    query = sa.select(_meta.c.value).where(_meta.c.key == "schema_version")
    value = connection.execute(query).scalar_one_or_none()
    return 0 if value is None else int(value)


def _update_or_insert(
    connection: sa.Connection, job: str, changes: dict[str, Any], first: dict[str, Any]
) -> None:
    """Apply ``changes`` to the job's row, or create the row from ``first``."""
    # Portable Core, not a dialect's upsert: the write transaction (BEGIN IMMEDIATE on SQLite)
    # keeps other writers out between the UPDATE and the INSERT.
    result = connection.execute(sa.update(_jobs).where(_jobs.c.name == job).values(changes))
    if result.rowcount == 0:
        connection.execute(sa.insert(_jobs).values({**first, "name": job}))


def _job_state(row: sa.Row[Any]) -> JobState:
    values = dict(row._mapping)
    del values["updated_at"]
    return JobState(job=values.pop("name"), **values)
