"""What each SQL type is read as, per dialect: the ``SourceColumn`` a table's column or a
query's result column describes, and the expression that reads its values faithfully.

- MySQL's ``TINYINT(1)`` (its ``BOOLEAN``) is planned ``boolean``, like PostgreSQL's and
  SQLite's booleans; SQLite's are read as stored, not through SQLAlchemy's ``bool()`` (which
  makes 2 and ``'no'`` true), and ``convert`` reads them strictly;
- ENUMs are categories; PostgreSQL ``money`` is read as ``numeric``, exact whatever the
  server's ``lc_monetary``;
- MySQL ``TIME`` is MySQL's own text (a duration: -838:59:59 to 838:59:59); SQLite's dates and
  times are their stored text, which ``convert`` parses (a bad text is a bad value, not a
  crash) keeping whether it has a fraction;
- JSON is its compact text, so a JSON ``null`` is ``"null"`` and not an SQL NULL
  (PostgreSQL's through the driver, see ``_engine``);
- ``fraction``: timestamps and times whose type holds fractions of a second, written with six
  digits always.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from psycopg import postgres
from sqlalchemy.dialects import mysql, postgresql

from akkiosync.mapping import FieldType, SourceColumn

_MYSQL_TINY = 1  # PyMySQL's type code for TINYINT


def mysql_time_text(value: Any, *, six_digits: bool = False) -> Any:
    """A MySQL TIME as MySQL writes it, ``[-]HH:MM:SS[.ffffff]`` with hours past 24 (the type
    spans -838:59:59 to 838:59:59: a duration, not a time of day); with ``six_digits`` (a
    ``TIME(n)`` column) the fraction is always written."""
    if not isinstance(value, dt.timedelta):
        return value
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    seconds, fraction = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction:06d}" if fraction or six_digits else text


class _MysqlTimeText(sa.types.UserDefinedType[str]):
    """Reads a MySQL TIME column as ``mysql_time_text``. SQLAlchemy's own TIME turns the
    driver's timedelta into a time of day, wrapping 25:00:00 to 01:00:00."""

    cache_ok = True

    def __init__(self, six_digits: bool) -> None:
        self.six_digits = six_digits

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Callable[[Any], Any] | None:
        return functools.partial(mysql_time_text, six_digits=self.six_digits)


class _AsStored(sa.types.UserDefinedType[Any]):
    """Reads a column as the driver gives it, with no SQLAlchemy conversion."""

    cache_ok = True


class _JsonText(sa.types.UserDefinedType[str]):
    """Reads a JSON column as its compact text (SQLAlchemy's JSON turns ``null`` into None)."""

    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Callable[[Any], Any] | None:
        return _json_text


def _json_text(value: Any) -> Any:
    if not isinstance(value, str | bytes):
        return value
    try:
        return json.dumps(json.loads(value), separators=(",", ":"), ensure_ascii=False)
    except ValueError:  # SQLite does not check its JSON: text that is not JSON stays text
        return value


def python_type(sql_type: sa.types.TypeEngine[Any]) -> type | None:
    """The Python type SQLAlchemy reads ``sql_type`` as, if it knows."""
    try:
        return sql_type.python_type
    except NotImplementedError:
        return None


def table_column(column: sa.Column[Any], dialect: str) -> SourceColumn:
    """A reflected table column, as the mapping sees it."""
    sql_type = column.type
    # str() of a reflected timestamptz is plain "TIMESTAMP": say what it is.
    zone = " WITH TIME ZONE" if getattr(sql_type, "timezone", False) else ""
    return SourceColumn(
        column.name,
        python_type(sql_type),
        f"{sql_type}{zone}" if zone and "ZONE" not in str(sql_type) else str(sql_type),
        utc=isinstance(sql_type, mysql.TIMESTAMP),
        field_type=_field_type(sql_type),
        fraction=_fraction(sql_type, dialect),
    )


def _field_type(sql_type: sa.types.TypeEngine[Any]) -> FieldType | None:
    if isinstance(sql_type, mysql.TINYINT) and sql_type.display_width == 1:
        return "boolean"
    if isinstance(sql_type, sa.Enum):
        return "category"
    if isinstance(sql_type, postgresql.MONEY):
        return "float"
    return None


def _fraction(sql_type: sa.types.TypeEngine[Any], dialect: str) -> bool:
    if isinstance(sql_type, mysql.DATETIME | mysql.TIMESTAMP | mysql.TIME):
        return bool(sql_type.fsp)
    if dialect == "postgresql" and isinstance(sql_type, sa.DateTime | sa.Time):
        return getattr(sql_type, "precision", None) != 0  # None: the default, 6 digits
    return False  # SQLite: as its text has it


