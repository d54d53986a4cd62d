"""Watermark and key types on SQLite, PostgreSQL and MariaDB, read with a resume after every
batch: big integers, decimals, dates, composite and text keys, timestamps 1 µs apart."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from akkiosync.cursor import Cursor, decode_cursor, encode_cursor
from akkiosync.source import Source, open_engine

MakeTable = Callable[..., sa.Table]
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
# Rows are inserted in this scrambled order, so the read's order is never the insertion order.
STRIDE = 37


@dataclass
class Read:
    """What a read that resumed after every batch delivered."""

    ids: list[Any] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)  # as each batch reported it

    @property
    def last(self) -> Cursor:
        return self.cursors[-1]


def _scrambled(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in a fixed order unrelated to their values (STRIDE is prime to len(rows))."""
    n = len(rows)
    assert n % STRIDE != 0
    return [rows[(i * STRIDE) % n] for i in range(n)]


def _load(
    engine: sa.Engine,
    make_table: MakeTable,
    name: str,
    columns: Sequence[sa.Column[Any]],
    rows: Sequence[dict[str, Any]],
    *,
    watermark: str = "wm",
    key: tuple[str, ...] = ("id",),
) -> Source:
    """Create the table, insert ``rows`` (scrambled) and open a source on it the way a job
    does (``open_engine``: a UTC session on MariaDB, so TIMESTAMP reads back what was written)."""
    make_table(name, *columns)
    source_engine = open_engine(engine.url.render_as_string(hide_password=False))
    table = sa.Table(name, sa.MetaData(), autoload_with=source_engine)
    with source_engine.begin() as conn:
        conn.execute(table.insert(), _scrambled(rows))
    return Source(source_engine, watermark=watermark, key=key, table=name)


def _read_resuming(source: Source, batch_size: int) -> Read:
    """One batch per 'run', each resuming from the stored (encoded) cursor, as a daemon killed
    after every batch would; like ``test_source._read_resuming``, keeping the cursors."""
    read = Read()
    stored: str | None = None
    for _ in range(1_000):  # far more batches than any table here has rows
        after = decode_cursor(stored) if stored is not None else None
        with closing(source.batches(after, batch_size)) as batches:
            batch = next(batches, None)
        if batch is None:
            return read
        read.ids.extend(row[0] for row in batch.rows)
        read.batch_sizes.append(len(batch.rows))
        read.cursors.append(batch.cursor)
        stored = encode_cursor(batch.cursor)
    raise AssertionError("the read never ended")


def _assert_identical(got: Any, want: Any) -> None:
    """Equal in value and exact type; decimals digit for digit, datetimes offset for offset."""
    assert type(got) is type(want)
    assert got == want
    if isinstance(want, Decimal):
        assert got.as_tuple() == want.as_tuple()
    if isinstance(want, dt.datetime):
        assert got.utcoffset() == want.utcoffset()
        assert got.microsecond == want.microsecond


def _assert_round_trips(cursors: Sequence[Cursor]) -> None:
    """Every cursor comes back from its stored text with the same types and values."""
    for cursor in cursors:
        back = decode_cursor(encode_cursor(cursor))
        _assert_identical(back.watermark, cursor.watermark)
        assert len(back.key) == len(cursor.key)
        for got, want in zip(back.key, cursor.key, strict=True):
            _assert_identical(got, want)


def _as_cursor(engine: sa.Engine, value: Any) -> Any:
    """The cursor's form of a watermark value: on SQLite dates and timestamps are text, and the
    cursor keeps the text SQLAlchemy stored (always with six fractional digits)."""
    if engine.dialect.name != "sqlite":
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _check(
    engine: sa.Engine,
    read: Read,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    key: tuple[str, ...] = ("id",),
) -> None:
    """Exactly once, in (watermark, key) order, batches within size, the last cursor exact."""
    expected = sorted(rows, key=lambda r: (r["wm"], *(r[k] for k in key)))
    assert read.ids == [r["id"] for r in expected]
    assert all(1 <= size <= batch_size for size in read.batch_sizes)
    last = expected[-1]
    _assert_identical(read.last.watermark, _as_cursor(engine, last["wm"]))
    assert read.last.key == tuple(last[k] for k in key)
    _assert_round_trips(read.cursors)


def _id_column() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)


