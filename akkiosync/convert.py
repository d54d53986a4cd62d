"""From one source value to the JSON value of a dataset field's type.

Pure: no I/O. A converter raises ``ValueError`` (``UnfitError`` when it can say why),
``TypeError`` or ``ArithmeticError`` for a value its field cannot hold unchanged: a fraction
in an integer field, NaN or infinity anywhere (JSON has neither), a date past 9999 that the
driver could only give as text. ``RecordMapper`` applies the job's ``on_bad_value`` to those.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Converter = Callable[[Any], Any]
# Most specific first: a datetime is a date.
TEMPORAL: tuple[type[dt.date | dt.time], ...] = (dt.datetime, dt.date, dt.time)
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})
_FRACTION = re.compile(r":\d\d[.,](\d+)")  # the fraction of a second in a time's text


class UnfitError(ValueError):
    """A value its field cannot hold unchanged; the message says why."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A PostgreSQL interval, its parts kept apart: a month has no fixed number of days, nor a
    day (across a DST change) of seconds, so none is folded into another."""

    months: int
    days: int
    microseconds: int

    def seconds(self) -> float:
        """Its length in seconds; ``UnfitError`` when it has months."""
        if self.months:
            raise UnfitError("an interval with months or years has no fixed number of seconds")
        return (self.days * 86_400_000_000 + self.microseconds) / 1_000_000

    def iso(self) -> str:
        """ISO 8601, as PostgreSQL writes it under ``IntervalStyle iso_8601`` (each part
        with its own sign: ``P-1Y-2M3DT-4H-5M-6S``)."""
        if not (self.months or self.days or self.microseconds):
            return "PT0S"
        years, months = _split(self.months, 12)
        hours, rest = _split(self.microseconds, 3_600_000_000)
        minutes, micros = _split(rest, 60_000_000)
        text = "P" + "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M")) if n)
        text += f"{self.days}D" if self.days else ""
        if hours or minutes or micros:
            text += "T" + "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
        if micros:
            whole, fraction = divmod(abs(micros), 1_000_000)
            sign = "-" if micros < 0 else ""
            text += f"{sign}{whole}" + (f".{fraction:06d}".rstrip("0") if fraction else "") + "S"
        return text

    def __repr__(self) -> str:
        return f"interval {self.iso()}"


def _split(value: int, unit: int) -> tuple[int, int]:
    """``divmod`` truncating toward zero, as PostgreSQL's C arithmetic does."""
    whole, rest = divmod(abs(value), unit)
    return (-whole, -rest) if value < 0 else (whole, rest)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise UnfitError("JSON has no NaN or infinity")
    return value


def _to_integer(value: Any) -> Any:
    if isinstance(value, str):  # numeric text (SQLite lets an INTEGER column hold any text)
        value = Decimal(value.strip())  # decimal.InvalidOperation is an ArithmeticError
    # Decimal.is_finite, not math.isfinite: the latter raises on a signalling NaN.
    if isinstance(value, Decimal) and not value.is_finite():
        raise UnfitError("JSON has no NaN or infinity")
    if isinstance(value, float):
        _finite(value)
    if isinstance(value, float | Decimal) and value != int(value):
        raise UnfitError("a fraction does not fit an integer field")
    return int(value)


def _to_float(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Interval):
        return value.seconds()
    if isinstance(value, Decimal) and not value.is_finite():
        raise UnfitError("JSON has no NaN or infinity")
    try:
        return _finite(float(value))
    except OverflowError:  # an int past float's range, as Decimal("1E+400") becomes inf
        raise UnfitError("too large for a float") from None


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Interval):
        return value.iso()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(value, set | frozenset):  # a MySQL SET: its members, in one stable order
        return ",".join(sorted(str(member) for member in value))
    if isinstance(value, float):
        _finite(value)
    if isinstance(value, Decimal) and not value.is_finite():
        raise UnfitError("JSON has no NaN or infinity")
    return str(value)


def _to_category(value: Any) -> Any:
    return value if isinstance(value, bool) else _to_string(value)


def _to_boolean(value: Any) -> Any:
    # Exactly the values that mean true or false; a TINYINT(1) or SQLite BOOLEAN holding 2 is
    # not quietly true.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and (word := value.strip().lower()) in _TRUE | _FALSE:
        return word in _TRUE
    raise UnfitError("a boolean is 0/1, true/false, t/f, yes/no, y/n or on/off")


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


CONVERTERS: dict[str, Converter] = {
    "integer": _to_integer,
    "float": _to_float,
    "string": _to_string,
    "category": _to_category,
    "date": _to_date,
    "boolean": _to_boolean,
}


