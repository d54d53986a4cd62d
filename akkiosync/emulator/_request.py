"""How a request's fields are read: query string, JSON or form body, and the ``rows`` value."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any, cast
from urllib.parse import parse_qsl

import orjson

from akkiosync.emulator._store import RequestError, Row, error

_NESTED = frozenset((list, dict))  # JSON arrays and objects: not values a row may carry


def read_params(query: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Merge the query string with a JSON or form body; the body wins."""
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    # The body stays bytes for JSON: orjson decodes them directly, without a copy as text.
    data = body.strip()
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "").lower()
    # Sniff when the type is neither: cURL's -d sends a form unless told otherwise.
    if not data or not ("json" in ctype or ("form" not in ctype and data.startswith(b"{"))):
        text = data.decode(errors="replace")
        return params | dict(parse_qsl(text, keep_blank_values=True))
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise error(400, f"malformed JSON body: {exc}") from None
    if not isinstance(decoded, dict):
        raise error(400, "the JSON body must be an object")
    return params | decoded


def asks_to_add(method: str, query: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a request's fields ask to add rows (an id and rows on a POST), valid or not."""
    if method != "POST":
        return False
    try:
        params = read_params(query, headers, body)
    except RequestError:
        return False
    return params.get("id") not in (None, "") and "rows" in params


def optional_str(params: dict[str, Any], key: str) -> str | None:
    """A text field, None when absent or empty; 400 when it is not text."""
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise error(400, f"{key} must be a string")
    return value


def decode_rows(raw: Any) -> list[Row]:
    """`rows` as sent: an array of objects, or a JSON-encoded string of one."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise error(400, f"rows is not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise error(400, "rows must be an array of objects")
    # The common case is checked in C loops (a batch has thousands of rows); the per-row walk
    # below only runs to name the first offending row.
    if set(map(type, raw)) <= {dict} and not _NESTED & set(
        map(type, chain.from_iterable(map(dict.values, raw)))
    ):
        return cast(list[Row], raw)
    for index, row in enumerate(raw):
        if not isinstance(row, dict):
            raise error(400, f"row {index} is not an object")
        nested = sorted(key for key, value in row.items() if isinstance(value, list | dict))
        if nested:
            raise error(400, f"row {index}: arrays and objects are not values: {nested}")
    return cast(list[Row], raw)
