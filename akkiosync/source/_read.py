"""The streamed read of one source: reflection, the query, batches.

Rows are streamed with a server-side cursor: memory grows with the batch size, not with the
table. Identifiers come from reflection, so a table name from YAML is always quoted.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from akkiosync.cursor import Cursor
from akkiosync.errors import BadValueError, ConfigError
from akkiosync.mapping import SourceColumn
from akkiosync.source._bounds import Bounds, Watermark, check, predicates
from akkiosync.source._engine import source_error
from akkiosync.source._query import query_warnings, split_table, wrappable
from akkiosync.source._types import (
    exact_float,
    python_type,
    readable,
    result_column,
    table_column,
)

logger = logging.getLogger(__name__)

_SAMPLE_ROWS = 200
_MYSQL_DUPLICATE_COLUMN = 1060


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows in column order, and the cursor just after the last of them."""

    rows: Sequence[Sequence[Any]]
    cursor: Cursor


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
        schema, name = split_table(self._table_name)
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self._engine)
        dialect = self._engine.dialect.name
        self._columns = [table_column(c, dialect) for c in table.columns]
        return table

    def _wrap_query(self) -> sa.FromClause:
        assert self._query is not None  # noqa: S101 - one of table/query is set by config
        query = wrappable(self._query)
        for warning in query_warnings(query):
            logger.warning("source.query: %s", warning)
        probe: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(
            sa.text(query).columns().subquery("akkiosync_src")
        )
        try:
            with self._engine.connect() as conn:
                result = conn.execute(probe.limit(_SAMPLE_ROWS))
                names = list(result.keys())
                description = result.cursor.description
                sample = result.fetchall()
        except sa.exc.OperationalError as exc:  # MySQL refuses them in a derived table
            code, *rest = getattr(exc.orig, "args", None) or (None,)
            if code != _MYSQL_DUPLICATE_COLUMN:
                raise
            names = [str(rest[0]).split("'")[1] if rest and "'" in str(rest[0]) else "?"] * 2
        # SQLite renames a repeated column "id" to "id:1" in a subquery; PostgreSQL keeps both.
        twice = {n for n in names if names.count(n) > 1}
        if self.is_sqlite:
            twice |= {base for n in names if (base := n.rpartition(":")[0]) and base in names}
        if twice:
            raise ConfigError(
                f"source.query: more than one column named {', '.join(sorted(twice))}: give "
                "each column its own name (SELECT a.id, b.id AS b_id ...)"
            )
        types: list[type | None] = []
        for i in range(len(names)):
            seen = next((row[i] for row in sample if row[i] is not None), None)
            types.append(None if seen is None else type(seen))
        dialect = self._engine.dialect.name
        self._columns = [
            result_column(n, t, d, dialect)
            for n, t, d in zip(names, types, description, strict=True)
        ]
        columns = [sa.column(n, _sql_type_for(t)) for n, t in zip(names, types, strict=True)]
        return sa.text(query).columns(*columns).subquery("akkiosync_src")

    def _cursor_expressions(self, source: sa.FromClause) -> list[sa.ColumnElement[Any]]:
        exprs: list[sa.ColumnElement[Any]] = []
        for name in (self._watermark, *self._key):
            col: sa.ColumnElement[Any] = exact_float(source.c[name])
            if self.is_sqlite and python_type(col.type) in (dt.datetime, dt.date, dt.time):
                # SQLite keeps these as text and compares them as text: keep the cursor as the
                # stored text, so the comparison is exactly the database's own.
                col = sa.type_coerce(col, sa.String())
            exprs.append(col)
        return exprs

    def watermark(self) -> Watermark:
        """The watermark column, as the bounds of a read need it."""
        source = self._prepare()
        column = next(c for c in self._columns if c.name == self._watermark)
        return Watermark(
            dialect=self._engine.dialect.name,
            raw=source.c[self._watermark],
            cursor=self._cursor_expressions(source)[0],
            python_type=column.python_type,
            utc=column.utc,
        )

    def check(self, bounds: Bounds) -> Watermark:
        """The watermark, once it is known that ``bounds``' options fit its type."""
        watermark = self.watermark()
        check(bounds, watermark, self._watermark)
        return watermark

    def select(self, bounds: Bounds, limit: int | None = None) -> sa.Select[Any]:
        """The read: rows within ``bounds``, in (watermark, key) order."""
        source = self._prepare()
        watermark = self.check(bounds)
        cursor_exprs = self._cursor_expressions(source)
        statement = sa.select(
            *(readable(source.c[c.name], self._engine.dialect.name) for c in self._columns),
            *(e.label(f"akkiosync_cursor_{i}") for i, e in enumerate(cursor_exprs)),
        )
        statement = statement.where(*predicates(bounds, watermark, cursor_exprs))
        statement = statement.order_by(*cursor_exprs)
        return statement if limit is None else statement.limit(limit)

    def batches(
        self, after: Cursor | Bounds | None, batch_size: int
    ) -> Generator[Batch, None, None]:
        """Stream the rows within the bounds (or past a cursor) in batches of ``batch_size``;
        without a key, batches end only where the watermark changes (``_whole_groups``)."""
        bounds = after if isinstance(after, Bounds) else Bounds(after=after)
        statement = self.select(bounds)
        width = len(self._columns)
        try:
            with (
                self._engine.connect() as conn,
                conn.execution_options(yield_per=batch_size).execute(statement) as result,
            ):
                parts = _partitions(result, statement, batch_size)
                groups = parts if self._key else _whole_groups(parts, batch_size, width)
                unloaded = self._unloaded_cursor_columns()
                for rows in groups:
                    if unloaded:
                        self._check_cursor(rows, width, unloaded)
                    last = rows[-1]
                    yield Batch(rows, Cursor(last[width], tuple(last[width + 1 :])))
        except SQLAlchemyError as exc:
            raise source_error(exc, "reading the source") from None

    def _unloaded_cursor_columns(self) -> list[tuple[int, str]]:
        """(offset past the row's columns, name) of the cursor's date and time columns on
        PostgreSQL, whose out-of-range values arrive as text (see ``_engine``)."""
        if self._engine.dialect.name != "postgresql":
            return []  # MySQL compares its zero dates' text; SQLite's cursor is text anyway
        kinds = {c.name: c.python_type for c in self._columns}
        return [
            (i, name)
            for i, name in enumerate((self._watermark, *self._key))
            if (kind := kinds[name]) is not None and issubclass(kind, dt.date | dt.time)
        ]

    def _check_cursor(
        self, rows: Sequence[Sequence[Any]], width: int, columns: list[tuple[int, str]]
    ) -> None:
        """``BadValueError`` for a row whose date or time cursor value PostgreSQL holds but
        Python cannot (``infinity``, a year past 9999): no checkpoint can be bound back from
        it, nor a lookback window place it, whatever ``on_bad_value`` says."""
        for row in rows:
            for offset, name in columns:
                if isinstance(value := row[width + offset], str):
                    names = self._key or (self._watermark,)
                    cursor = row[width + 1 :] if self._key else row[width : width + 1]
                    where = ", ".join(f"{n}={v}" for n, v in zip(names, cursor, strict=True))
                    raise BadValueError(
                        f"cursor column {name} holds {value!r} in the row {where}, which "
                        "PostgreSQL can store but no checkpoint can hold (it is no date or time "
                        "that Python has); fix the value in the source, or read through a "
                        f"source.query that leaves such rows out (WHERE {name} <> 'infinity')"
                    )

    def null_cursor_rows(self) -> int:
        """How many rows have a NULL watermark or key: no read ever takes them."""
        source = self._prepare()
        nulls = sa.or_(*(source.c[name].is_(None) for name in (self._watermark, *self._key)))
        query = sa.select(sa.func.count()).select_from(source).where(nulls)
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError as exc:
            raise source_error(exc, "counting NULL watermarks and keys") from None

    def rows_after(self, cursor: Cursor | None, limit: int) -> int | None:
        """How many rows a read past ``cursor`` has to go, for progress: a count over the
        cursor's index that stops past ``limit`` rows; past that, the table's row estimate for a
        first read (PostgreSQL, MySQL), else None. ``limit`` 0: None, nothing is counted."""
        if limit <= 0:
            return None
        statement = self.select(Bounds(after=cursor)).with_only_columns(sa.literal(1))
        bounded = statement.order_by(None).limit(limit + 1).subquery("akkiosync_to_go")
        try:
            with self._engine.connect() as conn:
                count = sa.select(sa.func.count()).select_from(bounded)
                counted = int(conn.execute(count).scalar_one())
                if counted <= limit:
                    return counted
                return self._row_estimate(conn) if cursor is None else None
        except SQLAlchemyError as exc:
            raise source_error(exc, "counting the rows to go") from None

    def _row_estimate(self, conn: sa.Connection) -> int | None:
        """The dialect's own estimate of the table's rows (statistics, no scan)."""
        if self._table_name is None:
            return None
        schema, name = split_table(self._table_name)
        dialect = self._engine.dialect
        if dialect.name == "postgresql":
            table = dialect.identifier_preparer.format_table(sa.table(name, schema=schema))
            query = sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)")
            estimate = conn.execute(query, {"t": table}).scalar()
        elif dialect.name in ("mysql", "mariadb"):
            query = sa.text(
                "SELECT table_rows FROM information_schema.tables "
                "WHERE table_schema = COALESCE(:s, DATABASE()) AND table_name = :t"
            )
            estimate = conn.execute(query, {"s": schema, "t": name}).scalar()
        else:
            return None
        return int(estimate) if estimate is not None and estimate >= 0 else None

    def newest_watermark(self) -> Any:
        """The highest watermark in the source, as the cursor would read it (None: empty)."""
        source = self._prepare()
        query = sa.select(sa.func.max(self._cursor_expressions(source)[0]))
        try:
            with self._engine.connect() as conn:
                return conn.execute(query).scalar_one()
        except SQLAlchemyError as exc:
            raise source_error(exc, "reading the newest watermark") from None

    def unindexed(self) -> list[str]:
        """Cursor columns no index starts with (a table only): each read would scan."""
        if self._table_name is None:
            return []
        schema, name = split_table(self._table_name)
        try:
            inspector = sa.inspect(self._engine)
            indexes: list[Sequence[str | None]] = [
                i["column_names"] for i in inspector.get_indexes(name, schema)
            ]
            indexes.append(inspector.get_pk_constraint(name, schema)["constrained_columns"])
        except SQLAlchemyError as exc:
            raise source_error(exc, "reading the source's indexes") from None
        leading = {columns[0] for columns in indexes if columns}
        return [c for c in (self._watermark, *self._key[:1]) if c not in leading]

    def close(self) -> None:
        """Release the engine's connections."""
        self._engine.dispose()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _partitions(
    result: sa.CursorResult[Any], statement: sa.Select[Any], size: int
) -> Iterator[list[Any]]:
    """The result's rows in lists of ``size``: the first through SQLAlchemy, the rest as the
    driver's own tuples wherever no column needs SQLAlchemy's conversion of its values (a
    ``Row`` costs about a microsecond: a sixth of what reading a row costs, bench/)."""
    first = result.fetchmany(size)
    if not first:
        return
    yield list(first)
    if len(first) < size:
        return  # the whole result (and SQLAlchemy has closed its cursor)
    cursor = result.cursor
    dialect = result.context.dialect
    converted = any(
        column.type.dialect_impl(dialect).result_processor(dialect, description[1])
        for column, description in zip(
            statement.selected_columns, cursor.description or (), strict=True
        )
    )
    # The driver's position says SQLAlchemy buffered no row beyond those it gave: else its
    # rows go on through it, in order.
    if converted or getattr(cursor, "rownumber", None) != len(first):
        yield from (list(part) for part in result.partitions())
        return
    while rows := cursor.fetchmany(size):
        yield rows if isinstance(rows, list) else list(rows)


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
