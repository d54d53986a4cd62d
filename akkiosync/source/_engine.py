"""Engines for source URLs, and SQLAlchemy errors turned into redacted ``SourceError``s."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from akkiosync.errors import SourceError, SourceUnavailableError
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
    try:
        engine = sa.create_engine(engine_url(url), pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise SourceError(f"cannot use database URL {redact(url)}: {redact(str(exc))}") from None
    if engine.dialect.name in ("mysql", "mariadb"):

        @sa.event.listens_for(engine, "connect")
        def _utc_session(dbapi_connection: Any, _: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET time_zone = '+00:00'")

    return engine


def source_error(exc: SQLAlchemyError, doing: str) -> SourceError:
    """A redacted ``SourceError`` for a SQLAlchemy failure; dropped connections are retriable."""
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0]
    message = redact(f"{doing}: {type(original).__name__}: {first_line}")
    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if lost or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return SourceUnavailableError(message)
    return SourceError(message)
