"""``akkiosync status`` and ``akkiosync logs`` for people: the status table and its JSON, lag
measured on real sources, the daemon's file, the history's filters and following it live; and
the store's queries and pruning behind them.

The store is filled with explicit aware datetimes; only ``--since`` with a duration is measured
from the real clock, with margins of hours.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from akkiosync.akkio import AkkioClient
from akkiosync.cli import cli
from akkiosync.cursor import Cursor, encode_cursor
from akkiosync.report import daemon_info, duration_text, follow_runs, parse_since, run_line
from akkiosync.runner import Runner
from akkiosync.state import RunRecord, RunStatus, Store
from tests.conftest import make_job, no_sleep

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ORDERS_CURSOR = encode_cursor(Cursor("2026-03-01 12:00:00", (1,)))  # SQLite DATETIME: its text
EVENTS_CURSOR = encode_cursor(Cursor(3, (3,)))
NEVER_SHOWN = "s3cret-Pw-7Kq2"  # the source's database password

Invoke = Callable[..., Result]


def job_file(schedule: str | None, url: str, table: str, watermark: str) -> str:
    """A job file's text; its dataset is named after its table and schedule (one job per
    dataset)."""
    lines = [f'schedule: "{schedule}"'] if schedule else []
    lines += ["source:", f"  url: {url}", f"  table: {table}", f"  watermark: {watermark}"]
    dataset = f"{table} {schedule or 'manual'}"
    return "\n".join([*lines, "  key: id", "target:", f'  dataset: "{dataset}"', ""])


def add_run(
    store: Store,
    job: str,
    start: datetime,
    status: RunStatus = "success",
    *,
    error: str | None = None,
    cursor_after: str | None = None,
    rows: int = 3,
) -> int:
    """Record a run that started at ``start`` and, unless running, ended 2 s later having
    sent ``rows`` rows."""
    run_id = store.start_run(job, None, start)
    if status != "running":
        store.finish_run(
            run_id,
            status=status,
            now=start + timedelta(seconds=2),
            rows_read=rows,
            rows_sent=rows,
            batches=1 if rows else 0,
            cursor_after=cursor_after,
            error=error,
        )
    return run_id


def ids(runs: list[RunRecord]) -> list[int]:
    """The runs' ids, in the order given."""
    return [run.id for run in runs]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def state_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The store's file, named by AKKIOSYNC_STATE as a deployment does."""
    path = tmp_path / "state" / "akkiosync.db"
    monkeypatch.setenv("AKKIOSYNC_STATE", str(path))
    return path


@pytest.fixture
def store(state_path: Path) -> Iterator[Store]:
    """A fresh store at ``state_path``."""
    with Store.open(state_path) as opened:
        yield opened


@pytest.fixture
def shop_url(tmp_path: Path) -> str:
    """A SQLite source: ``orders`` with a DATETIME watermark whose newest row is 2 minutes
    past ORDERS_CURSOR, and ``events`` with an integer watermark 7 past EVENTS_CURSOR."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, at DATETIME)"))
            conn.execute(
                sa.text(
                    "INSERT INTO orders VALUES (1, '2026-03-01 12:00:00'), "
                    "(2, '2026-03-01 12:01:00'), (3, '2026-03-01 12:02:00')"
                )
            )
            conn.execute(sa.text("CREATE TABLE events (id INTEGER PRIMARY KEY, seq INTEGER)"))
            conn.execute(sa.text("INSERT INTO events VALUES (3, 3), (4, 9), (5, 10)"))
    finally:
        engine.dispose()
    return url


@pytest.fixture
def config_dir(tmp_path: Path, shop_url: str) -> Path:
    """Job files: orders (cron) and events (interval) on the shop, customers on a SQLite file
    that does not exist, notes without a schedule."""
    jobs = tmp_path / "config" / "jobs"
    jobs.mkdir(parents=True)
    missing = f"sqlite:///{tmp_path / 'gone' / 'customers.db'}"
    (jobs / "orders.yaml").write_text(job_file("*/5 * * * *", shop_url, "orders", "at"))
    (jobs / "events.yaml").write_text(job_file("30s", shop_url, "events", "seq"))
    (jobs / "customers.yaml").write_text(job_file("1h", missing, "customers", "id"))
    (jobs / "notes.yaml").write_text(job_file(None, shop_url, "orders", "at"))
    return tmp_path / "config"


@pytest.fixture
def history(store: Store) -> Store:
    """Runs #1-#6 of several jobs: successes, a failure, one still running; ``legacy`` has no
    job file any more."""
    store.pin_dataset("orders", "ds-o", "Orders", "[]", T0)
    store.commit_batch("orders", ORDERS_CURSOR, 1, T0)
    store.commit_batch("events", EVENTS_CURSOR, 2, T0)
    store.commit_batch("customers", encode_cursor(Cursor(41, (41,))), 5, T0)
    store.pin_dataset("legacy", "ds-l", "Legacy", "[]", T0)
    add_run(store, "orders", T0, cursor_after=ORDERS_CURSOR)
    add_run(store, "customers", T0 + timedelta(minutes=1), "failed", error="connection refused")
    add_run(store, "legacy", T0 + timedelta(minutes=2))
    add_run(store, "legacy", T0 + timedelta(minutes=3), "running")
    add_run(store, "events", T0 + timedelta(minutes=4), cursor_after=EVENTS_CURSOR)
    add_run(store, "orders", T0 + timedelta(minutes=5), cursor_after=ORDERS_CURSOR)
    return store


@pytest.fixture
def run(config_dir: Path, state_path: Path) -> Invoke:
    """Invoke ``akkiosync --config <config_dir> ARGS...``."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config_dir), *args])

    return invoke


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_daemon_file(state_path: Path, pid: int) -> None:
    """What a daemon writes beside the store: it runs orders next at 12:10 and notes never."""
    info = {
        "pid": pid,
        "started_at": "2026-03-01T11:00:00+00:00",
        "updated_at": "2026-03-01T12:06:00+00:00",
        "jobs": {
            "orders": {"schedule": "*/5 * * * *", "next_run": "2026-03-01T12:10:00+00:00"},
            "notes": {"schedule": None, "next_run": None},
        },
    }
    state_path.with_name(state_path.name + ".daemon.json").write_text(json.dumps(info))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    return process.pid


