"""A batch's values, a column at a time: what ``convert``'s converters give, for less work.

Pure: no I/O. ``RecordMapper.records`` spends most of a run's CPU converting values one at a
time; most of a column's values, though, are of one or two types whose conversion a builtin can
do for the whole column (``isoformat`` over every timestamp, ``float`` over every decimal), or
none at all (an ``int`` in an integer field, a ``str`` in a string field: already JSON). A
column's path is picked per batch from the exact types its values have, so a path never rests
on what the column's SQL type promised; a column no path fits is converted value by value by
its converter. Every path gives exactly what the converter gives value by value (the same
values, of the same types); where a value would not fit its field, a path gives up (it raises,
or returns None) and the caller goes back to the converter, which raises the error the value
deserves. Subclasses (an ``IntEnum``, a ``str`` enum) always take the converter.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from operator import attrgetter, is_not, methodcaller
from types import NoneType
from typing import Any

import orjson

from akkiosync.convert import CONVERTERS, Converter, TimeForm, native_types, time_form

# A path: a column's values, none null, and their exact types -> the values converted, or
# None where the path does not apply to them.
Dense = Callable[[Sequence[Any], set[type]], Sequence[Any] | None]
ColumnConverter = Callable[[Sequence[Any]], Sequence[Any]]

_not_none = partial(is_not, None)
_tzinfo = attrgetter("tzinfo")
_utcoffset = methodcaller("utcoffset")
_to_utc = methodcaller("astimezone", dt.UTC)
_microsecond = attrgetter("microsecond")
_TEXT_OF_STR = frozenset({str, int, uuid.UUID})  # str() of any of them fits a string field


def column_converter(convert: Converter) -> ColumnConverter:
    """``convert`` for a whole column: ``[None if v is None else convert(v) for v in
    values]``, through a faster path where one fits the column's values."""
    dense = _dense(convert)

    def column(values: Sequence[Any]) -> Sequence[Any]:
        kinds = set(map(type, values))
        if NoneType not in kinds:
            done = dense(values, kinds)
            return [convert(v) for v in values] if done is None else done
        kinds.discard(NoneType)
        if not kinds:
            return values
        present = list(filter(_not_none, values))
        done = dense(present, kinds)
        if done is None:
            return [None if v is None else convert(v) for v in values]
        if done is present:  # sent as they are: nulls and all
            return values
        filled = iter(done)
        return [None if v is None else next(filled) for v in values]

    return column


def _dense(convert: Converter) -> Dense:
    """The path for ``convert``'s columns of values none of which is null."""
    natives = native_types(convert)
    form = time_form(convert)
    if form is not None:
        return partial(_times, form)
    if convert is CONVERTERS["float"]:
        return _floats
    if convert is CONVERTERS["boolean"]:
        return _booleans
    if convert in (CONVERTERS["string"], CONVERTERS["category"]):
        return partial(_texts, natives)
    return partial(_as_they_are, natives)


def _as_they_are(
    natives: frozenset[type], values: Sequence[Any], kinds: set[type]
) -> Sequence[Any] | None:
    return values if kinds <= natives else None


def _floats(values: Sequence[Any], kinds: set[type]) -> Sequence[Any] | None:
    # float() of a float is the float itself; of an int, an OverflowError past float's range;
    # of a decimal, NaN, infinity or an error where the decimal is not finite or too large.
    # The converter refuses those: so does this path, by giving up.
    if kinds <= {float}:
        return values if all(map(math.isfinite, values)) else None
    if kinds <= {float, int, Decimal}:
        floats = list(map(float, values))
        return floats if all(map(math.isfinite, floats)) else None
    return None


def _booleans(values: Sequence[Any], kinds: set[type]) -> Sequence[Any] | None:
    if kinds <= {bool}:
        return values
    if kinds <= {int} and set(values) <= {0, 1}:  # a MySQL TINYINT(1) column's 0 and 1
        return list(map(bool, values))
    return None


def _texts(
    natives: frozenset[type], values: Sequence[Any], kinds: set[type]
) -> Sequence[Any] | None:
    # str() is what the converter ends with for these, once it has refused what does not fit.
    if kinds <= natives:
        return values
    if kinds <= _TEXT_OF_STR:
        return list(map(str, values))
    if kinds <= {Decimal} and all(map(Decimal.is_finite, values)):
        return list(map(str, values))
    return None


def _times(form: TimeForm, values: Sequence[Any], kinds: set[type]) -> Sequence[Any] | None:
    # As TimeForm.text writes them; its text (stored dates, PostgreSQL's 'infinity') is left
    # to it.
    if kinds <= {dt.datetime}:
        zones = set(map(_tzinfo, values))
        if zones == {None}:
            if not form.utc:
                return _iso(values, six=form.fraction)
            # A naive timestamp of a UTC column: the same instant, aware; UTC is UTC in UTC.
            return list(map("{}+00:00".format, _iso(values, six=form.fraction)))
        if None not in zones and None not in set(map(_utcoffset, values)):
            return _iso(list(map(_to_utc, values)), six=form.fraction)
        return None
    if kinds <= {dt.date}:
        return _iso(values, six=False)
    if kinds <= {dt.time}:
        return list(map(_isoformat(six=form.fraction), values))
    return None


def _iso(values: Sequence[dt.date], *, six: bool) -> list[str]:
    """``isoformat`` of dates or of timestamps (naive, or in UTC), with six fraction digits
    where ``six``, else as ``timespec='auto'`` writes them."""
    if six and 0 in set(map(_microsecond, values)):
        return list(map(_isoformat(six=True), values))
    # orjson writes dates and timestamps as isoformat(timespec='auto') does, character for
    # character, several times faster (tests/test_columnwise.py holds it to that).
    texts: list[str] = orjson.loads(orjson.dumps(values))
    return texts


def _isoformat(*, six: bool) -> Callable[[Any], str]:
    return methodcaller("isoformat", timespec="microseconds" if six else "auto")
