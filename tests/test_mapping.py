"""Unit tests for ``akkiosync.mapping`` and ``akkiosync.convert``: pure, no database."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from akkiosync.convert import Interval
from akkiosync.errors import AkkioSyncError, BadValueError, ConfigError, SchemaError
from akkiosync.mapping import (
    FIELD_TYPES,
    DatasetField,
    FieldType,
    RecordMapper,
    Schema,
    SourceColumn,
    akkio_type,
    field_type_for,
    new_columns,
    plan_schema,
)

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
PST = dt.timezone(dt.timedelta(hours=-8))
MapOne = Callable[[Any, FieldType], Any]


@pytest.fixture
def map_one() -> MapOne:
    """Map a single value through a one-field schema of the given type."""

    def convert(value: Any, field_type: FieldType) -> Any:
        schema = Schema((DatasetField("v", "v", field_type),))
        return RecordMapper(schema, ["v"]).record((value,))["v"]

    return convert


@pytest.fixture
def map_or_null() -> MapOne:
    """Map a single value as ``map_one`` does, under ``on_bad_value: null``."""

    def convert(value: Any, field_type: FieldType) -> Any:
        schema = Schema((DatasetField("v", "v", field_type),))
        return RecordMapper(schema, ["v"], on_bad_value="null").record((value,))["v"]

    return convert


@pytest.fixture
def columns() -> list[SourceColumn]:
    """A typical source table's columns."""
    return [
        SourceColumn("id", int, "BIGINT"),
        SourceColumn("amount", Decimal, "NUMERIC(12,2)"),
        SourceColumn("paid", bool, "BOOLEAN"),
        SourceColumn("updated_at", dt.datetime, "TIMESTAMP"),
        SourceColumn("note", str, "TEXT"),
        SourceColumn("blob", None, "BLOB"),
    ]


@pytest.fixture
def far_local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is far from UTC, so any hidden local conversion shows."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def json_type(value: Any) -> str:
    """The JSON type ``value`` is written as (after a real round trip through json)."""
    return type(json.loads(json.dumps(value, allow_nan=False))).__name__


class TestFieldTypeFor:
    """Each Python column type becomes one Akkio field type."""

    @pytest.mark.parametrize(
        ("python_type", "expected"),
        [
            (bool, "boolean"),
            (int, "integer"),
            (float, "float"),
            (Decimal, "float"),
            (dt.timedelta, "float"),
            (Interval, "float"),
            (dt.date, "date"),
            (dt.datetime, "date"),
            (dt.time, "string"),
            (str, "string"),
            (bytes, "string"),
            (uuid.UUID, "string"),
            (dict, "string"),
            (list, "string"),
            (None, "string"),
        ],
        ids=lambda v: getattr(v, "__name__", str(v)),
    )
    def test_type(self, python_type: type | None, expected: str) -> None:
        """The documented mapping from Python type to field type."""
        assert field_type_for(python_type) == expected

    def test_bool_is_not_integer(self) -> None:
        """bool is checked before int, although it is an int subclass."""
        assert field_type_for(bool) == "boolean"

    def test_subclasses_follow_their_base(self) -> None:
        """A subclass of a known type maps like its base."""

        class Money(Decimal):
            pass

        class Name(str):
            pass

        assert field_type_for(Money) == "float"
        assert field_type_for(Name) == "string"

    def test_every_result_is_a_known_field_type(self) -> None:
        """Whatever the type, the result is one of FIELD_TYPES."""
        for python_type in (bool, int, float, Decimal, dt.date, str, object, None):
            assert field_type_for(python_type) in FIELD_TYPES


