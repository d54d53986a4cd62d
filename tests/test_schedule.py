"""Tests for schedule parsing: intervals and five-field cron expressions."""

from __future__ import annotations

import dataclasses
import re

import pytest

from akkiosync.schedule import Schedule, parse_schedule

NEITHER = (
    "is neither an interval (30s, 5m, 1h, 1d) "
    "nor a 5-field cron expression (minute hour day-of-month month day-of-week)"
)


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly this message."""
    return f"^{re.escape(message)}$"


class TestInterval:
    """An interval is a positive number and a unit (s, sec, m, min, h, d), in seconds."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("30s", 30),
            ("1sec", 1),
            ("5m", 300),
            ("1h", 3600),
            ("1d", 86_400),
            ("10 min", 600),
            ("2H", 7200),
            ("15M", 900),
            ("3 SEC", 3),
            ("90m", 5400),
        ],
        ids=["30s", "1sec", "5m", "1h", "1d", "10-min", "upper-h", "upper-m", "upper-sec", "90m"],
    )
    def test_seconds(self, text: str, seconds: int) -> None:
        """The interval's length is in seconds; units are case-insensitive and may be spaced."""
        assert parse_schedule(text) == Schedule("interval", text, seconds)

    def test_surrounding_spaces_stripped(self) -> None:
        """Leading and trailing spaces are not part of the expression."""
        assert parse_schedule("  5m ") == Schedule("interval", "5m", 300)

    def test_str_is_expression(self) -> None:
        """A schedule prints as its expression."""
        assert str(parse_schedule("5m")) == "5m"

    @pytest.mark.parametrize("text", ["0s", "0m", "00h"], ids=["0s", "0m", "00h"])
    def test_zero_rejected(self, text: str) -> None:
        """A zero interval is rejected, naming it."""
        with pytest.raises(
            ValueError, match=exactly(f"interval {text!r} must be longer than zero")
        ):
            parse_schedule(text)

    @pytest.mark.parametrize(
        "text",
        ["5", "-5m", "1.5h", "5 minutes", "1w", "m5", "5ms"],
        ids=["no-unit", "negative", "fraction", "long-unit", "weeks", "unit-first", "millis"],
    )
    def test_not_an_interval(self, text: str) -> None:
        """Anything else that is not cron either is rejected with both accepted forms named."""
        with pytest.raises(ValueError, match=exactly(f"{text!r} {NEITHER}")):
            parse_schedule(text)

    def test_frozen(self) -> None:
        """A schedule is an immutable value."""
        schedule = parse_schedule("5m")

        with pytest.raises(dataclasses.FrozenInstanceError):
            schedule.seconds = 1  # type: ignore[misc]