_MYSQL_TIMESTAMP = 7  # PyMySQL's FIELD_TYPE.TIMESTAMP


def result_column(
    name: str, kind: type | None, description: Sequence[Any], dialect: str
) -> SourceColumn:
    """A column of a query's result, of the Python type its sampled values have (or, when
    they are all NULL, the type the driver describes); ``description``: the driver's (DB-API)
    description of it."""
    kind = kind or _described(description, dialect)
    temporal = kind is not None and issubclass(kind, dt.date | dt.time)
    fraction = utc = False
    field_type: FieldType | None = None
    if dialect == "postgresql":
        fraction = temporal and description[4] != 0  # precision: None is the default, 6
    elif dialect in ("mysql", "mariadb"):
        fraction = temporal and bool(description[5])  # scale: the fsp
        if description[1] == _MYSQL_TINY and description[4] == 1:
            field_type = "boolean"
        # A TIMESTAMP read in the UTC session is UTC, as from a table.
        utc = description[1] == _MYSQL_TIMESTAMP
    return SourceColumn(
        name,
        kind,
        kind.__name__ if kind else "unknown",
        utc=utc,
        field_type=field_type,
        fraction=fraction,
    )


# The Python types of the result columns drivers describe, for a column NULL in every sampled
# row (a sparse ``shipped_at``): planned as a string, its values would change form and type.
_POSTGRES_KINDS: dict[str, type] = {
    "bool": bool,
    **dict.fromkeys(("int2", "int4", "int8"), int),
    **dict.fromkeys(("float4", "float8"), float),
    "numeric": Decimal,
    "date": dt.date,
    **dict.fromkeys(("timestamp", "timestamptz"), dt.datetime),
    **dict.fromkeys(("time", "timetz"), dt.time),
}
_MYSQL_KINDS: dict[int, type] = {  # PyMySQL's FIELD_TYPE codes (it ships no type stubs)
    **dict.fromkeys((1, 2, 3, 8, 9, 13), int),  # TINY, SHORT, LONG, LONGLONG, INT24, YEAR
    **dict.fromkeys((4, 5), float),  # FLOAT, DOUBLE
    **dict.fromkeys((0, 246), Decimal),  # DECIMAL, NEWDECIMAL
    **dict.fromkeys((10, 14), dt.date),  # DATE, NEWDATE
    **dict.fromkeys((7, 12), dt.datetime),  # TIMESTAMP, DATETIME
}


def _described(description: Sequence[Any], dialect: str) -> type | None:
    """The Python type of a result column as the driver describes it, where known."""
    if dialect == "postgresql":
        info = postgres.types.get(description[1])
        return None if info is None else _POSTGRES_KINDS.get(info.name)
    if dialect in ("mysql", "mariadb"):
        return _MYSQL_KINDS.get(description[1])
    return None  # SQLite describes no types


class _DriverFloat(sa.types.TypeDecorator[float]):
    """A floating-point column's values exactly as the driver reads them (Python floats)."""

    impl = sa.Float
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None  # the driver's float is the value; see ``exact_float``


def exact_float(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A floating-point column as the driver reads it. SQLAlchemy reflects MySQL's DOUBLE as a
    Float that turns each value into a Decimal of 10 places (1e-20 became 0, and a DOUBLE
    cursor lost the digits that told rows apart), and converts MySQL's FLOAT again; the
    driver's float is exact (and rows need no converting: ``_read._partitions``)."""
    if isinstance(column.type, sa.Float):
        return sa.type_coerce(column, _DriverFloat())
    return column


def readable(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """A column as the read selects it (see the module's docstring)."""
    sql_type = column.type
    if isinstance(sql_type, sa.Float):
        return exact_float(column).label(column.key)
    if isinstance(sql_type, mysql.TIME):
        return sa.type_coerce(column, _MysqlTimeText(bool(sql_type.fsp))).label(column.key)
    if dialect == "sqlite" and isinstance(sql_type, sa.Boolean | sa.DateTime | sa.Date | sa.Time):
        return sa.type_coerce(column, _AsStored()).label(column.key)
    if isinstance(sql_type, postgresql.MONEY):
        return sa.cast(column, sa.Numeric()).label(column.key)
    if isinstance(sql_type, sa.JSON) and dialect != "postgresql":
        return sa.type_coerce(column, _JsonText()).label(column.key)
    return column
