"""``akkiosync.columnwise`` against the converters it stands in for: pure, no database.

Each fast path must give exactly what ``convert``'s converter gives value by value (the same
values, of the same types), and refuse exactly what it refuses; ``RecordMapper.records`` must
give exactly what ``record`` gives row by row, errors and nulled counts included.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akkiosync.columnwise import column_converter
from akkiosync.convert import Converter, Interval, converter
from akkiosync.errors import BadValueError
from akkiosync.mapping import (
    SYNCED_AT,
    DatasetField,
    FieldType,
    OnBadValue,
    RecordMapper,
    Schema,
    SourceColumn,
)

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    # The only function-scoped fixture is conftest's autouse ``hermetic``, harmless to share.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
FIELD_TYPES: tuple[FieldType, ...] = ("integer", "float", "string", "category", "date", "boolean")


class Color(enum.IntEnum):
    """An int subclass, as an enum column's values may be."""

    RED = 1
    GREEN = 2


class Mood(enum.StrEnum):
    """A str subclass, as an ENUM column's values may be."""

    HAPPY = "happy"
    TRUE = "true"


class Name(str):
    """Another str subclass."""

    __slots__ = ()


class Floating(dt.tzinfo):
    """A time zone that knows no offset: its timestamps count as naive."""

    def utcoffset(self, when: dt.datetime | None) -> None:
        """No offset."""

    def dst(self, when: dt.datetime | None) -> None:
        """No DST."""

    def tzname(self, when: dt.datetime | None) -> None:
        """No name."""


ZONES = st.sampled_from([dt.UTC, IST, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")])
WHOLE = st.booleans()  # whether a timestamp or time is made a whole second


def _whole(value: Any, whole: bool) -> Any:
    return value.replace(microsecond=0) if whole else value


# Text a typeless column (SQLite's) may hold: numbers, booleans, dates, or not.
WORDS = [
    "true", "F", " yes ", "0", "1", "2", " 42 ", "7.5", "infinity", "NaN", "2024-02-29",
    "2024-01-01 10:00:00.5", "12:30", "0000-00-00 00:00:00", "x",
]  # fmt: skip
naive_datetimes = st.builds(_whole, st.datetimes(), WHOLE)
aware_datetimes = st.builds(_whole, st.datetimes(timezones=ZONES), WHOLE)
floating_datetimes = st.datetimes(timezones=st.just(Floating()))
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers() | st.integers(-(2**80), 2**80) | st.sampled_from([0, 1, 2, -1]),
    "huge int": st.sampled_from([2**63, -(2**64) - 1, 10**400, 10**5000]),
    "bool": st.booleans(),
    "int enum": st.sampled_from(Color),
    "float": st.floats(),
    "decimal": st.decimals() | st.decimals(places=2, min_value=-(10**8), max_value=10**8),
    "odd decimal": st.sampled_from(
        [Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), Decimal("1E+400"), Decimal(7)]
    ),
    "str": st.text(max_size=12),
    "word": st.sampled_from(WORDS),
    "str subclass": st.sampled_from(Mood) | st.builds(Name, st.text(max_size=5)),
    "naive datetime": naive_datetimes,
    "aware datetime": aware_datetimes,
    "floating datetime": floating_datetimes,
    "date": st.dates(),
    "time": st.builds(_whole, st.times(), WHOLE) | st.times(timezones=ZONES),
    "timedelta": st.timedeltas(),
    "interval": st.builds(Interval, st.integers(-3, 3), st.integers(-40, 40), st.integers()),
    "uuid": st.uuids(),
    "bytes": st.binary(max_size=6),
    "json": st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.none()),
    "set": st.frozensets(st.text(max_size=3), max_size=3),
}
PYTHON_TYPES: list[type | None] = [
    None, int, bool, float, Decimal, str, dt.datetime, dt.date, dt.time, dt.timedelta,
    Interval, uuid.UUID, bytes, dict,
]  # fmt: skip


@st.composite
def columns(draw: st.DrawFn) -> list[Any]:
    """A column of one or two kinds of values, nulls among them or not: mostly one kind, as a
    typed column's, so that the fast paths are taken as often as they are refused."""
    kinds = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=2, unique=True))
    if draw(st.integers(0, 3)) > 0:
        kinds = kinds[:1]
    element = st.one_of(*(VALUES[k] for k in kinds))
    if draw(st.booleans()):
        element = element | st.none()
    return draw(st.lists(element, max_size=8))


@st.composite
def converters(draw: st.DrawFn) -> tuple[Converter, str]:
    """Any converter ``converter`` makes, and how it was asked for."""
    field_type = draw(st.sampled_from(FIELD_TYPES))
    python_type = draw(st.sampled_from(PYTHON_TYPES))
    fraction, utc, boolean = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    asked = f"{field_type} {python_type} fraction={fraction} utc={utc} boolean={boolean}"
    return converter(field_type, python_type, fraction=fraction, utc=utc, boolean=boolean), asked


