"""Unit tests for ``akkiosync.convert`` and the mapper's ``on_bad_value``: pure, no database
(``tests/test_types.py`` runs the same rules on the real databases)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from akkiosync.convert import Interval, TimeForm, UnfitError, converter
from akkiosync.errors import BadValueError
from akkiosync.mapping import DatasetField, RecordMapper, Schema, SourceColumn

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


class TestBoolean:
    """Booleans are read strictly: 0/1 and the words PostgreSQL reads as booleans."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (True, True), (False, False), (1, True), (0, False),
            ("true", True), ("FALSE", False), ("t", True), ("f", False), ("Yes", True),
            (" no ", False), ("y", True), ("n", False), ("on", True), ("off", False),
            ("1", True), ("0", False),
        ],
    )  # fmt: skip
    def test_reads(self, value: Any, expected: bool) -> None:
        """Each accepted value becomes the JSON boolean it means."""
        assert converter("boolean")(value) is expected

    @pytest.mark.parametrize("value", [2, -1, 0.5, "maybe", "", "tru", b"\x01", 1.0])
    def test_anything_else_does_not_fit(self, value: Any) -> None:
        """2, -1 (a TINYINT(1) holds them), other text or types are not quietly true."""
        with pytest.raises((UnfitError, TypeError)):
            converter("boolean")(value)

    def test_a_category_field_of_a_boolean_column_is_boolean(self) -> None:
        """A boolean column pinned as ``category`` (before ``boolean`` existed) keeps sending
        true/false, now strictly; a category of other columns is text."""
        assert converter("category", boolean=True)(1) is True
        with pytest.raises(UnfitError):
            converter("category", boolean=True)(2)
        assert converter("category")(1) == "1"


class TestSets:
    """A MySQL SET (a Python set) is its members, sorted, comma-separated."""

    @pytest.mark.parametrize(
        ("value", "text"),
        [({"c", "a", "b"}, "a,b,c"), (frozenset({"x"}), "x"), (set(), "")],
        ids=["three", "one", "empty"],
    )
    def test_text(self, value: set[str], text: str) -> None:
        """The same members always give the same text."""
        assert converter("string")(value) == text
        assert converter("category")(value) == text


class TestInterval:
    """Intervals keep months apart: seconds only when they have none; ISO 8601 as text."""

    @pytest.mark.parametrize(
        ("interval", "iso"),
        [
            (Interval(0, 0, 0), "PT0S"),
            (Interval(14, 3, 14_706_700_000), "P1Y2M3DT4H5M6.7S"),
            (Interval(-14, 3, -14_706_000_000), "P-1Y-2M3DT-4H-5M-6S"),
            (Interval(0, 0, -129_600_000_000), "PT-36H"),
            (Interval(0, -1, 500_000), "P-1DT0.5S"),
            (Interval(0, 0, 1), "PT0.000001S"),
            (Interval(12, 0, 0), "P1Y"),
        ],
        ids=["zero", "mixed", "negative", "-36h", "minus-a-day-plus", "1us", "year"],
    )
    def test_iso(self, interval: Interval, iso: str) -> None:
        """PostgreSQL's own ISO 8601 form (IntervalStyle iso_8601), each part signed."""
        assert interval.iso() == iso
        assert converter("string")(interval) == iso
        assert repr(interval) == f"interval {iso}"

    def test_seconds(self) -> None:
        """Days and time make exact seconds, as a timedelta's total_seconds does."""
        value = Interval(0, 1, 7_384_500_000)
        expected = dt.timedelta(days=1, microseconds=7_384_500_000).total_seconds()
        assert converter("float")(value) == expected == 93784.5

    def test_months_have_no_seconds(self) -> None:
        """A month has no fixed length: the interval does not fit a float field."""
        with pytest.raises(UnfitError, match="months"):
            converter("float")(Interval(1, 0, 0))