# -- status ------------------------------------------------------------------------------------


class TestStatusTable:
    """``status`` shows a table per job: schedule, runs, dataset, rows, cursor and lag."""

    def test_table(self, run: Invoke, history: Store, tmp_path: Path) -> None:
        """Every column aligned; failed runs' errors and unreadable sources listed below."""
        result = run("status")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        # The table's lines are long: its left half and right half, each aligned as printed.
        left = [
            "JOB        SCHEDULE     NEXT RUN  LAST RUN              ",
            "customers  1h           -         2026-03-01T12:01:00Z  ",
            "events     30s          -         2026-03-01T12:04:00Z  ",
            "legacy     (no file)    -         2026-03-01T12:03:00Z  ",
            "notes      manual       -         never                 ",
            "orders     */5 * * * *  -         2026-03-01T12:05:00Z  ",
        ]
        right = [
            "RESULT   DATASET        ROWS SENT  CURSOR                    LAG",
            "failed   -              5          (41, 41)                  ?",
            "success  -              2          (3, 3)                    7",
            "running  Legacy (ds-l)  0          -                         -",
            "-        -              0          -                         -",
            "success  Orders (ds-o)  1          (2026-03-01 12:00:00, 1)  2m00s",
        ]
        assert lines == [
            "daemon: not running",
            *(a + b for a, b in zip(left, right, strict=True)),
            "customers: last error: connection refused",
            f"customers: lag unknown: no SQLite database at {tmp_path / 'gone' / 'customers.db'}",
        ]

    def test_no_lag(self, run: Invoke, history: Store) -> None:
        """``--no-lag`` leaves the LAG column out and tries no source (so reports none)."""
        result = run("status", "--no-lag")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[1] == (
            "JOB        SCHEDULE     NEXT RUN  LAST RUN              RESULT   DATASET        "
            "ROWS SENT  CURSOR"
        )
        assert lines[-1] == "customers: last error: connection refused"
        assert "lag unknown" not in result.stdout

    def test_missing_sqlite_source_not_created(
        self, run: Invoke, history: Store, tmp_path: Path
    ) -> None:
        """Measuring lag never creates a SQLite file where a source should be."""
        run("status")
        assert not (tmp_path / "gone").exists()

    def test_unreachable_server(
        self, run: Invoke, history: Store, config_dir: Path, unused_port: int
    ) -> None:
        """A database server that refuses connections: ``?``, its reason, no password, exit 0."""
        url = f"postgresql+psycopg://akkio:{NEVER_SHOWN}@127.0.0.1:{unused_port}/shop"
        (config_dir / "jobs" / "customers.yaml").write_text(job_file("1h", url, "c", "id"))
        result = run("status")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[2].endswith("  (41, 41)                  ?")
        assert result.stdout.splitlines()[-1].startswith("customers: lag unknown: ")
        assert NEVER_SHOWN not in result.output
        (customers, *_) = [json.loads(line) for line in run("status", "--json").stdout.splitlines()]
        assert customers["lag"] is None
        assert customers["lag_error"]
        assert NEVER_SHOWN not in customers["lag_error"]

    def test_behind_by_days(self, run: Invoke, history: Store, shop_url: str) -> None:
        """A cursor days behind shows whole days."""
        engine = sa.create_engine(shop_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO orders VALUES (9, '2026-03-05 13:00:00')"))
        finally:
            engine.dispose()
        assert run("status").stdout.splitlines()[6].endswith("  4d")

    def test_without_jobs_or_runs(self, run: Invoke, config_dir: Path, state_path: Path) -> None:
        """No job files and an empty store: a warning on stderr, and ``no jobs``."""
        for path in (config_dir / "jobs").iterdir():
            path.unlink()
        result = run("status")
        assert result.exit_code == 0, result.output
        assert result.stdout == "daemon: not running\nno jobs\n"
        assert "warning: " in result.stderr


class TestStatusJson:
    """``status --json``: one object per job with every field of the table."""

    def statuses(self, run: Invoke, *args: str) -> dict[str, dict[str, Any]]:
        """The JSON objects, by job."""
        result = run("status", "--json", *args)
        assert result.exit_code == 0, result.output
        return {row["job"]: row for row in map(json.loads, result.stdout.splitlines())}

    def test_fields(self, run: Invoke, history: Store) -> None:
        """A configured job: schedule, times in ISO, counters, cursor, lag in seconds."""
        assert self.statuses(run)["orders"] == {
            "job": "orders",
            "configured": True,
            "schedule": "*/5 * * * *",
            "next_run": None,
            "dataset": "Orders",
            "dataset_id": "ds-o",
            "rows_sent": 1,
            "cursor": "(2026-03-01 12:00:00, 1)",
            "last_run": "2026-03-01T12:05:00+00:00",
            "last_status": "success",
            "last_error": None,
            "lag": 120.0,
            "lag_unit": "seconds",
            "lag_error": None,
            "type_warnings": [],
            "replaced_at": None,
            "refresh": None,
        }

    def test_other_jobs(self, run: Invoke, history: Store) -> None:
        """Numbers lag in watermark units; no file, no schedule, no run and no source say so."""
        rows = self.statuses(run)
        assert sorted(rows) == ["customers", "events", "legacy", "notes", "orders"]
        assert (rows["events"]["lag"], rows["events"]["lag_unit"]) == (7.0, "watermark")
        legacy = rows["legacy"]
        assert (legacy["configured"], legacy["schedule"], legacy["last_status"]) == (
            False,
            None,
            "running",
        )
        assert (legacy["lag"], legacy["lag_error"]) == (None, None)
        assert (rows["notes"]["schedule"], rows["notes"]["last_run"]) == (None, None)
        assert rows["customers"]["last_error"] == "connection refused"
        assert rows["customers"]["lag"] is None
        assert rows["customers"]["lag_error"].startswith("no SQLite database at ")

    def test_no_lag(self, run: Invoke, history: Store) -> None:
        """``--no-lag``: every lag is null, and no lag error is reported."""
        rows = self.statuses(run, "--no-lag")
        assert {(r["lag"], r["lag_unit"], r["lag_error"]) for r in rows.values()} == {
            (None, None, None)
        }


class TestDaemonHeader:
    """The first line says whether a daemon is up; its file gives each job's next run."""

    def test_live_daemon(self, run: Invoke, history: Store, state_path: Path) -> None:
        """A file naming a live pid: the header, and NEXT RUN where the daemon knows one."""
        write_daemon_file(state_path, os.getpid())
        lines = run("status", "--no-lag").stdout.splitlines()
        assert lines[0] == f"daemon: pid {os.getpid()}, up since 2026-03-01T11:00:00Z"
        assert lines[1].startswith("JOB        SCHEDULE     NEXT RUN              LAST RUN  ")
        assert lines[6] == (
            "orders     */5 * * * *  2026-03-01T12:10:00Z  2026-03-01T12:05:00Z  success  "
            "Orders (ds-o)  1          (2026-03-01 12:00:00, 1)"
        )
        assert lines[5].startswith("notes      manual       -                     never  ")

    def test_live_daemon_json(self, run: Invoke, history: Store, state_path: Path) -> None:
        """``--json`` gives the next run in ISO, and null where there is none."""
        write_daemon_file(state_path, os.getpid())
        rows = [json.loads(line) for line in run("status", "--json").stdout.splitlines()]
        next_runs = {row["job"]: row["next_run"] for row in rows}
        assert next_runs["orders"] == "2026-03-01T12:10:00+00:00"
        assert next_runs["notes"] is None
        assert next_runs["events"] is None

    def test_dead_daemon(self, run: Invoke, history: Store, state_path: Path) -> None:
        """A file left by a process that is gone: not running, and no next runs."""
        write_daemon_file(state_path, dead_pid())
        lines = run("status", "--no-lag").stdout.splitlines()
        assert lines[0] == "daemon: not running"
        assert lines[6].startswith("orders     */5 * * * *  -         2026-03-01T12:05:00Z")

    @pytest.mark.parametrize(
        "text",
        [
            "{not json",
            '{"pid": 0, "started_at": "2026-03-01T11:00:00+00:00"}',
            '{"pid": true, "started_at": "2026-03-01T11:00:00+00:00"}',
            '{"pid": "12", "started_at": "2026-03-01T11:00:00+00:00"}',
            '{"pid": 12}',
            "[1, 2]",
        ],
    )
    def test_unreadable_file(self, tmp_path: Path, text: str) -> None:
        """A file that is not what a daemon writes means no daemon."""
        path = tmp_path / "daemon.json"
        path.write_text(text)
        assert daemon_info(path) is None

    def test_no_file(self, tmp_path: Path) -> None:
        """No file, no daemon."""
        assert daemon_info(tmp_path / "daemon.json") is None

    def test_naive_times_are_utc(self, tmp_path: Path) -> None:
        """Times without an offset are read as UTC; jobs without a next run map to None."""
        path = tmp_path / "daemon.json"
        path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "started_at": "2026-03-01T11:00:00",
                    "jobs": {"a": {"next_run": "2026-03-01T12:00:00"}, "b": {"next_run": None}},
                }
            )
        )
        info = daemon_info(path)
        assert info is not None
        assert info.started_at == datetime(2026, 3, 1, 11, tzinfo=UTC)
        assert info.next_runs == {"a": T0, "b": None}


