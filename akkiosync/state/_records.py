"""What the checkpoint store holds, as plain values: job state, intents, runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

RunStatus = Literal["running", "success", "failed", "interrupted"]
RefreshPhase = Literal["creating", "filling", "deleting"]


@dataclass(frozen=True, slots=True)
class JobState:
    """What the store knows about one job; all ``None``/0 for a job it has never seen."""

    job: str
    dataset_id: str | None = None
    dataset_name: str | None = None
    schema_json: str | None = None
    cursor_json: str | None = None
    rows_sent: int = 0
    batches_sent: int = 0
    rows_at_pin: int = 0
    cursor_columns_json: str | None = None  # the columns (and types) the cursor belongs to
    new_dataset_ok: bool = False  # the next creation may take a name already in use
    replaced_at: datetime | None = None  # mode: replace: when the dataset was last replaced
    type_warnings_json: str | None = None  # fields whose type Akkio inferred otherwise
    adopted: bool = False  # the dataset existed before the job: never deleted by a refresh
    batch_limit_json: str | None = None  # rows per batch a 413 taught (see ``pipeline``)

    @property
    def rows_expected(self) -> int:
        """The dataset's row count if this job alone wrote to it since it was pinned."""
        return self.rows_at_pin + self.rows_sent


@dataclass(frozen=True, slots=True)
class RunCounts:
    """A running run's figures after a batch, written with the batch's commit (``logs``
    shows them while it runs)."""

    run_id: int
    rows_read: int
    rows_sent: int
    batches: int


@dataclass(frozen=True, slots=True)
class Intent:
    """A batch about to be sent: enough to decide after a crash whether it landed."""

    job: str
    dataset_id: str
    rows: int
    rows_before: int
    cursor_before: str | None
    cursor_after: str
    created_at: datetime
    # Lookback jobs: the batch's ledger entries and the pruning bound, committed with it.
    ledger_json: str | None = None


@dataclass(frozen=True, slots=True)
class Creation:
    """A dataset about to be created, with the ids that name already had before."""

    job: str
    dataset_name: str
    known_ids: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Refresh:
    """A full refresh (``mode: replace``) under way: ``creating`` the new dataset (its id not
    yet known), ``filling`` it, or ``deleting`` the previous one once the job was switched."""

    job: str
    dataset_id: str | None
    dataset_name: str
    previous_id: str | None  # the job's dataset when the refresh began: deleted at its end
    phase: RefreshPhase
    rows_sent: int  # rows committed to the new dataset so far
    cursor_json: str | None  # the cursor after the last of them
    started_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one job, as recorded in the store."""

    id: int
    job: str
    started_at: datetime
    ended_at: datetime | None
    status: RunStatus
    rows_read: int
    rows_sent: int
    batches: int
    cursor_before: str | None
    cursor_after: str | None
    error: str | None
    rows_skipped: int = 0
