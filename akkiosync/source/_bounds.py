"""Which rows one read takes: past the cursor, from a floor or a lookback window, settled.

Comparisons are the database's own: values are bound as typed parameters (never pasted into
SQL), and on SQLite, where timestamps are text, time arithmetic goes through ``julianday``,
which reads every ISO 8601 form SQLite accepts. The database's clock, not ours, decides what
has settled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from akkiosync.cursor import Cursor
from akkiosync.errors import ConfigError

_SECONDS_PER_DAY = 86_400
_SETTLE_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")


@dataclass(frozen=True, slots=True)
class Bounds:
    """The predicates of one read, besides "neither watermark nor key is NULL"."""

    after: Cursor | None = None  # (wm, key) > after: the keyset cursor
    since: Any = None  # wm >= since: the initial watermark
    # Lookback: wm >= value - back, instead of the keyset; value None: no checkpoint yet.
    window: tuple[Any, dt.timedelta | int] | None = None
    settle: dt.timedelta | None = None  # wm < the database's now() - settle


@dataclass(frozen=True, slots=True)
class Watermark:
    """What the predicates need to know about the watermark column."""

    dialect: str
    raw: sa.ColumnElement[Any]  # the column as it is
    cursor: sa.ColumnElement[Any]  # the column as the cursor reads it (text on SQLite)
    python_type: type | None
    utc: bool  # naive values that are UTC (MySQL TIMESTAMP in our UTC session)

    @property
    def is_time(self) -> bool:
        kinds = (dt.datetime, dt.date)
        return self.python_type in kinds or (self.dialect == "sqlite" and self.python_type is str)

    @property
    def is_number(self) -> bool:
        return self.python_type in (int, Decimal, float)


def check(bounds: Bounds, watermark: Watermark, name: str) -> None:
    """A ``ConfigError`` when an option does not fit the watermark's type."""
    kind = watermark.python_type.__name__ if watermark.python_type else "unknown"
    if bounds.settle is not None and not (
        watermark.is_time and watermark.python_type is not dt.date
    ):
        raise ConfigError(f"source.settle: needs a timestamp watermark; {name} is {kind}")
    if bounds.settle is not None and watermark.dialect not in _SETTLE_DIALECTS:
        raise ConfigError(f"source.settle: not supported on {watermark.dialect}")
    if bounds.window is not None:
        back = bounds.window[1]
        if isinstance(back, dt.timedelta) and not watermark.is_time:
            raise ConfigError(
                f"source.lookback: a duration needs a time watermark; {name} is {kind}"
            )
        if isinstance(back, int) and not watermark.is_number:
            raise ConfigError(
                f"source.lookback: a count needs a number watermark; {name} is {kind}"
            )


def predicates(
    bounds: Bounds, watermark: Watermark, cursor_exprs: Sequence[sa.ColumnElement[Any]]
) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses of a read with these bounds."""
    # A NULL in the watermark or the key has no place in the (wm, key) order: such rows are
    # never read (counted by the caller, see Source.null_cursor_rows).
    clauses: list[sa.ColumnElement[bool]] = [e.is_not(None) for e in cursor_exprs]
    if bounds.window is not None:
        value, back = bounds.window
        if value is not None:
            clauses.append(_at_least(watermark, value, back))
    elif bounds.after is not None:
        clauses.append(_after(cursor_exprs, [bounds.after.watermark, *bounds.after.key]))
    if bounds.since is not None:
        clauses.append(_at_least(watermark, bounds.since, None))
    if bounds.settle is not None:
        clauses.append(_settled(watermark, bounds.settle))
    return clauses


def _after(exprs: Sequence[sa.ColumnElement[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``(e0, e1, ...) > (v0, v1, ...)`` written as ``e0 > v0 OR (e0 = v0 AND (...))``, which
    every database, and its indexes, understands."""
    head, value = exprs[0], values[0]
    greater: sa.ColumnElement[bool] = head > value
    if len(exprs) == 1:
        return greater
    return sa.or_(greater, sa.and_(head == value, _after(exprs[1:], values[1:])))


def _at_least(
    watermark: Watermark, value: Any, back: dt.timedelta | int | None
) -> sa.ColumnElement[bool]:
    """``wm >= value - back``."""
    if watermark.dialect == "sqlite" and watermark.is_time:
        days = back.total_seconds() / _SECONDS_PER_DAY if isinstance(back, dt.timedelta) else 0
        text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
        floor: sa.ColumnElement[Any] = sa.func.julianday(text) - days
        return sa.func.julianday(watermark.raw) >= floor
    if back is not None:
        value = value - back
    at_least: sa.ColumnElement[bool] = watermark.cursor >= value
    return at_least


def _settled(watermark: Watermark, settle: dt.timedelta) -> sa.ColumnElement[bool]:
    """``wm < now() - settle`` by the database's clock, in the column's own terms."""
    micro = int(settle / dt.timedelta(microseconds=1))  # an int we made: safe inside SQL text
    if watermark.dialect == "sqlite":
        days = settle.total_seconds() / _SECONDS_PER_DAY
        return sa.func.julianday(watermark.raw) < sa.func.julianday("now") - days
    if watermark.dialect == "postgresql":
        aware = getattr(watermark.raw.type, "timezone", False)
        now = "now()" if aware else "LOCALTIMESTAMP"
        limit = f"{now} - interval '{micro} microseconds'"
    elif watermark.utc:  # MySQL TIMESTAMP, read in our UTC session
        limit = f"UTC_TIMESTAMP(6) - INTERVAL {micro} MICROSECOND"
    else:  # MySQL DATETIME: naive, written in the server's own time zone
        server_now = "CONVERT_TZ(UTC_TIMESTAMP(6), '+00:00', @@global.time_zone)"
        limit = f"COALESCE({server_now}, UTC_TIMESTAMP(6)) - INTERVAL {micro} MICROSECOND"
    return watermark.raw < sa.literal_column(limit, type_=watermark.raw.type)


def coerce(value: Any, watermark: Watermark) -> Any:
    """``value`` (from YAML: text, number, date) as a value of the watermark's own type."""
    kind = watermark.python_type
    try:
        if kind is dt.datetime:
            if isinstance(value, str):
                return dt.datetime.fromisoformat(value)
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                return dt.datetime.combine(value, dt.time())
        elif kind is dt.date:
            if isinstance(value, str):
                return dt.date.fromisoformat(value)
            if isinstance(value, dt.datetime):
                return value.date()
        elif kind is int and not isinstance(value, bool):
            return int(value)
        elif kind is Decimal:
            return Decimal(str(value))
        elif kind is float:
            return float(value)
        elif kind is str:
            return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
    except (ValueError, ArithmeticError):
        name = kind.__name__ if kind else "unknown"
        raise ConfigError(
            f"source.initial_watermark: {value!r} is not a value of the watermark's type ({name})"
        ) from None
    return value
