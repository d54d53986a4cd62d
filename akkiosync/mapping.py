"""From source columns to the dataset's schema, and from rows to JSON-safe records.

Pure: no I/O. The schema is planned once, when the dataset is created, and pinned; after that
every record carries exactly the schema's keys, and each field's values keep one JSON type
(``type-stable``): the converter is chosen per field from its type, not per value. A value
its field cannot hold unchanged (7.9 in an integer field) raises ``BadValueError``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast, get_args

from akkiosync.errors import BadValueError, ConfigError, SchemaError

FieldType = Literal["integer", "float", "string", "category", "date"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
Converter = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class SourceColumn:
    """A column as the source sees it: its Python type when known (``None`` when not)."""

    name: str
    python_type: type | None
    sql_type: str = ""
    utc: bool = False  # its naive timestamps are UTC (MySQL TIMESTAMP, read in a UTC session)


@dataclass(frozen=True, slots=True)
class DatasetField:
    """One field of the dataset: its name there, the column it comes from, and its type."""

    name: str
    source: str
    type: FieldType


@dataclass(frozen=True, slots=True)
class Schema:
    """The pinned list of fields a dataset receives, in order."""

    fields: tuple[DatasetField, ...]

    def to_json(self) -> str:
        """Text form for the checkpoint store."""
        return json.dumps([[f.name, f.source, f.type] for f in self.fields])

    @classmethod
    def from_json(cls, text: str) -> Schema:
        """The inverse of ``to_json``."""
        return cls(tuple(DatasetField(n, s, cast(FieldType, t)) for n, s, t in json.loads(text)))


def field_type_for(python_type: type | None) -> FieldType:
    """The Akkio field type a column of this Python type becomes."""
    if python_type is None:
        return "string"
    if issubclass(python_type, bool):
        return "category"
    if issubclass(python_type, int):
        return "integer"
    if issubclass(python_type, float | Decimal | dt.timedelta):
        return "float"
    if issubclass(python_type, dt.date):  # datetime too
        return "date"
    return "string"


def plan_schema(
    columns: Sequence[SourceColumn],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    types: Mapping[str, str] | None = None,
) -> Schema:
    """Choose the dataset's fields from the source columns and the job's overrides."""
    rename, types = rename or {}, types or {}
    known = [c.name for c in columns]
    for option, names in (("include", include or ()), ("exclude", exclude), ("rename", rename)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"columns.{option}: no such source column: {', '.join(unknown)}")
    unknown_types = [n for n in types if n not in known]
    if unknown_types:
        raise ConfigError(f"columns.types: no such source column: {', '.join(unknown_types)}")
    chosen = [
        c for c in columns if (include is None or c.name in include) and c.name not in exclude
    ]
    if not chosen:
        raise ConfigError("columns: no column left to send")
    fields = tuple(
        DatasetField(
            rename.get(c.name, c.name),
            c.name,
            cast(FieldType, types[c.name]) if c.name in types else field_type_for(c.python_type),
        )
        for c in chosen
    )
    names = [f.name for f in fields]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"columns.rename: two columns would both become {', '.join(doubled)}")
    return Schema(fields)


def new_columns(
    schema: Schema,
    columns: Iterable[SourceColumn],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Source columns the job would send but the pinned schema lacks (added since it was
    pinned); columns the job leaves out on purpose are not reported."""
    sent = {f.source for f in schema.fields}
    return [
        c.name
        for c in columns
        if c.name not in sent and c.name not in exclude and (include is None or c.name in include)
    ]


def _finite(value: float) -> float | None:
    # JSON has no NaN or infinity, and Akkio would reject them: they become null.
    return value if math.isfinite(value) else None


def _to_integer(value: Any) -> Any:
    if isinstance(value, str):  # numeric text (SQLite lets an INTEGER column hold any text)
        value = Decimal(value.strip())  # decimal.InvalidOperation is an ArithmeticError
    # Decimal.is_finite, not math.isfinite: the latter raises on a signalling NaN.
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float | Decimal) and value != int(value):
        raise ValueError("a fraction does not fit an integer field")
    return int(value)


