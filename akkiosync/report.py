"""What people read about their jobs: the status table, the run history (also live), run results,
and what a running daemon says about itself in its file (``Settings.daemon_file``)."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from akkiosync.config import Job
from akkiosync.cursor import Cursor, decode_cursor, lag
from akkiosync.inferred import warning_texts
from akkiosync.redact import redact
from akkiosync.results import RunResult
from akkiosync.schedule import parse_duration
from akkiosync.source import engine_url, make_source
from akkiosync.state import Refresh, RunRecord, Store

POLL_INTERVAL = 1.0  # seconds between looks at the store when following the history
PROBE_TIMEOUT = 5  # seconds to connect to a source when measuring lag
_PROBES_AT_ONCE = 8
_POLL_BATCH = 10_000  # new runs read per look: far more than can start in one interval


# -- the daemon file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What a running daemon wrote about itself: who it is, and when each job runs next."""

    pid: int
    started_at: datetime
    next_runs: dict[str, datetime | None]


def daemon_info(path: Path) -> DaemonInfo | None:
    """The daemon file, if a daemon is up: the file is readable and its pid is alive."""
    try:
        info = _read_daemon_file(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, or not what a daemon writes: no daemon to speak of
    return info if _alive(info.pid) else None


def _read_daemon_file(path: Path) -> DaemonInfo:
    data = json.loads(path.read_text(encoding="utf-8"))
    pid = data["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise TypeError(f"pid {pid!r}")  # os.kill(0 or -1) would signal a whole group
    jobs: dict[str, dict[str, Any]] = data.get("jobs") or {}
    next_runs = {
        n: _parse_time(j["next_run"]) if j.get("next_run") else None for n, j in jobs.items()
    }
    return DaemonInfo(pid, _parse_time(data["started_at"]), next_runs)


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:  # it exists, under another user
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


# -- status ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job in ``akkiosync status``; ``lag`` in seconds, or in watermark units (numbers)."""

    job: str
    configured: bool  # a job file defines it
    schedule: str | None  # None: manual (sync only), or no file
    next_run: datetime | None
    dataset: str | None
    dataset_id: str | None
    rows_sent: int
    cursor: str
    last_run: datetime | None
    last_status: str | None
    last_error: str | None
    lag: float | None = None
    lag_unit: Literal["seconds", "watermark"] | None = None
    lag_error: str | None = None  # why the lag is unknown: the source could not be read
    type_warnings: tuple[str, ...] = ()  # fields Akkio typed otherwise than planned
    replaced_at: datetime | None = None  # mode: replace: when the dataset became the job's
    refresh: str | None = None  # a refresh under way, or left by a killed run


def job_statuses(
    store: Store, jobs: Iterable[Job], *, daemon: DaemonInfo | None = None, with_lag: bool = True
) -> list[JobStatus]:
    """Every job the job files or the store know, by name; the lag of each job with a file and
    a cursor is measured on its source, all sources at once."""
    files = {job.name: job for job in jobs}
    states = {s.job: s for s in store.job_states()}
    names = sorted(set(files) | set(states))
    cursors = {n: decode_cursor(s.cursor_json) for n, s in states.items() if s.cursor_json}
    probed = [n for n in names if with_lag and n in files and n in cursors]
    with ThreadPoolExecutor(max_workers=max(1, min(_PROBES_AT_ONCE, len(probed)))) as pool:
        lags = dict(
            zip(probed, pool.map(lambda n: _lag_of(files[n], cursors[n]), probed), strict=True)
        )
    statuses = []
    for name in names:
        state, job, last = states.get(name), files.get(name), store.last_run(name)
        measured, why = lags.get(name, (None, None))
        statuses.append(
            JobStatus(
                job=name,
                configured=job is not None,
                schedule=str(job.schedule) if job and job.schedule else None,
                next_run=daemon.next_runs.get(name) if daemon else None,
                dataset=state.dataset_name if state else None,
                dataset_id=state.dataset_id if state else None,
                rows_sent=state.rows_sent if state else 0,
                cursor=cursor_text(state.cursor_json if state else None),
                last_run=last.started_at if last else None,
                last_status=last.status if last else None,
                last_error=last.error if last else None,
                lag=measured,
                lag_unit=None if measured is None else _lag_unit(cursors[name]),
                lag_error=why,
                type_warnings=warning_texts(name, state.type_warnings_json if state else None),
                replaced_at=state.replaced_at if state else None,
                refresh=_refresh_text(store.refresh(name)),
            )
        )
    return statuses


def _refresh_text(refresh: Refresh | None) -> str | None:
    """A refresh under way (or left by a killed run, which the next run finishes), readable."""
    if refresh is None:
        return None
    if refresh.phase == "deleting":
        return f"refresh done; dataset {refresh.previous_id}, which it replaced, is to be deleted"
    into = f" into dataset {refresh.dataset_id}" if refresh.dataset_id else ""
    return (
        f"refresh since {_when(refresh.started_at)}{into}: {refresh.rows_sent} rows so far; "
        "unfinished ones are deleted by the next run"
    )


def _lag_of(job: Job, cursor: Cursor) -> tuple[float | None, str | None]:
    """``(lag, None)``, or ``(None, why)`` if the source cannot be read: never raises."""
    try:
        spec = job.source.model_copy(update={"url": _probe_url(job.source.url)})
        with make_source(spec) as source:
            return lag(source.newest_watermark(), cursor), None
    except Exception as exc:  # noqa: BLE001 - whatever fails, this source's lag is unknown
        return None, redact(str(exc)) or type(exc).__name__


def _probe_url(url: str) -> str:
    """The URL with a short connect timeout; a missing SQLite file is not created."""
    parsed = engine_url(url)
    backend, database = parsed.get_backend_name(), parsed.database
    if backend == "sqlite" and database not in (None, "", ":memory:") and "uri" not in parsed.query:
        if not Path(str(database)).is_file():
            raise FileNotFoundError(f"no SQLite database at {database}")
    elif backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": str(PROBE_TIMEOUT)})
    return parsed.render_as_string(hide_password=False)


def _lag_unit(cursor: Cursor) -> Literal["seconds", "watermark"]:
    number = isinstance(cursor.watermark, int | float | Decimal)
    return "watermark" if number and not isinstance(cursor.watermark, bool) else "seconds"


def status_lines(
    statuses: Sequence[JobStatus],
    *,
    daemon: DaemonInfo | None = None,
    with_lag: bool = True,
    as_json: bool = False,
    width: int | None = None,
) -> list[str]:
    """The daemon, the jobs as an aligned table, then the last errors and unknown lags; or one
    JSON object per job. A table wider than ``width`` becomes one block per job, each value on
    its own line (wrapped), so nothing is cut."""
    if as_json:
        return [json.dumps(asdict(s), default=datetime.isoformat) for s in statuses]
    up = f"daemon: pid {daemon.pid}, up since {_when(daemon.started_at)}" if daemon else None
    lines = [up or "daemon: not running"]
    if not statuses:
        return [*lines, "no jobs"]
    header = ["JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "RESULT", "DATASET", "ROWS SENT", "CURSOR"]
    rows = [
        [
            s.job,
            (s.schedule or "manual") if s.configured else "(no file)",
            _when(s.next_run),
            _when(s.last_run, "never"),
            s.last_status or "-",
            f"{s.dataset} ({s.dataset_id})" if s.dataset_id else "-",
            str(s.rows_sent),
            s.cursor,
            *([lag_text(s)] if with_lag else []),
        ]
        for s in statuses
    ]
    header += ["LAG"] if with_lag else []
    table = table_lines(header, rows)
    fits = width is None or max(len(line) for line in table) <= width
    lines += table if fits else block_lines(header, rows, width or 0)
    lines += [f"{s.job}: last error: {s.last_error}" for s in statuses if s.last_status == "failed"]
    lines += [f"{s.job}: type warning: {w}" for s in statuses for w in s.type_warnings]
    lines += [
        f"{s.job}: dataset {s.dataset} ({s.dataset_id}) replaced at {_when(s.replaced_at)}"
        for s in statuses
        if s.replaced_at and s.dataset_id
    ]
    lines += [f"{s.job}: {s.refresh}" for s in statuses if s.refresh]
    return lines + [f"{s.job}: lag unknown: {s.lag_error}" for s in statuses if s.lag_error]


def lag_text(status: JobStatus) -> str:
    """The lag as people read it: a duration, a number of watermark units, ``?`` or ``-``."""
    if status.lag is None:
        return "?" if status.lag_error else "-"
    if status.lag_unit == "seconds":
        return duration_text(status.lag)
    return f"{status.lag:.3f}".rstrip("0").rstrip(".")


def duration_text(seconds: float) -> str:
    """``0s``, ``42s``, ``3m12s``, ``2h05m``, ``4d``: two units at most, rounded down."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d"


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell."""
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def block_lines(header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """Each row as a block: its first cell, then ``name: value`` lines indented and wrapped
    to ``width`` (for a table too wide for the terminal)."""
    lines: list[str] = []
    names = [name.lower() for name in header[1:]]
    pad = max(len(name) for name in names) + 2
    for row in rows:
        lines += textwrap.wrap(row[0], width) or [""]
        for name, value in zip(names, row[1:], strict=True):
            lines += textwrap.wrap(
                value,
                max(width, pad + 12),
                initial_indent=f"  {name + ':':<{pad}}",
                subsequent_indent=" " * (pad + 2),
                break_on_hyphens=False,
            ) or [f"  {name}:"]
    return lines


def cursor_text(cursor_json: str | None) -> str:
    """A stored cursor, readable."""
    return decode_cursor(cursor_json).describe() if cursor_json else "-"


def _when(moment: datetime | None, missing: str = "-") -> str:
    """A time as the tables show it: to the second, in UTC."""
    return missing if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the run history ---------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration ago ("1h", "30m", "2d"), or an ISO date or time (UTC unless it
    carries an offset); ``ValueError`` if it is neither."""
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        return _parse_time(text.strip())
    except ValueError:
        message = f"{text!r} is neither a duration (30m, 1h, 2d) nor an ISO date or time"
        raise ValueError(message) from None


def run_line(run: RunRecord) -> str:
    """One run of the history."""
    start = f"#{run.id} {_when(run.started_at)} {run.job} {run.status}"
    if run.ended_at is None:
        line = f"{start} from cursor {cursor_text(run.cursor_before)}"
        if run.batches:  # the runner records its progress after each committed batch
            line += (
                f", so far {run.rows_sent} rows in {run.batches} batches "
                f"(cursor {cursor_text(run.cursor_after)})"
            )
        return line
    took = (run.ended_at - run.started_at).total_seconds()
    line = (
        f"{start} {run.rows_sent} rows {run.batches} batches {took:.1f}s "
        f"cursor {cursor_text(run.cursor_before)} -> {cursor_text(run.cursor_after)}"
    )
    if run.rows_skipped:
        line += f" ({run.rows_skipped} rows skipped: NULL watermark or key)"
    return f"{line} error: {run.error}" if run.error else line


def run_json(run: RunRecord) -> str:
    """One run of the history as a JSON object: every field, times in ISO 8601."""
    return json.dumps(asdict(run), default=datetime.isoformat)


def follow_runs(
    store: Store,
    job: str | None,
    *,
    since: datetime | None = None,
    failed: bool = False,
    limit: int = 20,
    stop: threading.Event,
    interval: float = POLL_INTERVAL,
    polls: int | None = None,
) -> Iterator[RunRecord]:
    """The last ``limit`` matching runs oldest first, then, looking at the store every
    ``interval`` until ``stop`` is set (or ``polls`` looks were taken), each new run when it
    starts (status running) and each run once it has ended."""

    def matches(run: RunRecord) -> bool:
        return (since is None or run.started_at >= since) and (not failed or run.status == "failed")

    newest = store.runs(job, 1)
    last_id = newest[0].id if newest else 0
    # Taken before the history: a run that ends in between is then shown ended, once.
    watched = {r.id for r in store.running_runs(job) if r.id <= last_id}
    for run in reversed(store.runs(job, limit, since=since, failed=failed)):
        if run.id <= last_id:  # later ones are the first look's
            if run.status != "running":
                watched.discard(run.id)
            yield run
    looks = 0
    while (polls is None or looks < polls) and not stop.wait(interval):
        looks += 1
        for run_id in sorted(watched):
            seen = store.run(run_id)
            if seen is None or seen.status != "running":  # ended (or pruned away)
                watched.discard(run_id)
                if seen is not None and matches(seen):
                    yield seen
        for run in reversed(store.runs(job, _POLL_BATCH, after_id=last_id)):
            last_id = max(last_id, run.id)
            if run.status == "running":
                watched.add(run.id)
            if matches(run):
                yield run


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
