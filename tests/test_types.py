"""The type table per dialect, end to end: a value stored in a column of each SQL type is
synced by a real ``Runner`` from the real database into the in-process emulator, and the field
type planned and the JSON value sent are checked; then values no field can hold
(``on_bad_value``) and the one text form of each timestamp column."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from akkiosync.emulator import Emulator
from akkiosync.mapping import Schema
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import make_job
from tests.test_values import cursor_key, execute, rows_of

PG_ENUM = (
    "DO $$ BEGIN CREATE TYPE akkiosync_mood AS ENUM ('sad', 'ok', 'happy'); "
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
)
# The watermark column of every table here, and its one value.
WATERMARK = {"sqlite": "DATETIME", "postgres": "TIMESTAMP", "mysql": "DATETIME(6)"}
AT = "'2026-05-01 08:30:00'"


@dataclass(frozen=True)
class Case:
    """A value stored in a column of one SQL type, and what the dataset must get for it."""

    dialect: str
    sql_type: str
    stored: str  # an SQL literal
    field_type: str  # the field type planned for the column
    sent: Any  # the JSON value sent

    @property
    def id(self) -> str:
        return f"{self.dialect}-{self.sql_type}-{self.stored}"


TYPE_TABLE = [
    # A boolean is a boolean whichever dialect stores it.
    Case("postgres", "BOOLEAN", "true", "boolean", True),
    Case("postgres", "BOOLEAN", "false", "boolean", False),
    Case("mysql", "TINYINT(1)", "1", "boolean", True),
    Case("mysql", "TINYINT(1)", "0", "boolean", False),
    Case("mysql", "BOOLEAN", "TRUE", "boolean", True),
    Case("sqlite", "BOOLEAN", "1", "boolean", True),
    Case("sqlite", "BOOLEAN", "0", "boolean", False),
    Case("mysql", "TINYINT", "5", "integer", 5),
    # A double is the driver's float, all 17 digits (SQLAlchemy's reflected DOUBLE kept 10).
    Case("mysql", "DOUBLE", "1.2345678901234567", "float", 1.2345678901234567),
    Case("mysql", "DOUBLE", "1e-20", "float", 1e-20),
    Case("mysql", "FLOAT", "1.5", "float", 1.5),
    Case("postgres", "DOUBLE PRECISION", "1.2345678901234567", "float", 1.2345678901234567),
    Case("sqlite", "REAL", "1.2345678901234567", "float", 1.2345678901234567),
    # Enumerations are categories; a MySQL SET is its members, sorted, comma-separated.
    Case("postgres", "akkiosync_mood", "'ok'", "category", "ok"),
    Case("mysql", "ENUM('sad','ok','happy')", "'happy'", "category", "happy"),
    Case("mysql", "SET('b','a','c')", "'c,b'", "string", "b,c"),
    Case("mysql", "SET('b','a','c')", "'a,c,b'", "string", "a,b,c"),
    Case("mysql", "SET('b','a','c')", "''", "string", ""),
    # Money is a number, exactly.
    Case("postgres", "MONEY", "'1234.56'", "float", 1234.56),
    Case("postgres", "MONEY", "'-1234567.89'", "float", -1234567.89),
    # Intervals without months are their seconds; MySQL TIME is MySQL's own text.
    Case("postgres", "INTERVAL", "'1 day 02:03:04.5'", "float", 93784.5),
    Case("postgres", "INTERVAL", "'-36:00:00'", "float", -129600.0),
    Case("mysql", "TIME", "'-838:59:59'", "string", "-838:59:59"),
    Case("mysql", "TIME(6)", "'25:00:00.5'", "string", "25:00:00.500000"),
    # JSON is its compact JSON text: a JSON null is "null", an SQL NULL null.
    Case("postgres", "JSON", "'null'", "string", "null"),
    Case("postgres", "JSON", "NULL", "string", None),
    Case("postgres", "JSON", """'{"a": null, "b": [1, 2.5]}'""", "string",
         '{"a":null,"b":[1,2.5]}'),
    Case("postgres", "JSONB", "'null'", "string", "null"),
    Case("postgres", "JSONB", """'"x"'""", "string", '"x"'),
    Case("postgres", "JSONB", """'{"a": {"b": null}}'""", "string", '{"a":{"b":null}}'),
    Case("sqlite", "JSON", "'null'", "string", "null"),
    Case("sqlite", "JSON", "NULL", "string", None),
    Case("sqlite", "JSON", """'{"a": [1, null]}'""", "string", '{"a":[1,null]}'),
    Case("mysql", "JSON", "'null'", "string", "null"),  # MariaDB: LONGTEXT, as stored
    Case("mysql", "JSON", """'{"a": null}'""", "string", '{"a": null}'),
    # Timestamps: six fraction digits where the column holds fractions, else whole seconds.
    Case("postgres", "TIMESTAMP", "'2024-01-01 00:00:01'", "date", "2024-01-01T00:00:01.000000"),
    Case("postgres", "TIMESTAMP(0)", "'2024-01-01 00:00:01'", "date", "2024-01-01T00:00:01"),
    Case("postgres", "TIMESTAMP(3)", "'2024-01-01 00:00:01.5'", "date",
         "2024-01-01T00:00:01.500000"),
    Case("postgres", "TIMESTAMPTZ", "'2024-01-01 00:00:01+02'", "date",
         "2023-12-31T22:00:01.000000+00:00"),
    Case("postgres", "DATE", "'2024-02-29'", "date", "2024-02-29"),
    Case("postgres", "TIME", "'12:30:00'", "string", "12:30:00.000000"),
    Case("postgres", "TIME(0)", "'12:30:00'", "string", "12:30:00"),
    Case("mysql", "DATETIME", "'2024-01-01 00:00:01'", "date", "2024-01-01T00:00:01"),
    Case("mysql", "DATETIME(6)", "'2024-01-01 00:00:01'", "date", "2024-01-01T00:00:01.000000"),
    Case("mysql", "TIMESTAMP(3)", "'2024-01-01 00:00:01.5'", "date",
         "2024-01-01T00:00:01.500000+00:00"),
    Case("mysql", "DATE", "'2024-02-29'", "date", "2024-02-29"),
    Case("sqlite", "DATETIME", "'2024-01-01 00:00:01'", "date", "2024-01-01T00:00:01"),
    Case("sqlite", "DATETIME", "'2024-01-01 00:00:01.000000'", "date",
         "2024-01-01T00:00:01.000000"),
    Case("sqlite", "DATETIME", "'2024-01-01 00:00:01.5'", "date", "2024-01-01T00:00:01.500000"),
    Case("sqlite", "DATE", "'2024-02-29'", "date", "2024-02-29"),
    # Numbers, for completeness.
    Case("postgres", "NUMERIC(12,2)", "1.10", "float", 1.1),
    Case("postgres", "BIGINT", "9007199254740993", "integer", 9007199254740993),
    Case("mysql", "DECIMAL(12,2)", "-0.50", "float", -0.5),
    Case("sqlite", "INTEGER", "42", "integer", 42),
]  # fmt: skip


@pytest.fixture
def source(
    request: pytest.FixtureRequest, tmp_path: Path, table_name: str
) -> Iterator[tuple[str, str]]:
    """(URL, table) on the database the test's ``dialect`` names; the table is dropped after."""
    params = request.node.callspec.params
    dialect = params["dialect"] if "dialect" in params else params["case"].dialect
    url = (
        f"sqlite:///{tmp_path / 'source.db'}"
        if dialect == "sqlite"
        else request.getfixturevalue(f"{dialect}_url")
    )
    yield url, table_name
    execute(url, f"DROP TABLE IF EXISTS {table_name}")


