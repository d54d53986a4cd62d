"""Exactly-once delivery over Akkio's append-only API, which has no idempotency key.

Per batch: record an intent (cursor range, row count, the dataset's row count before it), send,
then commit the cursor and clear the intent in one store transaction. When an answer is lost
(or an intent is found after a crash) the dataset's ``rows`` count decides: ``before + n`` means
the batch landed, ``before`` means it did not; anything else means someone else writes to the
dataset (or Akkio counts lazily), and the job's ``on_mismatch`` policy decides.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from akkiosync.akkio import AkkioClient
from akkiosync.errors import AkkioError, DeliveryMismatchError
from akkiosync.pacing import RetryPolicy
from akkiosync.state import Intent, Store

logger = logging.getLogger(__name__)
OnMismatch = Literal["fail", "resend"]


class Outcome(enum.Enum):
    """What the dataset's row count says about a batch."""

    LANDED = "landed"
    NOT_LANDED = "not landed"
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """How to read the row count before deciding, and what to do when it fits neither case."""

    on_mismatch: OnMismatch = "fail"
    reads: int = 3  # Akkio may count lazily: read again before concluding "not landed"
    wait: float = 0.5  # seconds before the second read; doubles after each


class Delivery:
    """Sends one job's batches to one dataset, exactly once."""

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
    ) -> None:
        self._store = store
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
        """Settle an intent left by a crash, then learn the dataset's row count (``known_rows``:
        a count just read, which saves asking again when there is no intent)."""
        intent = self._store.pending_intent(self._job)
        if intent is not None and intent.dataset_id != self._dataset_id:
            self._store.clear_intent(self._job)  # a reset pinned another dataset since
            intent = None
        count = known_rows
        if intent is not None:
            outcome, count = self._reconcile(intent)
            self.recovered = outcome
            logger.warning(
                "job %s: a batch of %d rows was in flight when the last run stopped: %s",
                self._job, intent.rows, outcome.value,
            )  # fmt: skip
            if outcome is Outcome.LANDED:
                self._commit(intent)
            else:
                self._store.clear_intent(self._job)  # the rows are read again from the cursor
        if count is None:
            count = self._count()
        expected = self._store.job_state(self._job).rows_expected
        if count != expected:
            logger.warning(
                "job %s: dataset %s has %d rows but this job delivered %d: something else writes "
                "to it (or removed rows), so exactly-once cannot be verified for this dataset",
                self._job, self._dataset_id, count, expected,
            )  # fmt: skip
        self.rows_before = count

    def send(
        self,
        records: Sequence[Mapping[str, object]],
        cursor_before: str | None,
        cursor_after: str,
        *,
        ledger: Sequence[tuple[str, float]] = (),
        prune_below: float | None = None,
    ) -> None:
        """Deliver one batch exactly once and commit its cursor (and, for lookback jobs, its
        ledger entries), or raise."""
        extra = {"entries": list(ledger), "prune_below": prune_below}
        intent = Intent(
            job=self._job,
            dataset_id=self._dataset_id,
            rows=len(records),
            rows_before=self.rows_before,
            cursor_before=cursor_before,
            cursor_after=cursor_after,
            created_at=self._clock(),
            ledger_json=json.dumps(extra) if ledger or prune_below is not None else None,
        )
        self._store.record_intent(intent)
        for attempt in range(1, self._retry.attempts + 1):
            try:
                self._client.add_rows(self._dataset_id, records)
            except AkkioError as exc:
                if not exc.maybe_landed:
                    self._store.clear_intent(self._job)  # provably nothing was stored
                    raise
                logger.warning(
                    "job %s: the answer to a batch of %d rows was lost (%s); reconciling",
                    self._job, intent.rows, exc,
                )  # fmt: skip
                outcome, count = self._reconcile(intent)
                if outcome is Outcome.LANDED:
                    break
                if outcome is Outcome.MISMATCH:  # only reached with on_mismatch: resend
                    intent = _rebase(intent, count, self._clock())
                    self._store.record_intent(intent)
                if attempt == self._retry.attempts:
                    raise
                self._on_retry()
                self._sleep(self._retry.delay(attempt, getattr(exc, "retry_after", None)))
            else:
                break
        self._commit(intent)
        self.rows_before = intent.rows_before + intent.rows

    def _commit(self, intent: Intent) -> None:
        extra = json.loads(intent.ledger_json) if intent.ledger_json else {}
        self._store.commit_batch(
            self._job,
            intent.cursor_after,
            intent.rows,
            self._clock(),
            ledger=[(entry, wm_order) for entry, wm_order in extra.get("entries", [])],
            prune_below=extra.get("prune_below"),
        )

    def _count(self) -> int:
        return self._client.get_dataset(self._dataset_id).rows

    def _reconcile(self, intent: Intent) -> tuple[Outcome, int]:
        """Whether ``intent``'s batch landed, by the row count; applies the mismatch policy."""
        before, after = intent.rows_before, intent.rows_before + intent.rows
        count = self._count()
        for read in range(1, self._policy.reads):
            if count >= after:
                break
            self._sleep(self._policy.wait * 2 ** (read - 1))  # lazy counting: look again
            count = self._count()
        if count == after:
            return Outcome.LANDED, count
        if count == before:
            return Outcome.NOT_LANDED, count
        message = (
            f"job {self._job}: cannot tell whether a batch of {intent.rows} rows reached dataset "
            f"{self._dataset_id}: it has {count} rows, expected {before} (not landed) or {after} "
            "(landed); something else writes to the dataset, or Akkio counts lazily"
        )
        if self._policy.on_mismatch == "fail":
            raise DeliveryMismatchError(
                f"{message}. The job stops here: check the dataset, then either set "
                f"`on_mismatch: resend` (accepts duplicates) or `akkiosync reset {self._job}`"
            )
        logger.error("%s; on_mismatch is resend: sending it again (duplicates possible)", message)
        return Outcome.MISMATCH, count


def _rebase(intent: Intent, count: int, now: dt.datetime) -> Intent:
    """The same batch, now expected on top of ``count`` rows."""
    return dataclasses.replace(intent, rows_before=count, created_at=now)