class TestTimeForm:
    """One text form per column: six digits where the column holds fractions, else as the
    value has them."""

    WHOLE = dt.datetime(2024, 1, 1, 0, 0, 1)  # noqa: DTZ001 - naive on purpose

    def test_fraction_column_always_six_digits(self) -> None:
        """Whole seconds get .000000 in a column that holds fractions."""
        form = TimeForm(dt.datetime, fraction=True)
        assert form.text(self.WHOLE) == "2024-01-01T00:00:01.000000"
        assert form.text(self.WHOLE.replace(microsecond=5)) == "2024-01-01T00:00:01.000005"
        assert TimeForm(dt.time, fraction=True).text(dt.time(12, 30)) == "12:30:00.000000"

    def test_whole_seconds_column(self) -> None:
        """A column of whole seconds has none; a fraction it cannot hold is never cut."""
        form = TimeForm(dt.datetime)
        assert form.text(self.WHOLE) == "2024-01-01T00:00:01"
        assert form.text(self.WHOLE.replace(microsecond=5)) == "2024-01-01T00:00:01.000005"

    def test_utc_and_aware(self) -> None:
        """Naive UTC timestamps get +00:00; aware ones are the same instant in UTC."""
        assert TimeForm(dt.datetime, utc=True).text(self.WHOLE) == "2024-01-01T00:00:01+00:00"
        aware = dt.datetime(2024, 1, 1, 5, 30, 1, tzinfo=IST)
        assert TimeForm(dt.datetime, fraction=True).text(aware) == (
            "2024-01-01T00:00:01.000000+00:00"
        )

    @pytest.mark.parametrize(
        ("kind", "text", "expected"),
        [
            (dt.datetime, "2024-01-01 00:00:01", "2024-01-01T00:00:01"),
            (dt.datetime, "2024-01-01 00:00:01.000000", "2024-01-01T00:00:01.000000"),
            (dt.datetime, "2024-01-01 00:00:01.5", "2024-01-01T00:00:01.500000"),
            (dt.datetime, "2024-01-01T02:00:01+02:00", "2024-01-01T00:00:01+00:00"),
            (dt.datetime, "2024-01-01", "2024-01-01T00:00:00"),
            (dt.date, "2024-02-29", "2024-02-29"),
            (dt.date, "2024-02-29 10:00:00", "2024-02-29T10:00:00"),
            (dt.time, "12:30", "12:30:00"),
            (dt.time, "12:30:00.25", "12:30:00.250000"),
        ],
    )
    def test_stored_text(self, kind: type[dt.date | dt.time], text: str, expected: str) -> None:
        """Text read as stored (SQLite's) is parsed; a fraction in it means six digits."""
        assert TimeForm(kind).text(text) == expected

    @pytest.mark.parametrize(
        ("kind", "text"),
        [
            (dt.datetime, "infinity"),
            (dt.datetime, "10000-01-01 00:00:00"),
            (dt.date, "0044-03-15 BC"),
            (dt.datetime, "0000-00-00 00:00:00"),
            (dt.time, "24:00:00"),
            (dt.datetime, "2024-01-01 00:00:01.1234567"),
            (dt.datetime, "garbage"),
        ],
        ids=["infinity", "year-10000", "bc", "zero-date", "24h", "7-digits", "garbage"],
    )
    def test_text_that_is_no_date_does_not_fit_a_date_field(
        self, kind: type[dt.date | dt.time], text: str
    ) -> None:
        """Text the driver could not make a date of is a bad value in a date field, but the
        database's own text in a string field."""
        with pytest.raises(UnfitError):
            converter("date", kind)(text)
        assert converter("string", kind)(text) == text

    def test_other_values_do_not_fit(self) -> None:
        """A number in a date column (SQLite stores anything) is not a date."""
        with pytest.raises(UnfitError):
            TimeForm(dt.datetime).text(1714552200)


class TestOnBadValue:
    """``on_bad_value`` decides what a value that does not fit does: fail, or null."""

    SCHEMA = Schema(
        (
            DatasetField("id", "id", "integer"),
            DatasetField("qty", "qty", "integer"),
            DatasetField("at", "at", "date"),
        )
    )
    COLUMNS = (SourceColumn("id", int), SourceColumn("qty", int), SourceColumn("at", dt.datetime))

    def test_fail_names_the_policy(self) -> None:
        """The error names column, key, value, why, and on_bad_value: null as a way out."""
        mapper = RecordMapper(self.SCHEMA, self.COLUMNS, key=("id",))
        with pytest.raises(BadValueError) as raised:
            mapper.record((7, 1, "infinity"))
        message = str(raised.value)
        for part in ("column at", "id=7", "'infinity'", "field at (date)", "on_bad_value: null"):
            assert part in message, message
        assert mapper.nulled == {}

    def test_null_sends_null_and_counts_by_column(self) -> None:
        """Each bad value becomes null and is counted under its column; good values and
        good rows are untouched."""
        mapper = RecordMapper(self.SCHEMA, self.COLUMNS, on_bad_value="null")
        at = dt.datetime(2024, 1, 1)  # noqa: DTZ001 - naive on purpose
        records = mapper.records([(1, 7.5, "infinity"), (2, 3, at), (3, "x", at)])
        assert records == [
            {"id": 1, "qty": None, "at": None},
            {"id": 2, "qty": 3, "at": "2024-01-01T00:00:00"},
            {"id": 3, "qty": None, "at": "2024-01-01T00:00:00"},
        ]
        assert mapper.nulled == {"qty": 2, "at": 1}
