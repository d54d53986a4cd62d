"""Properties of the keyset read, checked with hypothesis on SQLite: whatever the data (ties,
NULL watermarks), the batch size and the crash points, every row with a watermark is delivered
exactly once, in (watermark, key) order, and no row without one is ever delivered.

A "run" starts from the stored cursor (encoded and decoded like the real checkpoint store),
streams ``Source.batches`` and, for each batch, delivers it and stores its cursor; a crash stops
a run after k batches, and the next run starts from whatever was stored last.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akkiosync.cursor import Cursor, decode_cursor, encode_cursor
from akkiosync.source import Batch, Source, open_engine

MakeTable = Callable[..., sa.Table]
Row = dict[str, Any]  # "id" (the row's identity), "a", "b", "wm"
BeforeRun = Callable[[int], None]

# Positions of the test table's columns in a delivered row.
ID, A, B, WM = range(4)
MAX_ROWS = 60
# 1 µs steps from here cross a second, a minute, an hour, a day and a year.
START = dt.datetime(2024, 12, 31, 23, 59, 59, 999_980)  # noqa: DTZ001 - a naive column

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    # Each example makes its own SQLite file; the only function-scoped fixture is conftest's
    # autouse ``hermetic`` (environment and working directory), which examples may share.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Small value ranges, so that ties are the rule; about one value in eight is NULL.
int_watermarks = st.integers(-1, 6).map(lambda v: None if v < 0 else v)
micro_watermarks = st.integers(-1, 40).map(
    lambda v: None if v < 0 else START + dt.timedelta(microseconds=v)
)
batch_sizes = st.integers(1, MAX_ROWS + 10)
crash_plans = st.lists(st.integers(0, 4), max_size=8)  # batches each run delivers, then crashes


def _table(metadata: sa.MetaData, name: str, wm_type: Any) -> sa.Table:
    """The test table: ``id`` identifies a row; ``(a, b)`` is a second unique key."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("a", sa.String(4), nullable=False),
        sa.Column("b", sa.Integer, nullable=False),
        sa.Column("wm", wm_type),
        sa.UniqueConstraint("a", "b"),
    )


def _rows(ids_and_wms: Sequence[tuple[int, Any]]) -> list[Row]:
    """Rows keyed by ``id`` alone (``a`` and ``b`` only keep their constraint satisfied)."""
    return [{"id": i, "a": "", "b": i, "wm": wm} for i, wm in ids_and_wms]


@contextmanager
def _sqlite(
    rows: Sequence[Row], key: tuple[str, ...], wm_type: Any
) -> Iterator[tuple[Source, sa.Table, sa.Engine]]:
    """A fresh SQLite file holding ``rows`` (in the order given): a source on it, the table and
    the engine (both for inserting more rows)."""
    with tempfile.TemporaryDirectory() as directory:
        engine = sa.create_engine(f"sqlite:///{Path(directory) / 'source.db'}")
        table = _table(sa.MetaData(), "events", wm_type)
        table.create(engine)
        if rows:
            with engine.begin() as conn:
                conn.execute(table.insert(), list(rows))
        with Source(engine, watermark="wm", key=key, table="events") as source:
            yield source, table, engine


def _run_until_done(
    source: Source,
    batch_size: int,
    crashes: Sequence[int],
    before_run: BeforeRun | None = None,
) -> list[Batch]:
    """Runs crashing after ``crashes[i]`` batches, then one that may not crash; the batches
    delivered, in delivery order. ``before_run(i)`` may change the table before run ``i``."""
    delivered: list[Batch] = []
    stored: str | None = None
    for run in range(len(crashes) + 1):
        if before_run is not None:
            before_run(run)
        crash_after = crashes[run] if run < len(crashes) else None
        after = decode_cursor(stored) if stored is not None else None
        with closing(source.batches(after, batch_size)) as stream:
            for n, batch in enumerate(stream):
                if n == crash_after:
                    break  # killed: this batch was read, never delivered
                delivered.append(batch)
                stored = encode_cursor(batch.cursor)
    return delivered


