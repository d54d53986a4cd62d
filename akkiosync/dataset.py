"""The dataset a job writes to: created (or adopted) once, pinned with its schema, checked.

An existing dataset (``target.dataset_id``, or ``adopt``) is written with its own field names
and types (``adopt``); a new one gets the schema planned from the source.

Creating a dataset is itself a request whose answer can be lost. Before sending it the job notes
which datasets of that name already exist; if the answer never arrives, the next run adopts the
one new dataset of that name instead of creating a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from akkiosync.adopt import (
    adopted_schema,
    check_existing_rows,
    check_sole_writer,
    describe,
    existing_dataset,
    mapping_lines,
    normalised,
    planned_schema,
)
from akkiosync.akkio import AkkioClient
from akkiosync.config import ColumnsSpec, Job
from akkiosync.errors import (
    DatasetExistsError,
    DatasetNotFoundError,
    DeliveryMismatchError,
)
from akkiosync.mapping import SYNCED_AT, Schema, SourceColumn
from akkiosync.state import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Drift:
    """How the job file's ``columns:`` options now differ from the dataset's pinned schema."""

    withheld: tuple[str, ...] = ()  # pinned fields whose column the job no longer sends: null
    differences: tuple[str, ...] = ()  # anything else; the pinned schema wins
    notices: tuple[str, ...] = ()  # one line per withheld field

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every line to warn with, withheld fields first."""
        return self.notices + self.differences


def schema_drift(spec: ColumnsSpec, pinned: Schema, *, job: str) -> Drift:
    """Compare the job's current ``columns:`` options with the schema pinned at its first run.
    A column the job now leaves out is withheld (its field stays, as null: Akkio wants the
    same keys in every row); a new rename, type or included column cannot change the dataset."""
    kept = (
        "the pinned schema is kept (the dataset's fields were fixed by its first rows); "
        f"`akkiosync reset {job}` to re-plan"
    )
    withheld: list[str] = []
    notices: list[str] = []
    differences: list[str] = []
    for field in pinned.fields:
        column = field.source
        if column == SYNCED_AT:  # filled by the run, not by a column
            if spec.synced_at is None:
                withheld.append(field.name)
                notices.append(
                    f"columns.synced_at is no longer set but field {field.name} is in the "
                    f"dataset's schema: sent as null; `akkiosync reset {job}` to drop the field"
                )
            elif spec.synced_at != field.name:
                differences.append(
                    f"columns.synced_at names field {spec.synced_at}, but the dataset's schema "
                    f"has it as field {field.name}: {kept}"
                )
            continue
        if column in spec.exclude or (spec.include is not None and column not in spec.include):
            why = (
                "excluded by the job file"
                if column in spec.exclude
                else "not in the job file's columns.include"
            )
            withheld.append(field.name)
            notices.append(
                f"column {column} is {why} but field {field.name} is in the dataset's schema: "
                f"sent as null; `akkiosync reset {job}` to drop the field"
            )
            continue
        name = spec.rename.get(column, column)
        # An existing dataset's field may match its column by normalised name, no rename
        # needed (`Customer ID` fed by customer_id): only a rename the job file names differs.
        if name != field.name and (
            column in spec.rename or normalised(column) != normalised(field.name)
        ):
            differences.append(
                f"column {column} becomes field {name} in the job file, but the dataset's "
                f"schema has it as field {field.name}: {kept}"
            )
        wanted = spec.types.get(column)
        if wanted is not None and wanted != field.type:
            differences.append(
                f"column {column} has type {wanted} in the job file's columns.types, but "
                f"field {field.name} is pinned as {field.type}: {kept}"
            )
    pinned_columns = {f.source for f in pinned.fields}
    differences.extend(
        f"column {column} is in the job file's columns.include, but the dataset's schema has "
        f"no field for it, so it is not sent; `akkiosync reset {job}` to re-plan"
        for column in spec.include or ()
        # unsent: an adopted dataset had no field for it, as its pinning warned
        if column not in pinned_columns and column not in spec.exclude + pinned.unsent
    )
    if spec.synced_at is not None and SYNCED_AT not in pinned_columns:
        differences.append(
            f"columns.synced_at: field {spec.synced_at} is not in the dataset's schema (set "
            f"after its first run), so it is not sent; `akkiosync reset {job}` to re-plan"
        )
    return Drift(tuple(withheld), tuple(differences), tuple(notices))