Outcome = tuple[str, Any]


def outcome(make: Callable[[], Sequence[Any]]) -> Outcome:
    """What ``make`` gives: its values, each with its exact type, or that it raised."""
    try:
        values = make()
    except (ValueError, TypeError, ArithmeticError):
        return ("raised", None)
    return ("gave", [(type(v), v) for v in values])


def value_by_value(convert: Converter, values: Sequence[Any]) -> Outcome:
    """What the mapper did before ``columnwise``: the converter, value by value."""
    return outcome(lambda: [None if v is None else convert(v) for v in values])


class TestColumnsAgainstTheConverters:
    """A whole column converted at once is, value for value and type for type, the converter's
    work; where the converter refuses a value, the column is refused too."""

    @PROPERTY
    @given(converters(), columns())
    def test_any_converter_any_column(self, made: tuple[Converter, str], values: list[Any]) -> None:
        """Whatever the converter and the values (subclasses, huge ints, NaN, mixed types)."""
        convert, _ = made
        assert outcome(lambda: column_converter(convert)(values)) == value_by_value(convert, values)

    @pytest.mark.parametrize(
        ("field_type", "python_type", "values"),
        [
            ("integer", int, [1, None, 2**70, -(10**400)]),
            ("integer", int, [1, True, 0]),
            ("integer", int, [Color.RED, 3]),
            ("integer", Decimal, [Decimal(5), Decimal("5.00"), None]),
            ("float", float, [0.5, -0.0, 1e308, None]),
            ("float", Decimal, [Decimal("12.34"), Decimal("-0.00"), None]),
            ("float", int, [1, 2**60, True]),
            ("string", str, ["a", None, ""]),
            ("string", str, [Mood.HAPPY, "b"]),
            ("string", int, [7, -(2**70)]),
            ("string", uuid.UUID, [uuid.UUID(int=1), None]),
            ("string", Decimal, [Decimal("1.50"), Decimal("-0")]),
            ("category", str, ["x", True]),
            ("category", int, [1, 2]),
            ("boolean", bool, [True, None, False]),
            ("boolean", int, [0, 1, None]),
            ("date", dt.date, [dt.date(1, 1, 1), dt.date(9999, 12, 31), None]),
        ],
    )
    def test_values_that_fit(
        self, field_type: FieldType, python_type: type, values: list[Any]
    ) -> None:
        """The same values and types as the converter's, whichever way a column is done."""
        convert = converter(field_type, python_type)
        expected = value_by_value(convert, values)
        assert expected[0] == "gave"
        assert outcome(lambda: column_converter(convert)(values)) == expected

    @pytest.mark.parametrize(
        ("field_type", "python_type", "values"),
        [
            ("integer", int, [1, 2.5]),
            ("float", float, [1.0, float("nan")]),
            ("float", float, [float("-inf"), None]),
            ("float", Decimal, [Decimal(1), Decimal("NaN")]),
            ("float", Decimal, [Decimal("sNaN")]),
            ("float", Decimal, [Decimal("1E+400")]),
            ("float", int, [10**400]),
            ("string", float, [float("inf")]),
            ("string", Decimal, [Decimal("Infinity"), Decimal(1)]),
            ("string", int, [10**5000]),
            ("boolean", int, [0, 1, 2]),
            ("date", dt.datetime, [dt.datetime(2024, 1, 1), "infinity"]),  # noqa: DTZ001
        ],
    )
    def test_values_that_do_not_fit(
        self, field_type: FieldType, python_type: type, values: list[Any]
    ) -> None:
        """A value the converter refuses makes the column raise: no fast path lets it by."""
        convert = converter(field_type, python_type)
        assert value_by_value(convert, values) == ("raised", None)
        assert outcome(lambda: column_converter(convert)(values)) == ("raised", None)


class TestTimes:
    """Timestamps, dates and times are the text ``TimeForm`` gives each of them."""

    @PROPERTY
    @given(
        st.lists(naive_datetimes | aware_datetimes | floating_datetimes | st.none(), max_size=8),
        st.booleans(),
        st.booleans(),
        st.sampled_from(["date", "string"]),
    )
    def test_timestamps(
        self, values: list[Any], fraction: bool, utc: bool, field_type: FieldType
    ) -> None:
        """Naive, aware, in a zone without offsets, whole seconds or not, in a UTC column or
        not, date or string field."""
        convert = converter(field_type, dt.datetime, fraction=fraction, utc=utc)
        expected = value_by_value(convert, values)
        assert outcome(lambda: column_converter(convert)(values)) == expected

    @PROPERTY
    @given(st.lists(naive_datetimes, min_size=1, max_size=8), st.booleans())
    def test_one_kind_of_timestamp(self, values: list[dt.datetime], fraction: bool) -> None:
        """A column of naive timestamps only: the path that skips the converter entirely."""
        convert = converter("date", dt.datetime, fraction=fraction)
        assert column_converter(convert)(values) == [convert(v) for v in values]

    @PROPERTY
    @given(st.lists(st.datetimes() | st.dates(), min_size=1, max_size=8))
    def test_orjson_writes_what_isoformat_writes(self, values: list[dt.date]) -> None:
        """orjson's text of naive timestamps and dates is isoformat's, character for
        character, from year 1 to 9999 (if an orjson release changed that, this fails)."""
        assert orjson.loads(orjson.dumps(values)) == [v.isoformat() for v in values]
        in_utc = [v.replace(tzinfo=dt.UTC) for v in values if isinstance(v, dt.datetime)]
        assert orjson.loads(orjson.dumps(in_utc)) == [v.isoformat() for v in in_utc]


