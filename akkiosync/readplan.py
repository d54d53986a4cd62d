"""What a run of a job reads and how it maps it: one plan for the runner, a refresh and
``preview``, so that a preview shows exactly the records the next run sends first.

The plan holds the read's options (the keyset cursor, or a lookback window and the ledger of
rows sent within it; ``initial_watermark`` as a value of the watermark's type; ``settle``) and
the mapper of rows to records (the schema, its withheld fields, ``columns.synced_at``,
``on_bad_value``, each column's type and UTC flag). It reads the store, never writes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Generator, Sequence
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

# Seconds one read (one query, one transaction) may stay open before it is closed and opened
# again from the last batch's cursor: a backfill of hours must not hold PostgreSQL's vacuum back.
REOPEN_AFTER = 300.0


@dataclass(frozen=True, slots=True)
class Step:
    """One batch of a read, as a run sends it."""

    rows: Sequence[Sequence[Any]]  # to send: a lookback job's rows sent before are left out
    read: int  # how many rows the batch read
    cursor: Cursor  # the checkpoint once ``rows`` are sent
    entries: list[tuple[str, float]]  # what ``rows`` add to the ledger
    prune_below: float | None  # ledger entries positioned below this are no longer needed
    start: Cursor | None = None  # the checkpoint before it (a lookback read may end behind it)


class ReadPlan:
    """The read and the mapping of one job's run on an open source, into ``schema``."""

    def __init__(
        self,
        job: Job,
        source: Source,
        schema: Schema,
        *,
        whole: bool = False,
        reopen_after: float = REOPEN_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``schema``: the pinned (or planned, or adopted) one; ``whole``: the whole source
        from the start, into a new dataset (``mode: replace``): no cursor, lookback or drift,
        one query; ``reopen_after``: seconds after which a read is opened again from its last
        batch's cursor (``clock`` measures them)."""
        self.job = job
        self.reopen_after, self.clock = reopen_after, clock
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
        while True:
            opened, reopen = self.clock(), False
            with closing(self._source.batches(bounds, batch_size)) as batches:
                for batch in batches:
                    if ledger is None:
                        yield Step(batch.rows, len(batch.rows), batch.cursor, [], None, cursor)
                        cursor = batch.cursor
                    else:
                        rows, entries = ledger.fresh(batch.rows, width)
                        # A lookback read may end behind the checkpoint: it never moves back.
                        after = later(cursor, batch.cursor)
                        prune = ledger.prune_below(after)
                        yield Step(rows, len(batch.rows), after, entries, prune, cursor)
                        if rows:
                            cursor = after
                    # A full refresh reads in one query: one snapshot of the source.
                    if not self.whole and self.clock() - opened >= self.reopen_after:
                        reopen = True
                        break
            if not reopen:
                return
            bounds = dataclasses.replace(
                bounds,
                after=cursor if ledger is None else None,
                window=(cursor.watermark if cursor else None, ledger.back) if ledger else None,
            )

    def split(self, step: Step, size: int) -> list[Step]:
        """``step`` as batches of at most ``size`` rows, each with the checkpoint once it is
        sent. Without a key a batch ends only where the watermark changes (resuming at
        ``wm > last`` must not skip the rest of a tie), so one value's rows stay together,
        however many they are."""
        rows, width = step.rows, len(self.columns)
        if len(rows) <= size:
            return [step]
        keyed = bool(self.job.source.key)
        lookback = self.job.source.lookback
        parts: list[Step] = []
        start, before = 0, step.start
        while start < len(rows):
            end = _cut(rows, start, size, width, keyed=keyed)
            if end == len(rows):
                cursor, prune = step.cursor, step.prune_below
            else:
                last = rows[end - 1]
                cursor = Cursor(last[width], tuple(last[width + 1 :]))
                if lookback is not None:
                    cursor = later(before, cursor)
                prune = None if lookback is None else Ledger.since(cursor, lookback)
            read = step.read if start == 0 else 0  # the rows read are counted once
            entries = step.entries[start:end] if step.entries else []
            parts.append(Step(rows[start:end], read, cursor, entries, prune, before))
            start, before = end, cursor
        return parts


def _cut(rows: Sequence[Sequence[Any]], start: int, size: int, width: int, *, keyed: bool) -> int:
    """Where the batch from ``start`` ends: ``size`` rows on, or (no key) at the last change
    of watermark within them, else at the first change after them (else at the end)."""
    end = min(start + size, len(rows))
    if keyed or end == len(rows):
        return end
    for i in (*range(end, start, -1), *range(end + 1, len(rows))):
        if rows[i][width] != rows[i - 1][width]:
            return int(i)
    return len(rows)