class TestPlanSchema:
    """The dataset's fields come from the columns plus include/exclude/rename/types."""

    def test_defaults_take_every_column_in_order(self, columns: list[SourceColumn]) -> None:
        """Without overrides every column is sent, in source order, under its own name."""
        schema = plan_schema(columns)
        assert [(f.name, f.source, f.type) for f in schema.fields] == [
            ("id", "id", "integer"),
            ("amount", "amount", "float"),
            ("paid", "paid", "boolean"),
            ("updated_at", "updated_at", "date"),
            ("note", "note", "string"),
            ("blob", "blob", "string"),
        ]

    def test_include_keeps_only_those_in_source_order(self, columns: list[SourceColumn]) -> None:
        """include picks columns; the order stays the source's."""
        schema = plan_schema(columns, include=["note", "id"])
        assert [f.name for f in schema.fields] == ["id", "note"]

    def test_exclude_drops_columns(self, columns: list[SourceColumn]) -> None:
        """exclude removes the named columns and keeps the rest."""
        schema = plan_schema(columns, exclude=["blob", "paid"])
        assert [f.name for f in schema.fields] == ["id", "amount", "updated_at", "note"]

    def test_include_and_exclude_combine(self, columns: list[SourceColumn]) -> None:
        """A column both included and excluded is not sent."""
        schema = plan_schema(columns, include=["id", "note"], exclude=["note"])
        assert [f.name for f in schema.fields] == ["id"]

    def test_rename_changes_name_not_source(self, columns: list[SourceColumn]) -> None:
        """A renamed field keeps pointing at its source column."""
        schema = plan_schema(columns, rename={"updated_at": "Updated At"})
        field = schema.fields[3]
        assert (field.name, field.source, field.type) == ("Updated At", "updated_at", "date")

    def test_rename_can_swap_names(self, columns: list[SourceColumn]) -> None:
        """Two columns may trade names: only the final names must be unique."""
        schema = plan_schema(columns, rename={"id": "note", "note": "id"})
        assert [(f.name, f.source) for f in schema.fields if f.source in ("id", "note")] == [
            ("note", "id"),
            ("id", "note"),
        ]

    def test_types_override_the_inferred_type(self, columns: list[SourceColumn]) -> None:
        """types sets a field's type regardless of the column's Python type."""
        schema = plan_schema(columns, types={"amount": "string", "id": "category"})
        by_source = {f.source: f.type for f in schema.fields}
        assert by_source["amount"] == "string"
        assert by_source["id"] == "category"
        assert by_source["note"] == "string"

    def test_the_sql_types_field_type_wins_over_the_python_type(self) -> None:
        """A column's own field type (a TINYINT(1) is a boolean) is planned, and a types
        override still wins over it."""
        columns = [
            SourceColumn("flag", int, "TINYINT(1)", field_type="boolean"),
            SourceColumn("mood", str, "ENUM", field_type="category"),
        ]
        assert [f.type for f in plan_schema(columns).fields] == ["boolean", "category"]
        overridden = plan_schema(columns, types={"flag": "integer"})
        assert [f.type for f in overridden.fields] == ["integer", "category"]

    @pytest.mark.parametrize("field_type", FIELD_TYPES)
    def test_akkio_type(self, field_type: FieldType) -> None:
        """Akkio has no boolean type: a boolean field is a category there; the rest are
        Akkio's own type names."""
        expected = "category" if field_type == "boolean" else field_type
        assert akkio_type(field_type) == expected

    @pytest.mark.parametrize(
        ("overrides", "option"),
        [
            ({"include": ["id", "nope"]}, "columns.include"),
            ({"exclude": ["nope"]}, "columns.exclude"),
            ({"rename": {"nope": "x"}}, "columns.rename"),
            ({"types": {"nope": "string"}}, "columns.types"),
        ],
        ids=["include", "exclude", "rename", "types"],
    )
    def test_unknown_column_names_option_and_column(
        self, columns: list[SourceColumn], overrides: dict[str, Any], option: str
    ) -> None:
        """A column that does not exist is a ConfigError naming the option and the column."""
        with pytest.raises(ConfigError) as raised:
            plan_schema(columns, **overrides)
        message = str(raised.value)
        assert option in message
        assert "nope" in message
        assert raised.value.exit_code == 2

    def test_unknown_columns_are_all_named(self, columns: list[SourceColumn]) -> None:
        """Every unknown column appears in the message, not just the first."""
        with pytest.raises(ConfigError, match=r"columns\.exclude.*ghost, phantom"):
            plan_schema(columns, exclude=["ghost", "id", "phantom"])

    @pytest.mark.parametrize(
        "overrides",
        [
            {"include": []},
            {"exclude": ["id", "amount", "paid", "updated_at", "note", "blob"]},
            {"include": ["id"], "exclude": ["id"]},
        ],
        ids=["empty-include", "exclude-all", "include-then-exclude"],
    )
    def test_nothing_left_is_an_error(
        self, columns: list[SourceColumn], overrides: dict[str, Any]
    ) -> None:
        """A plan that keeps no column is a ConfigError."""
        with pytest.raises(ConfigError, match="no column left"):
            plan_schema(columns, **overrides)

    def test_no_columns_at_all_is_an_error(self) -> None:
        """A source with no columns leaves nothing to send."""
        with pytest.raises(ConfigError, match="no column left"):
            plan_schema([])

    def test_two_columns_renamed_onto_one_name(self, columns: list[SourceColumn]) -> None:
        """Renaming two columns to one name is a ConfigError naming that name."""
        with pytest.raises(ConfigError, match=r"columns\.rename.*\bsame\b"):
            plan_schema(columns, rename={"id": "same", "note": "same"})

    def test_rename_onto_an_existing_column(self, columns: list[SourceColumn]) -> None:
        """Renaming a column onto another sent column's name is a ConfigError."""
        with pytest.raises(ConfigError, match=r"columns\.rename.*\bnote\b"):
            plan_schema(columns, rename={"id": "note"})

    def test_rename_onto_an_excluded_name_is_fine(self, columns: list[SourceColumn]) -> None:
        """A name freed by exclude may be reused by a rename."""
        schema = plan_schema(columns, exclude=["note"], rename={"blob": "note"})
        assert [(f.name, f.source) for f in schema.fields][-1] == ("note", "blob")


