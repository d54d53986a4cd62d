"""When a job runs: a five-field cron expression or a fixed interval ("30s", "5m", "1h", "1d"),
and the durations (settle, lookback) written the same way.

Parsing lives here, apart from the scheduler, so that ``validate`` can reject a bad schedule
without importing APScheduler. Cron follows crontab(5): day-of-week 0 and 7 are Sunday.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (field name, lowest, highest, names that stand for numbers starting at `lowest`)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule; ``expression`` is the normalised cron text or the interval as given."""

    kind: Literal["cron", "interval"]
    expression: str
    seconds: int | None = None

    def __str__(self) -> str:
        return self.expression


def parse_duration(text: str) -> timedelta:
    """A duration such as "30s", "5m", "1h", "1d"; ``ValueError`` if it is not one."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 1h or 1d")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2].lower()])


def parse_schedule(text: str) -> Schedule:
    """Parse a cron expression or an interval; ``ValueError`` says what is wrong."""
    if _INTERVAL.match(text):
        seconds = int(parse_duration(text).total_seconds())
        if seconds <= 0:
            raise ValueError(f"interval {text!r} must be longer than zero")
        return Schedule("interval", text.strip(), seconds)
    expression = _MACROS.get(text.strip().lower(), text.strip())
    fields = expression.lower().split()
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"{text!r} is neither an interval (30s, 5m, 1h, 1d) "
            "nor a 5-field cron expression (minute hour day-of-month month day-of-week)"
        )
    for value, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for item in value.split(","):
            _check_item(item, name, low, high, names)
    return Schedule("cron", " ".join(fields))


def _check_item(item: str, name: str, low: int, high: int, names: tuple[str, ...]) -> None:
    match = _ITEM.match(item)
    if not match:
        raise ValueError(f"cron {name} field: {item!r} is not a value, range or step")
    if match["step"] is not None and int(match["step"]) == 0:
        raise ValueError(f"cron {name} field: a step of 0 in {item!r}")
    if match["range"] == "*":
        return
    bounds = [_number(part, name, low, high, names) for part in match["range"].split("-")]
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise ValueError(f"cron {name} field: range {item!r} runs backwards")


def _number(part: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if part in names:
        return names.index(part) + low
    if not part.isdigit():
        raise ValueError(f"cron {name} field: {part!r} is not a number")
    number = int(part)
    if not low <= number <= high:
        raise ValueError(f"cron {name} field: {number} is outside {low}-{high}")
    return number