class TestDuration:
    """Lags of time watermarks read as short durations."""

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (0.9, "0s"),
            (59.99, "59s"),
            (60, "1m00s"),
            (192, "3m12s"),
            (3599, "59m59s"),
            (3600, "1h00m"),
            (7500, "2h05m"),
            (86399, "23h59m"),
            (86400, "1d"),
            (4 * 86400 + 7000, "4d"),
        ],
    )
    def test_duration_text(self, seconds: float, text: str) -> None:
        """Two units at most, rounded down."""
        assert duration_text(seconds) == text


# -- logs --------------------------------------------------------------------------------------


class TestLogs:
    """``logs`` lists runs newest first, filtered by job, time, failure and count."""

    def test_all_runs(self, run: Invoke, history: Store) -> None:
        """Every run, newest first; a running one says where it started."""
        result = run("logs")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            "#6 2026-03-01T12:05:00Z orders success 3 rows 1 batches 2.0s "
            "cursor - -> (2026-03-01 12:00:00, 1)",
            "#5 2026-03-01T12:04:00Z events success 3 rows 1 batches 2.0s cursor - -> (3, 3)",
            "#4 2026-03-01T12:03:00Z legacy running from cursor -",
            "#3 2026-03-01T12:02:00Z legacy success 3 rows 1 batches 2.0s cursor - -> -",
            "#2 2026-03-01T12:01:00Z customers failed 3 rows 1 batches 2.0s cursor - -> - "
            "error: connection refused",
            "#1 2026-03-01T12:00:00Z orders success 3 rows 1 batches 2.0s "
            "cursor - -> (2026-03-01 12:00:00, 1)",
        ]

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            pytest.param(("orders",), ["#6", "#1"], id="job"),
            pytest.param(("--failed",), ["#2"], id="failed"),
            pytest.param(("--limit", "2"), ["#6", "#5"], id="limit"),
            pytest.param(("--since", "2026-03-01T12:02:00Z"), ["#6", "#5", "#4", "#3"], id="iso"),
            pytest.param(("--since", "2026-03-01T12:02:00"), ["#6", "#5", "#4", "#3"], id="naive"),
            pytest.param(("--since", "2026-03-01T13:03:00+01:00"), ["#6", "#5", "#4"], id="offset"),
            pytest.param(
                ("--since", "2026-03-01"), ["#6", "#5", "#4", "#3", "#2", "#1"], id="date"
            ),
            pytest.param(("legacy", "--since", "2026-03-01T12:02:30Z"), ["#4"], id="job-since"),
            pytest.param(
                ("--since", "2026-03-01T12:00:30Z", "--limit", "2", "--failed"), ["#2"], id="all"
            ),
        ],
    )
    def test_filters(
        self, run: Invoke, history: Store, args: tuple[str, ...], expected: list[str]
    ) -> None:
        """Each filter, and filters together, keep the runs they say."""
        result = run("logs", *args)
        assert result.exit_code == 0, result.output
        assert [line.split()[0] for line in result.stdout.splitlines()] == expected

    def test_since_duration(self, run: Invoke, history: Store) -> None:
        """``--since 1h`` is an hour before now: a run 10 minutes ago, not 3 hours ago."""
        now = datetime.now(UTC)
        add_run(history, "orders", now - timedelta(hours=3))
        recent = add_run(history, "orders", now - timedelta(minutes=10))
        assert [line.split()[0] for line in run("logs", "--since", "1h").stdout.splitlines()] == [
            f"#{recent}"
        ]
        assert len(run("logs", "--since", "4h").stdout.splitlines()) == 2

    def test_bad_since(self, run: Invoke, history: Store) -> None:
        """A ``--since`` that is neither a duration nor a time is a usage error."""
        result = run("logs", "--since", "yesterday")
        assert result.exit_code == 2
        assert "--since" in result.stderr
        assert "neither a duration" in result.stderr

    def test_json(self, run: Invoke, history: Store) -> None:
        """``--json``: one object per run with every recorded field, times in ISO."""
        result = run("logs", "--json")
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row["id"] for row in rows] == [6, 5, 4, 3, 2, 1]
        assert rows[4] == {
            "id": 2,
            "job": "customers",
            "started_at": "2026-03-01T12:01:00+00:00",
            "ended_at": "2026-03-01T12:01:02+00:00",
            "status": "failed",
            "rows_read": 3,
            "rows_sent": 3,
            "batches": 1,
            "cursor_before": None,
            "cursor_after": None,
            "error": "connection refused",
            "rows_skipped": 0,
        }
        assert (rows[2]["status"], rows[2]["ended_at"]) == ("running", None)
        assert rows[0]["cursor_after"] == ORDERS_CURSOR

    @pytest.mark.parametrize(
        ("args", "stdout"),
        [
            pytest.param(("notes",), "no runs yet\n", id="no-runs"),
            pytest.param(("legacy", "--failed"), "no matching runs\n", id="none-match"),
            pytest.param(("legacy", "--failed", "--json"), "", id="json"),
        ],
    )
    def test_nothing_to_show(
        self, run: Invoke, history: Store, args: tuple[str, ...], stdout: str
    ) -> None:
        """No runs, or none matching, say so; JSON prints nothing rather than a non-object."""
        result = run("logs", *args)
        assert result.exit_code == 0, result.output
        assert result.stdout == stdout

    def test_unknown_job(self, run: Invoke, history: Store) -> None:
        """A job no file defines and the store does not know is a usage error naming the
        known jobs."""
        result = run("logs", "nobody")
        assert result.exit_code == 2
        assert "no such job: nobody" in result.stderr
        assert "notes" in result.stderr