class TestSchemaJson:
    """The schema's text form for the store round-trips exactly."""

    def test_round_trip(self, columns: list[SourceColumn]) -> None:
        """from_json(to_json(s)) == s, fields and order included."""
        schema = plan_schema(columns, rename={"id": "ID"}, types={"amount": "string"})
        assert Schema.from_json(schema.to_json()) == schema

    def test_round_trip_unicode_names(self) -> None:
        """Non-ASCII and punctuation in names survive the round trip."""
        schema = Schema(
            (
                DatasetField("Prix €", "prix", "float"),
                DatasetField('a "quoted", name', "q", "string"),
            )
        )
        assert Schema.from_json(schema.to_json()) == schema

    def test_text_is_stable(self, columns: list[SourceColumn]) -> None:
        """The same schema always gives the same text."""
        assert plan_schema(columns).to_json() == plan_schema(columns).to_json()
        text = plan_schema(columns).to_json()
        assert Schema.from_json(text).to_json() == text

    def test_text_is_plain_json(self) -> None:
        """The text is a JSON list of [name, source, type] triples."""
        schema = Schema((DatasetField("n", "s", "date"),))
        assert json.loads(schema.to_json()) == [["n", "s", "date"]]


class TestNewColumns:
    """Source columns the pinned schema does not send are reported, in source order."""

    def test_none_new(self, columns: list[SourceColumn]) -> None:
        """A schema planned from the same columns has nothing new."""
        assert new_columns(plan_schema(columns), columns) == []

    def test_added_columns(self, columns: list[SourceColumn]) -> None:
        """Columns added to the source after planning are listed in source order."""
        schema = plan_schema(columns)
        grown = [SourceColumn("extra", str), *columns, SourceColumn("more", int)]
        assert new_columns(schema, grown) == ["extra", "more"]

    def test_matches_by_source_not_by_field_name(self, columns: list[SourceColumn]) -> None:
        """A renamed column is still known by its source name."""
        schema = plan_schema(columns, rename={"id": "ID"})
        assert new_columns(schema, columns) == []

    def test_dropped_columns_are_not_new(self, columns: list[SourceColumn]) -> None:
        """Columns that disappeared are not reported as new."""
        schema = plan_schema(columns)
        assert new_columns(schema, columns[:2]) == []

    def test_excluded_columns_are_not_reported(self, columns: list[SourceColumn]) -> None:
        """Columns the job leaves out on purpose (exclude, or not in include) are not "new"."""
        schema = plan_schema(columns, exclude=["blob"])
        assert new_columns(schema, columns) == ["blob"]
        assert new_columns(schema, columns, exclude=["blob"]) == []
        narrow = plan_schema(columns, include=["id"])
        assert new_columns(narrow, columns, include=["id"]) == []


class TestRecordShape:
    """Records carry exactly the schema's keys, in the schema's order."""

    def test_keys_are_the_schema_names_in_order(self, columns: list[SourceColumn]) -> None:
        """Renamed, reordered source positions and extra columns do not change the keys."""
        schema = plan_schema(columns, exclude=["blob"], rename={"updated_at": "Updated"})
        # The mapper receives rows in a different column order, with an extra column.
        names = ["note", "extra", "updated_at", "paid", "amount", "id", "blob"]
        mapper = RecordMapper(schema, names)
        when = dt.datetime(2024, 1, 2, 3, 4, 5)  # noqa: DTZ001 - a naive timestamp on purpose
        record = mapper.record(("hi", "x", when, True, Decimal("1.50"), 7, b"z"))
        assert list(record) == ["id", "amount", "paid", "Updated", "note"]
        assert record == {
            "id": 7,
            "amount": 1.5,
            "paid": True,
            "Updated": "2024-01-02T03:04:05",
            "note": "hi",
        }

    def test_all_null_row_keeps_every_key(self, columns: list[SourceColumn]) -> None:
        """A row of NULLs still carries every key, each None."""
        schema = plan_schema(columns)
        mapper = RecordMapper(schema, [c.name for c in columns])
        record = mapper.record((None,) * len(columns))
        assert record == dict.fromkeys([f.name for f in schema.fields])

    def test_records_maps_many_rows(self, columns: list[SourceColumn]) -> None:
        """records() is record() over every row, in order."""
        schema = plan_schema(columns, include=["id", "note"])
        mapper = RecordMapper(schema, [c.name for c in columns])
        rows = [(i, None, None, None, f"n{i}", None) for i in range(3)]
        assert mapper.records(rows) == [{"id": i, "note": f"n{i}"} for i in range(3)]
        assert mapper.records([]) == []

    def test_missing_source_column_is_a_schema_error(self, columns: list[SourceColumn]) -> None:
        """A source column the schema needs but the source lost raises SchemaError naming it."""
        schema = plan_schema(columns)
        with pytest.raises(SchemaError, match=r"\bamount\b.*\bpaid\b") as raised:
            RecordMapper(schema, ["id", "updated_at", "note", "blob"])
        assert not raised.value.retriable

    @pytest.mark.parametrize("field_type", FIELD_TYPES)
    def test_null_stays_null(self, map_one: MapOne, field_type: FieldType) -> None:
        """NULL becomes None for every field type."""
        assert map_one(None, field_type) is None


