"""The keyset read on SQLite, PostgreSQL and MariaDB: ties, batch sizes, resuming, types."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from contextlib import closing
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from akkiosync.cursor import Cursor, decode_cursor, encode_cursor
from akkiosync.errors import ConfigError
from akkiosync.source import Source, engine_url, open_engine
from akkiosync.source._read import _partitions

MakeTable = Callable[..., sa.Table]
ROWS = 120
TIE = 17  # rows per watermark value: batch boundaries fall inside ties for most batch sizes
# MariaDB's DATETIME keeps no fraction unless asked: DATETIME(6) is what users must declare.
MICRO_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _ints_table(
    engine: sa.Engine, make_table: MakeTable, name: str, rows: int = ROWS
) -> tuple[sa.Table, list[int]]:
    """A table whose integer watermark repeats TIE times; ids are inserted out of order."""
    table = make_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("wm", sa.Integer),
        sa.Column("label", sa.String(20)),
    )
    ids = [(i * 37) % rows + 1 for i in range(rows)]  # a permutation of 1..rows
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "wm": i // TIE, "label": f"row {i}"} for i in ids])
    expected = sorted(ids, key=lambda i: (i // TIE, i))
    return table, expected


def _source(
    engine: sa.Engine, table: str, key: tuple[str, ...] = ("id",), wm: str = "wm"
) -> Source:
    return Source(sa.create_engine(engine.url), watermark=wm, key=key, table=table)


def _read_all(source: Source, after: Cursor | None, batch_size: int) -> list[list[Any]]:
    return [[row[0] for row in batch.rows] for batch in source.batches(after, batch_size)]


def _read_resuming(source: Source, batch_size: int) -> list[Any]:
    """Read one batch per 'run', resuming from the stored (encoded) cursor each time, as a
    daemon killed after every batch would."""
    seen: list[Any] = []
    cursor_json: str | None = None
    for _ in range(10_000):
        after = decode_cursor(cursor_json) if cursor_json else None
        with closing(source.batches(after, batch_size)) as batches:
            batch = next(batches, None)
        if batch is None:
            return seen
        seen.extend(row[0] for row in batch.rows)
        cursor_json = encode_cursor(batch.cursor)
    raise AssertionError("the read never ended")


class TestTies:
    """Many rows share a watermark; every batch size delivers every row exactly once, in order."""

    @pytest.mark.parametrize(
        "batch_size", [1, 2, 7, 16, 17, 18, 50, ROWS - 1, ROWS, ROWS + 1, 1000]
    )
    def test_one_pass(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """A single streamed pass yields every row once, in (watermark, key) order."""
        _, expected = _ints_table(engine, make_table, table_name)
        source = _source(engine, table_name)
        batches = _read_all(source, None, batch_size)
        source.close()
        assert [i for b in batches for i in b] == expected
        assert all(len(b) <= batch_size for b in batches)

    @pytest.mark.parametrize("batch_size", [1, 5, 17, 40, ROWS + 5])
    def test_resume_after_every_batch(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Resuming after each batch from the stored cursor loses or repeats nothing."""
        _, expected = _ints_table(engine, make_table, table_name)
        source = _source(engine, table_name)
        assert _read_resuming(source, batch_size) == expected
        source.close()

    def test_resume_inside_a_tie(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str
    ) -> None:
        """A checkpoint in the middle of a tie group continues with the rest of that group."""
        _, expected = _ints_table(engine, make_table, table_name)
        source = _source(engine, table_name)
        position = TIE + 5  # inside the second tie group
        last = expected[position - 1]
        after = Cursor(last // TIE, (last,))
        rest = [i for b in _read_all(source, after, 10) for i in b]
        source.close()
        assert rest == expected[position:]

    def test_new_rows_after_the_cursor(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str
    ) -> None:
        """Rows added past the cursor (higher watermark, or equal one and higher key) are read."""
        table, expected = _ints_table(engine, make_table, table_name)
        source = _source(engine, table_name)
        batches = list(source.batches(None, 1000))
        cursor = batches[-1].cursor
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {"id": 1000, "wm": cursor.watermark, "label": "same wm, higher key"},
                    {"id": 0, "wm": cursor.watermark + 1, "label": "higher wm, lower key"},
                    {"id": 999, "wm": cursor.watermark - 1, "label": "behind the cursor"},
                ],
            )
        rest = [i for b in _read_all(source, cursor, 10) for i in b]
        source.close()
        assert rest == [1000, 0]
        assert len(expected) == ROWS

    def test_empty_and_exhausted(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str
    ) -> None:
        """An empty table, and a cursor at the end, yield no batch."""
        make_table(
            table_name, sa.Column("id", sa.Integer, primary_key=True), sa.Column("wm", sa.Integer)
        )
        source = _source(engine, table_name)
        assert _read_all(source, None, 10) == []
        assert _read_all(source, Cursor(10**6, (10**6,)), 10) == []
        source.close()


