"""What people read about their jobs: the status table, run history lines, run results."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from akkiosync.cursor import decode_cursor
from akkiosync.runner import RunResult
from akkiosync.state import RunRecord, Store


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One line of ``akkiosync status``."""

    job: str
    dataset: str | None
    dataset_id: str | None
    rows_sent: int
    cursor: str
    last_run: str | None
    last_status: str | None
    last_error: str | None


def job_statuses(store: Store, configured: Iterable[str]) -> list[JobStatus]:
    """Every job the configuration or the store knows, by name."""
    states = {s.job: s for s in store.job_states()}
    statuses = []
    for name in sorted(set(configured) | set(states)):
        state = states.get(name)
        last = store.last_run(name)
        statuses.append(
            JobStatus(
                job=name,
                dataset=state.dataset_name if state else None,
                dataset_id=state.dataset_id if state else None,
                rows_sent=state.rows_sent if state else 0,
                cursor=cursor_text(state.cursor_json if state else None),
                last_run=last.started_at.isoformat(timespec="seconds") if last else None,
                last_status=last.status if last else None,
                last_error=last.error if last else None,
            )
        )
    return statuses


def status_lines(statuses: Sequence[JobStatus], *, as_json: bool = False) -> list[str]:
    """The status as an aligned table (and the last errors), or one JSON object per job."""
    if as_json:
        return [json.dumps(asdict(s)) for s in statuses]
    if not statuses:
        return ["no jobs"]
    header = ("JOB", "DATASET", "ROWS SENT", "CURSOR", "LAST RUN", "RESULT")
    rows = [
        (
            s.job,
            f"{s.dataset} ({s.dataset_id})" if s.dataset_id else "-",
            str(s.rows_sent),
            s.cursor,
            s.last_run or "never",
            s.last_status or "-",
        )
        for s in statuses
    ]
    errors = [f"{s.job}: last error: {s.last_error}" for s in statuses if s.last_status == "failed"]
    return [*table_lines(header, rows), *errors]


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell."""
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def cursor_text(cursor_json: str | None) -> str:
    """A stored cursor, readable."""
    return decode_cursor(cursor_json).describe() if cursor_json else "-"


def run_line(run: RunRecord) -> str:
    """One run of the history."""
    took = f"{(run.ended_at - run.started_at).total_seconds():.1f}s" if run.ended_at else "running"
    line = (
        f"#{run.id} {run.started_at.isoformat(timespec='seconds')} {run.job} {run.status} "
        f"{run.rows_sent} rows {run.batches} batches {took} "
        f"cursor {cursor_text(run.cursor_before)} -> {cursor_text(run.cursor_after)}"
    )
    if run.rows_skipped:
        line += f" ({run.rows_skipped} rows skipped: NULL watermark or key)"
    return f"{line} error: {run.error}" if run.error else line


def result_line(result: RunResult) -> str:
    """What ``sync`` prints for one job."""
    if result.status == "skipped":
        return f"{result.job}: SKIPPED: {result.error}"
    if not result.ok:
        return f"{result.job}: FAILED: {result.error}"
    return (
        f"{result.job}: ok, {result.rows_sent} rows in {result.batches} batches "
        f"to dataset {result.dataset_id} ({result.seconds:.2f}s)"
    )
