"""Writing into a dataset that exists: its own fields decide the schema.

A dataset made by hand or from a CSV upload has field names of its own (``Customer ID``,
``Order Total``) and types Akkio gave them. Each field is fed by one source column: the one
``columns.rename`` names it with, else the column of exactly its name, else the one whose name
is the same ignoring case, spaces, ``_`` and ``-``. Values are converted to the field's type.
A field no column feeds stops the job before anything is sent (Akkio wants every field in every
row); columns the dataset has no field for are not sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from akkiosync.akkio import AkkioClient, DatasetInfo
from akkiosync.config import Job
from akkiosync.errors import (
    AkkioSyncError,
    ConfigError,
    DatasetExistsError,
    DatasetNotFoundError,
    SchemaError,
)
from akkiosync.mapping import (
    FIELD_TYPES,
    SYNCED_AT,
    DatasetField,
    FieldType,
    Schema,
    SourceColumn,
    plan_schema,
)
from akkiosync.state import Store

_IGNORED = re.compile(r"[\s_\-]+")


def akkio_field_type(kind: str) -> FieldType:
    """Our type for a field Akkio describes as ``kind``; what we do not know is a string."""
    kind = kind.strip().lower()
    if kind == "number":
        return "float"
    return cast(FieldType, kind) if kind in FIELD_TYPES else "string"


def normalised(name: str) -> str:
    """A name with case, spaces, ``_`` and ``-`` ignored: ``Customer ID`` ~ ``customer_id``."""
    return _IGNORED.sub("", name).casefold()


@dataclass(frozen=True, slots=True)
class Adoption:
    """How a job writes into an existing dataset: the schema (the dataset's own field names and
    types, and the columns left unsent), and what to warn of once, when it is pinned."""

    dataset: DatasetInfo
    schema: Schema
    warnings: tuple[str, ...] = ()


def existing_dataset(job: Job, client: AkkioClient) -> DatasetInfo | None:
    """The existing dataset the job writes into (``target.dataset_id``, or ``target.dataset``
    with ``adopt: true``); ``None`` for a job that creates its own."""
    target = job.target
    if target.dataset_id is not None:
        return client.get_dataset(target.dataset_id)
    if not target.adopt:
        return None
    ids = [d.id for d in client.list_datasets() if d.name == target.dataset]
    if not ids:
        raise DatasetNotFoundError(
            f"job {job.name}: no dataset named {target.dataset!r} to write into (target.adopt: "
            "true); check the name, or drop adopt to let the job create the dataset"
        )
    if len(ids) > 1:
        raise ConfigError(
            f"job {job.name}: {len(ids)} datasets are named {target.dataset!r} "
            f"({', '.join(ids)}); set target.dataset_id to the one to write into"
        )
    return client.get_dataset(ids[0])


def planned_schema(job: Job, columns: Sequence[SourceColumn]) -> Schema:
    """The schema a new dataset of this job would get."""
    spec = job.columns
    return plan_schema(
        columns,
        include=spec.include,
        exclude=spec.exclude,
        rename=spec.rename,
        types=spec.types,
        synced_at=spec.synced_at,
    )


def adopted_schema(job: Job, columns: Sequence[SourceColumn], info: DatasetInfo) -> Adoption:
    """Match the source columns to the dataset's fields (see the module); ``SchemaError`` when
    a field has no column or a match is ambiguous. A dataset without fields yet is planned
    from the source, as a new one would be."""
    spec = job.columns
    # As a new dataset's; it also checks that the columns options name real columns.
    planned = planned_schema(job, columns)
    if not info.fields:
        return Adoption(info, planned)
    where = f"dataset {info.name} ({info.id})"
    names = [f.name for f in info.fields]
    fed: dict[str, DatasetField] = {}  # dataset field -> the planned column feeding it
    named = [f for f in planned.fields if f.source in spec.rename or f.source == SYNCED_AT]
    free = [f for f in planned.fields if f not in named]
    for column in named:  # the job file names their field: it must be there
        name = _field_named(column.name, names)
        option = _option(column)
        if name is None:
            raise SchemaError(
                f"job {job.name}: {option}: {column.name!r}, but {where} has no field of that "
                f"name (its fields: {', '.join(names)})"
            )
        if name in fed:
            raise SchemaError(
                f"job {job.name}: {_option(fed[name])} and {option} both name field {name!r}"
            )
        fed[name] = column
    for key in (_exact, normalised):  # every exact match first, then the normalised ones
        for name in [n for n in names if n not in fed]:
            matches = [c for c in free if key(c.name) == key(name)]
            if len(matches) > 1:
                raise SchemaError(
                    f"job {job.name}: columns {', '.join(c.source for c in matches)} all match "
                    f"field {name!r} of {where}; choose one with columns.rename: "
                    f'{{{matches[0].source}: "{name}"}}'
                )
            if matches:
                fed[name] = matches[0]
                free.remove(matches[0])
    missing = [n for n in names if n not in fed]
    if missing:
        raise SchemaError(_missing(job, where, missing, free, columns, planned))
    fields = tuple(
        DatasetField(f.name, fed[f.name].source, akkio_field_type(f.type)) for f in info.fields
    )
    unsent = tuple(c.source for c in free)
    warnings = [
        f"columns.types: {f.source} is sent as {f.type} all the same: field {f.name!r} of "
        f"{where} is {f.type}"
        for f in fields
        if spec.types.get(f.source, f.type) != f.type
    ]
    if unsent:
        warnings.append(
            f"source column(s) {', '.join(unsent)} have no field in {where} and are not sent"
        )
    return Adoption(info, Schema(fields, unsent), tuple(warnings))


def check_existing_rows(job: Job, info: DatasetInfo) -> None:
    """Refuse to send a whole table after the rows a dataset already holds, unless the job
    says so (``target.existing_rows: append``)."""
    if info.rows and job.target.existing_rows == "fail":
        raise DatasetExistsError(
            f"job {job.name}: dataset {info.name} ({info.id}) already holds {_rows(info.rows)}; "
            "the job would add every source row after them. To do that deliberately, set "
            "target.existing_rows: append (with source.initial_watermark to skip the rows it "
            "already has); else give the job a dataset of its own"
        )


def check_sole_writer(job: str, dataset_id: str, store: Store) -> None:
    """Refuse a dataset another job of the store writes: one writer per dataset."""
    others = [s.job for s in store.job_states() if s.dataset_id == dataset_id and s.job != job]
    if others:
        raise DatasetExistsError(
            f"job {job}: dataset {dataset_id} is already written by job {others[0]} (checkpoint "
            "store): one job per dataset, or exactly once cannot be checked; give this job "
            f"another target, or `akkiosync reset {others[0]}` if that job is gone"
        )


def mapping_report(
    job: Job, columns: Sequence[SourceColumn], client: AkkioClient
) -> tuple[list[str], list[str]]:
    """For ``validate``: how the job would map onto its existing dataset (a heading, then
    ``mapping_lines`` indented), and each problem that would stop its first run."""
    try:
        info = existing_dataset(job, client)
    except AkkioSyncError as exc:
        return [], [str(exc)]
    if info is None:
        return [], []
    lines, problems = [f"mapped onto {describe(info)}:"], []
    try:
        lines += [f"  {line}" for line in mapping_lines(adopted_schema(job, columns, info).schema)]
    except AkkioSyncError as exc:
        lines, problems = [f"cannot map onto {describe(info)} (see the error below)"], [str(exc)]
    try:
        check_existing_rows(job, info)
    except DatasetExistsError as exc:
        problems.append(str(exc))
    return lines, problems


def mapping_lines(schema: Schema) -> list[str]:
    """``column -> field (type)`` per field, then the columns not sent."""
    lines = [
        f"{f.source if f.source != SYNCED_AT else '(the time read)'} -> {f.name} ({f.type})"
        for f in schema.fields
    ]
    if schema.unsent:
        lines.append(f"not sent (the dataset has no field for them): {', '.join(schema.unsent)}")
    return lines


def describe(info: DatasetInfo) -> str:
    """``dataset NAME (ID), N rows``."""
    return f"dataset {info.name} ({info.id}), {_rows(info.rows)}"


def _option(field: DatasetField) -> str:
    """The job file's option that names ``field``."""
    if field.source == SYNCED_AT:
        return "columns.synced_at"
    return f"columns.rename: {field.source} -> {field.name!r}"


def _exact(name: str) -> str:
    return name


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _field_named(name: str, names: Sequence[str]) -> str | None:
    """The field a rename names: exactly, else the one field it normalises to."""
    if name in names:
        return name
    close = [n for n in names if normalised(n) == normalised(name)]
    return close[0] if len(close) == 1 else None


def _missing(
    job: Job,
    where: str,
    missing: Sequence[str],
    free: Sequence[DatasetField],
    columns: Sequence[SourceColumn],
    planned: Schema,
) -> str:
    """Why fields have no column, and how to give them one."""
    sent = {f.source for f in planned.fields}
    left_out = [
        f"column {c.name} matches field {name!r} but the job's columns.include/exclude leaves "
        "it out"
        for name in missing
        for c in columns
        if c.name not in sent and normalised(c.name) == normalised(name)
    ]
    unmatched = ", ".join(c.source for c in free)
    return (
        f"job {job.name}: field(s) {', '.join(repr(n) for n in missing)} of {where} have no "
        "source column, and every row must carry every field; map a column to each with "
        f'columns.rename: {{source_column: "{missing[0]}"}}'
        + (f" (source columns not matched: {unmatched})" if unmatched else "")
        + "".join(f"; {line}" for line in left_out)
    )