class TestNumbers:
    """Numbers stay numbers; Decimal, big ints and non-finite floats are handled on purpose."""

    @pytest.mark.parametrize(
        "value",
        [2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 10**30 + 7],
        ids=["2^53+1", "-(2^53)-1", "int64-max", "int64-min", "10^30+7"],
    )
    def test_big_ints_stay_exact(self, map_one: MapOne, value: int) -> None:
        """Integers past 2**53 stay exact ints and json.dumps shows every digit."""
        out = map_one(value, "integer")
        assert type(out) is int
        assert out == value
        assert json.dumps({"v": out}) == f'{{"v": {value}}}'

    def test_integer_from_integral_decimal_is_exact(self, map_one: MapOne) -> None:
        """An integral Decimal with many digits becomes the exact int."""
        assert map_one(Decimal("123456789012345678901234567890"), "integer") == (
            123456789012345678901234567890
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (Decimal("1.10"), 1.1),
            (Decimal("-0.000001"), -0.000001),
            (Decimal(0), 0.0),
            (
                Decimal("3.141592653589793238462643383279502884"),
                float(Decimal("3.141592653589793238462643383279502884")),
            ),
            (Decimal("12345678901234567890.123456789"), 1.2345678901234567e19),
        ],
        ids=["1.10", "-0.000001", "zero", "pi-36-digits", "20-int-digits"],
    )
    def test_decimal_as_float(self, map_one: MapOne, value: Decimal, expected: float) -> None:
        """A Decimal in a float field becomes the nearest float."""
        out = map_one(value, "float")
        assert type(out) is float
        assert out == expected

    @pytest.mark.parametrize(
        "value",
        [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")],
        ids=["NaN", "sNaN", "Infinity", "-Infinity"],
    )
    @pytest.mark.parametrize("field_type", ["float", "integer", "string"])
    def test_non_finite_decimal_does_not_fit(
        self, map_one: MapOne, map_or_null: MapOne, value: Decimal, field_type: FieldType
    ) -> None:
        """Decimal NaN and infinities have no JSON form, whatever the field type: a bad value
        (null under ``on_bad_value: null``)."""
        with pytest.raises(BadValueError, match="JSON has no NaN or infinity"):
            map_one(value, field_type)
        assert map_or_null(value, field_type) is None

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
    @pytest.mark.parametrize("field_type", ["float", "integer", "string", "category"])
    def test_non_finite_float_does_not_fit(
        self, map_one: MapOne, map_or_null: MapOne, value: float, field_type: FieldType
    ) -> None:
        """Float NaN and infinities have no JSON form, whatever the field type: a bad value
        (null under ``on_bad_value: null``)."""
        with pytest.raises(BadValueError, match="JSON has no NaN or infinity"):
            map_one(value, field_type)
        assert map_or_null(value, field_type) is None

    @pytest.mark.parametrize(
        "value", [Decimal("1E+400"), 10**400], ids=["decimal-1e400", "int-10^400"]
    )
    def test_past_float_range_does_not_fit(
        self, map_one: MapOne, map_or_null: MapOne, value: Any
    ) -> None:
        """A number too large for a float does not fit a float field."""
        with pytest.raises(BadValueError):
            map_one(value, "float")
        assert map_or_null(value, "float") is None

    def test_float_keeps_its_value(self, map_one: MapOne) -> None:
        """A finite float passes through unchanged, sign of zero included."""
        assert map_one(0.1, "float") == 0.1
        assert math.copysign(1.0, map_one(-0.0, "float")) == -1.0
        assert map_one(1e308, "float") == 1e308

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (dt.timedelta(days=1, seconds=1, microseconds=500_000), 86401.5),
            (dt.timedelta(microseconds=1), 0.000001),
            (dt.timedelta(hours=-2), -7200.0),
            (dt.timedelta(0), 0.0),
        ],
        ids=["1d1.5s", "1us", "negative", "zero"],
    )
    def test_timedelta_is_seconds(
        self, map_one: MapOne, value: dt.timedelta, expected: float
    ) -> None:
        """A timedelta in a float field becomes its total seconds."""
        out = map_one(value, "float")
        assert type(out) is float
        assert out == expected


