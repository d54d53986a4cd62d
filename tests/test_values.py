"""What reaches the dataset, end to end on real databases and the in-process emulator: values
sent faithfully or refused loudly, and the job's current ``columns:`` options after pinning."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.config import ColumnsSpec
from akkiosync.cursor import decode_cursor
from akkiosync.dataset import schema_drift
from akkiosync.emulator import Emulator
from akkiosync.mapping import DatasetField, Schema
from akkiosync.preview import preview
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.source._types import mysql_time_text
from akkiosync.state import Store
from tests.conftest import make_job

T0 = dt.datetime(2026, 5, 1, 8, 30, 0)  # noqa: DTZ001 - naive columns on purpose
SSNS = ("111-11-1111", "222-22-2222", "333-33-3333", "444-44-4444", "555-55-5555")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite source file."""
    return f"sqlite:///{tmp_path / 'source.db'}"


def execute(url: str, *statements: str, params: list[dict[str, Any]] | None = None) -> None:
    """Run statements on a source, in one transaction; ``params`` go with the last one."""
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.begin() as conn:
            for statement in statements[:-1]:
                conn.execute(sa.text(statement))
            conn.execute(sa.text(statements[-1]), params or {})
    finally:
        engine.dispose()


def rows_of(emulator: Emulator) -> list[dict[str, Any]]:
    """Every row of the one dataset the emulator holds, in the order they landed."""
    (dataset_id,) = emulator.dataset_ids()
    return emulator.rows(dataset_id)


def cursor_key(store: Store) -> tuple[Any, ...] | None:
    """The key part of the job's checkpoint."""
    cursor_json = store.job_state("orders").cursor_json
    return None if cursor_json is None else decode_cursor(cursor_json).key


@pytest.fixture
def drop_later() -> Iterator[list[tuple[str, str]]]:
    """(URL, table) pairs to drop after the test, so server databases keep no test tables."""
    tables: list[tuple[str, str]] = []
    yield tables
    for url, name in tables:
        execute(url, f"DROP TABLE IF EXISTS {name}")


# -- values ------------------------------------------------------------------------------------


class TestMysqlTimeText:
    """A TIME value is written the way MySQL writes it: hours unbounded, sign in front."""

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (dt.timedelta(hours=-838, minutes=-59, seconds=-59), "-838:59:59"),
            (dt.timedelta(hours=25), "25:00:00"),
            (dt.timedelta(seconds=1), "00:00:01"),
            (dt.timedelta(hours=12, minutes=30, microseconds=500_000), "12:30:00.500000"),
            (dt.timedelta(microseconds=-1), "-00:00:00.000001"),
            (dt.timedelta(0), "00:00:00"),
        ],
        ids=["min", "25h", "1s", "fraction", "minus-1us", "zero"],
    )
    def test_text(self, value: dt.timedelta, text: str) -> None:
        """The driver's timedelta becomes MySQL's own ``[-]HH:MM:SS[.ffffff]``."""
        assert mysql_time_text(value) == text


class TestMariadbTime:
    """MariaDB TIME values outside 00:00-23:59 arrive exactly as MariaDB shows them."""

    def test_out_of_day_times(
        self,
        runner: Runner,
        emulator: Emulator,
        client: AkkioClient,
        mysql_url: str,
        table_name: str,
        drop_later: list[tuple[str, str]],
    ) -> None:
        """-838:59:59, 25:00:00, 00:00:01 and a fraction land as those strings, in a string
        field (the type such columns have always been pinned as)."""
        drop_later.append((mysql_url, table_name))
        execute(
            mysql_url,
            f"CREATE TABLE {table_name} (id INT PRIMARY KEY, t TIME, tf TIME(6), "
            "updated_at DATETIME(6))",
            f"INSERT INTO {table_name} VALUES (:id, :t, :tf, :at)",
            params=[
                {"id": 1, "t": "-838:59:59", "tf": None, "at": T0},
                {"id": 2, "t": "25:00:00", "tf": "-00:00:00.000001", "at": T0},
                {"id": 3, "t": "00:00:01", "tf": "12:30:00.5", "at": T0},
            ],
        )
        result = runner.run(make_job(mysql_url, table_name))
        assert result.ok, result.error
        assert [(r["t"], r["tf"]) for r in rows_of(emulator)] == [
            ("-838:59:59", None),
            ("25:00:00", "-00:00:00.000001"),
            ("00:00:01", "12:30:00.500000"),
        ]
        (ref,) = client.list_datasets()
        types = {f.name: f.type for f in client.get_dataset(ref.id).fields}
        assert (types["t"], types["tf"]) == ("string", "string")


