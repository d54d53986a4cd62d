"""The SQL side: engines, reflection, and the streamed keyset read. The only module with SQL.

The read is ``WHERE (wm, key) > (:wm, :key) ORDER BY wm, key``, written out as nested
``OR``/``AND`` so that every database (and its indexes) understands it. Cursor values are bound
as typed parameters, never pasted into SQL, and identifiers come from reflection, so a table
name from YAML is always quoted. Rows are streamed with a server-side cursor: memory grows with
the batch size, not with the table.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError

from akkiosync.cursor import Cursor
from akkiosync.errors import ConfigError, SourceError, SourceUnavailableError
from akkiosync.mapping import SourceColumn
from akkiosync.redact import redact

logger = logging.getLogger(__name__)

# The drivers we ship, used when a URL names none (SQLAlchemy's defaults may be missing).
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_SAMPLE_ROWS = 200


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows in column order, and the cursor just after the last of them."""

    rows: Sequence[Sequence[Any]]
    cursor: Cursor


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL, with our bundled driver filled in where the URL names none."""
    parsed = make_url(url)
    return parsed.set(drivername=_DEFAULT_DRIVERS.get(parsed.drivername, parsed.drivername))


def open_engine(url: str) -> Engine:
    """An engine for a source URL; connections are checked before use."""
    try:
        return sa.create_engine(engine_url(url), pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise SourceError(f"cannot use database URL {redact(url)}: {redact(str(exc))}") from None


class SourceSpec(Protocol):
    """What opening a source needs (the job file's ``source:`` section satisfies it)."""

    @property
    def url(self) -> str: ...
    @property
    def table(self) -> str | None: ...
    @property
    def query(self) -> str | None: ...
    @property
    def watermark(self) -> str: ...
    @property
    def key(self) -> tuple[str, ...]: ...


def make_source(spec: SourceSpec) -> Source:
    """A source on a fresh engine; the caller closes it."""
    return Source(
        open_engine(spec.url),
        watermark=spec.watermark,
        key=spec.key,
        table=spec.table,
        query=spec.query,
    )


def source_error(exc: SQLAlchemyError, doing: str) -> SourceError:
    """A redacted ``SourceError`` for a SQLAlchemy failure; dropped connections are retriable."""
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0]
    message = redact(f"{doing}: {type(original).__name__}: {first_line}")
    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if lost or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return SourceUnavailableError(message)
    return SourceError(message)


def _python_type(sql_type: sa.types.TypeEngine[Any]) -> type | None:
    try:
        return sql_type.python_type
    except NotImplementedError:
        return None


