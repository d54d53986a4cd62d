"""Unit tests for ``akkiosync.cursor``: the checkpoint's typed, lossless text form."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest

from akkiosync.cursor import Cursor, decode_cursor, encode_cursor

UTC = dt.UTC
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
PST = dt.timezone(dt.timedelta(hours=-8))

# Every value a watermark or key column may hold, with an id for the test report.
VALUES: list[tuple[str, Any]] = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("int-0", 0),
    ("int-negative", -42),
    ("int64-max", 2**63 - 1),
    ("int64-min", -(2**63)),
    ("int-2^100", 2**100),
    ("float-0.1", 0.1),
    ("float-minus-zero", -0.0),
    ("float-1e308", 1e308),
    ("float-tiny", 5e-324),
    ("float-inf", math.inf),
    ("decimal-1.10", Decimal("1.10")),
    ("decimal-neg-micro", Decimal("-0.000001")),
    ("decimal-30-digits", Decimal("123456789012345.678901234567890")),
    ("decimal-exponent", Decimal("1E+5")),
    ("decimal-minus-zero", Decimal("-0")),
    ("str-unicode", "é日本😀\x00\"\\'"),
    ("str-empty", ""),
    ("date", dt.date(2024, 2, 29)),
    ("date-min", dt.date(1, 1, 1)),
    ("datetime-naive-micro", dt.datetime(2024, 5, 6, 7, 8, 9, 123456)),  # noqa: DTZ001
    ("datetime-naive-no-micro", dt.datetime(2024, 5, 6, 7, 8, 9)),  # noqa: DTZ001
    ("datetime-utc-micro", dt.datetime(2024, 5, 6, 7, 8, 9, 1, tzinfo=UTC)),
    ("datetime-ist-micro", dt.datetime(2024, 5, 6, 7, 8, 9, 999999, tzinfo=IST)),
    ("datetime-pst-micro", dt.datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=PST)),
    ("time-micro", dt.time(7, 8, 9, 123456)),
    ("time-aware", dt.time(7, 8, 9, 10, tzinfo=IST)),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-56781234abcd")),
    ("bytes", b"\x00\xff\x10binary"),
    ("bytes-empty", b""),
]
VALUE_IDS = [name for name, _ in VALUES]
JUST_VALUES = [value for _, value in VALUES]


def assert_identical(got: Any, want: Any) -> None:
    """Equal in value, in exact type, and for temporal values in wall time and offset."""
    assert type(got) is type(want)
    if isinstance(want, float):
        # repr tells -0.0 from 0.0 and would show any lost digit.
        assert repr(got) == repr(want)
    elif isinstance(want, Decimal):
        # Decimal("1.10") == Decimal("1.1"); the tuple keeps the exponent and sign.
        assert got.as_tuple() == want.as_tuple()
    elif isinstance(want, dt.datetime | dt.time):
        # Aware values at one instant compare equal across offsets: compare the parts too.
        assert got == want
        assert (got.tzinfo is None) == (want.tzinfo is None)
        assert got.utcoffset() == want.utcoffset()
        assert got.isoformat() == want.isoformat()
    else:
        assert got == want


def round_trip(cursor: Cursor) -> Cursor:
    """Encode and decode a cursor."""
    return decode_cursor(encode_cursor(cursor))


class TestRoundTrip:
    """encode_cursor then decode_cursor gives back the very same values."""

    @pytest.mark.parametrize("value", JUST_VALUES, ids=VALUE_IDS)
    def test_watermark(self, value: Any) -> None:
        """A watermark comes back with its value, type and offset (or naivety)."""
        back = round_trip(Cursor(value))
        assert_identical(back.watermark, value)
        assert back.key == ()

    @pytest.mark.parametrize("value", JUST_VALUES, ids=VALUE_IDS)
    def test_key_column(self, value: Any) -> None:
        """A key column comes back exactly too."""
        back = round_trip(Cursor(1, (value,)))
        assert len(back.key) == 1
        assert_identical(back.key[0], value)

    def test_float_nan(self) -> None:
        """A NaN watermark comes back as a float NaN."""
        back = round_trip(Cursor(math.nan))
        assert isinstance(back.watermark, float)
        assert math.isnan(back.watermark)

    def test_composite_key(self) -> None:
        """A composite key keeps every part, its order and each part's type."""
        key = (7, "b", uuid.UUID(int=3), Decimal("1.10"), None, b"\x01")
        cursor = Cursor(dt.datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=PST), key)
        back = round_trip(cursor)
        assert len(back.key) == len(key)
        assert_identical(back.watermark, cursor.watermark)
        for got, want in zip(back.key, key, strict=True):
            assert_identical(got, want)

    def test_empty_key(self) -> None:
        """A cursor without a key comes back with an empty tuple, not None or a list."""
        back = round_trip(Cursor(5))
        assert back.key == ()
        assert isinstance(back.key, tuple)
        assert back == Cursor(5)

    def test_whole_cursor_equal(self) -> None:
        """The decoded cursor equals the original dataclass."""
        cursor = Cursor(Decimal("10.50"), (2**100, "x"))
        assert round_trip(cursor) == cursor

    @pytest.mark.parametrize(
        "value", [bytearray(b"ab\x00"), memoryview(b"ab\x00")], ids=["bytearray", "memoryview"]
    )
    def test_binary_buffers_come_back_as_bytes(self, value: Any) -> None:
        """bytearray and memoryview are stored as bytes and come back as bytes."""
        back = round_trip(Cursor(value))
        assert back.watermark == b"ab\x00"
        assert type(back.watermark) is bytes

    def test_bool_is_not_confused_with_int(self) -> None:
        """True and 1 encode differently and come back as their own types."""
        assert encode_cursor(Cursor(True)) != encode_cursor(Cursor(1))
        assert round_trip(Cursor(True)).watermark is True
        assert type(round_trip(Cursor(1)).watermark) is int

    def test_datetime_is_not_confused_with_date(self) -> None:
        """A midnight datetime stays a datetime; a date stays a date."""
        midnight = dt.datetime(2024, 1, 1)  # noqa: DTZ001 - naive on purpose
        assert type(round_trip(Cursor(midnight)).watermark) is dt.datetime
        assert type(round_trip(Cursor(midnight.date())).watermark) is dt.date

    def test_same_instant_different_offsets_stay_distinct(self) -> None:
        """Two aware datetimes at one instant but different offsets encode differently."""
        in_utc = dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
        in_ist = in_utc.astimezone(IST)
        assert in_utc == in_ist
        assert encode_cursor(Cursor(in_utc)) != encode_cursor(Cursor(in_ist))
        assert round_trip(Cursor(in_ist)).watermark.utcoffset() == dt.timedelta(hours=5, minutes=30)

    def test_int_enum_is_stored_as_its_number(self) -> None:
        """An int subclass whose str() is not its digits is stored as the plain int."""

        class Level(int, enum.Enum):
            HIGH = 3

        back = round_trip(Cursor(Level.HIGH))
        assert back.watermark == 3
        assert type(back.watermark) is int

    def test_float_subclass_with_odd_repr_is_stored_as_float(self) -> None:
        """A float subclass with its own repr (like numpy's float64) is stored as the float."""

        class Wrapped(float):
            def __repr__(self) -> str:
                return f"Wrapped({float(self)!r})"

        back = round_trip(Cursor(Wrapped(0.1)))
        assert back.watermark == 0.1
        assert type(back.watermark) is float