class TestBigIntegers:
    """BIGINT watermarks past 2**53 (where floats lose units) and near 2**63-1 stay exact."""

    @pytest.mark.parametrize("batch_size", [1, 2, 5])
    def test_past_float_precision(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Ties of 2**53 + n and of 2**63 - 1 - n are delivered once each, in order."""
        low = [{"id": i, "wm": 2**53 + i // 3} for i in range(1, 21)]
        high = [{"id": i, "wm": 2**63 - 1 - (i - 21) // 3} for i in range(21, 41)]
        rows = low + high
        assert float(2**53 + 1) == float(2**53)  # the premise: a float could not tell these
        columns = [_id_column(), sa.Column("wm", sa.BigInteger)]
        with closing(_load(engine, make_table, table_name, columns, rows)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size)
        assert read.last.watermark == 2**63 - 1


def _decimal_rows(base: str) -> list[dict[str, Any]]:
    """Ties of three, neighbours one unit of the sixth decimal place apart."""
    return [
        {"id": i, "wm": Decimal(base) + Decimal(i // 3) * Decimal("0.000001")} for i in range(1, 31)
    ]


class TestDecimals:
    """NUMERIC(20, 6) watermarks that differ in the sixth decimal place stay exact."""

    @pytest.mark.parametrize("batch_size", [1, 2, 4])
    def test_sixth_decimal_place(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Values with 15 significant digits (what SQLite's REAL keeps) resume exactly."""
        rows = _decimal_rows("123456789.000001")
        columns = [_id_column(), sa.Column("wm", sa.Numeric(20, 6))]
        with closing(_load(engine, make_table, table_name, columns, rows)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size)
        assert read.last.watermark == Decimal("123456789.000011")


class TestDoubles:
    """DOUBLE watermarks that differ past the tenth decimal place stay exact: the cursor is the
    driver's float, not SQLAlchemy's 10-place Decimal of MySQL's DOUBLE."""

    @pytest.mark.parametrize("batch_size", [1, 2, 4])
    def test_twelfth_decimal_place(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Ties of three, neighbours 1e-12 apart, delivered once each, in order."""
        rows = [{"id": i, "wm": 1.0 + (i // 3) * 1e-12} for i in range(1, 31)]
        assert round(rows[0]["wm"], 10) == round(rows[-1]["wm"], 10)  # the premise
        columns = [_id_column(), sa.Column("wm", sa.Double)]
        with closing(_load(engine, make_table, table_name, columns, rows)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size)
        assert read.last.watermark == rows[-1]["wm"]


class TestWideDecimals:
    """All 20 digits of NUMERIC(20, 6) are kept through the cursor and back.

    PostgreSQL and MariaDB only: SQLite has no decimal type; a NUMERIC column stores a REAL,
    which keeps 15 significant digits, so 12345678901234.000001 and .000002 are one value there.
    """

    @pytest.fixture(params=["postgres", "mysql"])
    def db_url(self, request: pytest.FixtureRequest) -> str:
        """The servers with a real decimal type."""
        url: str = request.getfixturevalue(f"{request.param}_url")
        return url

    @pytest.mark.parametrize("batch_size", [1, 2, 4])
    def test_twenty_digits(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Values with 14 integer and 6 fractional digits, ties of three, resume exactly."""
        rows = _decimal_rows("12345678901234.000001")
        columns = [_id_column(), sa.Column("wm", sa.Numeric(20, 6))]
        with closing(_load(engine, make_table, table_name, columns, rows)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size)
        assert read.last.watermark == Decimal("12345678901234.000011")


class TestDates:
    """DATE watermarks with ties: a checkpoint inside a day continues with that day's rest."""

    @pytest.mark.parametrize("batch_size", [1, 3, 4])
    def test_ties_on_a_day(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Five rows a day across a month end are delivered once each, in order."""
        first = dt.date(2024, 2, 27)
        rows = [{"id": i, "wm": first + dt.timedelta(days=i // 5)} for i in range(1, 31)]
        columns = [_id_column(), sa.Column("wm", sa.Date)]
        with closing(_load(engine, make_table, table_name, columns, rows)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size)
        assert read.last.watermark == _as_cursor(engine, dt.date(2024, 3, 4))


class TestCompositeKey:
    """A key (region, id) orders each tie by region, then id, with regions interleaved."""

    @pytest.mark.parametrize("batch_size", [1, 3, 7])
    def test_region_and_id(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Ids repeat across regions; every (region, id) is delivered once, in order."""
        regions = ["us", "eu", "ap"]
        rows = [
            {"n": i, "region": regions[i % 3], "id": (i * 7) % 10, "wm": i // 8} for i in range(30)
        ]
        columns: list[sa.Column[Any]] = [
            sa.Column("n", sa.Integer, unique=True),
            sa.Column("region", sa.String(8), primary_key=True),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("wm", sa.Integer),
        ]
        key = ("region", "id")
        with closing(_load(engine, make_table, table_name, columns, rows, key=key)) as source:
            read = _read_resuming(source, batch_size)
        expected = sorted(rows, key=lambda r: (r["wm"], r["region"], r["id"]))
        assert read.ids == [r["n"] for r in expected]
        assert read.last.key == ("us", 9)
        _assert_round_trips(read.cursors)


class TestTextKey:
    """A text key (UUIDs stored as strings) orders ties by the text."""

    @pytest.mark.parametrize("batch_size", [1, 4, 9])
    def test_uuid_text(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Lower-case UUID text keys under ties of ten are delivered once each, in order."""
        rows = [{"id": str(uuid.uuid4()), "wm": i // 10} for i in range(30)]
        columns: list[sa.Column[Any]] = [
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("wm", sa.Integer),
        ]
        with closing(_load(engine, make_table, table_name, columns, rows)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size)
        assert all(isinstance(c.key[0], str) for c in read.cursors)


def _microsecond_rows(start: dt.datetime) -> list[dict[str, Any]]:
    """Thirty rows 1 µs apart, crossing a second, a day and a year boundary."""
    return [{"id": i, "wm": start + dt.timedelta(microseconds=i)} for i in range(1, 31)]


# 1 µs steps from here cross a second, a minute, an hour, a day and a year.
LAST_MICROSECONDS = dt.datetime(2025, 12, 31, 23, 59, 59, 999_985)  # noqa: DTZ001 - naive column


class TestNaiveMicroseconds:
    """Naive timestamps 1 µs apart (PostgreSQL timestamp, MariaDB DATETIME(6), SQLite DateTime)
    never lose a microsecond through the cursor, with or without a key."""

    @pytest.mark.parametrize("key", [("id",), ()], ids=["key", "no-key"])
    @pytest.mark.parametrize("batch_size", [1, 3, 4])
    def test_one_microsecond_apart(
        self,
        engine: sa.Engine,
        make_table: MakeTable,
        table_name: str,
        batch_size: int,
        key: tuple[str, ...],
    ) -> None:
        """Every batch boundary falls between values 1 µs apart; all rows arrive once."""
        rows = _microsecond_rows(LAST_MICROSECONDS)
        wm_type = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
        columns = [_id_column(), sa.Column("wm", wm_type)]
        with closing(_load(engine, make_table, table_name, columns, rows, key=key)) as source:
            read = _read_resuming(source, batch_size)
        _check(engine, read, rows, batch_size, key=key)
        assert read.last.watermark == _as_cursor(engine, dt.datetime(2026, 1, 1, 0, 0, 0, 15))  # noqa: DTZ001


class TestAwareMicroseconds:
    """Time-zone columns 1 µs apart (PostgreSQL timestamptz, MariaDB TIMESTAMP(6)) keep every
    microsecond and the offset through the cursor. SQLite has no time-zone type."""

    @pytest.fixture(params=["postgres", "mysql"])
    def db_url(self, request: pytest.FixtureRequest) -> str:
        """The servers with a time-zone timestamp type."""
        url: str = request.getfixturevalue(f"{request.param}_url")
        return url

    @pytest.fixture
    def start(self, engine: sa.Engine) -> Iterator[dt.datetime]:
        """PostgreSQL takes aware values (given here at +05:30); MariaDB's TIMESTAMP takes
        naive ones, read and written in the source's UTC session."""
        if engine.dialect.name == "postgresql":
            yield dt.datetime(2026, 1, 1, 5, 29, 59, 999_985, tzinfo=IST)
        else:
            yield LAST_MICROSECONDS

    @pytest.mark.parametrize("key", [("id",), ()], ids=["key", "no-key"])
    @pytest.mark.parametrize("batch_size", [1, 3, 4])
    def test_one_microsecond_apart(
        self,
        engine: sa.Engine,
        make_table: MakeTable,
        table_name: str,
        start: dt.datetime,
        batch_size: int,
        key: tuple[str, ...],
    ) -> None:
        """Every batch boundary falls between instants 1 µs apart; all rows arrive once."""
        rows = _microsecond_rows(start)
        wm_type = sa.DateTime(timezone=True).with_variant(
            mysql.TIMESTAMP(fsp=6), "mysql", "mariadb"
        )
        columns = [_id_column(), sa.Column("wm", wm_type, nullable=True)]
        with closing(_load(engine, make_table, table_name, columns, rows, key=key)) as source:
            read = _read_resuming(source, batch_size)
        assert read.ids == list(range(1, 31))
        last = read.last.watermark
        assert isinstance(last, dt.datetime)
        assert last == rows[-1]["wm"]  # the same instant (PostgreSQL answers in UTC)
        assert last.microsecond == 15
        assert (last.tzinfo is None) == (engine.dialect.name != "postgresql")
        _assert_round_trips(read.cursors)


class TestNullableKey:
    """A unique key column may hold NULLs: those rows are never read, but counted."""

    @pytest.mark.parametrize("batch_size", [1, 2])
    def test_null_in_a_unique_key(
        self, engine: sa.Engine, make_table: MakeTable, table_name: str, batch_size: int
    ) -> None:
        """Rows whose key is NULL have no place in the (wm, key) order: they are left out
        (and counted for the job's null_watermark policy); every other row arrives once."""
        rows = [
            {"n": i, "code": None if i % 3 == 0 else f"c{i:02d}", "wm": i // 4} for i in range(12)
        ]
        columns: list[sa.Column[Any]] = [
            sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("code", sa.String(8), unique=True, nullable=True),
            sa.Column("wm", sa.Integer),
        ]
        with closing(_load(engine, make_table, table_name, columns, rows, key=("code",))) as source:
            read = _read_resuming(source, batch_size)
            assert source.null_cursor_rows() == 4
        assert read.ids == [i for i in range(12) if i % 3 != 0]
