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
