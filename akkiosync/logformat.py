"""The two line formats: JSON for log collectors, text for people at a terminal.

An event's data travels as fields (``logger.info(..., extra={"event": "batch_sent", "rows":
5})``): the JSON line carries each beside the readable message; the text line is the message
alone, after the job and run it belongs to. Neither lets a control character through raw: what
a source row or a server wrote must not steer the terminal or log viewer that shows it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re

# Attributes every record has (and those our filters and formatters add): the rest are fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
    "job",
    "run_id",
}
# C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
WARNINGS_LOGGER = "py.warnings"  # where ``logging.captureWarnings`` sends library warnings


def escape(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\n``);
    ``newlines``: line breaks stay (a traceback's lines)."""

    def one(match: re.Match[str]) -> str:
        char = match[0]
        if char in _NAMED:
            return _NAMED[char]
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    if newlines:
        return "\n".join(_CONTROL.sub(one, line) for line in text.split("\n"))
    return _CONTROL.sub(one, text)


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    """The fields the caller put on ``record`` (its ``extra=``), by name."""
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _STANDARD and not name.startswith("_")
    }


def _value(value: object) -> object:
    """A field's value as a JSON line holds it: numbers, booleans and null as they are, the
    rest (NaN too, which JSON cannot hold) as escaped text."""
    if (
        value is None
        or isinstance(value, bool | int)
        or (isinstance(value, float) and math.isfinite(value))
    ):
        return value
    return escape(value if isinstance(value, str) else str(value))


def _message(record: logging.LogRecord) -> str:
    """The record's message; a library warning keeps its first line (the second is a line of
    the library's source)."""
    message = record.getMessage()
    if record.name == WARNINGS_LOGGER:
        message = message.strip().split("\n", 1)[0]
    return message


def _event(record: logging.LogRecord) -> object:
    event = getattr(record, "event", None)
    return "library_warning" if event is None and record.name == WARNINGS_LOGGER else event


class TextFormatter(logging.Formatter):
    """``time level [job#run] logger: message``: one line per event (a traceback follows it)."""

    def format(self, record: logging.LogRecord) -> str:
        job, run = getattr(record, "job", None), getattr(record, "run_id", None)
        where = f"[{job}#{run}] " if job and run else f"[{job}] " if job else ""
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {escape(where)}{record.name}: "
            f"{escape(_message(record))}"
        )
        trace = self._trace(record)
        return f"{line}\n{escape(trace, newlines=True)}" if trace else line

    def _trace(self, record: logging.LogRecord) -> str | None:
        """The traceback (already redacted into ``exc_text`` by ``RedactingFilter``) and stack."""
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [p for p in (record.exc_text, record.stack_info) if p]
        return "\n".join(parts) or None


class JsonFormatter(TextFormatter):
    """One JSON object per line: time, level, event, message, job, run_id, logger, the
    event's fields, and ``exception`` when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "event": _value(_event(record)),
            "message": escape(_message(record)),
            "job": _value(getattr(record, "job", None)),
            "run_id": _value(getattr(record, "run_id", None)),
            "logger": record.name,
        }
        for name, value in fields_of(record).items():
            line.setdefault(name, _value(value))  # a field never hides the line's own keys
        trace = self._trace(record)
        if trace:
            line["exception"] = escape(trace, newlines=True)
        return json.dumps(line, ensure_ascii=False, allow_nan=False, default=str)