class TestNoKey:
    """Without a key, batches end only where the watermark changes, so resuming stays exact."""

    @pytest.mark.parametrize("batch_size", [1, 5, 17, 18, 40, 1000])
    def test_batches_hold_whole_ties(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """No watermark value is split across batches; a resumed read repeats nothing."""
        _, expected = _ints_table(engine, make_table, table_name)
        source = _source(engine, table_name, key=())
        batches = list(source.batches(None, batch_size))
        wms = [{row[1] for row in b.rows} for b in batches]
        for earlier, later in itertools.pairwise(wms):
            assert not earlier & later
        assert sorted(row[0] for b in batches for row in b.rows) == sorted(expected)
        assert sorted(_read_resuming(source, batch_size)) == sorted(expected)
        source.close()


class TestTimestamps:
    """Timestamp watermarks keep their microseconds through the cursor and back."""

    def test_microseconds_apart(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str
    ) -> None:
        """Rows 1 µs apart, read 3 at a time with a resume after each batch, arrive once each."""
        table = make_table(
            table_name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", MICRO_DATETIME),
        )
        base = dt.datetime(2026, 3, 1, 12, 0, 0, 999_990)  # noqa: DTZ001 - a naive column
        rows = [{"id": i, "updated_at": base + dt.timedelta(microseconds=i)} for i in range(1, 31)]
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
        source = _source(engine, table_name, key=("id",), wm="updated_at")
        assert _read_resuming(source, 3) == list(range(1, 31))
        source.close()
        no_key = _source(engine, table_name, key=(), wm="updated_at")
        assert _read_resuming(no_key, 3) == list(range(1, 31))
        no_key.close()


class TestTypesAndQueries:
    """Column types are reported; queries work like tables; identifiers are quoted."""

    def test_reflected_python_types(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str
    ) -> None:
        """Reflection reports the Python type of each column."""
        make_table(
            table_name,
            sa.Column("id", sa.BigInteger, primary_key=True),
            sa.Column("price", sa.Numeric(12, 2)),
            sa.Column("ratio", sa.Float),
            sa.Column("name", sa.String(50)),
            sa.Column("day", sa.Date),
            sa.Column("updated_at", sa.DateTime),
        )
        with _source(engine, table_name, wm="updated_at") as source:
            columns = {c.name: c.python_type for c in source.columns()}
        assert columns == {
            "id": int,
            "price": Decimal,
            "ratio": float,
            "name": str,
            "day": dt.date,
            "updated_at": dt.datetime,
        }

    def test_query_source(self, engine: sa.Engine, make_table: MakeTable, table_name: str) -> None:
        """A query with a join and a computed column is read with the same cursor semantics."""
        _, expected = _ints_table(engine, make_table, table_name)
        other = make_table(
            f"{table_name}_x",
            sa.Column("wm", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("tag", sa.String(10)),
        )
        with engine.begin() as conn:
            conn.execute(
                other.insert(), [{"wm": w, "tag": f"w{w}"} for w in range(ROWS // TIE + 1)]
            )
        query = (
            f"SELECT t.id, t.wm, t.id * 2 AS doubled, x.tag FROM {table_name} t "
            f"JOIN {table_name}_x x ON x.wm = t.wm"
        )
        source = Source(sa.create_engine(engine.url), watermark="wm", key=("id",), query=query)
        assert [c.name for c in source.columns()] == ["id", "wm", "doubled", "tag"]
        rows = [row for b in source.batches(None, 7) for row in b.rows]
        assert [r[0] for r in rows] == expected
        assert all(r[2] == 2 * r[0] and r[3] == f"w{r[1]}" for r in rows)
        assert _read_resuming(source, 7) == expected
        source.close()

    def test_hostile_table_name(self, engine: sa.Engine) -> None:
        """A table name carrying SQL is looked up as a name, never run."""
        source = Source(sa.create_engine(engine.url), watermark="wm", table="x; DROP TABLE y")
        with pytest.raises(ConfigError, match="not found"):
            source.columns()
        source.close()

    def test_missing_watermark_column(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str
    ) -> None:
        """A watermark or key that is not a column is a configuration error naming it."""
        _ints_table(engine, make_table, table_name, rows=3)
        with (
            _source(engine, table_name, wm="updated_at") as source,
            pytest.raises(ConfigError, match=r"source.watermark: no column updated_at"),
        ):
            source.columns()
        with (
            _source(engine, table_name, key=("uid",)) as source,
            pytest.raises(ConfigError, match=r"source.key: no column uid"),
        ):
            source.columns()


class TestEngineUrl:
    """Bare dialect names get the drivers we ship."""

    @pytest.mark.parametrize(
        ("given", "driver"),
        [
            ("postgresql://u@h/db", "postgresql+psycopg"),
            ("mysql://u@h/db", "mysql+pymysql"),
            ("mariadb://u@h/db", "mariadb+pymysql"),
            ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
            ("sqlite:///x.db", "sqlite"),
        ],
    )
    def test_default_driver(self, given: str, driver: str) -> None:
        """The URL's driver is filled in only when it names none."""
        assert engine_url(given).drivername == driver


AT = dt.datetime(2026, 5, 1, 8, 30)  # noqa: DTZ001 - a naive column


def _stamped(engine: sa.Engine, make_table: MakeTable, name: str, rows: int) -> sa.Table:
    """A table (id, at) of ``rows`` rows, ids from 0, all at ``AT``."""
    table = make_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime),
    )
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "at": AT} for i in range(rows)])
    return table