class TestTemporal:
    """Dates and timestamps are ISO 8601; aware ones in UTC with +00:00, naive stays naive."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (
                dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=IST),
                "2024-05-06T01:38:09.123456+00:00",
            ),
            (dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC), "2024-05-06T07:08:09+00:00"),
            (dt.datetime(2024, 5, 6, 7, 8, 9, 1, tzinfo=PST), "2024-05-06T15:08:09.000001+00:00"),
        ],
        ids=["+05:30-micro", "utc", "-08:00-1us"],
    )
    def test_aware_datetime_is_sent_in_utc(
        self, map_one: MapOne, value: dt.datetime, expected: str
    ) -> None:
        """An aware timestamp is the same instant in UTC, microseconds kept: the reading
        session's zone never changes the text sent."""
        out = map_one(value, "date")
        assert out == expected
        assert dt.datetime.fromisoformat(out) == value
        assert dt.datetime.fromisoformat(out).utcoffset() == dt.timedelta(0)

    def test_utc_column(self) -> None:
        """A column whose naive timestamps are UTC (MySQL TIMESTAMP) is sent with +00:00."""
        schema = Schema((DatasetField("at", "at", "date"), DatasetField("local", "local", "date")))
        naive = dt.datetime(2024, 5, 6, 7, 8, 9, 5)  # noqa: DTZ001 - naive on purpose
        columns = [SourceColumn("at", dt.datetime, utc=True), SourceColumn("local", dt.datetime)]
        record = RecordMapper(schema, columns).record([naive, naive])
        assert record == {
            "at": "2024-05-06T07:08:09.000005+00:00",
            "local": "2024-05-06T07:08:09.000005",
        }

    def test_utc_column_by_name(self) -> None:
        """``utc_columns`` names more UTC columns, for columns known only by name."""
        schema = Schema((DatasetField("at", "at", "date"),))
        naive = dt.datetime(2024, 5, 6, 7, 8, 9)  # noqa: DTZ001 - naive on purpose
        record = RecordMapper(schema, ["at"], utc_columns={"at"}).record([naive])
        assert record == {"at": "2024-05-06T07:08:09+00:00"}

    @pytest.mark.usefixtures("far_local_zone")
    def test_naive_datetime_stays_naive(self, map_one: MapOne) -> None:
        """A naive timestamp gets no offset and is not shifted, even with a local zone set."""
        value = dt.datetime(2024, 5, 6, 7, 8, 9, 654321)  # noqa: DTZ001 - naive on purpose
        out = map_one(value, "date")
        assert out == "2024-05-06T07:08:09.654321"
        assert dt.datetime.fromisoformat(out).tzinfo is None

    def test_date(self, map_one: MapOne) -> None:
        """A date is YYYY-MM-DD."""
        assert map_one(dt.date(2024, 2, 29), "date") == "2024-02-29"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (dt.time(7, 8, 9, 123456), "07:08:09.123456"),
            (dt.time(23, 59), "23:59:00"),
            (dt.time(7, 8, 9, tzinfo=IST), "07:08:09+05:30"),
        ],
        ids=["micro", "plain", "aware"],
    )
    @pytest.mark.parametrize("field_type", ["string", "date"])
    def test_time(
        self, map_one: MapOne, value: dt.time, expected: str, field_type: FieldType
    ) -> None:
        """A time of day is ISO 8601 with microseconds and offset when present."""
        assert map_one(value, field_type) == expected

    def test_datetime_as_string_is_iso(self, map_one: MapOne) -> None:
        """A timestamp under a string override is still ISO 8601, in UTC with its offset."""
        value = dt.datetime(2024, 5, 6, 7, 8, 9, 5, tzinfo=IST)
        assert map_one(value, "string") == "2024-05-06T01:38:09.000005+00:00"


