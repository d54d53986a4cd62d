"""Reading ahead: the next batches are read, mapped and encoded in a thread of their own while
the previous one is in flight, so that the database, this process and Akkio work at the same
time instead of taking turns.

Only the reading thread touches the source's connection; only the sending thread talks to
Akkio and commits. So batches are still sent one at a time, in order, each committed before
the next one's intent is recorded: the exactly-once protocol (``delivery``) is unchanged. At
most ``DEPTH`` prepared batches wait, so memory stays flat whatever the table's size.

Batches are bounded by rows (``batch_size``) and by bytes (``batch_bytes``): a batch whose
encoded rows are over ``batch_bytes`` is split before it is sent, and the rows per batch are
lowered for the rest of the run. A ``413`` from the server splits the batch it refused and
halves the rows per batch; that limit is kept in the store (see ``BatchSizer.remembered``).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from akkiosync.akkio import EncodedRows, encode_rows
from akkiosync.config import Job
from akkiosync.cursor import Cursor
from akkiosync.errors import PayloadTooLargeError
from akkiosync.mapping import RecordMapper
from akkiosync.progress import RunProgress
from akkiosync.readplan import ReadPlan, Step
from akkiosync.state import Store

logger = logging.getLogger(__name__)
DEPTH = 2  # prepared batches waiting to be sent, at most
_FIT = 0.9  # of batch_bytes a batch aims at after a split: rows differ in width
T = TypeVar("T")


class BatchSizer:
    """How many rows the next batch may hold: ``batch_size``, or fewer once ``batch_bytes``
    or a ``413`` said so. Shared by the reading and the sending thread."""

    def __init__(self, batch_size: int, batch_bytes: int, refused: int | None = None) -> None:
        """``refused``: the rows per batch a server's 413 led to before (remembered)."""
        self.batch_bytes = batch_bytes
        self.rows = min(batch_size, refused or batch_size)
        self.remembered = refused  # the limit a 413 taught, kept across runs
        self._lock = threading.Lock()

    def too_big(self, body: EncodedRows) -> bool:
        """Whether ``body`` is over ``batch_bytes`` and could be smaller (more than one row)."""
        return body.size > self.batch_bytes and body.count > 1

    def fit(self, body: EncodedRows) -> int:
        """Lower the rows per batch to what fits ``batch_bytes`` at ``body``'s bytes per row."""
        fitting = max(1, int(body.count * self.batch_bytes * _FIT / body.size))
        with self._lock:
            self.rows = min(self.rows, fitting)
            return self.rows

    def refused(self, rows: int) -> int | None:
        """After a 413 for a batch of ``rows``: half as many per batch from now on (None when
        there is no fewer than one)."""
        half = rows // 2
        if half < 1:
            return None
        with self._lock:
            self.rows = min(self.rows, half)
            self.remembered = self.rows
            return self.rows


def sizer_for(store: Store, job: Job) -> BatchSizer:
    """``job``'s sizer: its batch_size, or what a 413 taught under the same batch_size and
    batch_bytes (once either is edited, the job file's numbers hold again)."""
    text = store.job_state(job.name).batch_limit_json
    limit = json.loads(text) if text else {}
    same = (limit.get("batch_size"), limit.get("batch_bytes")) == (job.batch_size, job.batch_bytes)
    return BatchSizer(job.batch_size, job.batch_bytes, limit.get("rows") if same else None)


