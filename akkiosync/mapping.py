"""From source columns to the dataset's schema, and from rows to JSON-safe records.

Pure: no I/O. The schema is planned once, when the dataset is created, and pinned; after that
every record carries exactly the schema's keys, and each field's values keep one JSON type
(``type-stable``): the converter is chosen per field from its type and its column, not per
value (``convert``). A value its field cannot hold unchanged (7.9 in an integer field,
PostgreSQL's ``infinity`` in a date field) raises ``BadValueError``, or is sent as null and
counted (``on_bad_value: null``). A batch is converted a column at a time (``columnwise``),
to the same values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from typing import Any, Literal, cast, get_args

from akkiosync.columnwise import ColumnConverter, column_converter
from akkiosync.convert import Converter, Interval, UnfitError, converter
from akkiosync.errors import BadValueError, ConfigError, SchemaError

# ``boolean`` is a category field (Akkio has no boolean type) whose values are JSON true/false.
FieldType = Literal["integer", "float", "string", "category", "date", "boolean"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
OnBadValue = Literal["fail", "null"]


@dataclass(frozen=True, slots=True)
class SourceColumn:
    """A column as the source sees it: its Python type when known (``None`` when not)."""

    name: str
    python_type: type | None
    sql_type: str = ""
    utc: bool = False  # its naive timestamps are UTC (MySQL TIMESTAMP, read in a UTC session)
    # The field type its SQL type calls for where its Python type would mislead: a MySQL
    # TINYINT(1) is a boolean, an ENUM a category, PostgreSQL's money a number.
    field_type: FieldType | None = None
    fraction: bool = False  # its times hold fractions of a second: always six digits


@dataclass(frozen=True, slots=True)
class DatasetField:
    """One field of the dataset: its name there, the column it comes from, and its type."""

    name: str
    source: str
    type: FieldType


# The ``source`` of the field ``columns.synced_at`` adds: no column (no SQL database allows an
# empty column name) but the time the run read the row.
SYNCED_AT = ""


@dataclass(frozen=True, slots=True)
class Schema:
    """The pinned list of fields a dataset receives, in order; ``unsent``: source columns an
    existing dataset had no field for when the job adopted it (warned of once, then)."""

    fields: tuple[DatasetField, ...]
    unsent: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Text form for the checkpoint store."""
        fields = [[f.name, f.source, f.type] for f in self.fields]
        # The plain list when nothing was left out: what stores written before `unsent` hold.
        return json.dumps(
            {"fields": fields, "unsent": list(self.unsent)} if self.unsent else fields
        )

    @classmethod
    def from_json(cls, text: str) -> Schema:
        """The inverse of ``to_json``."""
        data = json.loads(text)
        fields, unsent = (data["fields"], data["unsent"]) if isinstance(data, dict) else (data, ())
        return cls(
            tuple(DatasetField(n, s, cast(FieldType, t)) for n, s, t in fields), tuple(unsent)
        )


def field_type_for(python_type: type | None) -> FieldType:
    """The Akkio field type a column of this Python type becomes."""
    if python_type is None:
        return "string"
    if issubclass(python_type, bool):
        return "boolean"
    if issubclass(python_type, int):
        return "integer"
    if issubclass(python_type, float | Decimal | dt.timedelta | Interval):
        return "float"
    if issubclass(python_type, dt.date):  # datetime too
        return "date"
    return "string"


def akkio_type(field_type: FieldType) -> str:
    """The type Akkio gives a field of this type: it has no boolean, true/false make a
    category."""
    return "category" if field_type == "boolean" else field_type


