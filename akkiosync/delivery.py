"""Exactly-once delivery over Akkio's append-only API, which has no idempotency key.

Per batch: record an intent (cursor range, row count, the dataset's row count before it, when it
was sent), send, then commit the cursor and clear the intent in one store transaction. When an
answer is lost or is an error that does not prove the rows were refused (or an intent is found
after a crash) the dataset's ``rows`` count decides, once it is settled: ``before + n`` means the
batch landed; ``before`` means it did not, but only once it has stayed there for the landing
grace after the request was sent (a server can store rows after the client gave up); anything
else means someone else writes to the dataset, and the job's ``on_mismatch`` policy decides.

The dataset's count is also checked against what the job delivered before the first batch of a
run (``recover``) and after its last (``verify``): a run never reports success over a dataset
whose count it cannot explain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from akkiosync.akkio import AkkioClient, EncodedRows
from akkiosync.errors import AkkioError, AkkioSyncError, DeliveryMismatchError
from akkiosync.pacing import RetryPolicy
from akkiosync.state import Intent, RunCounts, Store

logger = logging.getLogger(__name__)
OnMismatch = Literal["fail", "resend"]
_MIN_PAUSE = 0.01  # seconds: watching a count never becomes a busy loop of requests


class Outcome(enum.Enum):
    """What the dataset's settled row count says about a batch."""

    LANDED = "landed"
    NOT_LANDED = "not landed"
    MISMATCH = "mismatch"
    UNSETTLED = "not landed yet"  # only from a single read: the grace is not over


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """How long to watch the row count before deciding, and what to do when it fits neither."""

    on_mismatch: OnMismatch = "fail"
    # A batch whose count still shows ``before`` this long after its request was sent is taken
    # as not landed. It must outlast the server's own processing of a request the client gave
    # up on: the default is twice the request timeout (see ``Settings.landing_grace``).
    grace: float = 120.0
    wait: float = 0.5  # seconds between the first reads of the count; doubles up to max_wait
    max_wait: float = 5.0


def commit_landed(
    store: Store, intent: Intent, now: dt.datetime, run: RunCounts | None = None
) -> None:
    """Commit the append batch of ``intent``, known to have landed: its cursor, counters and
    (lookback jobs) ledger entries, clearing the intent; with the sending ``run``'s counts."""
    extra = json.loads(intent.ledger_json) if intent.ledger_json else {}
    store.commit_batch(
        intent.job,
        intent.cursor_after,
        intent.rows,
        now,
        ledger=[(entry, wm_order) for entry, wm_order in extra.get("entries", [])],
        prune_below=extra.get("prune_below"),
        run=run,
    )