def _as_cursor(value: Any) -> Any:
    """The cursor's form of a watermark: SQLite keeps timestamps as text, and so does the
    cursor (the text SQLAlchemy wrote, always with six fractional digits)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    return value


def _assert_round_trips(cursor: Cursor) -> None:
    """The stored text gives back the cursor, value for value and type for type."""
    back = decode_cursor(encode_cursor(cursor))
    assert back == cursor
    assert [type(v) for v in (back.watermark, *back.key)] == [
        type(v) for v in (cursor.watermark, *cursor.key)
    ]


def _check_keyed(
    batches: Sequence[Batch], rows: Sequence[Row], key: tuple[str, ...], batch_size: int
) -> None:
    """With a key: exactly once in (watermark, key) order, batches within size, exact cursors."""
    positions = [(ID, A, B)[("id", "a", "b").index(k)] for k in key]
    expected = sorted(
        (r for r in rows if r["wm"] is not None), key=lambda r: (r["wm"], *(r[k] for k in key))
    )
    assert [row[ID] for b in batches for row in b.rows] == [r["id"] for r in expected]
    for batch in batches:
        assert 1 <= len(batch.rows) <= batch_size
        last = batch.rows[-1]
        assert batch.cursor == Cursor(_as_cursor(last[WM]), tuple(last[p] for p in positions))
        _assert_round_trips(batch.cursor)


def _check_unkeyed(batches: Sequence[Batch], rows: Sequence[Row], batch_size: int) -> None:
    """Without a key: exactly once in watermark order; a batch ends only where the watermark
    changes, and outgrows ``batch_size`` only while one value lasts."""
    delivered = [row for b in batches for row in b.rows]
    expected = sorted((r for r in rows if r["wm"] is not None), key=lambda r: r["wm"])
    ids = [row[ID] for row in delivered]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(r["id"] for r in expected)
    # SQLite's timestamps are read as the text stored (the mapper makes them ISO 8601).
    assert [_as_cursor(row[WM]) for row in delivered] == [_as_cursor(r["wm"]) for r in expected]
    for batch in batches:
        assert len(batch.rows) <= batch_size or len({row[WM] for row in batch.rows}) == 1
        assert batch.cursor == Cursor(_as_cursor(batch.rows[-1][WM]))
        _assert_round_trips(batch.cursor)
    for earlier, later in itertools.pairwise(batches):
        assert earlier.rows[-1][WM] != later.rows[0][WM]


class TestExactlyOnce:
    """Any data, batch size and crash points: each row with a watermark arrives once, in order."""

    @PROPERTY
    @given(
        data=st.lists(
            st.tuples(st.integers(-100, 100), int_watermarks),
            max_size=MAX_ROWS,
            unique_by=lambda r: r[0],
        ),
        batch_size=batch_sizes,
        crashes=crash_plans,
    )
    def test_integer_key(
        self, data: list[tuple[int, Any]], batch_size: int, crashes: list[int]
    ) -> None:
        """A unique integer key under integer watermarks with many ties."""
        rows = _rows(data)
        with _sqlite(rows, ("id",), sa.Integer) as (source, _, _):
            batches = _run_until_done(source, batch_size, crashes)
        _check_keyed(batches, rows, ("id",), batch_size)

    @PROPERTY
    @given(
        wms=st.lists(int_watermarks, max_size=MAX_ROWS),
        batch_size=batch_sizes,
        crashes=crash_plans,
    )
    def test_no_key(self, wms: list[Any], batch_size: int, crashes: list[int]) -> None:
        """No key: whole ties per batch keep the watermark-only cursor exact."""
        rows = _rows(list(enumerate(wms)))
        with _sqlite(rows, (), sa.Integer) as (source, _, _):
            batches = _run_until_done(source, batch_size, crashes)
        _check_unkeyed(batches, rows, batch_size)

    @PROPERTY
    @given(
        data=st.lists(
            st.tuples(st.tuples(st.text("ab", max_size=2), st.integers(0, 4)), int_watermarks),
            max_size=MAX_ROWS,
            unique_by=lambda r: r[0],
        ),
        batch_size=batch_sizes,
        crashes=crash_plans,
    )
    def test_composite_key(
        self, data: list[tuple[tuple[str, int], Any]], batch_size: int, crashes: list[int]
    ) -> None:
        """A key (a, b) of a short text and a small integer, each repeating on its own."""
        rows = [{"id": n, "a": a, "b": b, "wm": wm} for n, ((a, b), wm) in enumerate(data)]
        with _sqlite(rows, ("a", "b"), sa.Integer) as (source, _, _):
            batches = _run_until_done(source, batch_size, crashes)
        _check_keyed(batches, rows, ("a", "b"), batch_size)

    @PROPERTY
    @given(
        wms=st.lists(micro_watermarks, max_size=MAX_ROWS),
        batch_size=batch_sizes,
        crashes=crash_plans,
        with_key=st.booleans(),
    )
    def test_microsecond_timestamps(
        self, wms: list[Any], batch_size: int, crashes: list[int], with_key: bool
    ) -> None:
        """Timestamps differing by microseconds, across a year boundary, keyed or not."""
        rows = _rows([(i, wm) for i, wm in enumerate(wms)])
        key = ("id",) if with_key else ()
        with _sqlite(rows, key, sa.DateTime) as (source, _, _):
            batches = _run_until_done(source, batch_size, crashes)
        if with_key:
            _check_keyed(batches, rows, key, batch_size)
        else:
            _check_unkeyed(batches, rows, batch_size)


def _inserting(
    source_rows: list[Row], table: sa.Table, engine: sa.Engine, plan: Sequence[Sequence[int]]
) -> BeforeRun:
    """Before run ``i``, insert one row per step in ``plan[i]``: a NULL watermark for a
    negative step, else the highest watermark so far plus the step; always a new highest id."""

    def before_run(run: int) -> None:
        new: list[Row] = []
        for step in plan[run] if run < len(plan) else ():
            top = max((r["wm"] for r in source_rows if r["wm"] is not None), default=0)
            next_id = max((r["id"] for r in source_rows), default=0) + 1
            row = {"id": next_id, "a": "", "b": next_id, "wm": None if step < 0 else top + step}
            source_rows.append(row)
            new.append(row)
        if new:
            with engine.begin() as conn:
                conn.execute(table.insert(), new)

    return before_run


# A run plan: batches delivered before the crash, and the steps of the rows inserted before it.
insert_plans = st.lists(
    st.tuples(st.integers(0, 4), st.lists(st.integers(-1, 2), max_size=3)), max_size=6
)


class TestRowsAddedBetweenRuns:
    """Rows committed between runs at or past the highest watermark are delivered too."""

    @PROPERTY
    @given(
        data=st.lists(
            st.tuples(st.integers(-100, 100), int_watermarks),
            max_size=MAX_ROWS,
            unique_by=lambda r: r[0],
        ),
        batch_size=batch_sizes,
        plan=insert_plans,
    )
    def test_integer_key(
        self, data: list[tuple[int, Any]], batch_size: int, plan: list[tuple[int, list[int]]]
    ) -> None:
        """With a key, a new row may even share the highest watermark (its id is higher)."""
        rows = _rows(data)
        with _sqlite(rows, ("id",), sa.Integer) as (source, table, engine):
            before_run = _inserting(rows, table, engine, [steps for _, steps in plan])
            batches = _run_until_done(source, batch_size, [c for c, _ in plan], before_run)
        _check_keyed(batches, rows, ("id",), batch_size)

    @PROPERTY
    @given(
        wms=st.lists(int_watermarks, max_size=MAX_ROWS),
        batch_size=batch_sizes,
        plan=insert_plans,
    )
    def test_no_key(
        self, wms: list[Any], batch_size: int, plan: list[tuple[int, list[int]]]
    ) -> None:
        """Without a key, new rows come strictly past the highest watermark: one equal to a
        value already delivered cannot be told from the rows sent (that needs a key)."""
        rows = _rows(list(enumerate(wms)))
        steps = [[s if s < 0 else s + 1 for s in run_steps] for _, run_steps in plan]
        with _sqlite(rows, (), sa.Integer) as (source, table, engine):
            before_run = _inserting(rows, table, engine, steps)
            batches = _run_until_done(source, batch_size, [c for c, _ in plan], before_run)
        _check_unkeyed(batches, rows, batch_size)


def _scenario(rng: random.Random, rows: int) -> list[Row]:
    """Rows with ties, NULL watermarks and a composite key, in a scrambled order."""
    ids = rng.sample(range(10 * rows), rows)
    pairs = rng.sample([(a, b) for a in ("", "a", "ab", "b", "ba") for b in range(rows)], rows)
    return [
        {"id": i, "a": a, "b": b, "wm": None if rng.random() < 0.1 else rng.randrange(12)}
        for i, (a, b) in zip(ids, pairs, strict=True)
    ]


class TestOnEveryDatabase:
    """A fixed random scenario (ties, NULLs, crashes, rows added between runs) on each database."""

    @pytest.mark.parametrize("key", [("id",), ("a", "b"), ()], ids=["id", "a-b", "no-key"])
    def test_fixed_scenario(self, engine: sa.Engine, table_name: str, key: tuple[str, ...]) -> None:
        """Every row with a watermark is delivered once, in order, across 25 crashed runs."""
        rng = random.Random(20_260_301)
        rows = _scenario(rng, 150)
        crashes = [rng.randrange(4) for _ in range(25)]
        low = 0 if key else 1  # without a key, only rows strictly past the top (see above)
        steps = ([rng.randrange(-1, 3) for _ in range(rng.randrange(3))] for _ in crashes)
        plan = [[s if s < 0 else s + low for s in run_steps] for run_steps in steps]
        table = _table(sa.MetaData(), table_name, sa.Integer)
        table.create(engine)
        try:
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)
            url = engine.url.render_as_string(hide_password=False)
            with Source(open_engine(url), watermark="wm", key=key, table=table_name) as source:
                before_run = _inserting(rows, table, engine, plan)
                batches = _run_until_done(source, 7, crashes, before_run)
        finally:
            table.drop(engine)
        if key:
            _check_keyed(batches, rows, key, 7)
        else:
            _check_unkeyed(batches, rows, 7)
        assert sum(len(b.rows) for b in batches) > 100