class Source:
    """One job's source: a reflected table or a wrapped query, read by the keyset cursor."""

    def __init__(
        self,
        engine: Engine,
        *,
        watermark: str,
        key: Sequence[str] = (),
        table: str | None = None,
        query: str | None = None,
    ) -> None:
        self._engine = engine
        self._watermark = watermark
        self._key = tuple(key)
        self._table_name, self._query = table, query
        self._from: sa.FromClause | None = None
        self._columns: list[SourceColumn] = []

    @property
    def is_sqlite(self) -> bool:
        return self._engine.dialect.name == "sqlite"

    def columns(self) -> list[SourceColumn]:
        """The source's columns, reflected from the table or inferred from the query's rows."""
        self._prepare()
        return list(self._columns)

    def _prepare(self) -> sa.FromClause:
        if self._from is not None:
            return self._from
        try:
            source = self._reflect() if self._query is None else self._wrap_query()
        except NoSuchTableError:
            raise ConfigError(f"source.table: table {self._table_name!r} not found") from None
        except SQLAlchemyError as exc:
            raise source_error(exc, "reading the source's columns") from None
        names = {c.name for c in self._columns}
        for option, wanted in (("watermark", (self._watermark,)), ("key", self._key)):
            missing = [n for n in wanted if n not in names]
            if missing:
                raise ConfigError(
                    f"source.{option}: no column {', '.join(missing)} in the source "
                    f"(columns: {', '.join(sorted(names))})"
                )
        self._from = source
        return source

    def _reflect(self) -> sa.FromClause:
        assert self._table_name is not None  # noqa: S101 - one of table/query is set by config
        schema, _, name = self._table_name.rpartition(".")
        table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=self._engine)
        self._columns = [
            SourceColumn(c.name, _python_type(c.type), str(c.type)) for c in table.columns
        ]
        return table

    def _wrap_query(self) -> sa.FromClause:
        assert self._query is not None  # noqa: S101 - one of table/query is set by config
        query = self._query.strip().rstrip(";")
        probe: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(
            sa.text(query).columns().subquery("akkiosync_src")
        )
        with self._engine.connect() as conn:
            result = conn.execute(probe.limit(_SAMPLE_ROWS))
            names = list(result.keys())
            sample = result.fetchall()
        types: list[type | None] = []
        for i in range(len(names)):
            seen = next((row[i] for row in sample if row[i] is not None), None)
            types.append(None if seen is None else type(seen))
        self._columns = [
            SourceColumn(n, t, t.__name__ if t else "unknown")
            for n, t in zip(names, types, strict=True)
        ]
        columns = [sa.column(n, _sql_type_for(t)) for n, t in zip(names, types, strict=True)]
        return sa.text(query).columns(*columns).subquery("akkiosync_src")

    def _cursor_expressions(self, source: sa.FromClause) -> list[sa.ColumnElement[Any]]:
        exprs: list[sa.ColumnElement[Any]] = []
        for name in (self._watermark, *self._key):
            col: sa.ColumnElement[Any] = source.c[name]
            if self.is_sqlite and _python_type(col.type) in (dt.datetime, dt.date, dt.time):
                # SQLite keeps these as text and compares them as text: keep the cursor as the
                # stored text, so the comparison is exactly the database's own.
                col = sa.type_coerce(col, sa.String())
            exprs.append(col)
        return exprs

    def select(self, after: Cursor | None, limit: int | None = None) -> sa.Select[Any]:
        """The keyset query: rows past ``after`` (or all with a watermark), in cursor order."""
        source = self._prepare()
        cursor_exprs = self._cursor_expressions(source)
        statement = sa.select(
            *(source.c[c.name] for c in self._columns),
            *(e.label(f"akkiosync_cursor_{i}") for i, e in enumerate(cursor_exprs)),
        )
        if after is None:
            statement = statement.where(cursor_exprs[0].is_not(None))
        else:
            statement = statement.where(_after(cursor_exprs, [after.watermark, *after.key]))
        statement = statement.order_by(*cursor_exprs)
        return statement if limit is None else statement.limit(limit)

    def batches(self, after: Cursor | None, batch_size: int) -> Generator[Batch, None, None]:
        """Stream the rows past ``after`` in batches of ``batch_size`` (see ``_group_batches``)."""
        statement = self.select(after)
        width = len(self._columns)
        try:
            with (
                self._engine.connect() as conn,
                conn.execution_options(yield_per=batch_size).execute(statement) as result,
            ):
                parts = (list(part) for part in result.partitions())
                groups = parts if self._key else _whole_groups(parts, batch_size, width)
                for rows in groups:
                    last = rows[-1]
                    yield Batch(rows, Cursor(last[width], tuple(last[width + 1 :])))
        except SQLAlchemyError as exc:
            raise source_error(exc, "reading the source") from None

    def close(self) -> None:
        """Release the engine's connections."""
        self._engine.dispose()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _after(exprs: Sequence[sa.ColumnElement[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``(e0, e1, ...) > (v0, v1, ...)`` written as ``e0 > v0 OR (e0 = v0 AND (...))``."""
    head, value = exprs[0], values[0]
    greater: sa.ColumnElement[bool] = head > value
    if len(exprs) == 1:
        return greater
    return sa.or_(greater, sa.and_(head == value, _after(exprs[1:], values[1:])))


def _whole_groups(parts: Iterator[list[Any]], batch_size: int, width: int) -> Iterator[list[Any]]:
    """Without a key the cursor is the watermark alone, so a batch may only end where the
    watermark changes: resuming at ``wm > last`` must not skip the rest of a tie. A batch ends
    at the last change within ``batch_size`` rows, or grows past it while one value lasts."""
    pending: list[Any] = []
    for part in parts:
        pending.extend(part)
        # One row more than a batch is needed to know that the batch's last tie is complete.
        while len(pending) > batch_size and (cut := _cut(pending, batch_size, width)):
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


def _cut(rows: list[Any], batch_size: int, width: int) -> int:
    """Where the next batch ends: the last watermark change at or before ``batch_size``, else
    the first one after it; 0 while the rows read so far all share one watermark."""
    for i in (*range(batch_size, 0, -1), *range(batch_size + 1, len(rows))):
        if rows[i][width] != rows[i - 1][width]:
            return int(i)
    return 0


def _sql_type_for(python_type: type | None) -> sa.types.TypeEngine[Any]:
    """A SQLAlchemy type for binding cursor values of a query column by their Python type."""
    mapping: dict[type, sa.types.TypeEngine[Any]] = {
        bool: sa.Boolean(),
        int: sa.BigInteger(),
        float: sa.Float(),
        dt.datetime: sa.DateTime(),
        dt.date: sa.Date(),
        dt.time: sa.Time(),
        str: sa.String(),
    }
    return mapping.get(python_type, sa.types.NullType()) if python_type else sa.types.NullType()