def after_commits(store: Store, monkeypatch: pytest.MonkeyPatch, then: Callable[..., None]) -> None:
    """Call ``then(**arguments)`` after each batch commit that carries a run's counts."""
    for name in ("commit_batch", "commit_refresh_batch"):
        commit = getattr(store, name)

        def wrapped(*args: Any, _commit: Any = commit, **kwargs: Any) -> None:
            _commit(*args, **kwargs)
            if kwargs.get("run") is not None:
                then(run=kwargs["run"])

        monkeypatch.setattr(store, name, wrapped)


class TestHistoryTruth:
    """A run's record says what happened: rows so far while it runs, and a run the stop
    signal cut short is ``interrupted``, which is no failure of the job."""

    @pytest.fixture
    def source(self, tmp_path: Path) -> str:
        """A SQLite table of 10 orders: three batches of 4."""
        url = f"sqlite:///{tmp_path / 'source.db'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, updated_at INT)"))
            conn.execute(sa.text("INSERT INTO orders VALUES " + ", ".join(
                f"({i}, {i})" for i in range(1, 11))))  # fmt: skip
        engine.dispose()
        return url

    @pytest.mark.parametrize("mode", ["append", "replace"])
    def test_running_run_shows_rows_so_far(
        self,
        store: Store,
        client: AkkioClient,
        source: str,
        monkeypatch: pytest.MonkeyPatch,
        mode: str,
    ) -> None:
        """After each committed batch the running run's record holds the rows sent so far,
        and ``logs`` shows them, in either mode."""
        seen: list[str] = []

        def observe(**counts: Any) -> None:
            found = store.run(counts["run"].run_id)
            assert found is not None
            seen.append(run_line(found))

        after_commits(store, monkeypatch, observe)
        job = make_job(source, "orders", mode=mode)
        result = Runner(store, client, sleep=no_sleep).run(job)
        assert (result.status, result.rows_sent) == ("success", 10)
        assert [line.split(" orders ", 1)[1] for line in seen] == [
            "running from cursor -, so far 4 rows in 1 batches (cursor (4, 4))",
            "running from cursor -, so far 8 rows in 2 batches (cursor (8, 8))",
            "running from cursor -, so far 10 rows in 3 batches (cursor (10, 10))",
        ]
        assert store.runs("orders")[0].status == "success"

    def test_stopped_run_is_interrupted(
        self, store: Store, client: AkkioClient, source: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The stop signal set during the first batch: the run ends after it, recorded as
        interrupted with its rows, while its result is no failure (``sync`` exits 0)."""
        stop = threading.Event()
        after_commits(store, monkeypatch, lambda **_: stop.set())
        result = Runner(store, client, sleep=no_sleep, stop=stop).run(make_job(source, "orders"))
        assert result.ok
        found = store.runs("orders")[0]
        assert (found.status, found.rows_sent, found.batches) == ("interrupted", 4, 1)
        assert " orders interrupted 4 rows 1 batches " in run_line(found)


class TestParseSince:
    """``--since`` takes a duration before now, or a date or time."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("90s", T0 - timedelta(seconds=90)),
            ("30m", T0 - timedelta(minutes=30)),
            ("1h", T0 - timedelta(hours=1)),
            ("2d", T0 - timedelta(days=2)),
            ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),
            ("2026-02-01T08:30:00Z", datetime(2026, 2, 1, 8, 30, tzinfo=UTC)),
            ("2026-02-01 10:30:00+02:00", datetime(2026, 2, 1, 8, 30, tzinfo=UTC)),
        ],
    )
    def test_parses(self, text: str, expected: datetime) -> None:
        """Durations count back from ``now``; times without an offset are UTC."""
        assert parse_since(text, T0) == expected

    @pytest.mark.parametrize("text", ["", "1w", "soon", "2026-13-01", "-1h"])
    def test_rejects(self, text: str) -> None:
        """Anything else is a ``ValueError`` naming what was given."""
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(text, T0)