class TestValidCron:
    """Five-field cron expressions and the @ macros are accepted and normalised."""

    @pytest.mark.parametrize(
        ("text", "expression"),
        [
            ("*/5 * * * *", "*/5 * * * *"),
            ("0 9 * * mon-fri", "0 9 * * mon-fri"),
            ("0 9 * * MON-FRI", "0 9 * * mon-fri"),
            ("0 0 1 jan,jul *", "0 0 1 jan,jul *"),
            ("0   0  1 * *", "0 0 1 * *"),
            ("0-59/15 0-23 1-31 1-12 0-7", "0-59/15 0-23 1-31 1-12 0-7"),
            ("5,10,15 8-18/2 */3 */6 sun,sat", "5,10,15 8-18/2 */3 */6 sun,sat"),
            ("0 0 * * 7", "0 0 * * 7"),
            ("30 2 29 feb *", "30 2 29 feb *"),
            ("0 0 * jan-dec sun-sat", "0 0 * jan-dec sun-sat"),
            ("@daily", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@DAILY", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@weekly", "0 0 * * 0"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
        ],
        ids=[
            "every-5-minutes",
            "weekdays",
            "weekdays-upper",
            "month-names",
            "extra-spaces",
            "full-ranges",
            "lists-and-steps",
            "sunday-as-7",
            "feb-29",
            "name-ranges",
            "@daily",
            "@hourly",
            "@daily-upper",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
        ],
    )
    def test_accepted(self, text: str, expression: str) -> None:
        """The expression is accepted; macros expand and text is lower-cased and single-spaced."""
        assert parse_schedule(text) == Schedule("cron", expression)

    def test_cron_has_no_seconds(self) -> None:
        """A cron schedule has no fixed interval."""
        assert parse_schedule("*/5 * * * *").seconds is None


class TestInvalidCron:
    """A bad cron expression is a ValueError naming the field and the offending part."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("60 * * * *", "cron minute field: 60 is outside 0-59"),
            ("* 24 * * *", "cron hour field: 24 is outside 0-23"),
            ("* * 0 * *", "cron day of month field: 0 is outside 1-31"),
            ("* * 32 * *", "cron day of month field: 32 is outside 1-31"),
            ("* * * 13 *", "cron month field: 13 is outside 1-12"),
            ("* * * 0 *", "cron month field: 0 is outside 1-12"),
            ("* * * * 8", "cron day of week field: 8 is outside 0-7"),
            ("*/0 * * * *", "cron minute field: a step of 0 in '*/0'"),
            ("* 1-5/0 * * *", "cron hour field: a step of 0 in '1-5/0'"),
            ("5-1 * * * *", "cron minute field: range '5-1' runs backwards"),
            ("* * * * fri-mon", "cron day of week field: range 'fri-mon' runs backwards"),
            ("* * * dec-jan *", "cron month field: range 'dec-jan' runs backwards"),
            ("abc * * * *", "cron minute field: 'abc' is not a number"),
            ("* * * * jan", "cron day of week field: 'jan' is not a number"),
            ("* * * mon *", "cron month field: 'mon' is not a number"),
            ("* * * * monday", "cron day of week field: 'monday' is not a number"),
            ("1-2-3 * * * *", "cron minute field: '1-2-3' is not a value, range or step"),
            ("1,,2 * * * *", "cron minute field: '' is not a value, range or step"),
            ("*/x * * * *", "cron minute field: '*/x' is not a value, range or step"),
            ("? * * * *", "cron minute field: '?' is not a value, range or step"),
            ("-1 * * * *", "cron minute field: '-1' is not a value, range or step"),
        ],
        ids=[
            "minute-60",
            "hour-24",
            "day-of-month-0",
            "day-of-month-32",
            "month-13",
            "month-0",
            "day-of-week-8",
            "step-0",
            "range-step-0",
            "backwards-range",
            "backwards-day-names",
            "backwards-month-names",
            "letters",
            "month-name-as-day",
            "day-name-as-month",
            "long-day-name",
            "double-range",
            "empty-list-item",
            "non-numeric-step",
            "question-mark",
            "negative",
        ],
    )
    def test_field_named(self, text: str, message: str) -> None:
        """The message names the cron field and what is wrong in it."""
        with pytest.raises(ValueError, match=exactly(message)):
            parse_schedule(text)

    @pytest.mark.parametrize(
        "text",
        ["* * * *", "0 * * * * *", "", "   ", "@reboot", "@every 5m"],
        ids=["4-fields", "6-fields", "empty", "blank", "@reboot", "@every"],
    )
    def test_wrong_field_count(self, text: str) -> None:
        """Not five fields (and not a known macro) is rejected, naming both accepted forms."""
        with pytest.raises(ValueError, match=exactly(f"{text!r} {NEITHER}")):
            parse_schedule(text)

    def test_first_bad_field_reported(self) -> None:
        """With several bad fields, the first one (left to right) is named."""
        with pytest.raises(ValueError, match=r"^cron minute field: 60 is outside 0-59$"):
            parse_schedule("60 24 0 13 8")

    def test_one_line(self) -> None:
        """Even a multi-line input gives a one-line message."""
        with pytest.raises(ValueError, match=exactly(f"'*\\n*\\n*' {NEITHER}")) as caught:
            parse_schedule("*\n*\n*")

        assert "\n" not in str(caught.value)
