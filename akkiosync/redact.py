"""Keeping secrets out of logs, errors, the store and command output.

Secrets reach text in two ways: values we know (the API key, database passwords), which are
registered once when the configuration is loaded, and shapes we can recognise anywhere (a
password inside a URL, an ``api_key=`` query parameter) even when nobody registered them.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback

from akkiosync.logformat import fields_of

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# scheme://user:password@host  ->  scheme://user:***@host. The userinfo runs to the token's LAST
# "@": a password may hold raw "@", "/" or ":" (SQLAlchemy itself would cut it at the first "@").
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>\S*)")
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
    text = _URL.sub(_mask_userinfo, text)
    return _API_KEY_PARAM.sub(lambda m: f"{m['head']}{MASK}", text)


def _mask_userinfo(match: re.Match[str]) -> str:
    """``user:secret@host`` keeps ``user``; a userinfo whose user part holds ``@`` or ``/``
    (a raw ``@``, or a second URL glued on) is masked whole, as where a name ends cannot be
    told. Over-masking an ``@`` in a query is the safe side."""
    userinfo, at, after = match["rest"].rpartition("@")
    if not at:
        return match[0]
    user, colon, _ = userinfo.partition(":")
    if colon and not any(c in user for c in "@/"):
        return f"{match['scheme']}{user}:{MASK}@{after}"
    if colon or "@" in userinfo:
        return f"{match['scheme']}{MASK}@{after}"
    return match[0]


class RedactingFilter(logging.Filter):
    """A logging filter that redacts all of a record: its formatted message, every field
    passed with ``extra=``, and its traceback, which it formats into ``exc_text`` (where the
    formatters take it from)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later from the exception itself: format them here.
            formatted = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = redact(formatted.rstrip())
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in fields_of(record).items():
            if value is not None and not isinstance(value, bool | int | float):
                setattr(record, name, redact(str(value)))
        return True