class TestUnsupported:
    """A value the cursor cannot store losslessly is refused with TypeError."""

    @pytest.mark.parametrize(
        "value",
        [object(), [1, 2], {"a": 1}, dt.timedelta(seconds=1), complex(1, 2), {1}],
        ids=["object", "list", "dict", "timedelta", "complex", "set"],
    )
    def test_watermark(self, value: Any) -> None:
        """An unsupported watermark type raises TypeError naming the type."""
        with pytest.raises(TypeError, match=type(value).__name__):
            encode_cursor(Cursor(value))

    def test_key_column(self) -> None:
        """An unsupported type in the key raises TypeError too."""
        with pytest.raises(TypeError, match="timedelta"):
            encode_cursor(Cursor(1, ("ok", dt.timedelta(days=1))))


class TestEncodedText:
    """The stored text is stable, plain JSON, and free of Python reprs."""

    @pytest.mark.parametrize("value", JUST_VALUES, ids=VALUE_IDS)
    def test_stable(self, value: Any) -> None:
        """The same cursor always encodes to the same text, also after a round trip."""
        text = encode_cursor(Cursor(value, (value,)))
        assert encode_cursor(Cursor(value, (value,))) == text
        assert encode_cursor(decode_cursor(text)) == text

    def test_equal_cursors_built_separately_encode_alike(self) -> None:
        """Two independently built equal cursors give identical text."""

        def build() -> Cursor:
            when = dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=IST)
            return Cursor(when, (Decimal("1.10"), uuid.UUID(int=9), "k"))

        assert encode_cursor(build()) == encode_cursor(build())

    @pytest.mark.parametrize("value", JUST_VALUES, ids=VALUE_IDS)
    def test_no_python_reprs(self, value: Any) -> None:
        """The text holds no Python constructor or bytes-literal syntax."""
        text = encode_cursor(Cursor(value, (value,)))
        for python_syntax in (
            "Decimal(",
            "datetime.",
            "timezone(",
            "tzinfo",
            "UUID(",
            "b'",
            'b\\"',
            "None",
            "True",
            "False",
        ):
            assert python_syntax not in text

    @pytest.mark.parametrize("value", JUST_VALUES, ids=VALUE_IDS)
    def test_is_json_of_typed_strings(self, value: Any) -> None:
        """The text is JSON; every non-null value is a one-entry {type: string} object."""
        data = json.loads(encode_cursor(Cursor(value, (value, value))))
        assert set(data) == {"watermark", "key"}
        for tagged in (data["watermark"], *data["key"]):
            if value is None:
                assert tagged is None
            else:
                assert isinstance(tagged, dict)
                assert len(tagged) == 1
                assert all(isinstance(text, str) for text in tagged.values())

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, "null"),
            (True, '{"bool":"true"}'),
            (2**100, '{"int":"1267650600228229401496703205376"}'),
            (-0.0, '{"float":"-0.0"}'),
            (Decimal("1.10"), '{"decimal":"1.10"}'),
            (dt.date(2024, 2, 29), '{"date":"2024-02-29"}'),
            (
                dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=IST),
                '{"datetime":"2024-05-06T07:08:09.000000+05:30"}',
            ),
            (dt.datetime(2024, 5, 6, 7, 8, 9), '{"datetime":"2024-05-06T07:08:09.000000"}'),  # noqa: DTZ001
            (dt.time(7, 8, 9), '{"time":"07:08:09.000000"}'),
            (uuid.UUID(int=1), '{"uuid":"00000000-0000-0000-0000-000000000001"}'),
            (b"\x00\xff", '{"bytes":"AP8="}'),
        ],
        ids=[
            "none",
            "bool",
            "int",
            "float",
            "decimal",
            "date",
            "aware",
            "naive",
            "time",
            "uuid",
            "bytes",
        ],
    )
    def test_exact_text(self, value: Any, expected: str) -> None:
        """Each type has one fixed, readable encoding (the store's format)."""
        assert encode_cursor(Cursor(value)) == f'{{"watermark":{expected},"key":[]}}'