def dialect_of(url: str) -> str:
    """sqlite, postgres or mysql."""
    return {"postgresql": "postgres", "mysql": "mysql", "sqlite": "sqlite"}[
        engine_url(url).get_backend_name()
    ]


def create(url: str, table: str, columns: str, *values: str) -> None:
    """A table ``(id, <columns>, updated_at)`` with one row per SQL literal tuple in
    ``values`` (ids 1, 2, ...), all stamped ``AT``."""
    setup = {"postgres": [PG_ENUM], "mysql": ["SET time_zone = '+00:00'"]}.get(dialect_of(url), [])
    rows = ", ".join(f"({i}, {v}, {AT})" for i, v in enumerate(values, start=1))
    execute(
        url,
        *setup,
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {columns}, "
        f"updated_at {WATERMARK[dialect_of(url)]})",
        f"INSERT INTO {table} VALUES {rows}",
    )


def pinned(store: Store) -> dict[str, str]:
    """The pinned schema's field types, by field name."""
    schema_json = store.job_state("orders").schema_json
    assert schema_json is not None
    return {f.name: f.type for f in Schema.from_json(schema_json).fields}


class TestTypeTable:
    """Each SQL type of each dialect plans one field type and sends one faithful JSON value."""

    @pytest.mark.parametrize("case", TYPE_TABLE, ids=[c.id for c in TYPE_TABLE])
    def test_type(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        source: tuple[str, str],
        case: Case,
    ) -> None:
        """The column's planned field type and the JSON value sent for the stored value."""
        url, table = source
        create(url, table, f"v {case.sql_type}", case.stored)
        result = runner.run(make_job(url, table))
        assert result.ok, result.error
        assert pinned(store)["v"] == case.field_type
        (row,) = rows_of(emulator)
        assert row["v"] == case.sent
        assert type(row["v"]) is type(case.sent)

    @pytest.mark.parametrize(
        "case",
        [c for c in TYPE_TABLE if c.dialect != "sqlite"],
        ids=[c.id for c in TYPE_TABLE if c.dialect != "sqlite"],
    )
    def test_type_past_the_first_batch(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        source: tuple[str, str],
        case: Case,
    ) -> None:
        """Rows after a read's first batch (the driver's own tuples, where SQLAlchemy converts
        nothing) are sent exactly as the first batch's rows (SQLAlchemy's)."""
        url, table = source
        create(url, table, f"v {case.sql_type}", case.stored, case.stored, case.stored)
        result = runner.run(make_job(url, table, batch_size=1))
        assert result.ok, result.error
        assert pinned(store)["v"] == case.field_type
        sent = [row["v"] for row in rows_of(emulator)]
        assert sent == [case.sent] * 3
        assert {type(value) for value in sent} == {type(case.sent)}

    def test_boolean_override_reads_text_and_numbers(
        self, runner: Runner, store: Store, emulator: Emulator, tmp_path: Path, table_name: str
    ) -> None:
        """``columns.types: {col: boolean}`` reads 0/1 and true/false/t/f/yes/no as booleans."""
        url = f"sqlite:///{tmp_path / 'source.db'}"
        texts = ["'true'", "'F'", "'yes'", "' No '", "'t'", "'1'", "0", "1", "NULL"]
        create(url, table_name, "flag TEXT", *texts)
        job = make_job(url, table_name, columns={"types": {"flag": "boolean"}}, batch_size=100)
        result = runner.run(job)
        assert result.ok, result.error
        assert pinned(store)["flag"] == "boolean"
        assert [r["flag"] for r in rows_of(emulator)] == [
            True, False, True, False, True, True, False, True, None,
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("dialect", "sql_type", "stored"),
        [
            ("sqlite", "BOOLEAN", "2"),
            ("sqlite", "BOOLEAN", "'maybe'"),
            ("mysql", "TINYINT(1)", "2"),
            ("mysql", "TINYINT(1)", "-1"),
        ],
        ids=["sqlite-2", "sqlite-maybe", "mysql-2", "mysql--1"],
    )
    def test_other_values_in_a_boolean_column_do_not_fit(
        self,
        runner: Runner,
        emulator: Emulator,
        source: tuple[str, str],
        dialect: str,
        sql_type: str,
        stored: str,
    ) -> None:
        """A boolean column holding anything but 0/1 (or a boolean text) is a bad value, not
        ``true``: SQLite and MySQL store any integer there."""
        url, table = source
        create(url, table, f"v {sql_type}", stored)
        result = runner.run(make_job(url, table))
        assert not result.ok
        assert "column v" in (result.error or "")
        assert "boolean" in (result.error or "")
        assert rows_of_any(emulator) == []

    def test_boolean_pinned_as_category_keeps_sending_booleans(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        tmp_path: Path,
        table_name: str,
    ) -> None:
        """A dataset pinned before ``boolean`` existed has its boolean columns as ``category``:
        they still receive JSON booleans, as before."""
        url = f"sqlite:///{tmp_path / 'source.db'}"
        create(url, table_name, "paid BOOLEAN", "1", "0")
        job = make_job(url, table_name, columns={"types": {"paid": "category"}})
        assert runner.run(job).ok
        assert pinned(store)["paid"] == "category"
        assert [r["paid"] for r in rows_of(emulator)] == [True, False]


