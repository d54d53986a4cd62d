"""The types Akkio gave a new dataset's fields, compared with the ones the job planned.

Akkio infers each field's type from the first rows it receives, for good: a float column whose
first batch holds only NULLs becomes a string field, and every number sent later is text there.
After a dataset's first batch the job reads its fields back once, warns where Akkio chose
otherwise (saying what it means) and records it for ``status``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from akkiosync.adopt import akkio_field_type
from akkiosync.akkio import AkkioClient
from akkiosync.errors import AkkioError
from akkiosync.mapping import Schema
from akkiosync.state import Store

logger = logging.getLogger(__name__)

_NUMBERS = ("integer", "float")
_TEXT = ("string", "category")
# Planned -> inferred pairs that change nothing for the values sent: both text, a boolean as a
# category, whole numbers in a float field.
_ALIKE = {
    ("string", "category"),
    ("category", "string"),
    ("boolean", "category"),
    ("integer", "float"),
}


def check_inferred_types(
    job: str,
    dataset_id: str | None,
    store: Store,
    client: AkkioClient,
    clock: Callable[[], datetime],
) -> None:
    """Once per dataset, after a batch landed in ``dataset_id``: compare the types Akkio
    inferred with the pinned schema's; warn and record where they differ. A failed read never
    fails the run: it is tried again after the next run's first batch."""
    state = store.job_state(job)
    if state.type_warnings_json is not None or not (dataset_id and state.schema_json):
        return
    try:
        info = client.get_dataset(dataset_id)
    except AkkioError as exc:
        logger.warning(
            "job %s: could not read the field types Akkio inferred (%s); tried again next run",
            job, exc,
        )  # fmt: skip
        return
    inferred = {f.name: f.type for f in info.fields}
    if not inferred:
        return  # Akkio does not show the fields yet: look again next run
    found = [
        [f.name, f.type, inferred[f.name]]
        for f in Schema.from_json(state.schema_json).fields
        if f.name in inferred and differs(f.type, inferred[f.name])
    ]
    for field, planned, kind in found:
        logger.warning("job %s: %s", job, warning_text(job, field, planned, kind))
    store.set_type_warnings(job, json.dumps(found), clock())


def warning_texts(job: str, warnings_json: str | None) -> tuple[str, ...]:
    """The stored warnings (``JobState.type_warnings_json``) as people read them."""
    found = json.loads(warnings_json) if warnings_json else []
    return tuple(warning_text(job, field, planned, kind) for field, planned, kind in found)


def warning_text(job: str, field: str, planned: str, inferred: str) -> str:
    """One field whose type Akkio inferred otherwise, what it means, and the way out."""
    return (
        f"field {field}: planned {planned}, Akkio inferred {inferred}: "
        f"{_meaning(planned, akkio_field_type(inferred))} (Akkio types each field from the "
        f"first rows it receives); to make it {planned}, `akkiosync reset {job}` and let the "
        f"new dataset's first batch hold a value in {field} (a larger batch_size for that run)"
    )


def differs(planned: str, inferred: str) -> bool:
    """Whether a field planned as ``planned`` behaves otherwise as the type Akkio inferred."""
    if inferred.strip().lower() == "id":  # an identifier: Akkio neither sums nor sorts it
        return False
    ours = akkio_field_type(inferred)
    return planned != ours and (planned, ours) not in _ALIKE


def _meaning(planned: str, ours: str) -> str:
    """What the difference does to the values sent, now and later."""
    if ours in _TEXT and planned in _NUMBERS:
        return "its values are text in Akkio, numbers sent later too"
    if ours in _TEXT and planned == "date":
        return "its values are text in Akkio, dates sent later too"
    if ours == "integer" and planned == "float":
        return "Akkio expects whole numbers there: fractions may be refused or cut"
    if ours in _NUMBERS:
        return "Akkio expects numbers there: values that are not numbers may be refused or lost"
    if ours == "date":
        return "Akkio expects dates there: values that are not dates may be refused or lost"
    return f"Akkio treats its values as {ours}, not {planned}"