class TestStreaming:
    """A read streams on every server: a server-side cursor, never the whole result buffered."""

    @pytest.mark.parametrize("db_url", ["postgres", "mysql"], indirect=True)
    def test_server_side_cursor(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, db_url: str
    ) -> None:
        """psycopg's ServerCursor on PostgreSQL, PyMySQL's SSCursor on MariaDB."""
        _stamped(engine, make_table, table_name, 10)
        source_engine = open_engine(db_url)
        cursors: list[str] = []

        @sa.event.listens_for(source_engine, "before_cursor_execute")
        def _seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if "akkiosync_cursor_0" in statement:  # the read, not reflection or counts
                cursors.append(type(cursor).__name__)

        source = Source(source_engine, watermark="at", key=("id",), table=table_name)
        with closing(source), closing(source.batches(None, 4)) as batches:
            assert sum(len(batch.rows) for batch in batches) == 10
        assert cursors == ["ServerCursor" if db_url.startswith("postgresql") else "SSCursor"]


class TestDriverRows:
    """Past a read's first batch, rows come as the driver's own tuples where SQLAlchemy would
    convert nothing: every row once, in order."""

    def test_every_row_once_in_order(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, db_url: str
    ) -> None:
        """25 rows in batches of 10: SQLAlchemy's Rows first, then tuples (SQLite: Rows, for
        SQLAlchemy converts its timestamps' text)."""
        table = _stamped(engine, make_table, table_name, 25)

        statement = sa.select(table).order_by(table.c.id)
        with (
            engine.connect() as conn,
            conn.execution_options(yield_per=10).execute(statement) as result,
        ):
            parts = list(_partitions(result, statement, 10))
        assert [len(part) for part in parts] == [10, 10, 5]
        assert [row[0] for part in parts for row in part] == list(range(25))
        assert {row[1] for part in parts for row in part} == {AT}
        later = {type(part[0]) for part in parts[1:]}
        assert later == ({sa.Row} if db_url.startswith("sqlite") else {tuple})