def rows_of_any(emulator: Emulator) -> list[dict[str, Any]]:
    """Every row the emulator holds in any dataset (none if no dataset was made)."""
    return [row for dataset_id in emulator.dataset_ids() for row in emulator.rows(dataset_id)]


class TestIntervals:
    """PostgreSQL intervals: seconds when they have no months, ISO 8601 text as a string."""

    VALUES = (
        "'1 year 2 months 3 days 04:05:06.7'",
        "'-1 years -2 mons +3 days -04:05:06'",
        "'-36:00:00'",
        "'0'",
        "'14 months'",
        "'00:00:00.000001'",
        "'-1 day +00:00:00.5'",
    )

    def test_as_string_is_postgres_own_iso_8601(
        self,
        runner: Runner,
        emulator: Emulator,
        postgres_url: str,
        table_name: str,
    ) -> None:
        """``types: {iv: string}`` sends each interval exactly, as PostgreSQL writes it under
        ``IntervalStyle iso_8601``."""
        create(postgres_url, table_name, "iv INTERVAL", *self.VALUES)
        try:
            job = make_job(
                postgres_url, table_name, columns={"types": {"iv": "string"}}, batch_size=100
            )
            result = runner.run(job)
            assert result.ok, result.error
            engine = sa.create_engine(engine_url(postgres_url))
            with engine.connect() as conn:
                conn.execute(sa.text("SET intervalstyle = 'iso_8601'"))
                expected = conn.execute(
                    sa.text(f"SELECT iv::text FROM {table_name} ORDER BY id")
                ).scalars()
                assert [r["iv"] for r in rows_of(emulator)] == list(expected)
            engine.dispose()
        finally:
            execute(postgres_url, f"DROP TABLE IF EXISTS {table_name}")

    def test_months_do_not_fit_seconds(
        self,
        runner: Runner,
        emulator: Emulator,
        postgres_url: str,
        table_name: str,
    ) -> None:
        """An interval with months has no fixed number of seconds: a bad value in the planned
        float field, named with the remedy."""
        create(postgres_url, table_name, "iv INTERVAL", "'2 days'", "'1 mon'")
        try:
            result = runner.run(make_job(postgres_url, table_name))
            assert not result.ok
            error = result.error or ""
            for part in ("column iv", "id=2", "P1M", "float", "columns.types"):
                assert part in error, error
            assert rows_of_any(emulator) == []
        finally:
            execute(postgres_url, f"DROP TABLE IF EXISTS {table_name}")


