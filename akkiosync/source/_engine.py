"""Engines for source URLs, and SQLAlchemy errors turned into redacted ``SourceError``s.

PostgreSQL connections (psycopg) get their own loaders for what psycopg's cannot give as
Python values: ``infinity``, years past 9999, BC dates and ``24:00:00`` arrive as PostgreSQL's
text instead of failing the read (``convert`` then calls them bad values in a date field);
intervals keep months apart from days (``Interval``); JSON arrives as its text, so a JSON
``null`` is not an SQL NULL.
"""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types.json import set_json_loads
from pymysql import charset as pymysql_charsets  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from akkiosync.convert import Interval
from akkiosync.errors import ConfigError, SourceError, SourceUnavailableError
from akkiosync.redact import redact

# The drivers we ship, used when a URL names none (SQLAlchemy's defaults may be missing).
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL, with our bundled driver filled in where the URL names none."""
    parsed = make_url(url)
    return parsed.set(drivername=_DEFAULT_DRIVERS.get(parsed.drivername, parsed.drivername))


def open_engine(url: str) -> Engine:
    """An engine for a source URL; connections are checked before use.

    MySQL/MariaDB sessions are pinned to UTC: TIMESTAMP values then read the same whatever the
    server's or the session's time zone, and the cursor binds back exactly what it read.
    """
    parsed = engine_url(url)
    charset = parsed.query.get("charset")
    if parsed.get_backend_name() in ("mysql", "mariadb") and parsed.get_driver_name() == "pymysql":
        for name in (charset,) if isinstance(charset, str) else charset or ():
            if pymysql_charsets.charset_by_name(name) is None:  # pymysql fails obscurely
                raise ConfigError(
                    f"source.url: unknown MySQL charset {name!r} in {redact(url)}: use a "
                    "character set MySQL knows, such as charset=utf8mb4"
                )
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise SourceError(f"cannot use database URL {redact(url)}: {redact(str(exc))}") from None
    if engine.dialect.name in ("mysql", "mariadb"):

        @sa.event.listens_for(engine, "connect")
        def _utc_session(dbapi_connection: Any, _: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET time_zone = '+00:00'")

    if engine.dialect.driver == "psycopg":
        sa.event.listen(engine, "connect", _postgres_loaders)
    return engine


# Types psycopg's loaders refuse some values of, with DataError (so the whole read fails).
_OUT_OF_RANGE = ("date", "timestamp", "timestamptz", "time", "timetz")
# An interval as PostgreSQL writes it under IntervalStyle postgres (the default).
_INTERVAL = re.compile(
    r"(?:(?P<years>[-+]?\d+) years? ?)?(?:(?P<months>[-+]?\d+) mons? ?)?"
    r"(?:(?P<days>[-+]?\d+) days? ?)?"
    r"(?:(?P<sign>[-+])?(?P<hours>\d+):(?P<minutes>\d\d):(?P<seconds>\d\d(?:\.\d+)?))?"
)


def _postgres_loaders(dbapi_connection: Any, _: Any) -> None:
    adapters = dbapi_connection.adapters
    for name in _OUT_OF_RANGE:
        oid = adapters.types[name].oid
        adapters.register_loader(oid, _lenient(adapters.get_loader(oid, Format.TEXT)))
    adapters.register_loader("interval", _IntervalLoader)
    set_json_loads(_json_text, dbapi_connection)


@functools.cache
def _lenient(base: type[Loader]) -> type[Loader]:
    """``base`` (psycopg's loader, C or Python), giving the database's text for a value it
    refuses instead of failing the whole read."""

    class Lenient(Loader):
        def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
            super().__init__(oid, context)
            self._load = base(oid, context).load

        def load(self, data: Buffer) -> Any:
            try:
                return self._load(data)
            except psycopg.DataError:
                return bytes(data).decode()

    return Lenient


class _IntervalLoader(Loader):
    """An interval as ``Interval``: psycopg's timedelta counts a month as 30 days and a year as
    365. Text it cannot read (another IntervalStyle) stays text."""

    def load(self, data: Buffer) -> Any:
        text = bytes(data).decode()
        match = _INTERVAL.fullmatch(text)
        if not text or not match:
            return text
        number = {
            k: int(v or 0) for k, v in match.groupdict().items() if k not in ("sign", "seconds")
        }
        micros = int(Decimal(match["seconds"] or 0) * 1_000_000)  # at most six digits: exact
        micros += (number["hours"] * 3600 + number["minutes"] * 60) * 1_000_000
        return Interval(
            number["years"] * 12 + number["months"],
            number["days"],
            -micros if match["sign"] == "-" else micros,
        )


def _json_text(data: str | bytes) -> str:
    """A JSON value as its compact text (what dicts and lists were always sent as)."""
    return json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)


def source_error(exc: SQLAlchemyError, doing: str) -> SourceError:
    """A redacted ``SourceError`` for a SQLAlchemy failure; dropped connections are retriable."""
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0]
    message = redact(f"{doing}: {type(original).__name__}: {first_line}")
    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if lost or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return SourceUnavailableError(message)
    return SourceError(message)