# -- logs --follow -----------------------------------------------------------------------------


class ScriptedStop(threading.Event):
    """A stop event whose every wait, instead of waiting, makes the next scripted change to the
    store; once the script is done it says stop."""

    def __init__(self, *steps: Callable[[], object]) -> None:
        super().__init__()
        self._steps = list(steps)
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        if not self._steps:
            return True
        self._steps.pop(0)()
        return False


def finish(store: Store, run_id: int, status: RunStatus, at: datetime) -> None:
    """End a running run."""
    store.finish_run(
        run_id, status=status, now=at, rows_read=1, rows_sent=1, batches=1, cursor_after=None
    )


def events(runs: Iterator[RunRecord]) -> list[tuple[int, str]]:
    """What following showed: (run id, status) in order."""
    return [(run.id, run.status) for run in runs]


class TestFollow:
    """``logs --follow`` shows the history oldest first, then runs as they start and end."""

    def test_new_runs_shown_as_they_start_and_end(self, history: Store) -> None:
        """Started runs once as running, ended runs once, in order; a run that starts and ends
        between two looks only once, ended."""
        later = T0 + timedelta(minutes=10)
        stop = ScriptedStop(
            lambda: finish(history, 4, "success", later),
            lambda: add_run(history, "orders", later, "running"),  # 7
            lambda: None,
            lambda: (finish(history, 7, "failed", later), add_run(history, "events", later)),
        )
        shown = events(follow_runs(history, None, stop=stop, interval=0.25))
        assert shown == [
            (1, "success"), (2, "failed"), (3, "success"), (4, "running"), (5, "success"),
            (6, "success"), (4, "success"), (7, "running"), (7, "failed"), (8, "success"),
        ]  # fmt: skip
        assert stop.timeouts == [0.25] * 5

    def test_failed_only(self, history: Store) -> None:
        """With ``failed``: no running lines; runs appear once they end failed, including one
        that was already running when following began."""
        later = T0 + timedelta(minutes=10)
        stop = ScriptedStop(
            lambda: add_run(history, "orders", later, "running"),  # 7
            lambda: (finish(history, 4, "failed", later), finish(history, 7, "success", later)),
            lambda: add_run(history, "events", later, "failed"),  # 8
        )
        shown = events(follow_runs(history, None, failed=True, stop=stop))
        assert shown == [(2, "failed"), (4, "failed"), (8, "failed")]

    def test_one_job_limit_and_since(self, history: Store) -> None:
        """The history is the newest ``limit`` matching runs; later runs of other jobs or
        before ``since`` are not shown."""
        later = T0 + timedelta(minutes=10)
        stop = ScriptedStop(
            lambda: add_run(history, "events", later),  # 7: another job
            lambda: add_run(history, "legacy", T0),  # 8: started before since
            lambda: add_run(history, "legacy", later),  # 9
        )
        since = T0 + timedelta(minutes=1)
        shown = events(follow_runs(history, "legacy", since=since, limit=1, stop=stop))
        assert shown == [(4, "running"), (9, "success")]

    def test_stops_after_polls(self, history: Store) -> None:
        """``polls`` bounds the looks taken; a stop already set ends at once after the history."""
        never = ScriptedStop(*[lambda: None] * 10)
        assert len(events(follow_runs(history, None, stop=never, polls=3))) == 6
        assert never.timeouts == [1.0] * 3
        stopped = threading.Event()
        stopped.set()
        assert len(events(follow_runs(history, None, stop=stopped))) == 6

    def test_pruned_while_watched(self, history: Store) -> None:
        """A watched run pruned before it was seen ending is dropped quietly."""
        later = T0 + timedelta(days=60)
        stop = ScriptedStop(
            lambda: (
                finish(history, 4, "success", later),
                add_run(history, "legacy", later),  # 7
                history.prune_runs(older_than=later, keep_per_job=1),  # takes #3 and #4
            ),
        )
        shown = events(follow_runs(history, "legacy", stop=stop))
        assert shown == [(3, "success"), (4, "running"), (7, "success")]
        assert history.run(4) is None

    def test_cli_bounded(self, run: Invoke, history: Store) -> None:
        """``--follow`` prints the history oldest first and, stopped, exits 0."""
        result = run("logs", "--follow", "--poll-interval", "0", "--polls", "2")
        assert result.exit_code == 0, result.output
        assert [line.split()[0] for line in result.stdout.splitlines()] == [
            "#1", "#2", "#3", "#4", "#5", "#6",
        ]  # fmt: skip
        assert "#4 2026-03-01T12:03:00Z legacy running from cursor -" in result.stdout

    def test_cli_json_limit(self, run: Invoke, history: Store) -> None:
        """``--follow --json --limit 2``: the newest two, oldest first, as JSON."""
        result = run("logs", "-f", "--json", "--limit", "2", "--poll-interval", "0", "--polls", "1")
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [5, 6]