# Values out of what JSON or Akkio can hold, one per column, in row 6 of 8.
OUT_OF_RANGE = {
    "postgres": {
        "ts": ("TIMESTAMP", "'infinity'"),
        "tz": ("TIMESTAMPTZ", "'-infinity'"),
        "far": ("TIMESTAMP", "'10000-01-01 00:00:00'"),
        "bc": ("DATE", "'0044-03-15 BC'"),
        "f": ("DOUBLE PRECISION", "'NaN'"),
        "n": ("NUMERIC", "'Infinity'"),
    },
    "mysql": {
        "ts": ("DATETIME", "'0000-00-00 00:00:00'"),
        "d": ("DATE", "'2024-00-10'"),
    },
    "sqlite": {
        "ts": ("DATETIME", "'not a date'"),
        "f": ("REAL", "9e999"),
        "d": ("DATE", "'2024-02-30'"),
    },
}
GOOD = {
    "TIMESTAMP": "'2024-01-01 00:00:00'",
    "TIMESTAMPTZ": "'2024-01-01 00:00:00+00'",
    "DATE": "'2024-01-01'",
    "DOUBLE PRECISION": "1.5",
    "NUMERIC": "2.5",
    "DATETIME": "'2024-01-01 00:00:00'",
    "REAL": "1.5",
}


def bad_table(url: str, table: str) -> dict[str, tuple[str, str]]:
    """A table of 8 rows whose row 6 holds the dialect's out-of-range values (the others good
    ones); returns the columns."""
    dialect = dialect_of(url)
    columns = OUT_OF_RANGE[dialect]
    rows = [
        ", ".join(bad if i == 6 else GOOD[sql_type] for sql_type, bad in columns.values())
        for i in range(1, 9)
    ]
    definition = ", ".join(f"{name} {sql_type}" for name, (sql_type, _) in columns.items())
    if dialect == "mysql":  # zero dates need a lax SQL mode to be stored at all
        setup_mysql_lax(url, table, definition, rows)
    else:
        create(url, table, definition, *rows)
    return columns


