"""A full refresh (``mode: replace``): the whole source into a new dataset of the same name,
which replaces the job's dataset only once every row has landed and its count is verified.

Every step is recorded in the store before it is taken (``state.Refreshes``): a run killed at any
point leaves the previous dataset whole and the job pointing at it, and the next run finishes or
undoes what was left. It deletes a partial dataset (found by name when its creation's answer was
lost), or the previous one after a switch; a delete answered 404 was done already. A refresh that
fails or is stopped deletes its partial dataset at once. A refresh is never resumed: a row updated
between two reads would move past the cursor and land twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence

from akkiosync.adopt import planned_schema
from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.cursor import encode_cursor
from akkiosync.delivery import Delivery
from akkiosync.errors import (
    AkkioError,
    AkkioSyncError,
    DatasetExistsError,
    DatasetNotFoundError,
    DeliveryMismatchError,
)
from akkiosync.identity import CursorColumns
from akkiosync.inferred import check_inferred_types
from akkiosync.mapping import Schema, SourceColumn
from akkiosync.pipeline import Prepared, send_all
from akkiosync.progress import RunProgress
from akkiosync.readplan import ReadPlan
from akkiosync.source import Source
from akkiosync.state import Refresh, Store

logger = logging.getLogger(__name__)
_MIN_PAUSE = 0.01  # seconds: looking for a lost creation never becomes a busy loop
_MAX_PAUSE = 5.0


class Refresher:
    """Runs the full refreshes of jobs against one store and one Akkio client."""

    def __init__(
        self,
        store: Store,
        client: AkkioClient,
        *,
        delivery: Callable[[str], Delivery],
        clock: Callable[[], dt.datetime],
        sleep: Callable[[float], None],
        stop: threading.Event,
        grace: float,
    ) -> None:
        """``delivery`` makes the exactly-once delivery of a refresh's batches to a dataset id;
        ``grace``: how long after a create request its dataset may still appear."""
        self._store = store
        self._client = client
        self._delivery = delivery
        self._clock = clock
        self._sleep = sleep
        self._stop = stop
        self._grace = grace

    def run(
        self,
        job: Job,
        run_id: int,
        source: Source,
        columns: Sequence[SourceColumn],
        progress: RunProgress,
        read_at: dt.datetime,
    ) -> None:
        """Refresh ``job``'s dataset from the whole source (``read_at``: the run's time, for
        ``columns.synced_at``), or raise with the previous dataset still the job's."""
        self.settle(job.name)
        state = self._store.job_state(job.name)
        progress.dataset_id = state.dataset_id
        schema = planned_schema(job, columns)  # planned afresh: each refresh is a new dataset
        name = job.target.dataset
        assert name is not None  # noqa: S101 - config: mode replace needs target.dataset
        existing = [d.id for d in self._client.list_datasets() if d.name == name]
        if state.dataset_id is None and existing and not state.new_dataset_ok:
            raise DatasetExistsError(
                f"job {job.name}: dataset {name!r} already exists ({', '.join(existing)}) but "
                "the checkpoint store has no record of this job writing to it (a lost, emptied "
                "or new state file?); a refresh never deletes a dataset it did not make. Delete "
                f"it on Akkio first to have it replaced; or `akkiosync sync {job.name} "
                "--new-dataset` to create the job's dataset beside it; or give target.dataset "
                "another name"
            )
        previous = state.dataset_id
        if previous is not None and state.adopted:  # never delete what the job did not make
            logger.warning(
                "dataset %s (%s) existed before the job adopted it: the refresh leaves it in "
                "place, and writes a new dataset of the same name",
                state.dataset_name, previous,
                extra={"event": "adopted_dataset_kept", "dataset_id": previous},
            )  # fmt: skip
            previous = None
        self._store.begin_refresh(job.name, name, previous, existing, self._clock())
        try:
            dataset_id = self._client.create_dataset(name).id
        except AkkioError as exc:
            if exc.maybe_landed:
                self._abandon(job.name, "the answer to its creation was lost")
            else:
                self._store.end_refresh(job.name)  # provably nothing was created
            raise
        try:
            self._store.refresh_created(job.name, dataset_id)
            logger.info(
                "refreshing into new dataset %s", dataset_id,
                extra={"event": "refresh_started", "dataset_id": dataset_id},
            )  # fmt: skip
            whole = self._fill(job, run_id, source, schema, dataset_id, progress, read_at)
        except Exception:
            self._abandon(job.name, "the run failed")
            raise
        if not whole:
            logger.info("stops early: shutting down", extra={"event": "run_stopping"})
            self._abandon(job.name, "the run stopped early")
            return
        self._switch(job, run_id, columns, schema, progress)

    def settle(self, job: str) -> None:
        """Finish or undo the refresh a killed run left: delete its partial dataset, or the
        dataset it replaced; each deletion, once done, is forgotten in the store."""
        refresh = self._store.refresh(job)
        if refresh is None:
            return
        if refresh.phase == "deleting":
            if refresh.previous_id is not None:
                self._delete(job, refresh.previous_id, "the dataset its last refresh replaced")
            self._store.end_refresh(job)
            return
        partial, settled = self._partial(job, refresh, wait=True)
        if partial is not None:
            self._delete(job, partial, "the partial dataset of a refresh that did not finish")
        if settled:
            self._store.end_refresh(job)

    def _fill(
        self,
        job: Job,
        run_id: int,
        source: Source,
        schema: Schema,
        dataset_id: str,
        progress: RunProgress,
        read_at: dt.datetime,
    ) -> bool:
        """Send every row to the new dataset and verify its count; False if stopped first."""
        delivery = self._delivery(dataset_id)
        delivery.recover()  # a new dataset: empty, and no batch of it pending
        plan = ReadPlan(job, source, schema, whole=True)
        mapper = plan.mapper(read_at)
        progress.nulled = mapper.nulled  # counted as batches are mapped
        sent: list[str | None] = [None]  # the cursor of the last batch sent

        def send(batch: Prepared) -> None:
            rows, after = batch.body.count, encode_cursor(batch.step.cursor)
            delivery.send(batch.body, sent[0], after, run=progress.counts(run_id, rows))
            sent[0] = after
            progress.rows_sent += rows
            progress.batches += 1
            logger.info(
                "refresh batch %d: %d rows sent (cursor %s)",
                progress.batches, rows, batch.step.cursor.describe(),
                extra={
                    "event": "batch_sent", "batch": progress.batches, "rows": rows,
                    "rows_total": progress.rows_sent, "cursor": batch.step.cursor.describe(),
                    "dataset_id": dataset_id,
                },
            )  # fmt: skip

        if not send_all(
            plan, mapper, None, send,
            store=self._store, clock=self._clock, progress=progress, stop=self._stop,
        ):  # fmt: skip
            return False
        delivery.verify()  # every row is there, and nothing else: only then the switch
        return True

    def _switch(
        self,
        job: Job,
        run_id: int,
        columns: Sequence[SourceColumn],
        schema: Schema,
        progress: RunProgress,
    ) -> None:
        """Point the job at the new dataset (one store transaction), then delete the old one."""
        identity = CursorColumns.of(job.source.watermark, job.source.key, columns).to_json()
        refresh = self._store.switch_refresh(
            job.name, schema.to_json(), identity, batches=progress.batches, now=self._clock()
        )
        progress.dataset_id, progress.cursor_json = refresh.dataset_id, refresh.cursor_json
        # Now the job's dataset (the switch forgot the previous one's warnings): its types.
        check_inferred_types(job.name, refresh.dataset_id, self._store, self._client, self._clock)
        logger.info(
            "dataset %s (%s) with %d rows replaces %s",
            refresh.dataset_name, refresh.dataset_id, refresh.rows_sent,
            refresh.previous_id or "no dataset (the job's first)",
            extra={
                "event": "refresh_switched", "dataset_id": refresh.dataset_id,
                "rows_total": refresh.rows_sent, "previous_dataset_id": refresh.previous_id,
            },
        )  # fmt: skip
        if refresh.previous_id is not None:
            self._delete(job.name, refresh.previous_id, "the dataset it replaced")
            self._store.end_refresh(job.name)

    def _abandon(self, job: str, why: str) -> None:
        """Delete the partial dataset of this run's refresh now; if that fails, the next run
        does it (never raises: the run's own error is the one to report)."""
        try:
            refresh = self._store.refresh(job)
            if refresh is None or refresh.phase == "deleting":
                return
            partial, settled = self._partial(job, refresh, wait=False)
            if partial is not None:
                self._delete(job, partial, f"the partial dataset of this refresh ({why})")
            if settled:
                self._store.end_refresh(job)
        except AkkioSyncError as exc:
            logger.warning(
                "the refresh's partial dataset could not be deleted now (%s); the next run "
                "deletes it",
                exc, extra={"event": "refresh_cleanup_failed", "job": job, "error": str(exc)},
            )  # fmt: skip

    def _partial(self, job: str, refresh: Refresh, *, wait: bool) -> tuple[str | None, bool]:
        """The refresh's dataset, and whether that is settled. While ``creating``, it is the one
        dataset of its name that was not there before the create request; none is settled only
        once the landing grace after that request is over (``wait``: watch until then)."""
        if refresh.phase == "filling":
            return refresh.dataset_id, True
        creation = self._store.pending_creation(job)
        if creation is None:  # the append path created (and pinned) since: nothing of ours
            return None, True
        known = set(creation.known_ids)
        waited, pause = 0.0, _MIN_PAUSE
        while True:
            listed = self._client.list_datasets()
            new = [d.id for d in listed if d.name == refresh.dataset_name and d.id not in known]
            if len(new) > 1:
                raise DeliveryMismatchError(
                    f"job {job}: several datasets named {refresh.dataset_name!r} appeared while "
                    f"its refresh's creation was unconfirmed ({', '.join(new)}); delete the "
                    f"job's own on Akkio, then `akkiosync reset {job}`"
                )
            if new:
                return new[0], True
            elapsed = max((self._clock() - creation.created_at).total_seconds(), waited)
            if elapsed >= self._grace:
                return None, True
            if not wait:
                return None, False
            pause = min(pause, self._grace - elapsed)
            self._sleep(pause)
            waited += pause
            pause = min(pause * 2, _MAX_PAUSE)

    def _delete(self, job: str, dataset_id: str, what: str) -> None:
        """Delete a dataset; one already gone counts as deleted (a lost answer's retry)."""
        try:
            self._client.delete_dataset(dataset_id)
        except DatasetNotFoundError:
            logger.info(
                "%s, %s, was deleted already", what, dataset_id,
                extra={"event": "dataset_deleted", "job": job, "dataset_id": dataset_id},
            )  # fmt: skip
        else:
            logger.info(
                "deleted %s, %s", what, dataset_id,
                extra={"event": "dataset_deleted", "job": job, "dataset_id": dataset_id},
            )  # fmt: skip