def _to_float(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    try:
        return _finite(float(value))
    except OverflowError:  # an int past float's range: null, as Decimal("1E+400") becomes
        return None


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def _to_category(value: Any) -> Any:
    return value if isinstance(value, bool) else _to_string(value)


def _utc(value: dt.datetime) -> dt.datetime:
    # An aware timestamp is an instant: its offset is the reading session's time zone, not
    # data (PostgreSQL shows timestamptz in the session's zone). UTC makes the text the same
    # whatever that zone was.
    return value.astimezone(dt.UTC) if value.utcoffset() is not None else value


def _to_date(value: Any) -> Any:
    # ISO 8601: aware timestamps in UTC with their offset, naive ones naive and unshifted.
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat()
    return value.isoformat() if isinstance(value, dt.date | dt.time) else _to_string(value)


def _to_utc_date(value: Any) -> Any:
    # A naive timestamp known to be UTC (MySQL TIMESTAMP read in a UTC session).
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return _to_date(value)


_CONVERTERS: dict[str, Converter] = {
    "integer": _to_integer,
    "float": _to_float,
    "string": _to_string,
    "category": _to_category,
    "date": _to_date,
}


_SHOWN = 80  # characters of a bad value shown in an error


class RecordMapper:
    """Turns source rows (tuples in ``column_names`` order) into records for the dataset."""

    def __init__(
        self,
        schema: Schema,
        column_names: Sequence[str],
        utc_columns: Collection[str] = (),
        *,
        key: Sequence[str] = (),
        withheld: Collection[str] = (),
        job: str = "JOB",
    ) -> None:
        """``utc_columns``: columns whose naive timestamps are UTC and are sent as such;
        ``key``: the columns that name a row in errors (the key, else the watermark);
        ``withheld``: fields always sent as null, their values never read; ``job``: the job's
        name, for the remedy an error suggests."""
        position = {name: i for i, name in enumerate(column_names)}
        missing = [
            f.source for f in schema.fields if f.source not in position and f.name not in withheld
        ]
        if missing:
            raise SchemaError(
                f"source column(s) {', '.join(missing)} no longer exist but the dataset's "
                "schema needs them; restore them or `akkiosync reset` the job"
            )
        self._fields = schema.fields
        self._key = [(name, position[name]) for name in key if name in position]
        self._job = job
        self._plan = [
            (f.name, 0, _null)
            if f.name in withheld
            else (
                f.name,
                position[f.source],
                _to_utc_date
                if f.type == "date" and f.source in utc_columns
                else _CONVERTERS[f.type],
            )
            for f in schema.fields
        ]

    def record(self, row: Sequence[Any]) -> dict[str, Any]:
        """One row as a record with exactly the schema's keys; ``BadValueError`` when a value
        does not fit its field."""
        try:
            return {
                name: None if (value := row[index]) is None else convert(value)
                for name, index, convert in self._plan
            }
        except (ValueError, TypeError, ArithmeticError):
            raise self._bad_value(row) from None

    def records(self, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """Many rows at once."""
        record = self.record
        return [record(row) for row in rows]

    def _bad_value(self, row: Sequence[Any]) -> BadValueError:
        """The error naming the first value of ``row`` that does not fit (found again one field
        at a time, off the fast path)."""
        bad = [
            (field, row[index])
            for field, (_, index, convert) in zip(self._fields, self._plan, strict=True)
            if not _fits(convert, row[index])
        ]
        if not bad:  # cannot happen: converters are pure; keep the error anyway
            return BadValueError("a source value does not fit its dataset field")
        field, value = bad[0]
        where = ", ".join(f"{name}={_shown(row[i])}" for name, i in self._key) or "unknown"
        return BadValueError(
            f"column {field.source} holds {_shown(value, as_repr=True)} in the row {where}, "
            f"which does not fit field {field.name} ({field.type}) without being altered; "
            f"fix the value in the source, or change columns.types for {field.source} and "
            f"`akkiosync reset {self._job}` (a new dataset, every row sent again)"
        )


def _fits(convert: Converter, value: Any) -> bool:
    """Whether ``convert`` takes ``value`` (null fits every field)."""
    if value is None:
        return True
    try:
        convert(value)
    except (ValueError, TypeError, ArithmeticError):
        return False
    return True


def _null(value: Any) -> None:
    """A withheld field: null, whatever the row holds."""


def _shown(value: Any, *, as_repr: bool = False) -> str:
    """A value for an error message, cut to ``_SHOWN`` characters."""
    text = repr(value) if as_repr or isinstance(value, str) else str(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."
