"""The SQL side: engines, reflection, and the streamed keyset read. The only package with SQL.

The read is ``WHERE (wm, key) > (:wm, :key) ORDER BY wm, key``: a checkpoint inside a tie of
watermark values is exact. ``_bounds`` adds the initial watermark, the lookback window and
``settle``; ``_read`` streams; ``_types`` says what each SQL type is read and planned as;
``_engine`` opens engines (with PostgreSQL loaders for values psycopg refuses) and turns errors
into ours.
"""

from __future__ import annotations

from typing import Protocol

from akkiosync.source._bounds import Bounds, Watermark, coerce
from akkiosync.source._engine import engine_url, open_engine, source_error
from akkiosync.source._outline import OutlineColumn, TableOutline, outline_table
from akkiosync.source._query import query_warnings, split_table, wrappable
from akkiosync.source._read import Batch, Source

__all__ = [
    "Batch",
    "Bounds",
    "OutlineColumn",
    "Source",
    "SourceSpec",
    "TableOutline",
    "Watermark",
    "coerce",
    "engine_url",
    "make_source",
    "open_engine",
    "outline_table",
    "query_warnings",
    "source_error",
    "split_table",
    "wrappable",
]


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
