"""Keeping secrets out of logs, errors, the store and command output.

Secrets reach text in two ways: values we know (the API key, database passwords), which are
registered once when the configuration is loaded, and shapes we can recognise anywhere (a
password inside a URL, an ``api_key=`` query parameter) even when nobody registered them.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# scheme://user:password@host  ->  scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]+)@")
# api_key=...  /  "api_key": "..."  in query strings, form bodies and JSON
_API_KEY_PARAM = re.compile(
    r"(?P<head>api[_-]?key[\"']?\s*[=:]\s*[\"']?)(?P<val>[^&\s\"',}]+)", re.I
)


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that ``redact`` masks it wherever it appears."""
    if value and len(value) >= 3:  # masking "a" everywhere would mangle every message
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every known secret and every recognisable credential masked."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _API_KEY_PARAM.sub(lambda m: f"{m['head']}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the fully formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later from the exception itself: pre-format them here.
            import traceback  # noqa: PLC0415 - only needed on the rare error path

            formatted = "".join(traceback.format_exception(*record.exc_info))
            cleaned = f"{cleaned}\n{redact(formatted.rstrip())}"
            record.exc_info = None
            record.exc_text = None
        record.msg = cleaned
        record.args = None
        return True
