"""``RecordMapper.records`` against the row-by-row mapper it replaced, as ratios in one run.

The hot path of a run's CPU: a batch of rows (5,000 by default) of ten mixed columns, as
psycopg and SQLAlchemy return them (an int key, a naive timestamp with microseconds, a
NUMERIC(10,2) decimal, a short status, a 40-character note, a boolean, a float, a date, an int,
a text column that is null a third of the time), plus the two cursor columns a read appends,
made into records:

- **old**: the mapper as it was before ``columns``: one dict comprehension per row over the
  fields, a null test and a converter call per value, and the ``synced_at`` update per row
  (copied below, driven by the same converters from ``akkiosync.convert``);
- **new**: ``RecordMapper.records`` as it is in this tree.

The machine is shared and noisy: the contenders take turns (old, new, old, new, ...) and the
figure to read is the ratio of their median times. Every case also checks that both give
equal records, of the same JSON types.

Run: ``.venv/bin/python bench/mapper_bench.py [--rows N] [--repeat N] [--row-objects]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData

from akkiosync.convert import Converter, converter
from akkiosync.mapping import RecordMapper, Schema, SourceColumn, plan_schema

START = dt.datetime(2026, 1, 1, 9, 0, 0)  # noqa: DTZ001 - a naive TIMESTAMP column on purpose
SYNCED_AT = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
STATUSES = ("placed", "paid", "shipped", "delivered", "returned", "refunded")
WORDS = (
    "please", "leave", "at", "the", "front", "door", "gift", "wrap", "call", "on", "arrival",
    "fragile", "handle", "with", "care", "no", "invoice", "in", "box", "back", "entrance",
)  # fmt: skip
COLUMNS = (
    SourceColumn("id", int, "BIGINT"),
    SourceColumn("updated_at", dt.datetime, "TIMESTAMP WITHOUT TIME ZONE", fraction=True),
    SourceColumn("amount", Decimal, "NUMERIC(10, 2)"),
    SourceColumn("status", str, "VARCHAR(20)"),
    SourceColumn("note", str, "VARCHAR(80)"),
    SourceColumn("paid", bool, "BOOLEAN"),
    SourceColumn("score", float, "DOUBLE PRECISION"),
    SourceColumn("due", dt.date, "DATE"),
    SourceColumn("qty", int, "INTEGER"),
    SourceColumn("comment", str, "TEXT"),
)


def make_rows(n: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """``n`` rows of ``COLUMNS``, each followed by the read's cursor (updated_at, id)."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, n + 1):
        at = START + dt.timedelta(seconds=i // 7, microseconds=rng.randrange(1_000_000))
        rows.append(
            (
                i,
                at,
                Decimal(rng.randint(100, 9_999_999)).scaleb(-2),
                rng.choice(STATUSES),
                " ".join(rng.choices(WORDS, k=12))[:40],
                rng.random() < 0.5,
                rng.uniform(-1e6, 1e6),
                START.date() + dt.timedelta(days=rng.randrange(3650)),
                rng.randrange(1, 1000),
                None if rng.random() < 0.33 else " ".join(rng.choices(WORDS, k=5)),
                at,
                i,
            )
        )
    return rows


def as_row_objects(rows: list[tuple[Any, ...]]) -> Sequence[Any]:
    """The same rows as SQLAlchemy ``Row`` objects, as a read's batch holds them."""
    keys = [c.name for c in COLUMNS] + ["akkiosync_cursor_0", "akkiosync_cursor_1"]
    return IteratorResult(SimpleResultMetaData(keys), iter(rows)).all()


class OldMapper:
    """The row-by-row mapper as it was: the same plan, values converted one at a time."""

    def __init__(
        self, schema: Schema, columns: Sequence[SourceColumn], synced_at: dt.datetime | None
    ) -> None:
        position = {c.name: i for i, c in enumerate(columns)}
        by_name = {c.name: c for c in columns}
        read_at = (
            None
            if synced_at is None
            else synced_at.astimezone(dt.UTC).isoformat("T", "microseconds")
        )
        self._filled = {
            f.name: read_at for f in schema.fields if f.source == "" and read_at is not None
        }
        self._plan: list[tuple[str, int, Converter]] = [
            (f.name, 0, _null)
            if f.source == ""
            else (
                f.name,
                position[f.source],
                converter(
                    f.type,
                    (column := by_name[f.source]).python_type,
                    fraction=column.fraction,
                    utc=column.utc,
                    boolean=column.field_type == "boolean",
                ),
            )
            for f in schema.fields
        ]

    def record(self, row: Sequence[Any]) -> dict[str, Any]:
        record = {
            name: None if (value := row[index]) is None else convert(value)
            for name, index, convert in self._plan
        }
        record.update(self._filled)
        return record

    def records(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        record = self.record
        return [record(row) for row in rows]


def _null(value: Any) -> None:
    return None


def timed(run: Callable[[], object], times: list[float]) -> None:
    """Run ``run`` once, from a clean garbage collector, and add its time to ``times``."""
    gc.collect()
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)


def same(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """Equal records, keys in the same order, every value of the same type."""
    return old == new and all(
        list(a) == list(b) and all(type(a[k]) is type(b[k]) for k in a)
        for a, b in zip(old, new, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows per batch (5000)")
    parser.add_argument("--repeat", type=int, default=30, help="turns per contender (30)")
    parser.add_argument(
        "--row-objects",
        action="store_true",
        help="only SQLAlchemy Row objects (default: tuples and Row objects)",
    )
    args = parser.parse_args(argv)
    tuples = make_rows(args.rows)
    batches: dict[str, Sequence[Any]] = {"Row objects": as_row_objects(tuples)}
    if not args.row_objects:
        batches = {"tuples": tuples, **batches}
    cases = {
        "plain": (plan_schema(COLUMNS), None),
        "synced_at": (plan_schema(COLUMNS, synced_at="synced_at"), SYNCED_AT),
    }
    print(
        f"Python {sys.version.split()[0]}, {args.rows} rows x {len(COLUMNS)} columns, "
        f"{args.repeat} turns each; median ms per batch"
    )
    print(f"{'case':<24} {'old ms':>8} {'new ms':>8} {'old/new':>8} {'new us/row':>11}")
    failed = False
    for rows_name, rows in batches.items():
        for case_name, (schema, synced_at) in cases.items():
            old = OldMapper(schema, COLUMNS, synced_at)
            new = RecordMapper(schema, COLUMNS, synced_at=synced_at)
            if not same(old.records(rows), new.records(rows)):
                print(f"FAILED: {rows_name}, {case_name}: the records differ")
                failed = True
                continue
            old_times: list[float] = []
            new_times: list[float] = []
            for _ in range(args.repeat):
                timed(partial(old.records, rows), old_times)
                timed(partial(new.records, rows), new_times)
            old_ms = statistics.median(old_times) * 1000
            new_ms = statistics.median(new_times) * 1000
            print(
                f"{rows_name + ', ' + case_name:<24} {old_ms:>8.2f} {new_ms:>8.2f} "
                f"{old_ms / new_ms:>8.2f} {new_ms * 1000 / args.rows:>11.2f}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