@dataclass(frozen=True, slots=True)
class TimeForm:
    """How one date, timestamp or time column's values are written: ISO 8601, always with
    six fraction digits where the column holds fractions of a second, else as the value has
    them (none for whole seconds; six for text stored with a fraction, as SQLite's is)."""

    kind: type[dt.date | dt.time]  # what text read as stored is parsed as
    fraction: bool = False
    utc: bool = False  # its naive timestamps are UTC (MySQL TIMESTAMP, read in a UTC session)

    def text(self, value: Any) -> str:
        """The value's text; ``UnfitError`` for text that is not a date or time (PostgreSQL's
        ``infinity``, a year past 9999, a BC date, ``24:00:00``, MySQL's zero dates)."""
        six = self.fraction
        if isinstance(value, str):
            value, stored_six = self._parse(value)
            six = six or stored_six
        if isinstance(value, dt.datetime):
            if self.utc and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return _utc(value).isoformat(timespec="microseconds" if six else "auto")
        if isinstance(value, dt.time):
            return value.isoformat(timespec="microseconds" if six else "auto")
        if isinstance(value, dt.date):
            return value.isoformat()
        raise UnfitError(f"not a {self.kind.__name__}")

    def _parse(self, text: str) -> tuple[dt.date | dt.time, bool]:
        fraction = _FRACTION.search(text)
        if fraction and len(fraction[1]) > 6:
            raise UnfitError("more than six fraction digits would be cut")
        kinds: tuple[type[dt.date | dt.time], ...] = (
            (dt.date, dt.datetime) if self.kind is dt.date else (self.kind,)
        )
        for kind in kinds:  # a DATE column of SQLite's may hold a timestamp's text
            try:
                return kind.fromisoformat(text.strip()), fraction is not None
            except ValueError:
                continue
        raise UnfitError(f"not a {self.kind.__name__} that ISO 8601 and JSON can write")


def converter(
    field_type: str,
    python_type: type | None = None,
    *,
    fraction: bool = False,
    utc: bool = False,
    boolean: bool = False,
) -> Converter:
    """The converter for one field: its type, and what its column holds: values of
    ``python_type`` (a date or time column's are written in one ``TimeForm``), booleans
    (``boolean``, or ``python_type`` bool: a category field of such a column, pinned before
    ``boolean`` existed, keeps receiving true/false), UTC timestamps (``utc``)."""
    # A column of unknown type said to hold UTC timestamps holds timestamps.
    python_type = python_type or (dt.datetime if utc else type(None))
    kind = next((k for k in TEMPORAL if issubclass(python_type, k)), None)
    form = None if kind is None else TimeForm(kind, fraction, utc)
    boolean = boolean or issubclass(python_type, bool)
    if field_type == "boolean" or (field_type == "category" and boolean):
        return _to_boolean
    if form is not None and field_type == "date":
        return form.text
    if field_type == "date" and python_type is str:  # text: a date's, in ISO 8601, or unfit
        return TimeForm(dt.date).text
    if form is not None and field_type in ("string", "category"):
        return _Lenient(form).text
    return CONVERTERS[field_type]


# The exact types whose values each converter returns as they are (JSON already): ``columnwise``
# sends whole columns of them unread. Subclasses are not among them: an ``IntEnum`` becomes int.
_NATIVE: dict[Converter, frozenset[type]] = {
    _to_integer: frozenset({int}),
    _to_string: frozenset({str}),
    _to_category: frozenset({str, bool}),
    _to_boolean: frozenset({bool}),
    _to_date: frozenset({str}),
}


def native_types(convert: Converter) -> frozenset[type]:
    """The exact types whose values ``convert`` returns unchanged (none for most)."""
    return _NATIVE.get(convert, frozenset())


def time_form(convert: Converter) -> TimeForm | None:
    """The ``TimeForm`` whose text ``convert`` gives for datetimes, dates and times, if it is
    one's (text values aside, where a string field's converter is more lenient)."""
    owner = getattr(convert, "__self__", None)
    if isinstance(owner, _Lenient):
        owner = owner.form
    return owner if isinstance(owner, TimeForm) else None


@dataclass(frozen=True, slots=True)
class _Lenient:
    """A text field of a date or time column: text that is not a date stays the database's
    own text (a string can hold ``infinity``)."""

    form: TimeForm

    def text(self, value: Any) -> str:
        try:
            return self.form.text(value)
        except UnfitError:
            if isinstance(value, str):
                return value
            raise