def setup_mysql_lax(url: str, table: str, definition: str, rows: list[str]) -> None:
    """Create and fill the table in one session whose SQL mode allows zero dates."""
    values = ", ".join(f"({i}, {v}, {AT})" for i, v in enumerate(rows, start=1))
    execute(
        url,
        "SET SESSION sql_mode = ''",
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {definition}, updated_at DATETIME(6))",
        f"INSERT INTO {table} VALUES {values}",
    )


class TestOnBadValue:
    """Values no field can hold follow the job's ``on_bad_value``: fail (the default) or
    null."""

    @pytest.mark.parametrize("dialect", ["postgres", "mysql", "sqlite"])
    def test_fail_names_column_key_and_value_and_sends_nothing_of_the_batch(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        source: tuple[str, str],
        dialect: str,
    ) -> None:
        """The run fails naming the first bad column, the row's key and the value; rows 1-4
        landed, row 6's batch did not, and the checkpoint stays after row 4."""
        url, table = source
        columns = bad_table(url, table)
        result = runner.run(make_job(url, table))
        assert not result.ok
        error = result.error or ""
        name, (_, stored) = next(iter(columns.items()))
        for part in (f"column {name}", "id=6", stored.strip("'"), "on_bad_value"):
            assert part in error, error
        assert [r["id"] for r in rows_of(emulator)] == [1, 2, 3, 4]
        assert cursor_key(store) == (4,)

    @pytest.mark.parametrize("dialect", ["postgres", "mysql", "sqlite"])
    def test_null_sends_null_counts_and_warns_once(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        source: tuple[str, str],
        dialect: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """With ``on_bad_value: null`` every row lands; the bad values are null, the good ones
        intact, and one warning names the count and the columns."""
        url, table = source
        columns = bad_table(url, table)
        caplog.set_level(logging.WARNING, logger="akkiosync")
        result = runner.run(make_job(url, table, on_bad_value="null"))
        assert result.ok, result.error
        rows = rows_of(emulator)
        assert [r["id"] for r in rows] == list(range(1, 9))
        assert all(rows[5][name] is None for name in columns)
        assert all(rows[0][name] is not None for name in columns)
        warnings = [r.getMessage() for r in caplog.records if "on_bad_value" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert f"{len(columns)} value(s)" in warnings[0]
        assert all(name in warnings[0] for name in columns)
        assert cursor_key(store) == (8,)

    def test_null_applies_to_a_value_that_does_not_fit_its_field(
        self,
        runner: Runner,
        emulator: Emulator,
        tmp_path: Path,
        table_name: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """7.9 in an integer field follows the policy too: null, counted and warned."""
        url = f"sqlite:///{tmp_path / 'source.db'}"
        create(url, table_name, "qty INTEGER", "1", "7.9", "3")
        caplog.set_level(logging.WARNING, logger="akkiosync")
        result = runner.run(make_job(url, table_name, on_bad_value="null"))
        assert result.ok, result.error
        assert [r["qty"] for r in rows_of(emulator)] == [1, None, 3]
        assert "1 value(s)" in caplog.text
        assert "qty" in caplog.text

    def test_out_of_range_text_in_a_string_field_is_the_databases_text(
        self,
        runner: Runner,
        emulator: Emulator,
        postgres_url: str,
        table_name: str,
    ) -> None:
        """A string field can hold what a date field cannot: ``infinity`` and a year past
        9999 in a timestamp column typed ``string``, and ``24:00:00`` in a time column (a
        string field), arrive as PostgreSQL writes them."""
        create(
            postgres_url,
            table_name,
            "ts TIMESTAMP, t TIME",
            "'infinity', '24:00:00'",
            "'10000-01-01 00:00:00', '12:00:00'",
            "'2024-01-01 00:00:01', NULL",
        )
        try:
            job = make_job(postgres_url, table_name, columns={"types": {"ts": "string"}})
            result = runner.run(job)
            assert result.ok, result.error
            assert [(r["ts"], r["t"]) for r in rows_of(emulator)] == [
                ("infinity", "24:00:00"),
                ("10000-01-01 00:00:00", "12:00:00.000000"),
                ("2024-01-01T00:00:01.000000", None),
            ]
        finally:
            execute(postgres_url, f"DROP TABLE IF EXISTS {table_name}")

    @pytest.mark.parametrize("on_bad_value", ["fail", "null"])
    def test_a_watermark_out_of_range_fails_whatever_the_policy(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        postgres_url: str,
        table_name: str,
        on_bad_value: str,
    ) -> None:
        """A watermark of ``infinity`` cannot be a checkpoint (nor sent as null and passed):
        the run fails naming the column, the row and the value, before that batch is sent,
        and keeps failing the same way."""
        execute(
            postgres_url,
            f"CREATE TABLE {table_name} (id INTEGER PRIMARY KEY, updated_at TIMESTAMP)",
            f"INSERT INTO {table_name} VALUES (1, '2024-01-01'), (2, '2024-01-02'), "
            "(3, '2024-01-03'), (4, '2024-01-04'), (5, 'infinity')",
        )
        try:
            job = make_job(postgres_url, table_name, on_bad_value=on_bad_value)
            for _ in range(2):
                result = runner.run(job)
                assert not result.ok
                for part in ("updated_at", "id=5", "'infinity'", "checkpoint"):
                    assert part in (result.error or ""), result.error
                assert [r["id"] for r in rows_of(emulator)] == [1, 2, 3, 4]
                assert cursor_key(store) == (4,)
        finally:
            execute(postgres_url, f"DROP TABLE IF EXISTS {table_name}")

    def test_unknown_policy_is_a_config_error(self) -> None:
        """``on_bad_value`` takes fail or null only."""
        with pytest.raises(ValueError, match="on_bad_value"):
            make_job("sqlite:///x.db", "t", on_bad_value="skip")


class TestTimestampForm:
    """Every timestamp of one column has the same text form."""

    def test_whole_and_fractional_seconds_in_one_column(
        self, runner: Runner, emulator: Emulator, db_url: str, table_name: str
    ) -> None:
        """A column that holds fractions sends six digits for whole seconds too; a column
        of whole seconds sends none."""
        dialect = dialect_of(db_url)
        fine, whole = {
            "postgres": ("TIMESTAMP", "TIMESTAMP(0)"),
            "mysql": ("DATETIME(6)", "DATETIME"),
            "sqlite": ("DATETIME", "DATETIME"),
        }[dialect]
        create(
            db_url,
            table_name,
            f"fine {fine}, whole {whole}",
            "'2024-01-01 00:00:01.123456', '2024-01-01 00:00:01'",
            "'2024-01-01 00:00:01.000000', '2024-01-01 00:00:02'",
            "'2024-01-01 00:00:02.5', '2024-01-01 00:00:03'",
        )
        try:
            result = runner.run(make_job(db_url, table_name))
            assert result.ok, result.error
            rows = rows_of(emulator)
            assert [r["fine"] for r in rows] == [
                "2024-01-01T00:00:01.123456",
                "2024-01-01T00:00:01.000000",
                "2024-01-01T00:00:02.500000",
            ]
            assert [r["whole"] for r in rows] == [
                "2024-01-01T00:00:01",
                "2024-01-01T00:00:02",
                "2024-01-01T00:00:03",
            ]
        finally:
            execute(db_url, f"DROP TABLE IF EXISTS {table_name}")

    @pytest.mark.parametrize("dialect", ["postgres", "mysql"])
    def test_query_column_null_in_every_sampled_row(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        source: tuple[str, str],
        dialect: str,
    ) -> None:
        """A query's timestamp column that is NULL in every row its type is sampled from (a
        sparse ``shipped_at``) is still a date field with one text form, as the driver
        describes it: not a string field mixing ``...:01`` with ``...:01.123456``."""
        url, table = source
        values = ["NULL"] * 300 + ["'2024-01-01 00:00:01'", "'2024-01-01 00:00:01.123456'"]
        create(url, table, f"shipped_at {WATERMARK[dialect_of(url)]} NULL", *values)
        spec = {"url": url, "query": f"SELECT * FROM {table}", "watermark": "id", "key": "id"}
        result = runner.run(make_job(url, table, source=spec, batch_size=1000))
        assert result.ok, result.error
        shipped = {r["id"]: r["shipped_at"] for r in rows_of(emulator) if r["shipped_at"]}
        assert shipped == {301: "2024-01-01T00:00:01.000000", 302: "2024-01-01T00:00:01.123456"}
        state = store.job_state("orders")
        assert state.schema_json is not None
        types = {f.name: f.type for f in Schema.from_json(state.schema_json).fields}
        assert types["shipped_at"] == "date"
