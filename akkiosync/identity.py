"""What a job's cursor belongs to: its watermark and key columns, with their types.

The stored cursor is a position on those columns only. A job file whose ``watermark`` or ``key``
changed after the first run would bind the old position to new columns: rows skipped in silence,
or a raw database error. So the columns are recorded with the cursor, and a run whose job no
longer fits them fails before reading, saying how to re-baseline.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from akkiosync.cursor import decode_cursor
from akkiosync.errors import SchemaError
from akkiosync.mapping import SourceColumn

logger = logging.getLogger(__name__)
UNKNOWN = "unknown"  # a query column whose rows were all NULL: its type is not known yet


@dataclass(frozen=True, slots=True)
class CursorColumns:
    """The cursor's columns, in order (watermark first), each with its Python type's name."""

    watermark: tuple[str, str]
    key: tuple[tuple[str, str], ...]

    @classmethod
    def of(
        cls, watermark: str, key: Sequence[str], columns: Sequence[SourceColumn]
    ) -> CursorColumns:
        """The job's cursor columns as the source describes them now."""
        types = {c.name: _type_name(c) for c in columns}
        return cls(
            (watermark, types.get(watermark, UNKNOWN)),
            tuple((k, types.get(k, UNKNOWN)) for k in key),
        )

    def to_json(self) -> str:
        """Text form for the checkpoint store."""
        return json.dumps({"watermark": list(self.watermark), "key": [list(k) for k in self.key]})

    @classmethod
    def from_json(cls, text: str) -> CursorColumns:
        """The inverse of ``to_json``."""
        data = json.loads(text)
        name, kind = data["watermark"]
        return cls((name, kind), tuple((n, t) for n, t in data["key"]))

    def fits(self, other: CursorColumns) -> bool:
        """The same columns in the same order, with types that agree where both are known."""
        mine, theirs = (self.watermark, *self.key), (other.watermark, *other.key)
        return len(mine) == len(theirs) and all(
            a[0] == b[0] and (a[1] == b[1] or UNKNOWN in (a[1], b[1]))
            for a, b in zip(mine, theirs, strict=True)
        )

    def describe(self) -> str:
        """``watermark updated_at (datetime), key id (int)``."""
        key = ", ".join(f"{n} ({t})" for n, t in self.key) or "none"
        return f"watermark {self.watermark[0]} ({self.watermark[1]}), key {key}"


def _type_name(column: SourceColumn) -> str:
    """The column's Python type's name; ``datetime+tz`` for timestamps with a time zone, whose
    values compare differently with a naive stored position."""
    if column.python_type is None:
        return UNKNOWN
    name = column.python_type.__name__
    aware = column.utc or "WITH TIME ZONE" in column.sql_type.upper()
    return f"{name}+tz" if aware and name == "datetime" else name


def check_cursor_columns(
    job: str, stored_json: str | None, cursor_json: str | None, now: CursorColumns
) -> bool:
    """Raise ``SchemaError`` when the job's cursor columns no longer fit the stored cursor;
    return whether the store should record ``now`` (nothing recorded yet, or a type learnt)."""
    if stored_json is None:
        if cursor_json is not None:
            _check_legacy(job, decode_cursor(cursor_json).key, now)
        return True
    stored = CursorColumns.from_json(stored_json)
    if not stored.fits(now):
        raise SchemaError(
            f"job {job}: its cursor belongs to {stored.describe()}, but the job file now says "
            f"{now.describe()}: the stored position means nothing on other columns. To start "
            f"again: `akkiosync reset {job}` (a new dataset, every row sent again), or "
            f"`akkiosync reset {job} --keep-dataset` (the same dataset; the cursor restarts at "
            "the beginning or at source.initial_watermark: set it past the rows already sent, "
            "or they are sent again)"
        )
    return stored != now and UNKNOWN not in {t for _, t in (now.watermark, *now.key)}


def _check_legacy(job: str, key: tuple[object, ...], now: CursorColumns) -> None:
    """A cursor stored before its columns were recorded: at least its key's length must fit."""
    if len(key) != len(now.key):
        raise SchemaError(
            f"job {job}: its stored cursor has {len(key)} key value(s), but the job file now has "
            f"{now.describe()}: the key changed since the cursor was written. To start again: "
            f"`akkiosync reset {job}`, or `akkiosync reset {job} --keep-dataset`"
        )