class Delivery:
    """Sends one job's batches to one dataset, exactly once: to the job's own dataset, or
    (``refresh``) to the new dataset of its full refresh, whose batches and expected count are
    the refresh's (``mode: replace``)."""

    def __init__(
        self,
        store: Store,
        client: AkkioClient,
        *,
        job: str,
        dataset_id: str,
        policy: ReconcilePolicy,
        retry: RetryPolicy,
        clock: Callable[[], dt.datetime],
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[], None] = lambda: None,
        refresh: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Once ``stop`` is set (the daemon shutting down), waiting on the row count ends the
        run, leaving the batch's intent for the next run to settle."""
        self._store = store
        self._stop = stop or threading.Event()
        self._refresh = refresh
        self._client = client
        self._job = job
        self._dataset_id = dataset_id
        self._policy = policy
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._on_retry = on_retry
        self.rows_before = 0  # the dataset's row count before the next batch
        self.recovered: Outcome | None = None

    def recover(self, known_rows: int | None = None) -> None:
        """Settle an intent left by a crash, then check the dataset's row count against what
        the job delivered (``known_rows``: a count just read, which saves asking again when
        there is no intent). Raises ``DeliveryMismatchError`` when they differ, unless the job's
        ``on_mismatch`` is ``resend``."""
        intent = self._store.pending_intent(self._job)
        if intent is not None and intent.dataset_id != self._dataset_id:
            self._store.clear_intent(self._job)  # a reset pinned another dataset since
            intent = None
        count = known_rows
        if intent is not None:
            outcome, count = self._reconcile(intent, intent.created_at)
            self.recovered = outcome
            logger.warning(
                "a batch of %d rows was in flight when the last run stopped: %s",
                intent.rows, outcome.value,
                extra={
                    "event": "recovered", "rows": intent.rows, "outcome": outcome.value,
                    "dataset_id": self._dataset_id,
                },
            )  # fmt: skip
            if outcome is Outcome.LANDED:
                self._commit(intent)
            else:
                self._store.clear_intent(self._job)  # the rows are read again from the cursor
        if count is None:
            count = self._count()
        self._check(count, "before this run's first batch")
        self.rows_before = count

    def verify(self) -> None:
        """After the run's last batch: the dataset's count must be what the job delivered.

        A count below the expected one is read again until it matches or the landing grace
        has passed (Akkio may count lazily); then a difference raises ``DeliveryMismatchError``
        (or, with ``on_mismatch: resend``, is logged)."""
        expected = self._expected()
        count = self._watch(
            lambda count: count < expected,  # lazy counts only lag
            "before its count could be verified; the next run verifies it",
        )
        self._check(count, "after this run's last batch")

    def send(
        self,
        records: Sequence[Mapping[str, object]] | EncodedRows,
        cursor_before: str | None,
        cursor_after: str,
        *,
        ledger: Sequence[tuple[str, float]] = (),
        prune_below: float | None = None,
        run: RunCounts | None = None,
    ) -> None:
        """Deliver one batch exactly once and commit its cursor (and, for lookback jobs, its
        ledger entries; ``run``: the sending run's counts once it is committed), or raise."""
        extra = {"entries": list(ledger), "prune_below": prune_below}
        intent = Intent(
            job=self._job,
            dataset_id=self._dataset_id,
            rows=records.count if isinstance(records, EncodedRows) else len(records),
            rows_before=self.rows_before,
            cursor_before=cursor_before,
            cursor_after=cursor_after,
            created_at=self._clock(),
            ledger_json=json.dumps(extra) if ledger or prune_below is not None else None,
        )
        for attempt in range(1, self._retry.attempts + 1):
            # Recorded afresh before every try: its time is when the grace of this try starts.
            intent = dataclasses.replace(intent, created_at=self._clock())
            self._store.record_intent(intent)
            try:
                self._client.add_rows(self._dataset_id, records)
            except AkkioError as exc:
                if not exc.maybe_landed:
                    self._store.clear_intent(self._job)  # provably nothing was stored
                    raise
                logger.warning(
                    "a batch of %d rows may or may not have landed (%s); reconciling",
                    intent.rows, exc,
                    extra={
                        "event": "reconciling", "rows": intent.rows, "error": str(exc),
                        "dataset_id": self._dataset_id,
                    },
                )  # fmt: skip
                if not exc.retriable:
                    # Refused, yet perhaps stored (a proxy's error after forwarding): one read
                    # tells "landed" at once; otherwise the run fails and the intent stays, for
                    # the next run to settle once the landing grace is over.
                    if self._reconcile(intent, intent.created_at, wait=False)[0] is Outcome.LANDED:
                        break
                    raise
                outcome, count = self._reconcile(intent, intent.created_at)
                if outcome is Outcome.LANDED:
                    break
                if outcome is Outcome.MISMATCH:  # only reached with on_mismatch: resend
                    intent = dataclasses.replace(intent, rows_before=count)
                elif attempt == self._retry.attempts:
                    self._store.clear_intent(self._job)  # settled: it did not land
                    raise
                if attempt == self._retry.attempts:
                    raise
                self._on_retry()
                delay = self._retry.delay(attempt, getattr(exc, "retry_after", None))
                self._pause(delay, f"the batch of {intent.rows} rows is settled by the next run")
            else:
                break
        self._commit(intent, run)
        self.rows_before = intent.rows_before + intent.rows

    def _commit(self, intent: Intent, run: RunCounts | None = None) -> None:
        if self._refresh:
            self._store.commit_refresh_batch(self._job, intent.cursor_after, intent.rows, run=run)
            return
        commit_landed(self._store, intent, self._clock(), run)

    def _watch(
        self,
        still: Callable[[int], bool],
        then: str,
        *,
        since: dt.datetime | None = None,
        first_wait: Callable[[int, float], None] | None = None,
    ) -> int:
        """Read the dataset's row count until ``still(count)`` no longer holds or the landing
        grace, counted from ``since`` (else from now), is over; pauses doubling. ``then``: what
        happens to the batch if the daemon stops meanwhile."""
        waited, pause = 0.0, max(self._policy.wait, _MIN_PAUSE)
        count = self._count()
        while still(count):
            # Time passes at least as fast as this loop sleeps, whatever the clock says.
            elapsed = waited
            if since is not None:
                elapsed = max((self._clock() - since).total_seconds(), waited)
            left = self._policy.grace - elapsed
            if left <= 0:
                break
            if not waited and first_wait is not None:
                first_wait(count, left)
            pause = min(pause, left)
            self._pause(pause, then)
            waited += pause
            pause = min(pause * 2, self._policy.max_wait)
            count = self._count()
        return count

    def _log_settling(self, count: int, left: float) -> None:
        logger.info(
            "dataset %s still has %d rows: watching it for up to %.1fs more "
            "(the landing grace) before taking the batch as not landed",
            self._dataset_id, count, left,
            extra={
                "event": "count_settling", "rows_total": count, "seconds": round(left, 3),
                "dataset_id": self._dataset_id,
            },
        )  # fmt: skip

    def _pause(self, seconds: float, then: str) -> None:
        """Sleep, unless the daemon is shutting down: a landing grace can outlast its patience,
        and the intent left behind lets the next run settle the batch exactly."""
        if self._stop.is_set():
            raise AkkioSyncError(
                f"job {self._job}: shutting down while waiting on dataset {self._dataset_id}: "
                f"{then}"
            )
        self._sleep(seconds)

    def _count(self) -> int:
        return self._client.get_dataset(self._dataset_id).rows

    def _expected(self) -> int:
        """The dataset's row count if the job alone wrote to it."""
        if not self._refresh:
            return self._store.job_state(self._job).rows_expected
        refresh = self._store.refresh(self._job)
        return 0 if refresh is None else refresh.rows_sent  # a new dataset starts empty

    def _check(self, count: int, when: str) -> None:
        """The dataset's count against the job's expected count: equal, or loud."""
        expected = self._expected()
        if count == expected:
            return
        message = (
            f"job {self._job}: dataset {self._dataset_id} has {count} rows {when}, but this job "
            f"delivered {expected}: something else writes to it (or removed rows), or a request "
            "landed later than the landing grace, so exactly-once cannot be verified"
        )
        if self._policy.on_mismatch == "resend":
            logger.warning(
                "%s; on_mismatch is resend: going on", message.removeprefix(f"job {self._job}: "),
                extra={
                    "event": "count_mismatch", "rows_total": count, "rows_expected": expected,
                    "dataset_id": self._dataset_id,
                },
            )  # fmt: skip
            return
        raise DeliveryMismatchError(
            f"{message}. The job stops here: check the dataset, then `akkiosync accept "
            f"{self._job}` if it is right as it is (its count becomes the expected one), or "
            f"`akkiosync reset {self._job}` to start over in a new dataset"
        )

    def _reconcile(
        self, intent: Intent, sent_at: dt.datetime, *, wait: bool = True
    ) -> tuple[Outcome, int]:
        """Whether ``intent``'s batch landed, once the row count is settled: ``before + n``, or
        ``before`` for the whole landing grace after ``sent_at``; applies the mismatch policy.
        ``wait=False`` reads once and answers ``UNSETTLED`` for ``before``."""
        before, after = intent.rows_before, intent.rows_before + intent.rows
        if not wait:
            count = self._count()
            if count == before:
                return Outcome.UNSETTLED, count
        else:
            count = self._watch(
                lambda count: count == before,
                f"the batch of {intent.rows} rows is settled by the next run",
                since=sent_at,
                first_wait=self._log_settling,
            )
            if count == before:  # for the whole grace
                return Outcome.NOT_LANDED, count
        if count == after:
            return Outcome.LANDED, count
        message = (
            f"job {self._job}: cannot tell whether a batch of {intent.rows} rows reached dataset "
            f"{self._dataset_id}: it has {count} rows, expected {before} (not landed) or {after} "
            "(landed); something else writes to the dataset"
        )
        if self._policy.on_mismatch == "fail":
            raise DeliveryMismatchError(
                f"{message}. The job stops here: check the dataset, then either set "
                f"`on_mismatch: resend` (accepts duplicates) or `akkiosync reset {self._job}`"
            )
        logger.error(
            "%s; on_mismatch is resend: sending it again (duplicates possible)",
            message.removeprefix(f"job {self._job}: "),
            extra={
                "event": "reconcile_mismatch", "rows": intent.rows, "rows_total": count,
                "dataset_id": self._dataset_id,
            },
        )  # fmt: skip
        return Outcome.MISMATCH, count