class TestValuesThatDoNotFit:
    """A value its field cannot hold fails the run naming column and key; its batch stays
    unsent and the cursor before it."""

    def test_sqlite_integer_column_holding_a_fraction(
        self, runner: Runner, store: Store, emulator: Emulator, sqlite_url: str
    ) -> None:
        """SQLite's INTEGER column holding 3.7: rows 1-4 land, the batch of row 7 does not."""
        execute(
            sqlite_url,
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER, updated_at DATETIME)",
            "INSERT INTO items VALUES (:id, :qty, :at)",
            params=[
                {"id": i, "qty": 3.7 if i == 7 else i, "at": T0.isoformat(sep=" ")}
                for i in range(1, 9)
            ],
        )
        job = make_job(sqlite_url, "items")
        failed = runner.run(job)
        assert not failed.ok
        assert "qty" in (failed.error or "")
        assert "id=7" in (failed.error or "")
        assert "3.7" in (failed.error or "")
        assert [r["id"] for r in rows_of(emulator)] == [1, 2, 3, 4]
        assert cursor_key(store) == (4,)
        (last, *_) = store.runs("orders")
        assert last.status == "failed"
        assert "id=7" in (last.error or "")
        again = runner.run(job)  # nothing changed: it fails the same way, nothing more is sent
        assert not again.ok
        assert [r["id"] for r in rows_of(emulator)] == [1, 2, 3, 4]

    def test_postgres_column_retyped_after_pinning(
        self,
        runner: Runner,
        store: Store,
        emulator: Emulator,
        postgres_url: str,
        table_name: str,
        drop_later: list[tuple[str, str]],
    ) -> None:
        """An integer field whose column became numeric(10,2): 7.9 fails naming column and
        key; rows sent before stay; once the value is fixed the next run sends it."""
        drop_later.append((postgres_url, table_name))
        execute(
            postgres_url,
            f"CREATE TABLE {table_name} (id INT PRIMARY KEY, n INTEGER, updated_at TIMESTAMP)",
            f"INSERT INTO {table_name} VALUES (:id, :n, :at)",
            params=[{"id": i, "n": i * 10, "at": T0} for i in (1, 2, 3)],
        )
        job = make_job(postgres_url, table_name)
        assert runner.run(job).ok
        later = T0 + dt.timedelta(minutes=1)
        execute(
            postgres_url,
            f"ALTER TABLE {table_name} ALTER COLUMN n TYPE numeric(10,2)",
            f"INSERT INTO {table_name} VALUES (:id, :n, :at)",
            params=[{"id": 4, "n": 5, "at": later}, {"id": 5, "n": 7.9, "at": later}],
        )
        failed = runner.run(job)
        assert not failed.ok
        error = failed.error or ""
        assert "column n" in error
        assert "id=5" in error
        assert "integer" in error
        assert [(r["id"], r["n"]) for r in rows_of(emulator)] == [(1, 10), (2, 20), (3, 30)]
        assert cursor_key(store) == (3,)
        execute(postgres_url, f"UPDATE {table_name} SET n = 8 WHERE id = 5")
        fixed = runner.run(job)
        assert fixed.ok, fixed.error
        sent = [(r["id"], r["n"]) for r in rows_of(emulator)]
        assert sent == [(1, 10), (2, 20), (3, 30), (4, 5), (5, 8)]
        assert all(type(n) is int for _, n in sent)


# -- column options after pinning --------------------------------------------------------------


@pytest.fixture
def people(sqlite_url: str) -> str:
    """A SQLite ``people`` table with ids 1-3 (each with an ssn); returns the URL."""
    execute(
        sqlite_url,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT, updated_at DATETIME)",
    )
    add_people(sqlite_url, (1, 2, 3), T0)
    return sqlite_url


def add_people(url: str, ids: tuple[int, ...], at: dt.datetime) -> None:
    """Insert (or replace) people with these ids, stamped ``at``."""
    execute(
        url,
        "INSERT OR REPLACE INTO people VALUES (:id, :name, :ssn, :at)",
        params=[
            {"id": i, "name": f"p{i}", "ssn": SSNS[i - 1], "at": at.isoformat(sep=" ")} for i in ids
        ],
    )