class TestStrings:
    """UUID, JSON, arrays and bytes become strings."""

    def test_uuid(self, map_one: MapOne) -> None:
        """A UUID becomes its canonical hyphenated lowercase form."""
        value = uuid.UUID("12345678-1234-5678-1234-56781234ABCD")
        assert map_one(value, "string") == "12345678-1234-5678-1234-56781234abcd"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({"a": 1, "b": [1, 2], "c": None}, '{"a":1,"b":[1,2],"c":null}'),
            ([1, "x", {"k": True}], '[1,"x",{"k":true}]'),
            ({"naïve": "日本"}, '{"naïve":"日本"}'),
            ({}, "{}"),
            ([], "[]"),
        ],
        ids=["dict", "list", "unicode", "empty-dict", "empty-list"],
    )
    def test_json_values_are_compact_json(self, map_one: MapOne, value: Any, expected: str) -> None:
        """dict and list become compact JSON text that parses back to the same value."""
        out = map_one(value, "string")
        assert out == expected
        assert json.loads(out) == value

    def test_json_with_decimal_inside(self, map_one: MapOne) -> None:
        """Non-JSON values nested in a dict do not break the conversion."""
        out = map_one({"price": Decimal("1.10")}, "string")
        assert json.loads(out) == {"price": "1.10"}

    @pytest.mark.parametrize(
        "value",
        [b"\x00\xffhello", bytearray(b"\x01\x02"), memoryview(b"view"), b""],
        ids=["bytes", "bytearray", "memoryview", "empty"],
    )
    def test_bytes_are_base64(self, map_one: MapOne, value: Any) -> None:
        """Binary values become base64 text that decodes to the same bytes."""
        out = map_one(value, "string")
        assert isinstance(out, str)
        assert base64.b64decode(out, validate=True) == bytes(value)

    def test_text_passes_through(self, map_one: MapOne) -> None:
        """A string is sent as it is, unicode and control characters included."""
        assert map_one("é😀\n\x00", "string") == "é😀\n\x00"

    @pytest.mark.parametrize("value", [True, False])
    def test_bool_under_category_stays_bool(self, map_one: MapOne, value: bool) -> None:
        """A bool in a category field is sent as a JSON boolean, not text or a number."""
        out = map_one(value, "category")
        assert out is value
        assert json.dumps(out) == ("true" if value else "false")

    def test_category_non_bool_is_text(self, map_one: MapOne) -> None:
        """A non-bool value in a category field is sent as text."""
        assert map_one(3, "category") == "3"
        assert map_one("gold", "category") == "gold"


class TestValuesThatDoNotFit:
    """A value its field cannot hold unchanged fails loudly; it is never altered quietly."""

    @pytest.mark.parametrize(
        "value",
        [7.9, 3.7, -0.5, Decimal("7.9"), Decimal("7.90"), Decimal("-0.000001"), "7.5", "1E-3"],
        ids=["7.9", "3.7", "-0.5", "decimal-7.9", "decimal-7.90", "decimal-tiny", "text-7.5",
             "text-1e-3"],
    )  # fmt: skip
    def test_fraction_refused_by_integer(self, map_one: MapOne, value: Any) -> None:
        """A number with a fractional part is not truncated into an integer field."""
        with pytest.raises(BadValueError):
            map_one(value, "integer")

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (7.0, 7),
            (Decimal("8.00"), 8),
            (Decimal("-0"), 0),
            ("42", 42),
            (" -3 ", -3),
            ("8.000", 8),
            ("123456789012345678901234567890", 123456789012345678901234567890),
        ],
        ids=["float", "decimal", "negative-zero", "text", "text-spaces", "text-zeros", "text-big"],
    )
    def test_whole_numbers_become_exact_integers(
        self, map_one: MapOne, value: Any, expected: int
    ) -> None:
        """Whole numbers, numeric text included, become the exact int."""
        out = map_one(value, "integer")
        assert type(out) is int
        assert out == expected

    @pytest.mark.parametrize("field_type", ["integer", "float"])
    @pytest.mark.parametrize(
        "value", ["abc", "", "12abc", "1,5"], ids=["abc", "empty", "12abc", "comma"]
    )
    def test_non_numeric_text_refused(
        self, map_one: MapOne, value: str, field_type: FieldType
    ) -> None:
        """Text that is not a number fails in a number field (SQLite lets an INTEGER hold it)."""
        with pytest.raises(BadValueError):
            map_one(value, field_type)

    def test_numeric_text_as_float(self, map_one: MapOne) -> None:
        """Numeric text in a float field is its number."""
        assert map_one("7.9", "float") == 7.9

    @pytest.mark.parametrize("field_type", ["integer", "float"])
    def test_other_types_refused(self, map_one: MapOne, field_type: FieldType) -> None:
        """A value of a type a number field cannot take (a date) is a BadValueError too."""
        with pytest.raises(BadValueError):
            map_one(dt.date(2026, 1, 1), field_type)

    def test_error_names_column_field_value_key_and_remedy(self) -> None:
        """The message names the source column, the field and its type, the value, the row's
        key and what to do."""
        schema = Schema(
            (DatasetField("id", "id", "integer"), DatasetField("qty", "quantity", "integer"))
        )
        mapper = RecordMapper(schema, ["id", "quantity", "updated_at"], key=("id",), job="orders")
        with pytest.raises(BadValueError) as raised:
            mapper.records([(41, 1, None), (42, Decimal("7.9"), None)])
        message = str(raised.value)
        for part in ("column quantity", "field qty", "integer", "Decimal('7.9')", "id=42",
                     "columns.types", "akkiosync reset orders"):  # fmt: skip
            assert part in message
        assert (raised.value.exit_code, raised.value.retriable) == (1, False)
        assert isinstance(raised.value, AkkioSyncError)

    def test_composite_key_and_watermark_fallback(self) -> None:
        """Every key column is named; without a key, the watermark identifies the row."""
        schema = Schema((DatasetField("n", "n", "float"),))
        composite = RecordMapper(schema, ["tenant", "id", "n"], key=("tenant", "id"))
        with pytest.raises(BadValueError, match=r"tenant='eu', id=7\b"):
            composite.record(("eu", 7, "x"))
        at = dt.datetime(2026, 1, 2, 3, 4, 5)  # noqa: DTZ001 - naive on purpose
        by_watermark = RecordMapper(schema, ["n", "updated_at"], key=("updated_at",))
        with pytest.raises(BadValueError, match=r"updated_at=2026-01-02 03:04:05\b"):
            by_watermark.record(("x", at))

    def test_long_value_is_truncated(self) -> None:
        """A long bad value is shown in part, so the message stays one readable line."""
        schema = Schema((DatasetField("n", "n", "integer"),))
        mapper = RecordMapper(schema, ["id", "n"], key=("id",))
        with pytest.raises(BadValueError) as raised:
            mapper.record((1, "z" * 5000))
        message = str(raised.value)
        assert "zzzz" in message
        assert len(message) < 600
        assert "\n" not in message