def remember(store: Store, job: Job, sizer: BatchSizer, now: dt.datetime) -> None:
    """Keep the rows per batch a 413 taught ``job``, with the numbers it was learned under."""
    limit = {"rows": sizer.remembered, "batch_size": job.batch_size, "batch_bytes": job.batch_bytes}
    store.set_batch_limit(job.name, json.dumps(limit), now)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch ready to send: its step (rows kept, to split it after a 413) and its body."""

    step: Step
    body: EncodedRows


class Preparer:
    """Maps and encodes steps into batches that fit the sizer; thread-safe (the mapper's
    counters are shared between the reading thread and a split after a 413)."""

    def __init__(self, plan: ReadPlan, mapper: RecordMapper, sizer: BatchSizer) -> None:
        self._plan, self._mapper, self.sizer = plan, mapper, sizer
        self._lock = threading.Lock()

    def prepare(self, step: Step) -> Iterator[Prepared]:
        """``step``'s rows as batches within the sizer's rows and bytes (a step with no rows:
        one empty batch, which still counts its rows read)."""
        if not step.rows:
            yield Prepared(step, encode_rows([]))
            return
        for part in self._plan.split(step, self.sizer.rows):
            yield from self._fitted(part)

    def _fitted(self, part: Step) -> Iterator[Prepared]:
        # Never yield holding the lock: the sending thread may need it while this one waits.
        smaller: list[Step] = []
        with self._lock:
            nulled = dict(self._mapper.nulled)
            body = encode_rows(self._mapper.records(part.rows))
            if self.sizer.too_big(body):
                # One watermark value's rows, which no batch boundary splits, stay one batch.
                smaller = self._plan.split(part, self.sizer.fit(body))
            if len(smaller) > 1:
                self._mapper.nulled.clear()  # mapped again, in parts: count its values once
                self._mapper.nulled.update(nulled)
        if len(smaller) <= 1:
            yield Prepared(part, body)
            return
        logger.info(
            "a batch of %d rows is %d bytes, over batch_bytes (%d): sending %d rows per batch",
            body.count, body.size, self.sizer.batch_bytes, self.sizer.rows,
            extra={"event": "batch_split", "rows": body.count, "bytes": body.size},
        )  # fmt: skip
        for piece in smaller:
            yield from self._fitted(piece)

    def refit(self, batch: Prepared) -> list[Prepared]:
        """``batch`` as batches of the sizer's rows now: a batch prepared ahead, before a 413
        lowered them, is split before it is sent, not refused as well."""
        if batch.body.count <= self.sizer.rows:
            return [batch]
        parts = self._plan.split(batch.step, self.sizer.rows)
        return [batch] if len(parts) == 1 else [p for part in parts for p in self._fitted(part)]

    def after_refusal(self, batch: Prepared, error: PayloadTooLargeError) -> list[Prepared]:
        """The batches to send instead of one the server refused as too large (413), at half
        as many rows; ``error`` again when it cannot be split."""
        rows = self.sizer.refused(batch.body.count)
        parts = [] if rows is None else self._plan.split(batch.step, rows)
        if len(parts) < 2:
            raise PayloadTooLargeError(
                f"{error}; the batch of {batch.body.count} row(s) cannot be split further "
                "(a job without a key keeps each watermark value's rows in one batch): the "
                "server refuses rows this wide, or this many with one watermark value",
                status_code=error.status_code,
            ) from None
        logger.warning(
            "the server refused a batch of %d rows (%d bytes) as too large: sending %d rows "
            "per batch from now on (kept for the job until batch_size or batch_bytes changes)",
            batch.body.count, batch.body.size, rows,
            extra={"event": "batch_refused", "rows": batch.body.count, "bytes": batch.body.size},
        )  # fmt: skip
        return [p for part in parts for p in self._fitted(part)]


def send_all(
    plan: ReadPlan,
    mapper: RecordMapper,
    cursor: Cursor | None,
    send: Callable[[Prepared], None],
    *,
    store: Store,
    clock: Callable[[], dt.datetime],
    progress: RunProgress,
    stop: threading.Event,
) -> bool:
    """Send the batches of ``plan``'s read from ``cursor``, read and prepared ahead, one at a
    time and in order (``send`` delivers and commits one); after a 413 the same rows go in
    smaller batches, and the job keeps the smaller size in ``store``. The rows read are
    counted in ``progress``. False when ``stop`` ended it early, once the batch in flight was
    committed."""
    job = plan.job
    preparer = Preparer(plan, mapper, sizer_for(store, job))

    def produce() -> Generator[Prepared, None, None]:
        for step in plan.steps(store, cursor, job.batch_size):
            yield from preparer.prepare(step)

    def learned() -> None:
        remember(store, job, preparer.sizer, clock())

    with ReadAhead(produce) as ahead:
        for batch in ahead:
            progress.rows_read += batch.step.read
            if batch.body.count:  # else all sent before: nothing to deliver or move
                _deliver(batch, preparer, send, learned)
            if stop.is_set():
                return False
    return True


def _deliver(
    batch: Prepared,
    preparer: Preparer,
    send: Callable[[Prepared], None],
    learned: Callable[[], None],
) -> None:
    for fitted in preparer.refit(batch):
        try:
            send(fitted)
        except PayloadTooLargeError as exc:
            parts = preparer.after_refusal(fitted, exc)
            learned()
            for part in parts:
                _deliver(part, preparer, send, learned)


class ReadAhead(Generic[T]):
    """Iterates over ``produce()``'s items, produced in a thread of their own up to ``depth``
    ahead. An exception of the producer is raised where its item would have come, after every
    item before it. ``close`` (or leaving the with-block) stops the producer and waits for it:
    the producer's iterator is closed in its own thread, so a database cursor is closed by the
    thread that used it."""

    def __init__(
        self, produce: Callable[[], Generator[T, None, None]], *, depth: int = DEPTH
    ) -> None:
        if depth < 1:  # the producer could never hand over an item
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._produce = produce
        self._depth = depth
        self._items: collections.deque[tuple[T | None, BaseException | None, bool]] = (
            collections.deque()
        )
        self._ready = threading.Condition()
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="akkiosync-read", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._items))
                item, error, done = self._items.popleft()
                self._ready.notify_all()
            if error is not None:
                raise error
            if done:
                return
            yield item  # type: ignore[misc] # only the end and errors come without an item

    def close(self) -> None:
        """Stop producing and wait for the producer to let go of its iterator."""
        with self._ready:
            self._cancelled = True
            self._ready.notify_all()
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        items: Generator[T, None, None] | None = None
        try:
            items = self._produce()
            for item in items:
                if not self._put((item, None, False)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread to raise
            self._put((None, exc, False))
            return
        finally:
            if items is not None:
                items.close()  # in this thread: the one that used the source's connection
        self._put((None, None, True))

    def _put(self, entry: tuple[T | None, BaseException | None, bool]) -> bool:
        with self._ready:
            self._ready.wait_for(lambda: self._cancelled or len(self._items) < self._depth)
            if self._cancelled:
                return False
            self._items.append(entry)
            self._ready.notify_all()
            return True