class TestColumnsAfterPinning:
    """After the first run the job file's ``columns:`` still decide what is sent: a column
    left out is sent as null under its pinned field; other changes warn, the pin wins."""

    @pytest.mark.parametrize(
        ("columns", "why"),
        [
            ({"exclude": ["ssn"]}, "excluded by the job file"),
            ({"include": ["id", "name", "updated_at"]}, "not in the job file's columns.include"),
        ],
        ids=["exclude", "include"],
    )
    def test_left_out_column_sent_as_null(
        self,
        runner: Runner,
        emulator: Emulator,
        people: str,
        caplog: pytest.LogCaptureFixture,
        columns: dict[str, Any],
        why: str,
    ) -> None:
        """New and updated rows carry ``ssn: null``; no ssn value is sent after the change."""
        assert runner.run(make_job(people, "people")).ok
        assert [r["ssn"] for r in rows_of(emulator)] == list(SSNS[:3])
        later = T0 + dt.timedelta(hours=1)
        add_people(people, (2, 4, 5), later)  # 2 is an update: sent again, without its ssn
        caplog.set_level(logging.WARNING, logger="akkiosync")
        result = runner.run(make_job(people, "people", columns=columns))
        assert result.ok, result.error
        after = rows_of(emulator)[3:]
        assert [r["id"] for r in after] == [2, 4, 5]
        assert all(list(r) == ["id", "name", "ssn", "updated_at"] for r in after)
        assert all(r["ssn"] is None for r in after)
        assert not any(ssn in str(after) for ssn in SSNS)
        assert f"column ssn is {why} but field ssn is in the dataset's schema: sent as null" in (
            caplog.text
        )
        assert "`akkiosync reset orders` to drop the field" in caplog.text

    def test_preview_shows_the_null(self, runner: Runner, store: Store, people: str) -> None:
        """``preview`` maps the next rows the same way: the withheld field is null."""
        assert runner.run(make_job(people, "people")).ok
        add_people(people, (4,), T0 + dt.timedelta(hours=1))
        shown = preview(make_job(people, "people", columns={"exclude": ["ssn"]}), store)
        assert shown.records == [
            {"id": 4, "name": "p4", "ssn": None, "updated_at": "2026-05-01T09:30:00"}
        ]

    def test_rename_and_type_change_warn_and_pinned_schema_wins(
        self,
        runner: Runner,
        emulator: Emulator,
        people: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A new rename or type override is reported at the start of the run; records keep the
        pinned names and types."""
        assert runner.run(make_job(people, "people")).ok
        add_people(people, (4,), T0 + dt.timedelta(hours=1))
        caplog.set_level(logging.WARNING, logger="akkiosync")
        columns = {"rename": {"name": "full_name"}, "types": {"id": "string"}}
        result = runner.run(make_job(people, "people", columns=columns))
        assert result.ok, result.error
        assert rows_of(emulator)[-1] == {
            "id": 4,
            "name": "p4",
            "ssn": SSNS[3],
            "updated_at": "2026-05-01T09:30:00",
        }
        warnings = [r.getMessage() for r in caplog.records if "job file" in r.getMessage()]
        assert len(warnings) == 2, warnings
        assert any("full_name" in w and "field name" in w for w in warnings), warnings
        assert any("column id" in w and "string" in w and "integer" in w for w in warnings)
        assert all("akkiosync reset orders" in w for w in warnings)

    def test_no_warning_when_the_job_file_is_unchanged(
        self, runner: Runner, people: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A job whose columns options match the pin runs without a schema warning."""
        columns = {"exclude": ["ssn"], "rename": {"name": "full_name"}, "types": {"id": "string"}}
        job = make_job(people, "people", columns=columns)
        assert runner.run(job).ok
        caplog.set_level(logging.WARNING, logger="akkiosync")
        assert runner.run(job).ok
        assert [r.getMessage() for r in caplog.records if "job file" in r.getMessage()] == []


class TestSchemaDrift:
    """``schema_drift`` compares the job's columns options with the pinned schema."""

    PINNED = Schema(
        (
            DatasetField("id", "id", "integer"),
            DatasetField("full_name", "name", "string"),
            DatasetField("ssn", "ssn", "string"),
            DatasetField("zip", "zip", "string"),
        )
    )

    def drift(self, **columns: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(withheld, differences) of a job named orders with these column options."""
        spec = {"rename": {"name": "full_name"}, "types": {"zip": "string"}, **columns}
        found = schema_drift(ColumnsSpec.model_validate(spec), self.PINNED, job="orders")
        return found.withheld, found.differences

    def test_unchanged(self) -> None:
        """The options the schema was planned from: nothing to report."""
        assert self.drift() == ((), ())

    def test_excluded_and_not_included(self) -> None:
        """Excluded columns, and pinned ones an include list lacks, are withheld by field."""
        withheld, differences = self.drift(exclude=["ssn"])
        assert (withheld, differences) == (("ssn",), ())
        withheld, _ = self.drift(include=["id", "ssn"])
        assert withheld == ("full_name", "zip")

    def test_rename_type_and_new_include(self) -> None:
        """A changed rename, a changed type override and an included column the pin lacks are
        each one difference, naming the column and saying the pinned schema is kept."""
        _, differences = self.drift(
            rename={"name": "name"},
            types={"zip": "integer"},
            include=["id", "name", "ssn", "zip", "email"],
        )
        assert len(differences) == 3
        rename, types, include = differences
        for part in ("column name", "field name", "full_name"):
            assert part in rename
        for part in ("column zip", "integer", "string"):
            assert part in types
        assert "email" in include
        assert all("akkiosync reset orders" in d for d in differences)