class TestWithheld:
    """Withheld fields keep their key with null, and their value is never read."""

    def test_withheld_field_is_null(self) -> None:
        """A withheld field is null whatever the row holds; the others are mapped as usual."""
        schema = Schema((DatasetField("id", "id", "integer"), DatasetField("ssn", "ssn", "string")))
        mapper = RecordMapper(schema, ["id", "ssn"], withheld={"ssn"})
        assert mapper.records([(1, "123-45-6789"), (2, None)]) == [
            {"id": 1, "ssn": None},
            {"id": 2, "ssn": None},
        ]

    def test_withheld_column_may_be_gone(self) -> None:
        """A withheld field's column may have left the source: no SchemaError, still null."""
        schema = Schema(
            (DatasetField("id", "id", "integer"), DatasetField("tax_id", "ssn", "string"))
        )
        mapper = RecordMapper(schema, ["id"], withheld={"tax_id"})
        assert mapper.record((3,)) == {"id": 3, "tax_id": None}

    def test_bad_value_in_withheld_field_is_not_read(self) -> None:
        """A value that would not fit is irrelevant once its field is withheld."""
        schema = Schema((DatasetField("n", "n", "integer"),))
        assert RecordMapper(schema, ["n"], withheld={"n"}).record(("abc",)) == {"n": None}


class TestTypeOverrides:
    """A types override chooses the converter, whatever the column's Python type."""

    def _map(self, column: SourceColumn, field_type: str, value: Any) -> Any:
        schema = plan_schema([column], types={column.name: field_type})
        return RecordMapper(schema, [column.name]).record((value,))[column.name]

    @pytest.mark.parametrize(
        "text",
        ["1.10", "12345678901234567890.123456789012345678", "-0.000001", "0E-10", "1E+2"],
    )
    def test_string_keeps_a_decimal_digit_for_digit(self, text: str) -> None:
        """A Decimal under ``string`` is its exact text, trailing zeros included."""
        assert self._map(SourceColumn("amount", Decimal), "string", Decimal(text)) == text

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(3.0, 3), (Decimal("42"), 42), (True, 1), (-7, -7), (Decimal("8.00"), 8)],
        ids=["float", "decimal", "bool", "int", "decimal-trailing-zeros"],
    )
    def test_integer(self, value: Any, expected: int) -> None:
        """``integer`` sends a JSON integer for every value that is a whole number."""
        out = self._map(SourceColumn("n", float), "integer", value)
        assert type(out) is int
        assert out == expected

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(2, 2.0), (Decimal("2.5"), 2.5), (False, 0.0)],
        ids=["int", "decimal", "bool"],
    )
    def test_float(self, value: Any, expected: float) -> None:
        """``float`` sends a JSON float, even for an int column."""
        out = self._map(SourceColumn("n", int), "float", value)
        assert type(out) is float
        assert out == expected
        assert "." in json.dumps(out)

    def test_category_on_int_column(self) -> None:
        """``category`` on an integer column sends text labels."""
        assert self._map(SourceColumn("code", int), "category", 17) == "17"