def read_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """The process's next line of output, or a failure when none comes in time."""
    assert process.stdout is not None
    remaining = max(deadline - time.monotonic(), 0)
    ready, _, _ = select.select([process.stdout], [], [], remaining)
    if not ready:
        pytest.fail("logs --follow printed nothing in time")
    return process.stdout.readline().decode()


class TestFollowProcess:
    """``akkiosync logs --follow`` as a real process: it polls, and a signal ends it with 0."""

    @pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
    def test_until_signal(
        self, history: Store, config_dir: Path, tmp_path: Path, stop_signal: signal.Signals
    ) -> None:
        """The history, then a run started by another process, then a clean exit on signal."""
        command = [sys.executable, "-m", "akkiosync", "--config", str(config_dir)]
        process = subprocess.Popen(
            [*command, "logs", "--follow", "--poll-interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,  # unbuffered: select() sees exactly what readline() has not read
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            history_ids = [read_line(process, deadline).split()[0] for _ in range(6)]
            assert history_ids == ["#1", "#2", "#3", "#4", "#5", "#6"]
            add_run(history, "orders", T0 + timedelta(minutes=10), "running")
            assert read_line(process, deadline).startswith("#7 2026-03-01T12:10:00Z orders running")
            process.send_signal(stop_signal)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr


# -- the store ---------------------------------------------------------------------------------


class TestStoreRuns:
    """``Store.runs`` filters; ``run`` and ``running_runs`` find single and unfinished runs."""

    def test_positional_call_still_works(self, history: Store) -> None:
        """``runs(job, limit)`` as before: that job's newest ``limit`` runs."""
        assert ids(history.runs("legacy", 1)) == [4]
        assert ids(history.runs()) == [6, 5, 4, 3, 2, 1]

    def test_filters(self, history: Store) -> None:
        """``since`` (inclusive), ``failed`` and ``after_id``, alone and together."""
        at_3 = T0 + timedelta(minutes=3)
        assert ids(history.runs(since=at_3)) == [6, 5, 4]
        assert ids(history.runs(since=at_3.astimezone(timezone(timedelta(hours=5))))) == [6, 5, 4]
        assert ids(history.runs(failed=True)) == [2]
        assert ids(history.runs(after_id=4)) == [6, 5]
        assert ids(history.runs("legacy", after_id=3)) == [4]
        assert ids(history.runs("orders", 1, since=T0, after_id=0)) == [6]
        assert history.runs(failed=True, after_id=2) == []

    def test_since_needs_an_aware_time(self, history: Store) -> None:
        """A naive ``since`` is refused, as everywhere in the store."""
        with pytest.raises(ValueError, match="naive"):
            history.runs(since=datetime(2026, 3, 1))  # noqa: DTZ001 - naive on purpose

    def test_run_and_running_runs(self, history: Store) -> None:
        """One run by id (None if there is none); the running ones oldest first."""
        found = history.run(2)
        assert found is not None
        assert (found.job, found.status, found.error) == (
            "customers",
            "failed",
            "connection refused",
        )
        assert history.run(99) is None
        later = add_run(history, "orders", T0 + timedelta(hours=1), "running")
        assert ids(history.running_runs()) == [4, later]
        assert ids(history.running_runs("orders")) == [later]
        assert history.running_runs("events") == []


class TestPruneRuns:
    """``prune_runs`` drops old finished runs and all but the newest N per job, never running
    runs, a job's newest run, nor its newest failed and newest non-empty run."""

    def test_by_age(self, store: Store) -> None:
        """Finished runs started before the cutoff go; newer and running ones stay, and so
        does the job's newest failed run."""
        a0 = add_run(store, "a", T0 - timedelta(days=41), "failed", error="x")
        a1 = add_run(store, "a", T0 - timedelta(days=40))
        a2 = add_run(store, "a", T0 - timedelta(days=35), "failed", error="y")
        a3 = add_run(store, "a", T0 - timedelta(days=40), "running")
        a4 = add_run(store, "a", T0 - timedelta(days=1))
        b1 = add_run(store, "b", T0 - timedelta(days=31))
        b2 = add_run(store, "b", T0 - timedelta(days=29))
        deleted = store.prune_runs(older_than=T0 - timedelta(days=30), keep_per_job=1000)
        assert deleted == 3
        assert sorted(ids(store.runs())) == [a2, a3, a4, b2]
        assert {a0, a1, b1}.isdisjoint(ids(store.runs()))

    def test_backfill_outlives_idle_runs(self, store: Store) -> None:
        """Idle runs do not push out the last run that sent rows, nor the last failure:
        both stay however many empty runs followed and however old they are."""
        backfill = add_run(store, "a", T0 - timedelta(days=90), rows=100_000)
        failed = add_run(store, "a", T0 - timedelta(days=80), "failed", error="x", rows=0)
        idle = [add_run(store, "a", T0 + timedelta(minutes=i), rows=0) for i in range(5)]
        assert store.prune_runs(older_than=T0 - timedelta(days=30), keep_per_job=2) == 3
        assert ids(store.runs("a")) == [idle[4], idle[3], failed, backfill]

    def test_older_non_empty_runs_go(self, store: Store) -> None:
        """Only the newest non-empty run is kept past the limits, not every one."""
        sent = [add_run(store, "a", T0 - timedelta(days=90 - i)) for i in range(3)]
        idle = add_run(store, "a", T0, rows=0)
        assert store.prune_runs(older_than=T0 - timedelta(days=30), keep_per_job=1) == 2
        assert ids(store.runs("a")) == [idle, sent[2]]

    def test_by_count(self, store: Store) -> None:
        """Per job, only the newest ``keep_per_job`` runs stay; other jobs keep theirs."""
        a = [add_run(store, "a", T0 + timedelta(minutes=i)) for i in range(6)]
        b = [add_run(store, "b", T0 + timedelta(minutes=i)) for i in range(2)]
        assert store.prune_runs(older_than=T0 - timedelta(days=1), keep_per_job=3) == 3
        assert ids(store.runs("a")) == a[:2:-1]
        assert ids(store.runs("b")) == b[::-1]

    def test_running_runs_kept_and_counted(self, store: Store) -> None:
        """A running run is never deleted, and counts among the newest kept."""
        stuck = add_run(store, "a", T0, "running")
        done = [add_run(store, "a", T0 + timedelta(minutes=i)) for i in range(1, 5)]
        fresh = add_run(store, "a", T0 + timedelta(minutes=9), "running")
        assert store.prune_runs(older_than=T0 - timedelta(days=1), keep_per_job=2) == 3
        assert ids(store.runs("a")) == [fresh, done[-1], stuck]

    def test_both_limits(self, store: Store) -> None:
        """Age and count together: a run goes if either says so."""
        old = add_run(store, "a", T0 - timedelta(days=90))
        recent = [add_run(store, "a", T0 + timedelta(minutes=i)) for i in range(3)]
        assert store.prune_runs(older_than=T0 - timedelta(days=30), keep_per_job=2) == 2
        assert ids(store.runs("a")) == recent[:0:-1]
        assert old not in ids(store.runs())

    def test_newest_run_of_a_job_kept(self, store: Store) -> None:
        """However old, a job's newest run stays: ``status`` shows it as the last run."""
        only = add_run(store, "a", T0 - timedelta(days=400))
        add_run(store, "b", T0)
        assert store.prune_runs(older_than=T0, keep_per_job=10) == 0
        assert store.last_run("a") is not None
        assert ids(store.runs("a")) == [only]

    def test_ids_not_reused(self, store: Store) -> None:
        """After pruning, a new run still gets an id above every id handed out before."""
        first = [add_run(store, "a", T0 - timedelta(days=100 - i)) for i in range(3)]
        store.prune_runs(older_than=T0, keep_per_job=1)
        assert add_run(store, "b", T0) > max(first)

    def test_nothing_to_prune(self, store: Store) -> None:
        """An empty store, or nothing old: 0."""
        assert store.prune_runs(older_than=T0, keep_per_job=1) == 0
        add_run(store, "a", T0)
        assert store.prune_runs(older_than=T0, keep_per_job=1) == 0

    def test_keep_at_least_one(self, store: Store) -> None:
        """``keep_per_job`` below 1 is a mistake."""
        with pytest.raises(ValueError, match="keep_per_job"):
            store.prune_runs(older_than=T0, keep_per_job=0)