def pinned_dataset(
    job: Job,
    columns: Sequence[SourceColumn],
    store: Store,
    client: AkkioClient,
    clock: Callable[[], datetime],
) -> tuple[str, Schema, int | None]:
    """The job's dataset id, schema and (when this already asked Akkio) its row count; on the
    first run, create or adopt and pin them."""
    state = store.job_state(job.name)
    if state.dataset_id is not None and state.schema_json is not None:
        wanted = job.target.dataset_id or job.target.dataset
        if wanted not in (state.dataset_id, state.dataset_name):
            logger.warning(
                "the target changed to %s but the job stays pinned to dataset %s (%s); run "
                "`akkiosync reset %s` to switch",
                wanted, state.dataset_name, state.dataset_id, job.name,
                extra={"event": "target_changed", "dataset_id": state.dataset_id},
            )  # fmt: skip
        try:
            info = client.get_dataset(state.dataset_id)
        except DatasetNotFoundError:
            raise DatasetNotFoundError(
                f"dataset {state.dataset_name} ({state.dataset_id}) that job {job.name} writes "
                f"to no longer exists on Akkio; `akkiosync reset {job.name}` starts over with a "
                "new dataset"
            ) from None
        return state.dataset_id, Schema.from_json(state.schema_json), info.rows

    rows_at_pin: int | None = None
    existing = existing_dataset(job, client)  # target.dataset_id, or adopt: true
    if existing is not None:
        check_sole_writer(job.name, existing.id, store)
        adoption = adopted_schema(job, columns, existing)  # its fields, their names and types
        check_existing_rows(job, existing)
        schema = adoption.schema
        logger.info(
            "writes into %s: %s", describe(existing), "; ".join(mapping_lines(schema)),
            extra={"event": "dataset_adopted", "dataset_id": existing.id},
        )  # fmt: skip
        for warning in adoption.warnings:  # said once: later runs follow the pinned schema
            logger.warning("%s", warning, extra={"event": "adoption_warning"})
        dataset_id, name, rows_at_pin = existing.id, existing.name, existing.rows
    else:
        assert job.target.dataset is not None  # noqa: S101 - config requires one of the two
        schema = planned_schema(job, columns)
        dataset_id, name = _create(job.name, job.target.dataset, store, client, clock)
    store.pin_dataset(
        job.name,
        dataset_id,
        name,
        schema.to_json(),
        clock(),
        rows_at_pin=rows_at_pin or 0,
        adopted=existing is not None,
    )
    return dataset_id, schema, rows_at_pin


def _create(
    job: str, name: str, store: Store, client: AkkioClient, clock: Callable[[], datetime]
) -> tuple[str, str]:
    pending = store.pending_creation(job)
    existing = [d.id for d in client.list_datasets() if d.name == name]
    known: tuple[str, ...] = ()
    if pending is not None and pending.dataset_name == name:
        new = [i for i in existing if i not in pending.known_ids]
        if len(new) == 1:
            logger.warning(
                "adopting dataset %s (%s), created by a run whose answer was lost", name, new[0],
                extra={"event": "dataset_creation_recovered", "job": job, "dataset_id": new[0]},
            )  # fmt: skip
            return new[0], name
        if len(new) > 1:
            raise DeliveryMismatchError(
                f"job {job}: several datasets named {name!r} appeared while its creation was "
                f"unconfirmed ({', '.join(new)}); set target.dataset_id to the right one"
            )
        known = pending.known_ids  # they were there, and allowed, when it was first tried
    taken = [i for i in existing if i not in known]
    if taken and not store.job_state(job).new_dataset_ok:
        raise DatasetExistsError(
            f"job {job}: dataset {name!r} already exists ({', '.join(taken)}) but the checkpoint "
            "store has no record of this job writing to it (a lost, emptied or new state "
            "file?), and creating another would send every row again beside it. To write into "
            f"it: add `adopt: true` under target (or replace target.dataset with `dataset_id: "
            f"{taken[0]}`), and if it holds rows, `existing_rows: append` with "
            "source.initial_watermark past the rows it already holds (else they are sent "
            f"again). To create a new dataset of the same name anyway: `akkiosync sync {job} "
            "--new-dataset`, or give target.dataset another name"
        )
    store.record_creation(job, name, existing, clock())
    ref = client.create_dataset(name)
    logger.info(
        "created dataset %s (%s)", ref.name, ref.id,
        extra={"event": "dataset_created", "job": job, "dataset_id": ref.id},
    )  # fmt: skip
    return ref.id, ref.name