# One value of each kind a column of that field type may hold, awkward ones included.
_AWKWARD_ROW: dict[FieldType, list[Any]] = {
    "integer": [0, -1, 2**63 - 1, 10**30, Decimal(5), Decimal("NaN"), math.inf, True],
    "float": [
        0.1,
        -0.0,
        math.nan,
        -math.inf,
        Decimal("1.10"),
        Decimal("3.1415926535897932384626433832795028841971"),
        Decimal("Infinity"),
        Decimal("1E+400"),
        10**400,
        2**53 + 1,
        dt.timedelta(days=3, microseconds=7),
    ],
    "string": [
        "é😀",
        "",
        Decimal("1.10"),
        Decimal("NaN"),
        math.nan,
        uuid.UUID(int=1),
        {"a": [1, 2.5, None]},
        [math.nan],
        b"\x00\xff",
        memoryview(b"x"),
        dt.time(1, 2, 3, 4),
        2**64,
    ],
    "category": [True, False, "gold", 3, math.inf],
    "boolean": [True, False, 0, 1, "yes", " F ", 2, "maybe"],
    "date": [
        dt.date(1, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),  # noqa: DTZ001 - naive on purpose
        dt.datetime(2024, 1, 1, tzinfo=IST),
    ],
}


class TestJsonSafety:
    """Every produced record serialises as strict JSON."""

    @pytest.mark.parametrize(
        ("field_type", "value"),
        [(t, v) for t, values in _AWKWARD_ROW.items() for v in values],
        ids=[f"{t}-{i}" for t, values in _AWKWARD_ROW.items() for i in range(len(values))],
    )
    def test_each_value_is_strict_json(
        self, map_or_null: MapOne, field_type: FieldType, value: Any
    ) -> None:
        """json.dumps(allow_nan=False) accepts the mapped value, which is a JSON scalar (or
        null, for a value the field cannot hold)."""
        out = map_or_null(value, field_type)
        json.dumps({"v": out}, allow_nan=False)
        assert out is None or type(out) in (int, float, str, bool)

    def test_whole_records_are_strict_json(self) -> None:
        """Records built from wide rows of awkward values all pass strict json.dumps."""
        fields = tuple(DatasetField(t, t, t) for t in _AWKWARD_ROW)
        mapper = RecordMapper(Schema(fields), list(_AWKWARD_ROW), on_bad_value="null")
        width = max(len(v) for v in _AWKWARD_ROW.values())
        rows = [
            tuple(values[i % len(values)] for values in _AWKWARD_ROW.values()) for i in range(width)
        ]
        for record in mapper.records(rows):
            assert json.loads(json.dumps(record, allow_nan=False)).keys() == record.keys()


# Numeric values of several Python types (int, big int, bool, float, Decimal), finite only.
_MIXED_NUMBERS: list[Any] = [
    0,
    -12,
    2**53 + 1,
    2**70,
    True,
    0.5,
    -0.0,
    1e300,
    Decimal("1.10"),
    Decimal("-0.000001"),
    Decimal("123456789012345678901234567890"),
]
_EXPECTED_JSON_TYPE = {
    "integer": "int",
    "float": "float",
    "string": "str",
    "category": "str",
    "date": "str",
    "boolean": "bool",
}


class TestTypeStability:
    """Within one field, values of mixed Python numeric types all become one JSON type."""

    @pytest.mark.parametrize("field_type", FIELD_TYPES)
    def test_mixed_numbers_share_one_json_type(
        self, map_one: MapOne, field_type: FieldType
    ) -> None:
        """Every finite number maps to the field type's single JSON type."""
        values = [
            v
            for v in _MIXED_NUMBERS
            if not (field_type == "category" and v is True)
            and not (field_type == "integer" and v != int(v))  # a fraction does not fit
            and not (field_type == "boolean" and not (type(v) in (int, bool) and v in (0, 1)))
        ]
        seen = {json_type(map_one(v, field_type)) for v in values}
        assert seen == {_EXPECTED_JSON_TYPE[field_type]}

    @pytest.mark.parametrize("field_type", FIELD_TYPES)
    def test_non_finite_numbers_are_never_another_type(
        self, map_one: MapOne, map_or_null: MapOne, field_type: FieldType
    ) -> None:
        """Non-finite numbers never introduce a second JSON type: they do not fit, or are
        null under ``on_bad_value: null``."""
        for value in (math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("-Infinity")):
            with pytest.raises(BadValueError):
                map_one(value, field_type)
            assert map_or_null(value, field_type) is None
