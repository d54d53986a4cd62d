"""What ``init`` needs to know of a live table: its columns, primary key and indexes."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from akkiosync.errors import ConfigError
from akkiosync.source._engine import open_engine, source_error
from akkiosync.source._query import split_table


@dataclass(frozen=True, slots=True)
class OutlineColumn:
    """A column: its name, whether it holds times, integers, and is auto-incremented."""

    name: str
    is_time: bool
    is_integer: bool
    autoincrement: bool


@dataclass(frozen=True, slots=True)
class TableOutline:
    """A table's columns in order, its primary key, and the first column of each index."""

    columns: tuple[OutlineColumn, ...]
    primary_key: tuple[str, ...]
    index_leads: frozenset[str]


def outline_table(url: str, table: str) -> TableOutline:
    """Reflect ``table`` (``schema.name`` or a quoted name, as ``source.table``)."""
    try:
        schema, name = split_table(table)
    except ValueError as exc:
        raise ConfigError(f"--table: {exc}") from None
    engine = open_engine(url)
    try:
        inspector = sa.inspect(engine)
        columns = inspector.get_columns(name, schema)
        pk = tuple(inspector.get_pk_constraint(name, schema)["constrained_columns"])
        indexes = [i["column_names"] for i in inspector.get_indexes(name, schema)]
    except SQLAlchemyError as exc:
        raise source_error(exc, f"reading table {table}") from None
    finally:
        engine.dispose()
    outline = tuple(
        OutlineColumn(
            name=c["name"],
            is_time=isinstance(c["type"], sa.DateTime | sa.Date),
            is_integer=isinstance(c["type"], sa.Integer),
            # SQLite says nothing of it: an INTEGER PRIMARY KEY is its rowid, which grows.
            autoincrement=c.get("autoincrement") is True
            or (engine.dialect.name == "sqlite" and pk == (c["name"],)),
        )
        for c in columns
    )
    leads = frozenset(cols[0] for cols in [*indexes, pk] if cols and cols[0])
    return TableOutline(outline, pk, leads)
