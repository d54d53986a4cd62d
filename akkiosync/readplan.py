"""What a run of a job reads and how it maps it: one plan for the runner, a refresh and
``preview``, so that a preview shows exactly the records the next run sends first.

The plan holds the read's options (the keyset cursor, or a lookback window and the ledger of
rows sent within it; ``initial_watermark`` as a value of the watermark's type; ``settle``) and
the mapper of rows to records (the schema, its withheld fields, ``columns.synced_at``,
``on_bad_value``, each column's type and UTC flag). It reads the store, never writes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from akkiosync.config import Job
from akkiosync.cursor import Cursor
from akkiosync.dataset import Drift, schema_drift
from akkiosync.lookback import Ledger, later
from akkiosync.mapping import RecordMapper, Schema
from akkiosync.source import Bounds, Source, coerce
from akkiosync.state import Store


@dataclass(frozen=True, slots=True)
class Step:
    """One batch of a read, as a run sends it."""

    rows: Sequence[Sequence[Any]]  # to send: a lookback job's rows sent before are left out
    read: int  # how many rows the batch read
    cursor: Cursor  # the checkpoint once ``rows`` are sent
    entries: list[tuple[str, float]]  # what ``rows`` add to the ledger
    prune_below: float | None  # ledger entries positioned below this are no longer needed


class ReadPlan:
    """The read and the mapping of one job's run on an open source, into ``schema``."""

    def __init__(self, job: Job, source: Source, schema: Schema, *, whole: bool = False) -> None:
        """``schema``: the pinned (or planned, or adopted) one; ``whole``: the whole source
        from the start, into a new dataset (``mode: replace``): no cursor, lookback or drift."""
        self.job = job
        self.schema = schema
        self.columns = source.columns()
        self.whole = whole
        self.drift = Drift() if whole else schema_drift(job.columns, schema, job=job.name)
        self._source = source

    def mapper(self, synced_at: dt.datetime) -> RecordMapper:
        """The mapper of a run that reads at ``synced_at``; ``SchemaError`` when a column the
        schema needs is gone."""
        return RecordMapper(
            self.schema,
            self.columns,
            key=self.job.source.key or (self.job.source.watermark,),
            withheld=self.drift.withheld,
            job=self.job.name,
            synced_at=synced_at,
            on_bad_value=self.job.on_bad_value,
        )

    def steps(
        self, store: Store, cursor: Cursor | None, batch_size: int
    ) -> Generator[Step, None, None]:
        """The batches of the read from checkpoint ``cursor``, as a run sends them (a batch
        whose rows were all sent before comes with none); a lookback job's ledger is read
        from ``store``. ``ConfigError`` when ``initial_watermark`` does not fit the watermark."""
        spec = self.job.source
        initial = spec.initial_watermark
        since = None if initial is None else coerce(initial, self._source.watermark())
        if self.whole:  # in (watermark, key) order: the batches are the same on every try
            cursor = None
        ledger = None
        if spec.lookback is not None and not self.whole:
            seen = store.ledger_entries(self.job.name, Ledger.since(cursor, spec.lookback))
            ledger = Ledger(spec.lookback, seen)
        bounds = Bounds(
            after=cursor if ledger is None else None,
            window=(cursor.watermark if cursor else None, ledger.back) if ledger else None,
            since=since,
            settle=spec.settle,
        )
        width = len(self.columns)  # each row's cursor columns start here
        with closing(self._source.batches(bounds, batch_size)) as batches:
            for batch in batches:
                if ledger is None:
                    yield Step(batch.rows, len(batch.rows), batch.cursor, [], None)
                    continue
                rows, entries = ledger.fresh(batch.rows, width)
                # A lookback read may end behind the checkpoint: it never moves back.
                after = later(cursor, batch.cursor)
                yield Step(rows, len(batch.rows), after, entries, ledger.prune_below(after))
                if rows:
                    cursor = after