def plan_schema(
    columns: Sequence[SourceColumn],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    types: Mapping[str, str] | None = None,
    synced_at: str | None = None,
) -> Schema:
    """Choose the dataset's fields from the source columns and the job's overrides;
    ``synced_at`` names a last, date field that holds when the run read each row."""
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
            cast(FieldType, types[c.name])
            if c.name in types
            else c.field_type or field_type_for(c.python_type),
        )
        for c in chosen
    )
    names = [f.name for f in fields]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"columns.rename: two columns would both become {', '.join(doubled)}")
    if synced_at is not None:
        if synced_at in names:
            raise ConfigError(
                f"columns.synced_at: field {synced_at} is already a column's field; choose "
                "another name"
            )
        fields += (DatasetField(synced_at, SYNCED_AT, "date"),)
    return Schema(fields)


def new_columns(
    schema: Schema,
    columns: Iterable[SourceColumn],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Source columns the job would send but the pinned schema lacks (added since it was
    pinned); columns the job leaves out on purpose, or the dataset had no field for when it
    was adopted, are not reported."""
    sent = {f.source for f in schema.fields}.union(schema.unsent)
    return [
        c.name
        for c in columns
        if c.name not in sent and c.name not in exclude and (include is None or c.name in include)
    ]


_SHOWN = 80  # characters of a bad value shown in an error


class RecordMapper:
    """Turns source rows (tuples in ``columns`` order) into records for the dataset."""

    def __init__(
        self,
        schema: Schema,
        columns: Sequence[SourceColumn | str],
        utc_columns: Collection[str] = (),
        *,
        key: Sequence[str] = (),
        withheld: Collection[str] = (),
        job: str = "JOB",
        synced_at: dt.datetime | None = None,
        on_bad_value: OnBadValue = "fail",
    ) -> None:
        """``columns``: the source's columns in row order (a bare name: a column of unknown
        type); ``utc_columns``: more columns whose naive timestamps are UTC;
        ``key``: the columns that name a row in errors (the key, else the watermark);
        ``withheld``: fields always sent as null, their values never read; ``job``: the job's
        name, for the remedy an error suggests; ``synced_at``: when the run read the rows, the
        value of the ``SYNCED_AT`` field (null without it); ``on_bad_value``: what a value
        that does not fit its field does, fail the batch or become null (``nulled`` counts
        those by column)."""
        described = [SourceColumn(c, None) if isinstance(c, str) else c for c in columns]
        by_name = {c.name: c for c in described}
        position = {c.name: i for i, c in enumerate(described)}
        missing = [
            f.source
            for f in schema.fields
            if f.source not in position and f.name not in withheld and f.source != SYNCED_AT
        ]
        if missing:
            raise SchemaError(
                f"source column(s) {', '.join(missing)} no longer exist but the dataset's "
                "schema needs them; restore them or `akkiosync reset` the job"
            )
        self._fields = schema.fields
        self._key = [(name, position[name]) for name in key if name in position]
        self._job = job
        self._fail = on_bad_value == "fail"
        self.nulled: dict[str, int] = {}  # values sent as null under on_bad_value: null
        # One text form for every run: ISO 8601 in UTC, to the microsecond.
        read_at = (
            None
            if synced_at is None
            else synced_at.astimezone(dt.UTC).isoformat("T", "microseconds")
        )
        # Record keys are plain str: a reflected name is SQLAlchemy's str subclass, which is no
        # JSON object key to orjson (the encoder would fall back to the slow standard one).
        self._filled = {
            str(f.name): read_at
            for f in schema.fields
            if f.source == SYNCED_AT and f.name not in withheld and read_at is not None
        }
        self._plan = [
            (str(f.name), 0, _null)
            if f.name in withheld or f.source == SYNCED_AT
            else (
                str(f.name),
                position[f.source],
                converter(
                    f.type,
                    (column := by_name[f.source]).python_type,
                    fraction=column.fraction,
                    utc=column.utc or f.source in utc_columns,
                    boolean=column.field_type == "boolean",
                ),
            )
            for f in schema.fields
        ]
        # The plan again, a column at a time, for ``records``.
        self._names = tuple(str(f.name) for f in schema.fields)
        self._columns = [
            (
                index,
                _constant(self._filled.get(name))
                if convert is _null
                else column_converter(convert),
            )
            for name, index, convert in self._plan
        ]

    def record(self, row: Sequence[Any]) -> dict[str, Any]:
        """One row as a record with exactly the schema's keys; ``BadValueError`` when a value
        does not fit its field."""
        try:
            record = {
                name: None if (value := row[index]) is None else convert(value)
                for name, index, convert in self._plan
            }
        except (ValueError, TypeError, ArithmeticError):
            if self._fail:
                raise self._bad_value(row) from None
            record = self._with_nulls(row)
        if self._filled:
            record.update(self._filled)  # in place: the keys keep the schema's order
        return record

    def records(self, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """Many rows at once: ``record`` of each, a column at a time (``columnwise``)."""
        rows = rows if isinstance(rows, list | tuple) else list(rows)
        if not rows:
            return []
        try:
            # One tuple per source column; rows of unlike lengths are left to ``record``.
            source = list(zip(*rows, strict=True))
            values = [convert(source[index]) for index, convert in self._columns]
        except Exception:  # noqa: BLE001 - whatever failed, ``record`` row by row raises it
            # (or the bad value's error) for the first row concerned, or counts the nulls: the
            # column paths change nothing, so each null is counted once
            return [self.record(row) for row in rows]
        # Each row's values zipped with the names, in C: the keys in the schema's order.
        return list(map(dict, map(zip, repeat(self._names), zip(*values, strict=True))))

    def _with_nulls(self, row: Sequence[Any]) -> dict[str, Any]:
        """``row``'s record with null for each value that does not fit, counted in
        ``nulled`` (one field at a time, off the fast path)."""
        record: dict[str, Any] = {}
        for field, (name, index, convert) in zip(self._fields, self._plan, strict=True):
            value = row[index]
            if _misfit(convert, value) is None:
                record[name] = None if value is None else convert(value)
            else:
                record[name] = None
                self.nulled[field.source] = self.nulled.get(field.source, 0) + 1
        return record

    def _bad_value(self, row: Sequence[Any]) -> BadValueError:
        """The error naming the first value of ``row`` that does not fit (found again one field
        at a time, off the fast path)."""
        bad = [
            (field, row[index], misfit)
            for field, (_, index, convert) in zip(self._fields, self._plan, strict=True)
            if (misfit := _misfit(convert, row[index])) is not None
        ]
        if not bad:  # cannot happen: converters are pure; keep the error anyway
            return BadValueError("a source value does not fit its dataset field")
        field, value, misfit = bad[0]
        where = ", ".join(f"{name}={_shown(row[i])}" for name, i in self._key) or "unknown"
        why = f" ({misfit})" if isinstance(misfit, UnfitError) else ""
        return BadValueError(
            f"column {field.source} holds {_shown(value, as_repr=True)} in the row {where}, "
            f"which does not fit field {field.name} ({field.type}) without being altered{why}; "
            "fix the value in the source, set on_bad_value: null to send null for such "
            f"values, or change columns.types for {field.source} and "
            f"`akkiosync reset {self._job}` (a new dataset, every row sent again)"
        )


def _misfit(convert: Converter, value: Any) -> Exception | None:
    """Why ``convert`` refuses ``value``; None when it takes it (null fits every field)."""
    if value is None:
        return None
    try:
        convert(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        return exc
    return None


def _null(value: Any) -> None:
    """A withheld field: null, whatever the row holds."""


def _constant(value: Any) -> ColumnConverter:
    """A column of ``value`` whatever the rows hold: a withheld field's, ``SYNCED_AT``'s."""
    return lambda values: (value,) * len(values)


def _shown(value: Any, *, as_repr: bool = False) -> str:
    """A value for an error message, cut to ``_SHOWN`` characters."""
    text = repr(value) if as_repr or isinstance(value, str) else str(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."