class TestDescribe:
    """describe() is a short human-readable form for logs and status."""

    @pytest.mark.parametrize(
        ("cursor", "expected"),
        [
            (Cursor(42), "42"),
            (Cursor("abc"), "abc"),
            (Cursor(Decimal("1.10")), "1.10"),
            (Cursor(dt.date(2024, 2, 29)), "2024-02-29"),
            (
                Cursor(dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=IST)),
                "2024-05-06T07:08:09.123456+05:30",
            ),
            (Cursor(dt.datetime(2024, 5, 6, 7, 8, 9)), "2024-05-06T07:08:09"),  # noqa: DTZ001
            (Cursor(dt.time(7, 8, 9)), "07:08:09"),
            (Cursor(dt.date(2024, 1, 2), (7,)), "(2024-01-02, 7)"),
            (
                Cursor(dt.datetime(2024, 1, 2, tzinfo=UTC), (7, "x", uuid.UUID(int=1))),
                "(2024-01-02T00:00:00+00:00, 7, x, 00000000-0000-0000-0000-000000000001)",
            ),
        ],
        ids=[
            "int",
            "str",
            "decimal",
            "date",
            "aware",
            "naive",
            "time",
            "with-key",
            "composite-key",
        ],
    )
    def test_describe(self, cursor: Cursor, expected: str) -> None:
        """A lone watermark prints bare; with a key, all parts print in parentheses."""
        assert cursor.describe() == expected
