"""The checkpoint store's tables and the migrations that build them.

``MIGRATIONS[n]`` upgrades a store from schema version n to n + 1; it is append only, and each
version's tables are defined by a frozen function of their own. The module-level tables are the
current shape, the one the store queries.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class Timestamp(sa.TypeDecorator[datetime]):
    """An aware datetime as fixed-width ISO 8601 text in UTC: lossless, portable, sortable."""

    impl = sa.String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else utc(value).isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


def utc(value: datetime) -> datetime:
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
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    runs = sa.Table(
        "runs",
        metadata,
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp),
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


def _create_v1(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    _define_v1(metadata)
    metadata.create_all(connection, checkfirst=False)


def _define_v2(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Version 2: the exactly-once protocol's intents. Frozen like version 1."""
    intents = sa.Table(
        "intents",
        metadata,
        # At most one batch per job is in flight: the runner sends batches one at a time.
        sa.Column("job", sa.String(255), primary_key=True),
        sa.Column("dataset_id", sa.String(255), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("rows_before", sa.BigInteger, nullable=False),
        sa.Column("cursor_before", sa.Text),
        sa.Column("cursor_after", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    creations = sa.Table(
        "creations",
        metadata,
        sa.Column("job", sa.String(255), primary_key=True),
        sa.Column("dataset_name", sa.String(255), nullable=False),
        # Ids of datasets with that name that existed before the create request was sent.
        sa.Column("known_ids_json", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    return intents, creations


def _create_v2(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    _define_v2(metadata)
    metadata.create_all(connection, checkfirst=False)
    # The dataset's row count when the job pinned it (non-zero when it adopted a dataset_id).
    connection.execute(sa.text("ALTER TABLE jobs ADD COLUMN rows_at_pin BIGINT NOT NULL DEFAULT 0"))


def _define_v3(metadata: sa.MetaData) -> sa.Table:
    """Version 3: the lookback ledger. Frozen like the others."""
    return sa.Table(
        "ledger",
        metadata,
        sa.Column("job", sa.String(255), primary_key=True),
        # The sent row's identity: its (watermark, key) as a typed cursor text.
        sa.Column("entry", sa.Text, primary_key=True),
        # Its watermark as a number (seconds, days or the value), for pruning by window.
        sa.Column("wm_order", sa.Float, nullable=False),
        sa.Index("ix_ledger_job_order", "job", "wm_order"),
    )


def _create_v3(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    _define_v3(metadata)
    metadata.create_all(connection, checkfirst=False)
    connection.execute(sa.text("ALTER TABLE intents ADD COLUMN ledger_json TEXT"))
    connection.execute(
        sa.text("ALTER TABLE runs ADD COLUMN rows_skipped BIGINT NOT NULL DEFAULT 0")
    )


def _create_v4(connection: sa.Connection) -> None:
    """Version 4: what a job's cursor belongs to, and the operator's leave to create a dataset
    whose name is taken. Frozen like the others."""
    # The cursor's columns and their types ({"watermark": [name, type], "key": [[name, type]]}):
    # a job file whose watermark or key changed no longer fits the stored cursor.
    connection.execute(sa.text("ALTER TABLE jobs ADD COLUMN cursor_columns_json TEXT"))
    # 1 after `reset` or `sync --new-dataset`: the next creation may reuse a taken name.
    connection.execute(
        sa.text("ALTER TABLE jobs ADD COLUMN new_dataset_ok INTEGER NOT NULL DEFAULT 0")
    )


def _define_v5(metadata: sa.MetaData) -> sa.Table:
    """Version 5: full refreshes (``mode: replace``). Frozen like the others."""
    return sa.Table(
        "refreshes",
        metadata,
        # At most one refresh per job is under way: the dataset it fills, and the one it replaces.
        sa.Column("job", sa.String(255), primary_key=True),
        sa.Column("dataset_id", sa.String(255)),  # NULL until its creation is confirmed
        sa.Column("dataset_name", sa.String(255), nullable=False),
        sa.Column("previous_id", sa.String(255)),  # the dataset to delete once this one is whole
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("rows_sent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cursor_json", sa.Text),
        sa.Column("started_at", Timestamp, nullable=False),
    )


def _create_v5(connection: sa.Connection) -> None:
    metadata = sa.MetaData()
    _define_v5(metadata)
    metadata.create_all(connection, checkfirst=False)
    # When the job's dataset was last replaced by a full refresh (mode: replace).
    connection.execute(sa.text("ALTER TABLE jobs ADD COLUMN replaced_at VARCHAR(32)"))
    # Where Akkio inferred another type than planned for a new dataset's fields: JSON list of
    # [field, planned, inferred], shown by `status`.
    connection.execute(sa.text("ALTER TABLE jobs ADD COLUMN type_warnings_json TEXT"))


def _create_v6(connection: sa.Connection) -> None:
    """Version 6: whether the job's dataset was adopted (``target.dataset_id``, ``adopt``)
    rather than made by the job, so that a refresh never deletes it. Frozen like the others."""
    connection.execute(sa.text("ALTER TABLE jobs ADD COLUMN adopted INTEGER NOT NULL DEFAULT 0"))
    # Before this version only an adopted dataset could hold rows when it was pinned; a count
    # accepted since may look the same, and is kept on the safe side: never deleted.
    connection.execute(sa.text("UPDATE jobs SET adopted = 1 WHERE rows_at_pin > 0"))


def _define_v7(metadata: sa.MetaData, name: str) -> sa.Table:
    """Version 7: ``runs`` (named ``name``) as version 3 left it, whose status may also be
    'interrupted': a run cut short by the stop signal. Frozen like the others."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_sent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("batches", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cursor_before", sa.Text),
        sa.Column("cursor_after", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("rows_skipped", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "status IN ('running', 'success', 'failed', 'interrupted')", name="ck_runs_status"
        ),
    )


def _create_v7(connection: sa.Connection) -> None:
    # SQLite cannot alter a CHECK constraint: build the new table, copy the rows (ids kept:
    # ``logs --follow`` and the alerts order runs by id), drop the old one, take its name.
    metadata = sa.MetaData()
    new = _define_v7(metadata, "runs_v7")
    new.create(connection)
    names = [column.name for column in new.columns]
    old = sa.table("runs", *map(sa.column, names))
    connection.execute(sa.insert(new).from_select(names, sa.select(old)))
    connection.execute(sa.text("DROP TABLE runs"))  # and its index
    connection.execute(sa.text("ALTER TABLE runs_v7 RENAME TO runs"))
    connection.execute(sa.text("CREATE INDEX ix_runs_job_id ON runs (job, id)"))


def _create_v8(connection: sa.Connection) -> None:
    """Version 8: the rows per batch a server's 413 taught the job, and the batch_size and
    batch_bytes it was learned under (JSON ``{"rows", "batch_size", "batch_bytes"}``)."""
    connection.execute(sa.text("ALTER TABLE jobs ADD COLUMN batch_limit_json TEXT"))


MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (
    _create_v1,
    _create_v2,
    _create_v3,
    _create_v4,
    _create_v5,
    _create_v6,
    _create_v7,
    _create_v8,
)

metadata = sa.MetaData()
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
# Version 7 rebuilt version 1's runs: only its jobs is the current shape (queries need no
# shared MetaData; migrations create the tables).
jobs, _ = _define_v1(sa.MetaData())
jobs.append_column(sa.Column("rows_at_pin", sa.BigInteger, nullable=False, server_default="0"))
intents, creations = _define_v2(metadata)
intents.append_column(sa.Column("ledger_json", sa.Text))
ledger = _define_v3(metadata)
jobs.append_column(sa.Column("cursor_columns_json", sa.Text))
jobs.append_column(sa.Column("new_dataset_ok", sa.Integer, nullable=False, server_default="0"))
refreshes = _define_v5(metadata)
jobs.append_column(sa.Column("replaced_at", Timestamp))
jobs.append_column(sa.Column("type_warnings_json", sa.Text))
jobs.append_column(sa.Column("adopted", sa.Integer, nullable=False, server_default="0"))
runs = _define_v7(metadata, "runs")
jobs.append_column(sa.Column("batch_limit_json", sa.Text))