@st.composite
def batches(draw: st.DrawFn) -> tuple[RecordMapper, RecordMapper, list[tuple[Any, ...]]]:
    """Two like mappers (one for ``records``, one for ``record`` row by row) of one to four
    fields, some withheld, ``synced_at`` or not, and rows of random columns for them."""
    width = draw(st.integers(1, 4))
    described = [
        SourceColumn(
            f"c{i}",
            draw(st.sampled_from(PYTHON_TYPES)),
            fraction=draw(st.booleans()),
            utc=draw(st.booleans()),
        )
        for i in range(width)
    ]
    fields = [DatasetField(f"f{i}", c.name, draw(st.sampled_from(FIELD_TYPES))) for i, c in
              enumerate(described)]  # fmt: skip
    withheld = {f.name for f in fields if draw(st.integers(0, 5)) == 0}
    synced_at = draw(st.none() | st.just(dt.datetime(2026, 5, 1, 12, tzinfo=IST)))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), DatasetField("seen", SYNCED_AT, "date"))
    on_bad_value: OnBadValue = draw(st.sampled_from(["fail", "null"]))
    made = [
        RecordMapper(
            Schema(tuple(fields)),
            described,
            key=("c0",),
            withheld=withheld,
            synced_at=synced_at,
            on_bad_value=on_bad_value,
        )
        for _ in range(2)
    ]
    values = [draw(columns()) for _ in described]
    height = min(map(len, values))
    rows = [(*(column[r] for column in values), "cursor") for r in range(height)]
    return made[0], made[1], rows


def mapped(make: Callable[[], list[dict[str, Any]]]) -> tuple[Any, ...]:
    """What ``make`` gives: records with their keys in order and each value's exact type, or
    the error it raised (any: a key of over 4,300 digits cannot be shown, say)."""
    try:
        records = make()
    except Exception as exc:  # noqa: BLE001 - whatever it is, both ways must raise the same
        return ("raised", type(exc), str(exc))
    return ("gave", [[(k, type(v), v) for k, v in r.items()] for r in records])


class TestRecordsAgainstRecord:
    """``records`` is ``record`` of each row, in order: the same records, the same first bad
    value named, the same nulled counts."""

    @PROPERTY
    @given(batches())
    def test_any_batch(
        self, batch: tuple[RecordMapper, RecordMapper, list[tuple[Any, ...]]]
    ) -> None:
        """Whatever the fields, their types, the values and on_bad_value."""
        at_once, row_by_row, rows = batch
        assert mapped(lambda: at_once.records(rows)) == mapped(
            lambda: [row_by_row.record(row) for row in rows]
        )
        assert at_once.nulled == row_by_row.nulled

    def test_first_bad_row_is_named_whatever_its_column(self) -> None:
        """A bad value in a later column of an earlier row is the one named, not the first
        bad column's."""
        schema = Schema((DatasetField("id", "id", "integer"), DatasetField("a", "a", "float"),
                         DatasetField("b", "b", "float")))  # fmt: skip
        mapper = RecordMapper(schema, [SourceColumn("id", int), SourceColumn("a", float),
                                       SourceColumn("b", float)], key=("id",))  # fmt: skip
        rows = [(1, 1.0, 2.0), (2, 1.0, float("nan")), (3, float("inf"), 2.0)]
        with pytest.raises(BadValueError, match=r"column b holds nan in the row id=2"):
            mapper.records(rows)

    def test_rows_of_any_iterable(self) -> None:
        """A generator of rows, or none at all, is mapped as a list of them is."""
        mapper = RecordMapper(Schema((DatasetField("id", "id", "integer"),)), ["id"])
        assert mapper.records(r for r in [(1,), (2,)]) == [{"id": 1}, {"id": 2}]
        assert mapper.records([]) == []

    def test_short_row_raises_as_before(self) -> None:
        """A row without the column a field reads raises IndexError, as ``record`` does."""
        schema = Schema((DatasetField("a", "a", "integer"), DatasetField("b", "b", "integer")))
        mapper = RecordMapper(schema, ["a", "b"])
        with pytest.raises(IndexError):
            mapper.records([(1, 2), (3,)])
