"""The incremental cursor ``(watermark, key)`` and its lossless text form for the store.

Every value is stored with its type, so that what is bound back into the next query is the
very value read: microseconds, the time zone offset (or its absence), integers of any size,
decimals digit for digit. Floats are stored by ``repr``, which round-trips exactly.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after the last row delivered: its watermark and its key (may be empty)."""

    watermark: Any
    key: tuple[Any, ...] = ()

    def describe(self) -> str:
        """A short human-readable form for logs and ``status``."""
        parts = [_show(self.watermark), *(_show(k) for k in self.key)]
        return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)


def _tag(value: Any) -> dict[str, str] | None:
    # Order matters: bool is an int, datetime is a date.
    if value is None:
        return None
    if isinstance(value, bool):
        return {"bool": "true" if value else "false"}
    # int()/float() first: a subclass (an int-valued Enum, numpy's float64) may print otherwise.
    if isinstance(value, int):
        return {"int": str(int(value))}
    if isinstance(value, float):
        return {"float": repr(float(value))}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat(timespec="microseconds")}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat(timespec="microseconds")}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"a cursor column of type {type(value).__name__} is not supported")


_DECODERS: dict[str, Any] = {
    "bool": lambda s: s == "true",
    "int": int,
    "float": float,
    "decimal": Decimal,
    "str": str,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
}


def _untag(tagged: dict[str, str] | None) -> Any:
    if tagged is None:
        return None
    ((kind, text),) = tagged.items()
    return _DECODERS[kind](text)


def encode_cursor(cursor: Cursor) -> str:
    """The cursor as JSON text with every value typed."""
    return json.dumps(
        {"watermark": _tag(cursor.watermark), "key": [_tag(k) for k in cursor.key]},
        separators=(",", ":"),
    )


def decode_cursor(text: str) -> Cursor:
    """The inverse of ``encode_cursor``."""
    data = json.loads(text)
    return Cursor(_untag(data["watermark"]), tuple(_untag(k) for k in data["key"]))


def position(value: Any) -> float:
    """A watermark as a number on one axis: seconds for times (naive ones read as UTC; SQLite's
    text timestamps parsed), days in seconds for dates, the value itself for numbers. Used to
    measure windows (lookback) and distances (lag); never to compare for delivery."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    if isinstance(value, dt.date):
        return float(value.toordinal() * 86_400)
    if isinstance(value, int | float | Decimal):
        return float(value)
    raise TypeError(f"a {type(value).__name__} watermark has no position on a number line")


def lag(newest: Any, cursor: Cursor | None) -> float | None:
    """How far the cursor is behind the source's newest watermark (None if unknown)."""
    if newest is None:
        return 0.0 if cursor is not None else None
    if cursor is None:
        return None
    try:
        return max(position(newest) - position(cursor.watermark), 0.0)
    except (TypeError, ValueError):  # a watermark without a position (text), or unparsable
        return None
