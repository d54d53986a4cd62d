"""The ``akkiosync`` command line, through click's ``CliRunner`` and as a real subprocess.

Every test works on a SQLite source with an ``orders`` table whose ``created_at`` values tie in
groups of four, a job file that reads it in batches of 7 (so batches cut tie groups), and the
emulator served on a loopback port: the same path a user's container takes, minus Akkio.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from akkiosync.akkio import AkkioClient
from akkiosync.cli import cli
from akkiosync.emulator import Emulator, EmulatorServer, serve
from akkiosync.lock import JobLock, locks_dir
from akkiosync.results import utc_now
from akkiosync.state import Intent, Store
from tests.conftest import API_KEY

ROWS = 30
TIE = 4  # rows per created_at value
BATCH_SIZE = 7
START = datetime(2026, 3, 1, 12, 0, 0)  # noqa: DTZ001 - naive on purpose: a DATETIME column
WRONG_KEY = "wrong-key-Zx7Qv93KpLm2"

Invoke = Callable[..., Result]
ORDERS_JOB = """\
source:
  url: ${ORDERS_DB_URL}
  table: orders
  watermark: created_at
  key: id
target:
  dataset: Orders
batch_size: 7
"""


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A SQLite source holding ``orders`` rows 1..ROWS."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount NUMERIC(10, 2), "
                    "status TEXT, created_at DATETIME)"
                )
            )
        insert_orders(url, range(1, ROWS + 1))
    finally:
        engine.dispose()
    return url


def insert_orders(url: str, ids: range, start: datetime = START) -> None:
    """Insert orders with these ids; each group of TIE ids shares one created_at."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO orders (id, amount, status, created_at) "
                    "VALUES (:id, :amount, :status, :created_at)"
                ),
                [
                    {
                        "id": i,
                        "amount": f"{i}.25",
                        "status": ("placed", "paid", "shipped")[i % 3],
                        "created_at": (start + timedelta(seconds=i // TIE)).isoformat(sep=" "),
                    }
                    for i in ids
                ],
            )
    finally:
        engine.dispose()


def execute(url: str, sql: str) -> None:
    """Run one statement on the source."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """``<tmp>/config`` with ``jobs/orders.yaml``."""
    jobs = tmp_path / "config" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "orders.yaml").write_text(ORDERS_JOB)
    return tmp_path / "config"


@pytest.fixture
def server(emulator: Emulator) -> Iterator[EmulatorServer]:
    """The emulator on a loopback port."""
    with serve(emulator) as running:
        yield running


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: EmulatorServer, db_url: str
) -> dict[str, str]:
    """The variables a deployment sets, pointing at the emulator, the store and the source."""
    values = {
        "AKKIO_API_KEY": API_KEY,
        "AKKIO_BASE_URL": server.url,
        "AKKIOSYNC_STATE": str(tmp_path / "state" / "akkiosync.db"),
        "ORDERS_DB_URL": db_url,
        # Akkio's 5 requests/second would make every test wait; the emulator has no such limit.
        "AKKIO_RATE_LIMIT": "1000",
        "AKKIOSYNC_RECONCILE_WAIT": "0",
        "AKKIOSYNC_LANDING_GRACE": "1",  # the emulator stores at once or never
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def run(config_dir: Path, env: dict[str, str]) -> Invoke:
    """Invoke ``akkiosync --config <config_dir> ARGS...``."""

    def invoke(*args: str, user_input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config_dir), *args], input=user_input)

    return invoke


def only_dataset(emulator: Emulator) -> str:
    """The id of the one dataset the emulator holds."""
    (dataset_id,) = emulator.dataset_ids()
    return dataset_id


def ids_in(emulator: Emulator, dataset_id: str) -> list[int]:
    """The ``id`` of every row in the dataset, sorted (duplicates kept)."""
    return sorted(row["id"] for row in emulator.rows(dataset_id))


def json_lines(text: str) -> list[dict[str, Any]]:
    """The lines of ``text`` that are JSON objects, parsed."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_config_error(result: Result, *fragments: str) -> None:
    """Exit 2, an ``error:`` line holding every fragment on stderr, and no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(all(f in line for f in fragments) for line in errors), result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


# -- help and usage ----------------------------------------------------------------------------


class TestStartUp:
    """The entry point keeps start-up objects out of garbage collections."""

    def test_main_freezes_what_is_loaded(self) -> None:
        """``akkiosync`` (a real process) runs with every start-up object frozen."""
        code = (
            "import gc, sys; from akkiosync import cli; "
            "sys.argv = ['akkiosync', '--help']; "
            "import atexit; atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
            "cli.main()"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        frozen = int(done.stdout.rsplit("frozen ", 1)[1])
        assert frozen > 10_000  # SQLAlchemy, pydantic and ours: tens of thousands of objects

    def test_commands_but_run_do_not_load_the_daemon(self) -> None:
        """The scheduler, metrics and alerts are imported by ``run`` alone."""
        code = (
            "import sys, akkiosync.cli; "
            "print(sorted(m for m in ('akkiosync.daemon', 'apscheduler', 'prometheus_client') "
            "if m in sys.modules))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert done.stdout.strip() == "[]"


class TestHelp:
    """Every command documents itself; unknown commands are usage errors."""

    @pytest.mark.parametrize(
        "command",
        [
            [],
            ["sync"],
            ["validate"],
            ["preview"],
            ["status"],
            ["logs"],
            ["reset"],
            ["emulator"],
            ["demo"],
        ],
    )
    def test_help_exits_zero(self, command: list[str]) -> None:
        """``--help`` prints usage and exits 0 for the group and each command."""
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Usage: ")
        assert " ".join(["cli", *command]) in result.stdout.splitlines()[0]

    def test_group_help_lists_commands(self) -> None:
        """The group's help names every command."""
        result = CliRunner().invoke(cli, ["--help"])
        for command in ("sync", "validate", "preview", "status", "logs", "reset", "demo"):
            assert command in result.stdout

    def test_unknown_command_is_usage_error(self) -> None:
        """An unknown command exits 2 and says which."""
        result = CliRunner().invoke(cli, ["frobnicate"])
        assert result.exit_code == 2
        assert "No such command 'frobnicate'" in result.stderr

    def test_version(self) -> None:
        """``--version`` prints the package version."""
        result = CliRunner().invoke(cli, ["--version"])
        assert result.exit_code == 0
        assert "0.1.0" in result.stdout


# -- validate ----------------------------------------------------------------------------------


class TestValidate:
    """``validate`` lists good jobs and rejects bad configuration with exit 2 and file:key."""

    def test_valid_config(self, run: Invoke) -> None:
        """A good job is listed with its table, dataset and schedule."""
        result = run("validate")
        assert result.exit_code == 0, result.output
        assert "orders: table orders -> dataset Orders, schedule manual (sync only)" in (
            result.stdout
        )
        assert "1 job(s) valid" in result.stdout
        assert "warning" not in result.stdout

    def test_warns_without_key(self, run: Invoke, config_dir: Path) -> None:
        """A job without ``source.key`` is valid but warned about."""
        job = config_dir / "jobs" / "orders.yaml"
        job.write_text(ORDERS_JOB.replace("  key: id\n", ""))
        result = run("validate")
        assert result.exit_code == 0, result.output
        assert "warning: orders has no source.key" in result.stdout
        assert "1 job(s) valid" in result.stdout

    def test_reports_columns_edited_after_pinning(self, run: Invoke, config_dir: Path) -> None:
        """Once the dataset is pinned, columns options that no longer match it are warned
        about (exit 0): an excluded field sent as null, a rename that cannot apply."""
        assert run("sync").exit_code == 0
        job = config_dir / "jobs" / "orders.yaml"
        job.write_text(ORDERS_JOB + "columns:\n  exclude: [status]\n  rename: {amount: usd}\n")
        result = run("validate")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert (
            "  warning: column status is excluded by the job file but field status is in the "
            "dataset's schema: sent as null; `akkiosync reset orders` to drop the field"
        ) in lines
        assert any(
            line.startswith("  warning: column amount becomes field usd in the job file")
            and "akkiosync reset orders" in line
            for line in lines
        ), lines
        assert "1 job(s) valid" in result.stdout

    def test_no_store_is_created(self, run: Invoke, env: dict[str, str]) -> None:
        """Before any sync there is nothing pinned to compare, and no store file appears."""
        result = run("validate")
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stdout
        assert not Path(env["AKKIOSYNC_STATE"]).exists()

    def test_connect_prints_fields(self, run: Invoke) -> None:
        """``--connect`` opens the source and prints the fields the dataset would get."""
        result = run("validate", "--connect")
        assert result.exit_code == 0, result.output
        assert (
            "source ok; fields: id:integer, amount:float, status:string, created_at:date"
            in result.stdout
        )

    @pytest.mark.parametrize(
        ("text", "fragments"),
        [
            pytest.param(ORDERS_JOB + "colour: red\n", ("colour: unknown key",), id="unknown-key"),
            pytest.param(
                ORDERS_JOB.replace("batch_size: 7", "batch_size: abc"),
                ("batch_size: ", "integer"),
                id="wrong-type",
            ),
            pytest.param(
                ORDERS_JOB.replace("${ORDERS_DB_URL}", "${NO_SUCH_DB_URL}"),
                ("source.url: environment variable NO_SUCH_DB_URL is not set",),
                id="missing-env",
            ),
            pytest.param(
                ORDERS_JOB + "schedule: every tuesday\n", ("schedule: ",), id="bad-schedule"
            ),
            pytest.param(
                ORDERS_JOB.replace("target:\n", "target:\n  - oops\n"),
                ("invalid YAML",),
                id="invalid-yaml",
            ),
            pytest.param(
                ORDERS_JOB.replace("  watermark: created_at\n", ""),
                ("source.watermark: required key is missing",),
                id="missing-key",
            ),
        ],
    )
    def test_bad_job_file(
        self, run: Invoke, config_dir: Path, text: str, fragments: tuple[str, ...]
    ) -> None:
        """Each kind of mistake exits 2 with ``error: <file>: <where>: ...`` and no traceback."""
        job = config_dir / "jobs" / "orders.yaml"
        job.write_text(text)
        assert_config_error(run("validate"), f"error: {job}: ", *fragments)

    def test_duplicate_job_name(self, run: Invoke, config_dir: Path) -> None:
        """Two files defining the same job name: exit 2 naming the second file and the first."""
        first = config_dir / "jobs" / "orders.yaml"
        second = config_dir / "jobs" / "orders_copy.yaml"
        second.write_text("name: orders\n" + ORDERS_JOB)
        assert_config_error(
            run("validate"), f"error: {second}: name: ", "'orders'", f"already used by {first}"
        )

    def test_every_problem_reported(self, run: Invoke, config_dir: Path) -> None:
        """Problems in several files are reported together, one ``error:`` line each."""
        (config_dir / "jobs" / "orders.yaml").write_text(ORDERS_JOB + "colour: red\n")
        (config_dir / "jobs" / "other.yaml").write_text(ORDERS_JOB + "batch_size: abc\n")
        result = run("validate")
        assert_config_error(result, "orders.yaml: colour: unknown key")
        assert_config_error(result, "other.yaml: ")

    def test_missing_jobs_dir(self, env: dict[str, str], tmp_path: Path) -> None:
        """A config directory without ``jobs/`` exits 2 saying so."""
        empty = tmp_path / "nowhere"
        result = CliRunner().invoke(cli, ["--config", str(empty), "validate"])
        assert_config_error(result, str(empty / "jobs"), "no such directory")

    def test_no_job_files(self, env: dict[str, str], tmp_path: Path) -> None:
        """An empty ``jobs/`` directory exits 2 saying there are no job files."""
        (tmp_path / "empty" / "jobs").mkdir(parents=True)
        result = CliRunner().invoke(cli, ["--config", str(tmp_path / "empty"), "validate"])
        assert_config_error(result, "no job files")

    def test_config_from_environment(
        self, env: dict[str, str], config_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without ``--config``, AKKIOSYNC_CONFIG names the directory."""
        monkeypatch.setenv("AKKIOSYNC_CONFIG", str(config_dir))
        result = CliRunner().invoke(cli, ["validate"])
        assert result.exit_code == 0, result.output
        assert "1 job(s) valid" in result.stdout


# -- sync --------------------------------------------------------------------------------------


class TestSync:
    """``sync`` sends each source row exactly once and exits 1 when a job fails."""

    def test_first_sync_sends_every_row_once(self, run: Invoke, emulator: Emulator) -> None:
        """Every row lands exactly once, in batches of at most 7, and the summary says so."""
        result = run("sync")
        assert result.exit_code == 0, result.output
        dataset_id = only_dataset(emulator)
        assert f"orders: ok, {ROWS} rows in " in result.stdout
        assert f"to dataset {dataset_id}" in result.stdout
        assert ids_in(emulator, dataset_id) == list(range(1, ROWS + 1))
        first = emulator.rows(dataset_id)[0]
        assert first == {
            "id": 1,
            "amount": 1.25,
            "status": "paid",
            "created_at": "2026-03-01T12:00:00",
        }

    def test_named_job(self, run: Invoke, emulator: Emulator) -> None:
        """``sync orders`` runs just that job."""
        result = run("sync", "orders")
        assert result.exit_code == 0, result.output
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 1))

    def test_second_sync_sends_nothing(self, run: Invoke, emulator: Emulator) -> None:
        """With no new rows, a second sync sends 0 rows and adds no request for rows."""
        run("sync")
        result = run("sync")
        assert result.exit_code == 0, result.output
        assert "orders: ok, 0 rows in 0 batches" in result.stdout
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 1))

    def test_only_new_rows_sent(self, run: Invoke, emulator: Emulator, db_url: str) -> None:
        """Rows inserted after a sync, some tying the last watermark, are all that is sent next."""
        run("sync")
        # Ids 31 and 32 share created_at with ids 28-30 (31 // 4 == 7): ties across runs.
        insert_orders(db_url, range(ROWS + 1, ROWS + 11))
        result = run("sync")
        assert result.exit_code == 0, result.output
        assert "orders: ok, 10 rows" in result.stdout
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 11))

    def test_unknown_job(self, run: Invoke, emulator: Emulator) -> None:
        """An unknown job name exits 2, lists the known jobs and sends nothing."""
        result = run("sync", "nope")
        assert_config_error(result, "no such job: nope", "known jobs: orders")
        assert emulator.request_count() == 0

    def test_missing_api_key(
        self, run: Invoke, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without AKKIO_API_KEY, sync exits 2 naming the variable."""
        monkeypatch.delenv("AKKIO_API_KEY")
        result = run("sync")
        assert_config_error(result, "AKKIO_API_KEY")
        assert emulator.request_count() == 0

    def test_dropped_table_fails(self, run: Invoke, db_url: str) -> None:
        """A source that cannot be read fails the job: exit 1 and ``FAILED`` on stderr."""
        execute(db_url, "DROP TABLE orders")
        result = run("sync")
        assert result.exit_code == 1, result.output
        assert "orders: FAILED: " in result.stderr
        assert "Traceback" not in result.output

    def test_wrong_api_key_fails_without_leaking(
        self, run: Invoke, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rejected key fails the job (exit 1) and the key's value is printed nowhere."""
        monkeypatch.setenv("AKKIO_API_KEY", WRONG_KEY)
        result = run("sync")
        assert result.exit_code == 1, result.output
        assert "orders: FAILED: " in result.stderr
        assert emulator.dataset_ids() == []
        assert WRONG_KEY not in result.output
        for args in (("status",), ("status", "--json"), ("logs",)):
            shown = run(*args)
            assert shown.exit_code == 0, shown.output
            assert WRONG_KEY not in shown.output

    def test_api_key_never_printed(self, run: Invoke) -> None:
        """A working key appears in no command's output, debug logs included."""
        commands = [
            ("--log-level", "DEBUG", "sync"),
            ("status",),
            ("status", "--json"),
            ("logs",),
            ("validate", "--connect"),
        ]
        for args in commands:
            result = run(*args)
            assert result.exit_code == 0, result.output
            assert API_KEY not in result.output, args

    def test_raw_at_password_never_printed(
        self, run: Invoke, config_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A source URL whose password holds a raw ``@`` is refused (exit 2) with a hint to
        percent-encode, and no command prints any part of the password."""
        monkeypatch.setenv("ORDERS_DB_URL", "postgresql://u:Pa@ssW0rd-zq@127.0.0.1:1/shop")
        commands = [
            (("validate",), 2),
            (("--log-level", "DEBUG", "sync"), 2),
            (("status",), 0),
            (("status", "--json"), 0),
            (("logs",), 0),
        ]
        for args, exit_code in commands:
            result = run(*args)
            assert result.exit_code == exit_code, (args, result.output)
            for part in ("Pa@ss", "ssW0rd", "W0rd-zq", "ssW0rd-zq@127.0.0.1"):
                assert part not in result.output, (args, result.output)
        refused = run("validate")
        assert_config_error(refused, "source.url: ", "percent-encoded", "%40")


# -- preview -----------------------------------------------------------------------------------


class TestPreview:
    """``preview`` shows the schema and the next records, and sends nothing."""

    def test_schema_and_records(self, run: Invoke, emulator: Emulator) -> None:
        """The planned schema, then ``--rows`` records as JSON lines in cursor order."""
        result = run("preview", "orders", "--rows", "3")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[:5] == [
            "schema (would be created with):",
            "  id: integer",
            "  amount: float",
            "  status: string",
            "  created_at: date",
        ]
        assert "next 3 record(s) after the start:" in lines
        records = json_lines(result.stdout)
        assert [r["id"] for r in records] == [1, 2, 3]
        assert set(records[0]) == {"id", "amount", "status", "created_at"}
        assert emulator.dataset_ids() == []
        assert emulator.request_count() == 0

    def test_without_api_key(
        self, run: Invoke, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Preview needs no API key: it never talks to Akkio."""
        monkeypatch.delenv("AKKIO_API_KEY")
        result = run("preview", "orders")
        assert result.exit_code == 0, result.output
        assert [r["id"] for r in json_lines(result.stdout)] == [1, 2, 3, 4, 5]
        assert emulator.request_count() == 0

    def test_after_sync_starts_at_cursor(
        self, run: Invoke, emulator: Emulator, db_url: str
    ) -> None:
        """After a sync, the schema is the pinned one and the records start past the cursor."""
        run("sync")
        insert_orders(db_url, range(ROWS + 1, ROWS + 3))
        requests = emulator.request_count()
        result = run("preview", "orders", "--rows", "10")
        assert result.exit_code == 0, result.output
        assert "schema (pinned):" in result.stdout
        assert [r["id"] for r in json_lines(result.stdout)] == [ROWS + 1, ROWS + 2]
        assert emulator.request_count() == requests

    def test_unknown_job(self, run: Invoke) -> None:
        """Previewing a job no file defines exits 2."""
        assert_config_error(run("preview", "nope"), "no such job: nope")


# -- status ------------------------------------------------------------------------------------


def status_row(output: str, job: str) -> str:
    """The line of ``status``'s table for ``job``."""
    (line,) = [line for line in output.splitlines() if line.split()[:1] == [job]]
    return line


class TestStatus:
    """``status`` shows each job's dataset, counters and last run, as a table or JSON."""

    def test_before_any_run(self, run: Invoke) -> None:
        """A configured job that never ran shows no dataset, 0 rows and ``never``."""
        result = run("status")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == "daemon: not running"
        assert result.stdout.splitlines()[1].split() == [
            "JOB", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN", "RESULT", "DATASET", "ROWS", "SENT",
            "CURSOR", "LAG",
        ]  # fmt: skip
        never_ran = ["orders", "manual", "-", "never", "-", "-", "0", "-", "-"]
        assert status_row(result.stdout, "orders").split() == never_ran

    def test_after_sync(self, run: Invoke, emulator: Emulator) -> None:
        """After a sync: the dataset's name and id, rows sent, and a successful last run."""
        run("sync")
        dataset_id = only_dataset(emulator)
        result = run("status")
        assert result.exit_code == 0, result.output
        row = status_row(result.stdout, "orders")
        assert f"Orders ({dataset_id})" in row
        assert f" {ROWS} " in row
        assert " success " in row
        assert row.endswith(" 0s")  # the cursor is at the source's newest row: no lag

    def test_json(self, run: Invoke, emulator: Emulator) -> None:
        """``--json`` prints one JSON object per job with the same facts."""
        run("sync")
        result = run("status", "--json")
        assert result.exit_code == 0, result.output
        (row,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert row["job"] == "orders"
        assert row["dataset"] == "Orders"
        assert row["dataset_id"] == only_dataset(emulator)
        assert row["rows_sent"] == ROWS
        assert row["last_status"] == "success"
        assert row["last_error"] is None

    def test_json_before_any_run(self, run: Invoke) -> None:
        """``--json`` before any run: 0 rows sent, no last run."""
        (row,) = [json.loads(line) for line in run("status", "--json").stdout.splitlines()]
        assert row["rows_sent"] == 0
        assert row["last_run"] is None

    def test_failed_run_shows_error(self, run: Invoke, db_url: str) -> None:
        """A failed last run shows ``failed`` and its error."""
        execute(db_url, "DROP TABLE orders")
        run("sync")
        result = run("status")
        assert result.exit_code == 0, result.output
        assert " failed " in status_row(result.stdout, "orders")
        assert "orders: last error: " in result.stdout
        (row,) = json_lines(run("status", "--json").stdout)
        assert row["last_status"] == "failed"
        assert row["last_error"]

    def test_without_config(self, env: dict[str, str], tmp_path: Path) -> None:
        """Without job files, status still answers from the store."""
        result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nowhere"), "status"])
        assert result.exit_code == 0, result.output
        assert result.stdout == "daemon: not running\nno jobs\n"


# -- logs --------------------------------------------------------------------------------------


class TestLogs:
    """``logs`` lists runs newest first, with their status and row counts."""

    def test_no_runs(self, run: Invoke) -> None:
        """With no runs recorded, it says so."""
        result = run("logs")
        assert result.exit_code == 0, result.output
        assert result.stdout == "no runs yet\n"

    def test_newest_first(self, run: Invoke) -> None:
        """Two syncs: the second (0 rows) is listed before the first (all rows)."""
        run("sync")
        run("sync")
        for args in (("logs",), ("logs", "orders")):
            result = run(*args)
            assert result.exit_code == 0, result.output
            lines = result.stdout.splitlines()
            assert len(lines) == 2
            assert lines[0].startswith("#2 ")
            assert " orders success 0 rows 0 batches " in lines[0]
            assert lines[1].startswith("#1 ")
            assert f" orders success {ROWS} rows 5 batches " in lines[1]

    def test_failed_run_listed_with_error(self, run: Invoke, db_url: str) -> None:
        """A failed run is listed as ``failed`` with its error."""
        execute(db_url, "DROP TABLE orders")
        run("sync")
        (line,) = run("logs", "orders").stdout.splitlines()
        assert " orders failed 0 rows " in line
        assert " error: " in line

    def test_other_job_has_none(self, run: Invoke, config_dir: Path) -> None:
        """Asking for a configured job without runs says there are none."""
        run("sync")
        other = ORDERS_JOB.replace("dataset: Orders", "dataset: Customers")
        (config_dir / "jobs" / "customers.yaml").write_text(other)
        assert run("logs", "customers").stdout == "no runs yet\n"

    def test_limit(self, run: Invoke) -> None:
        """``--limit`` keeps the newest runs."""
        for _ in range(3):
            run("sync")
        lines = run("logs", "--limit", "2").stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["#3", "#2"]


# -- reset -------------------------------------------------------------------------------------


class TestReset:
    """``reset`` forgets a job's dataset and cursor, so the next sync starts over."""

    def test_next_sync_starts_over(self, run: Invoke, emulator: Emulator) -> None:
        """After ``reset --yes`` a sync creates a new dataset and sends every row to it."""
        run("sync")
        old = only_dataset(emulator)
        result = run("reset", "orders", "--yes")
        assert result.exit_code == 0, result.output
        assert "orders: reset" in result.stdout
        assert run("sync").exit_code == 0
        old_again, new = emulator.dataset_ids()
        assert old_again == old
        assert ids_in(emulator, new) == list(range(1, ROWS + 1))
        assert ids_in(emulator, old) == list(range(1, ROWS + 1))

    def test_asks_first(self, run: Invoke, emulator: Emulator) -> None:
        """Without ``--yes`` it asks; answering no aborts with exit 1 and changes nothing."""
        run("sync")
        dataset_id = only_dataset(emulator)
        result = run("reset", "orders", user_input="n\n")
        assert result.exit_code == 1
        assert f"Reset orders (dataset Orders {dataset_id}, {ROWS} rows sent)?" in result.output
        assert "Aborted" in result.output
        (row,) = json_lines(run("status", "--json").stdout)
        assert row["dataset_id"] == dataset_id
        assert row["rows_sent"] == ROWS
        assert run("sync").stdout.startswith("orders: ok, 0 rows")

    def test_confirmed_interactively(self, run: Invoke) -> None:
        """Answering yes to the question resets."""
        run("sync")
        result = run("reset", "orders", user_input="y\n")
        assert result.exit_code == 0, result.output
        (row,) = json_lines(run("status", "--json").stdout)
        assert row["dataset_id"] is None

    def test_delete_dataset(self, run: Invoke, emulator: Emulator) -> None:
        """``--delete-dataset`` also deletes the dataset on Akkio."""
        run("sync")
        dataset_id = only_dataset(emulator)
        result = run("reset", "orders", "--yes", "--delete-dataset")
        assert result.exit_code == 0, result.output
        assert f"orders: deleted dataset {dataset_id}" in result.stdout
        assert emulator.dataset_ids() == []

    def test_nothing_to_reset(self, run: Invoke, emulator: Emulator) -> None:
        """A configured job that never synced has nothing to reset."""
        result = run("reset", "orders", "--yes")
        assert result.exit_code == 0, result.output
        assert result.stdout == "orders: nothing to reset\n"
        assert emulator.request_count() == 0


@pytest.fixture
def orders_lock(env: dict[str, str]) -> Iterator[JobLock]:
    """The ``orders`` job's lock, held by this test process as a running sync holds it."""
    lock = JobLock(locks_dir(Path(env["AKKIOSYNC_STATE"])), "orders")
    assert lock.acquire()
    with lock:
        yield lock


class TestResetHoldsTheLock:
    """``reset`` changes a job's state only while holding its lock, as a run does."""

    BUSY = (
        f"error: job orders is running in another process (pid {os.getpid()}): nothing was "
        "reset; wait for it to finish or use --wait SECONDS"
    )

    def test_refuses_while_held(self, run: Invoke, emulator: Emulator, env: dict[str, str]) -> None:
        """While another holds the lock, reset exits 1 naming the holder and changes nothing."""
        run("sync")
        dataset_id = only_dataset(emulator)
        with JobLock(locks_dir(Path(env["AKKIOSYNC_STATE"])), "orders") as held:
            assert held.acquire()
            result = run("reset", "orders", "--yes", "--delete-dataset")
        assert result.exit_code == 1, result.output
        assert self.BUSY in result.stderr.splitlines()
        assert result.stdout == ""
        assert emulator.dataset_ids() == [dataset_id]
        (row,) = json_lines(run("status", "--json", "--no-lag").stdout)
        assert (row["dataset_id"], row["rows_sent"]) == (dataset_id, ROWS)

    def test_before_the_first_run(self, run: Invoke, orders_lock: JobLock) -> None:
        """A job whose first run holds the lock is refused, not found 'nothing to reset'."""
        result = run("reset", "orders", "--yes")
        assert result.exit_code == 1, result.output
        assert self.BUSY in result.stderr.splitlines()

    def test_waits_then_refuses(self, run: Invoke, orders_lock: JobLock) -> None:
        """With ``--wait`` it says whom it waits for, then refuses once the time is up."""
        started = time.monotonic()
        result = run("reset", "orders", "--yes", "--wait", "0.3")
        assert time.monotonic() - started >= 0.3
        assert result.exit_code == 1, result.output
        lines = result.stderr.splitlines()
        assert f"waiting for job orders, running in process {os.getpid()}..." in lines
        assert self.BUSY in lines

    def test_through_a_symlinked_store(
        self, run: Invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, orders_lock: JobLock
    ) -> None:
        """A lock held through the real path also stops a reset given a symlink to the store."""
        run("sync")
        link = tmp_path / "link.db"
        link.symlink_to(os.environ["AKKIOSYNC_STATE"])
        monkeypatch.setenv("AKKIOSYNC_STATE", str(link))
        result = run("reset", "orders", "--yes")
        assert result.exit_code == 1, result.output
        assert self.BUSY in result.stderr.splitlines()

    def test_resets_once_free(self, run: Invoke, emulator: Emulator, env: dict[str, str]) -> None:
        """With the lock released (its file left behind), reset proceeds and the next sync
        starts over."""
        run("sync")
        with JobLock(locks_dir(Path(env["AKKIOSYNC_STATE"])), "orders") as held:
            assert held.acquire()
        result = run("reset", "orders", "--yes", "--wait", "5")
        assert result.exit_code == 0, result.output
        assert "waiting" not in result.stderr
        assert run("sync").exit_code == 0
        _, new = emulator.dataset_ids()
        assert ids_in(emulator, new) == list(range(1, ROWS + 1))


class TestKeepDataset:
    """``reset --keep-dataset`` restarts the cursor into the same dataset."""

    def test_changed_watermark_rebaselined(
        self, run: Invoke, emulator: Emulator, config_dir: Path, db_url: str
    ) -> None:
        """A watermark edited after the first run fails the sync (exit 1, both columns named);
        after ``reset --keep-dataset`` the job goes on in the same dataset from its
        initial_watermark, sending only what is new."""
        assert run("sync").exit_code == 0
        dataset_id = only_dataset(emulator)
        job = config_dir / "jobs" / "orders.yaml"
        job.write_text(ORDERS_JOB.replace("watermark: created_at", "watermark: id"))
        failed = run("sync")
        assert failed.exit_code == 1
        assert "watermark created_at (datetime), key id (int)" in failed.stderr
        assert "watermark id (int), key id (int)" in failed.stderr
        result = run("reset", "orders", "--keep-dataset", "--yes")
        assert result.exit_code == 0, result.output
        assert f"into the same dataset {dataset_id}" in result.stdout
        start = f"watermark: id\n  initial_watermark: {ROWS + 1}"
        job.write_text(ORDERS_JOB.replace("watermark: created_at", start))
        insert_orders(db_url, range(ROWS + 1, ROWS + 4))
        synced = run("sync")
        assert synced.exit_code == 0, synced.output
        assert "orders: ok, 3 rows" in synced.stdout
        assert emulator.dataset_ids() == [dataset_id]
        assert ids_in(emulator, dataset_id) == list(range(1, ROWS + 4))

    def test_excludes_delete_dataset(self, run: Invoke) -> None:
        """The two options contradict each other: a usage error."""
        result = run("reset", "orders", "--keep-dataset", "--delete-dataset", "--yes")
        assert result.exit_code == 2
        assert "exclude each other" in result.output


def in_flight(env: dict[str, str], dataset_id: str, rows_before: int, rows: int) -> Intent:
    """Leave an intent as a run killed while sending a batch of ``rows`` leaves it."""
    intent = Intent("orders", dataset_id, rows, rows_before, None, '{"x": 1}', utc_now())
    with Store.open(Path(env["AKKIOSYNC_STATE"])) as store:
        store.record_intent(intent)
    return intent


def land(emulator: Emulator, dataset_id: str, ids: range) -> None:
    """Store rows in the dataset as a late request would."""
    rows = [
        {"id": i, "amount": 1.0, "status": "late", "created_at": "2026-01-01T00:00:00"} for i in ids
    ]
    with httpx.Client(transport=emulator.transport()) as http:
        http.post(
            "http://emulator/v1/datasets", json={"api_key": API_KEY, "id": dataset_id, "rows": rows}
        ).raise_for_status()


class TestInFlight:
    """A command that changes what a job expects first settles the batch a run left in flight."""

    def test_accept_waits_for_the_grace(
        self, run: Invoke, emulator: Emulator, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A batch that may still land: accept refuses (exit 1), changing nothing."""
        monkeypatch.setenv("AKKIOSYNC_LANDING_GRACE", "600")
        run("sync")
        dataset_id = only_dataset(emulator)
        in_flight(env, dataset_id, ROWS, 3)
        result = run("accept", "orders", "--yes")
        assert result.exit_code == 1
        assert "may still land" in result.stderr
        with Store.open(Path(env["AKKIOSYNC_STATE"])) as store:
            assert store.pending_intent("orders") is not None
            assert store.job_state("orders").rows_expected == ROWS

    def test_keep_dataset_counts_a_landed_batch(
        self, run: Invoke, emulator: Emulator, env: dict[str, str]
    ) -> None:
        """reset --keep-dataset commits a batch that landed, so the rows it holds stay
        expected and the next run's count check passes."""
        run("sync")
        dataset_id = only_dataset(emulator)
        in_flight(env, dataset_id, ROWS, 3)
        land(emulator, dataset_id, range(101, 104))
        result = run("reset", "orders", "--keep-dataset", "--yes")
        assert result.exit_code == 0, result.output
        assert "had landed: committed" in result.stdout
        with Store.open(Path(env["AKKIOSYNC_STATE"])) as store:
            assert store.job_state("orders").rows_expected == ROWS + 3
            assert store.pending_intent("orders") is None


class TestAccept:
    """``accept`` takes the dataset's count as right after a count check stopped the job."""

    def test_foreign_rows_then_accept(self, run: Invoke, emulator: Emulator, db_url: str) -> None:
        """Rows written by someone else stop the next sync (exit 1, both counts named);
        ``accept`` takes the count as right and the job goes on, sending only what is new."""
        assert run("sync").exit_code == 0
        dataset_id = only_dataset(emulator)
        other = {"id": -1, "amount": 0, "status": "x", "created_at": "2026-01-01T00:00:00"}
        with httpx.Client(transport=emulator.transport()) as http:
            http.post(
                "http://emulator/v1/datasets",
                json={"api_key": API_KEY, "id": dataset_id, "rows": [other]},
            ).raise_for_status()
        insert_orders(db_url, range(ROWS + 1, ROWS + 3))
        stopped = run("sync")
        assert stopped.exit_code == 1
        assert f"has {ROWS + 1} rows before this run's first batch" in stopped.stderr
        assert f"delivered {ROWS}" in stopped.stderr
        assert "akkiosync accept orders" in stopped.stderr
        result = run("accept", "orders", "--yes")
        assert result.exit_code == 0, result.output
        assert f"has {ROWS + 1} rows; the job expected {ROWS}" in result.stdout
        synced = run("sync")
        assert synced.exit_code == 0, synced.output
        assert ids_in(emulator, dataset_id) == [-1, *range(1, ROWS + 3)]

    def test_nothing_to_accept(self, run: Invoke) -> None:
        """A dataset whose count is as expected is left alone."""
        run("sync")
        result = run("accept", "orders", "--yes")
        assert result.exit_code == 0, result.output
        assert f"has {ROWS} rows, as expected" in result.stdout

    def test_refuses_while_held(self, run: Invoke, orders_lock: JobLock) -> None:
        """Like reset, it refuses while a run holds the job's lock."""
        result = run("accept", "orders", "--yes")
        assert result.exit_code == 1
        assert f"(pid {os.getpid()}): nothing was accepted" in result.stderr


class TestLostState:
    """A lost state file never leads to a second dataset of the same name by surprise."""

    def test_second_dataset_needs_leave(
        self, run: Invoke, emulator: Emulator, env: dict[str, str]
    ) -> None:
        """After the state file is lost the sync stops (exit 1) naming the dataset and both
        ways out; ``sync orders --new-dataset`` then creates one deliberately."""
        assert run("sync").exit_code == 0
        old = only_dataset(emulator)
        state = Path(env["AKKIOSYNC_STATE"])
        for path in state.parent.glob(state.name + "*"):
            if path.is_file():
                path.unlink()
        stopped = run("sync")
        assert stopped.exit_code == 1
        assert f"dataset_id: {old}" in stopped.stderr
        assert "akkiosync sync orders --new-dataset" in stopped.stderr
        assert emulator.dataset_ids() == [old]
        assert run("sync", "--new-dataset").exit_code == 2  # names the jobs it is for
        created = run("sync", "orders", "--new-dataset")
        assert created.exit_code == 0, created.output
        _, new = emulator.dataset_ids()
        assert ids_in(emulator, new) == list(range(1, ROWS + 1))
        assert ids_in(emulator, old) == list(range(1, ROWS + 1))


# -- demo --------------------------------------------------------------------------------------


class TestDemo:
    """``demo`` runs the whole path on embedded defaults."""

    def test_demo(self) -> None:
        """It syncs twice and reports what landed in both datasets."""
        result = CliRunner().invoke(cli, ["demo", "--rows", "50"])
        assert result.exit_code == 0, result.output
        assert "what landed" in result.stdout
        assert "Demo customers (" in result.stdout
        assert "Demo orders (" in result.stdout
        assert "failed" not in result.stdout
        # 50 orders + 5 new ones, 12 customers + 12 updated: none twice despite the lost answer
        assert "nothing was sent twice" in result.stdout
        counts = re.findall(r"Demo (\w+) \(\w+\): (\d+) rows", result.stdout)
        assert sorted(counts) == [("customers", "24"), ("orders", "55")]


# -- as a real process -------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(process: subprocess.Popen[bytes], url: str, deadline: float) -> None:
    """Poll the emulator's health URL until it answers, the process dies or time runs out."""
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:  # waiting on the process paces the polling, and notices if it died
            process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the emulator exited with {process.returncode}")
    pytest.fail(f"the emulator did not answer {url} in time")


class TestSubprocess:
    """``python -m akkiosync`` works as a real process, against a real emulator process."""

    def test_bad_fault_flag(self, tmp_path: Path) -> None:
        """An unknown fault kind is a usage error (exit 2) naming the kinds, before serving."""
        result = subprocess.run(
            [sys.executable, "-m", "akkiosync", "emulator", "--port", "0", "--fault", "boom=1"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
            timeout=60,
        )
        assert result.returncode == 2
        assert "unknown fault kind 'boom'" in result.stderr
        assert "drop_after" in result.stderr

    def test_module_help(self, tmp_path: Path) -> None:
        """``python -m akkiosync --help`` exits 0."""
        result = subprocess.run(
            [sys.executable, "-m", "akkiosync", "--help"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: akkiosync ")

    def test_sync_end_to_end(self, tmp_path: Path, config_dir: Path, db_url: str) -> None:
        """An emulator process losing answers, and a sync process: every row landed once."""
        port, key = free_port(), "subprocess-key-4711"
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "emulator.log"
        env = {
            **os.environ,
            "AKKIO_API_KEY": key,
            "AKKIO_BASE_URL": f"{base}/v1",
            "AKKIOSYNC_STATE": str(tmp_path / "state" / "akkiosync.db"),
            "ORDERS_DB_URL": db_url,
            "AKKIOSYNC_RECONCILE_WAIT": "0",
            "AKKIOSYNC_LANDING_GRACE": "1",  # the emulator stores at once or never
        }
        command = [sys.executable, "-m", "akkiosync"]
        with log.open("wb") as log_file:
            emulator = subprocess.Popen(
                [*command, "emulator", "--port", str(port), "--api-key", key,
                 "--data", str(tmp_path / "emulator.jsonl"), "--fault-only", "add",
                 "--fault-script", "ok,drop_after,503,drop_before", "--retry-after", "0"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )  # fmt: skip
        try:
            wait_healthy(emulator, f"{base}/_emulator/health", time.monotonic() + 30)
            result = subprocess.run(
                [*command, "--config", str(config_dir), "sync"],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                check=False,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            assert f"orders: ok, {ROWS} rows" in result.stdout
            assert key not in result.stdout + result.stderr
            with httpx.Client(base_url=base, timeout=5) as http:
                listed = http.get("/v1/datasets", params={"api_key": key}).json()["datasets"]
                assert [d["name"] for d in listed] == ["Orders"]
                rows = http.get(
                    "/_emulator/rows", params={"id": listed[0]["id"], "api_key": key}
                ).json()["rows"]
                fired = http.get("/_emulator/faults", params={"api_key": key}).json()["fired"]
            assert sorted(row["id"] for row in rows) == list(range(1, ROWS + 1))
            assert (fired["drop_after"], fired["503"], fired["drop_before"]) == (1, 1, 1)
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
        assert key not in log.read_text()


# -- existing datasets, one writer, inferred types ---------------------------------------------

SHOP_JOB = ORDERS_JOB.replace("  dataset: Orders\n", "  dataset: Shop\n  adopt: true\n")
SHOP_APPEND = SHOP_JOB.replace("  adopt: true\n", "  adopt: true\n  existing_rows: append\n")
SHOP_FIELDS = {"ID": 1, "Amount": 2.5, "Status": True, "Created At": "2026-01-01T00:00:00"}


@pytest.fixture
def shop(config_dir: Path, client: AkkioClient) -> str:
    """An existing dataset ``Shop`` (fields ``ID``, ``Amount``, ``Status``, ``Created At``,
    one row), and the orders job writing into it by name."""
    ref = client.create_dataset("Shop")
    client.add_rows(ref.id, [SHOP_FIELDS])
    (config_dir / "jobs" / "orders.yaml").write_text(SHOP_APPEND)
    return ref.id


def assert_error_line(result: Result, code: int, *fragments: str) -> None:
    """Exit ``code``, an ``error:`` line holding every fragment on stderr, and no traceback."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(all(f in line for f in fragments) for line in errors), result.stderr
    assert "Traceback" not in result.output


SHOP_MAPPING = [
    "    id -> ID (integer)",
    "    amount -> Amount (float)",
    "    status -> Status (category)",
    "    created_at -> Created At (date)",
]


class TestValidateMapping:
    """``validate --connect`` prints how a job maps onto an existing dataset, or why it cannot."""

    def test_prints_mapping(self, run: Invoke, shop: str) -> None:
        """Each source column and the dataset field it feeds, with the field's type."""
        result = run("validate", "--connect")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        start = lines.index(f"  source ok; mapped onto dataset Shop ({shop}), 1 row:")
        assert lines[start + 1 : start + 5] == SHOP_MAPPING
        assert "1 job(s) valid" in result.stdout

    def test_without_api_key(self, run: Invoke, shop: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without AKKIO_API_KEY the mapping is skipped, saying why; validate still passes."""
        monkeypatch.delenv("AKKIO_API_KEY")
        result = run("validate", "--connect")
        assert result.exit_code == 0, result.output
        assert "the mapping onto dataset Shop needs AKKIO_API_KEY: skipped" in result.stdout

    def test_missing_field(
        self, run: Invoke, shop: str, client: AkkioClient, config_dir: Path
    ) -> None:
        """A dataset field no column feeds: exit 2, naming the field and columns.rename."""
        ref = client.create_dataset("Regional")
        client.add_rows(ref.id, [{**SHOP_FIELDS, "Region": "EU"}])
        job = SHOP_APPEND.replace("dataset: Shop", "dataset: Regional")
        (config_dir / "jobs" / "orders.yaml").write_text(job)
        result = run("validate", "--connect")
        assert_error_line(
            result, 2, "orders: ", "Region", 'columns.rename: {source_column: "Region"}'
        )

    def test_rows_need_append(self, run: Invoke, shop: str, config_dir: Path) -> None:
        """A dataset holding rows without ``existing_rows: append``: exit 2 naming its count."""
        (config_dir / "jobs" / "orders.yaml").write_text(SHOP_JOB)
        result = run("validate", "--connect")
        assert_error_line(result, 2, "orders: ", "1 row", "existing_rows: append")


class TestPreviewMapping:
    """``preview`` of a job writing into an existing dataset shows the mapping."""

    def test_mapping_and_records(self, run: Invoke, shop: str, emulator: Emulator) -> None:
        """The mapping, then records carrying the dataset's field names; nothing is sent."""
        result = run("preview", "orders", "--rows", "2")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[:5] == [
            f"schema (mapped onto dataset Shop ({shop}), 1 row):",
            *(line.removeprefix("  ") for line in SHOP_MAPPING),
        ]
        records = json_lines(result.stdout)
        assert [r["ID"] for r in records] == [1, 2]
        assert set(records[0]) == {"ID", "Amount", "Status", "Created At"}
        assert len(emulator.rows(shop)) == 1

    def test_without_api_key(self, run: Invoke, shop: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a key, preview says the mapping needs one and shows the source's schema."""
        monkeypatch.delenv("AKKIO_API_KEY")
        result = run("preview", "orders")
        assert result.exit_code == 0, result.output
        assert "the mapping onto dataset Shop needs AKKIO_API_KEY" in result.stdout
        assert [r["id"] for r in json_lines(result.stdout)] == [1, 2, 3, 4, 5]

    def test_initial_watermark_as_the_run_reads(
        self, run: Invoke, shop: str, emulator: Emulator, config_dir: Path
    ) -> None:
        """With ``source.initial_watermark`` past the rows the dataset holds (what
        ``existing_rows: append`` recommends), preview shows the records the run then sends,
        not the rows before that watermark."""
        job = SHOP_APPEND.replace("  key: id\n", "  key: id\n  initial_watermark: 27\n")
        (config_dir / "jobs" / "orders.yaml").write_text(job.replace("created_at", "id", 1))
        shown = run("preview", "orders", "--rows", "10")
        assert shown.exit_code == 0, shown.output
        assert run("sync").exit_code == 0
        sent = emulator.rows(shop)[1:]
        assert [r["ID"] for r in sent] == [27, 28, 29, 30]
        assert json_lines(shown.stdout) == sent


class TestOneWriterCli:
    """Two job files writing one dataset are a configuration error."""

    def test_validate_names_both_files(self, run: Invoke, config_dir: Path) -> None:
        """``validate`` exits 2 naming the target and both files; nothing else runs either."""
        first = config_dir / "jobs" / "orders.yaml"
        second = config_dir / "jobs" / "orders_eu.yaml"
        second.write_text(ORDERS_JOB)
        assert_config_error(
            run("validate"), f"error: {second}: target: dataset 'Orders'", f"target of {first}"
        )
        assert_config_error(run("sync", "orders_eu"), f"target of {first}")

    def test_the_later_file_is_refused(self, run: Invoke, config_dir: Path) -> None:
        """As in the daemon, the file later by name is the invalid one: the first job runs,
        with a warning about the second."""
        second = config_dir / "jobs" / "orders_eu.yaml"
        second.write_text(ORDERS_JOB)
        result = run("sync", "orders")
        assert result.exit_code == 0, result.output
        assert f"warning: {second}: target: dataset 'Orders'" in result.stderr


class TestTypeWarningsInStatus:
    """Where Akkio typed a new dataset's field otherwise than planned, ``status`` says so."""

    def test_null_first_batch(self, run: Invoke, db_url: str) -> None:
        """``amount`` NULL in the whole first batch: Akkio makes it a string; status shows the
        warning as a line and in its JSON."""
        execute(db_url, f"UPDATE orders SET amount = NULL WHERE id <= {BATCH_SIZE}")
        assert run("sync").exit_code == 0
        result = run("status", "--no-lag")
        assert result.exit_code == 0, result.output
        (line,) = [x for x in result.stdout.splitlines() if "type warning" in x]
        assert line.startswith(
            "orders: type warning: field amount: planned float, Akkio inferred string"
        )
        (row,) = json_lines(run("status", "--json", "--no-lag").stdout)
        assert row["type_warnings"] == [line.removeprefix("orders: type warning: ")]


# -- one broken file never blocks the rest -----------------------------------------------------

HALF_WRITTEN = "source:\n  url: sqlite:///x.db\n  table: [orders\n"


def warning_lines(result: Result) -> list[str]:
    """The ``warning:`` lines of stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


class TestBrokenFileElsewhere:
    """An invalid job file is reported and skipped: the valid jobs still sync, preview, show."""

    @pytest.fixture
    def broken(self, config_dir: Path) -> Path:
        """``jobs/broken.yaml``, half-written: its YAML does not parse."""
        path = config_dir / "jobs" / "broken.yaml"
        path.write_text(HALF_WRITTEN)
        return path

    def test_sync_named_job(self, run: Invoke, broken: Path, emulator: Emulator) -> None:
        """``sync orders`` sends every row, exits 0, and warns about the broken file."""
        result = run("sync", "orders")
        assert result.exit_code == 0, result.output
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 1))
        (line,) = warning_lines(result)
        assert line.startswith(f"warning: {broken}: line 4, column ")
        assert "invalid YAML" in line

    def test_sync_all_runs_the_valid_then_exits_2(
        self, run: Invoke, broken: Path, emulator: Emulator
    ) -> None:
        """``sync`` with no name runs the valid jobs, then exits 2 for the broken file."""
        result = run("sync")
        assert result.exit_code == 2, result.output
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 1))
        assert any(str(broken) in line for line in warning_lines(result))
        assert "Traceback" not in result.output

    def test_sync_all_failed_job_exits_1(self, run: Invoke, broken: Path, db_url: str) -> None:
        """A failed job outranks the broken file: exit 1."""
        execute(db_url, "DROP TABLE orders")
        assert run("sync").exit_code == 1

    def test_sync_the_broken_job(self, run: Invoke, broken: Path) -> None:
        """Naming the broken file's job is an error naming the file (exit 2)."""
        assert_config_error(run("sync", "broken"), f"error: {broken}: line 4", "invalid YAML")

    def test_named_inside_the_broken_file(self, run: Invoke, config_dir: Path) -> None:
        """A job named by the ``name:`` of a file with an unknown key is found to be invalid."""
        path = config_dir / "jobs" / "x.yaml"
        path.write_text("name: custom\n" + ORDERS_JOB.replace("Orders", "Custom") + "colour: 1\n")
        assert_config_error(run("sync", "custom"), f"error: {path}: colour: unknown key")
        result = run("sync", "orders")
        assert result.exit_code == 0, result.output

    def test_unreadable_name_is_said(self, run: Invoke, config_dir: Path) -> None:
        """A name unknown to the valid jobs, with a broken file whose name cannot be read:
        exit 2, naming that file as a possible definition."""
        path = config_dir / "jobs" / "x.yaml"
        path.write_text("name: ${JOB_NAME}\nsource: [\n")
        assert_config_error(run("sync", "other"), "no such job: other", f"cannot be read: {path}")

    def test_preview_other_job(self, run: Invoke, broken: Path) -> None:
        """``preview orders`` shows its records while another file is broken."""
        result = run("preview", "orders", "--rows", "1")
        assert result.exit_code == 0, result.output
        assert "next 1 record(s)" in result.stdout
        assert any(str(broken) in line for line in warning_lines(result))

    def test_status_shows_real_schedule(self, run: Invoke, broken: Path, config_dir: Path) -> None:
        """``status`` shows the valid job's schedule, not "no jobs", and warns."""
        (config_dir / "jobs" / "orders.yaml").write_text(ORDERS_JOB + "schedule: 5m\n")
        result = run("status", "--no-lag")
        assert result.exit_code == 0, result.output
        assert status_row(result.stdout, "orders").split()[1] == "5m"
        assert any(str(broken) in line for line in warning_lines(result))

    def test_logs_of_a_valid_job(self, run: Invoke, broken: Path) -> None:
        """``logs orders`` lists its runs while another file is broken."""
        run("sync", "orders")
        result = run("logs", "orders")
        assert result.exit_code == 0, result.output
        assert " orders success " in result.stdout

    def test_logs_of_the_broken_job(self, run: Invoke, broken: Path) -> None:
        """``logs broken`` is no "no such job": its file exists, invalid; there are no runs."""
        result = run("logs", "broken")
        assert result.exit_code == 0, result.output
        assert result.stdout == "no runs yet\n"

    def test_validate_fails(self, run: Invoke, broken: Path) -> None:
        """``validate`` still exits 2 for any invalid file."""
        assert_config_error(run("validate"), f"error: {broken}: line 4")


class TestUnknownJobName:
    """A job name no file defines and the store does not know: exit 2, the known jobs listed."""

    @pytest.mark.parametrize(
        "args",
        [["sync", "nope"], ["preview", "nope"], ["logs", "nope"], ["reset", "nope", "--yes"],
         ["accept", "nope", "--yes"]],
        ids=["sync", "preview", "logs", "reset", "accept"],
    )  # fmt: skip
    def test_refused(self, run: Invoke, emulator: Emulator, args: list[str]) -> None:
        """Every command that takes a job name says it does not exist."""
        assert_config_error(run(*args), "no such job: nope (known jobs: orders)")
        assert emulator.request_count() == 0

    def test_removed_job_still_resets(
        self, run: Invoke, config_dir: Path, emulator: Emulator
    ) -> None:
        """A job whose file was removed but that the store knows can still be reset; the
        command says no file defines it."""
        run("sync")
        (config_dir / "jobs" / "orders.yaml").rename(config_dir / "orders.yaml.off")
        (config_dir / "jobs" / "other.yaml").write_text(
            ORDERS_JOB.replace("dataset: Orders", "dataset: Other")
        )
        result = run("reset", "orders", "--yes")
        assert result.exit_code == 0, result.output
        assert "orders: no job file defines it any more" in result.stderr
        assert "orders: reset;" in result.stdout

    def test_logs_of_a_removed_job(self, run: Invoke, config_dir: Path) -> None:
        """``logs`` of a job the store has runs of, but no file defines, lists them."""
        run("sync")
        (config_dir / "jobs" / "orders.yaml").unlink()
        result = run("logs", "orders")
        assert result.exit_code == 0, result.output
        assert " orders success " in result.stdout


# -- clear errors, never a traceback -----------------------------------------------------------


def write_orders(config_dir: Path, old: str, new: str) -> Path:
    """Rewrite ``jobs/orders.yaml`` with ``old`` replaced by ``new``."""
    path = config_dir / "jobs" / "orders.yaml"
    path.write_text(ORDERS_JOB.replace(old, new))
    return path


class TestClearErrors:
    """Each bad input is one line saying what, where and what to do, with its exit code."""

    def test_emulator_port_in_use(self) -> None:
        """The emulator on a port that is taken: exit 2, naming the address and ``--port``."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = CliRunner().invoke(cli, ["emulator", "--port", str(port)])
        assert_config_error(
            result, f"emulator: cannot listen on 127.0.0.1:{port}", "in use", "--port"
        )

    def test_mysql_unknown_charset(self, run: Invoke, config_dir: Path) -> None:
        """An unknown ``charset`` in a MySQL URL: the run fails naming it, and ``validate
        --connect`` exits 2 naming the file."""
        url = "mysql+pymysql://root:Sekr1t@127.0.0.1:1/test?charset=nonesuch"
        path = write_orders(config_dir, "${ORDERS_DB_URL}", url)
        result = run("sync")
        assert result.exit_code == 1, result.output
        assert "orders: FAILED: source.url: unknown MySQL charset 'nonesuch'" in result.stderr
        assert "charset=utf8mb4" in result.stderr
        assert "Sekr1t" not in result.output
        assert "Traceback" not in result.output
        result = run("validate", "--connect")
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2
        assert errors == [
            f"error: {path}: source.url: unknown MySQL charset 'nonesuch' in "
            "mysql+pymysql://root:***@127.0.0.1:1/test?charset=nonesuch: use a character set "
            "MySQL knows, such as charset=utf8mb4"
        ]

    @pytest.mark.parametrize("url", ["localhost:8765", "htp://akkio", "http://", "https:///v1"])
    def test_malformed_base_url(
        self, run: Invoke, monkeypatch: pytest.MonkeyPatch, emulator: Emulator, url: str
    ) -> None:
        """A malformed ``AKKIO_BASE_URL``: exit 2 at once, saying what a good one looks like."""
        monkeypatch.setenv("AKKIO_BASE_URL", url)
        assert_config_error(run("sync"), "AKKIO_BASE_URL must be an http:// or https:// URL")
        assert emulator.request_count() == 0

    @pytest.mark.parametrize("kind", ["empty", "directory", "not creatable"])
    def test_unusable_state(
        self, run: Invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
    ) -> None:
        """An empty ``AKKIOSYNC_STATE``, a directory, or a place no file can be made: exit 2,
        saying to set AKKIOSYNC_STATE to a file."""
        (tmp_path / "a_file").write_text("")
        value = {"empty": "", "directory": str(tmp_path), "not creatable": "/proc/x/state.db"}
        monkeypatch.setenv("AKKIOSYNC_STATE", value[kind])
        expected = {
            "empty": "AKKIOSYNC_STATE is empty: set it to the checkpoint store's file",
            "directory": f"AKKIOSYNC_STATE {tmp_path} is a directory: set it to a file in it",
            "not creatable": "cannot be created there; set AKKIOSYNC_STATE to a file",
        }
        assert_config_error(run("logs"), expected[kind])
        assert_config_error(run("sync"), expected[kind])

    def test_api_unreachable_names_host(self, run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
        """Nothing listening at ``AKKIO_BASE_URL``: the failure names host and port."""
        port = free_port()
        monkeypatch.setenv("AKKIO_BASE_URL", f"http://127.0.0.1:{port}/v1")
        monkeypatch.setenv("AKKIO_MAX_ATTEMPTS", "1")
        result = run("sync")
        assert result.exit_code == 1, result.output
        assert f"cannot connect to 127.0.0.1:{port} (AKKIO_BASE_URL)" in result.stderr
        assert "Traceback" not in result.output

    @pytest.mark.parametrize(
        "query",
        [
            "SELECT * FROM orders -- every order",
            "SELECT * FROM orders;\n-- every order\n",
            "SELECT * FROM orders -- every order;",
        ],
        ids=["inline", "own-line", "semicolon-in-comment"],
    )
    def test_query_ending_in_comment(
        self, run: Invoke, config_dir: Path, emulator: Emulator, query: str
    ) -> None:
        """A query whose last line ends in a ``-- comment`` is read as written."""
        write_orders(config_dir, "table: orders", f"query: {json.dumps(query)}")
        result = run("sync")
        assert result.exit_code == 0, result.output
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 1))

    def test_duplicate_column_names(self, run: Invoke, config_dir: Path) -> None:
        """A query with two columns of one name: said as such (not as a rename clash)."""
        query = "SELECT o.*, p.id FROM orders o JOIN orders p ON p.id = o.id"
        path = write_orders(config_dir, "table: orders", f"query: {query}")
        result = run("sync")
        assert result.exit_code == 1, result.output
        assert "source.query: more than one column named id: give each column" in result.stderr
        assert "rename" not in result.stderr.replace("give each column its own name", "")
        result = run("validate", "--connect")
        assert result.exit_code == 2, result.output
        assert f"error: {path}: source.query: more than one column named id" in result.stderr

    def test_limit_warns(self, run: Invoke, config_dir: Path, emulator: Emulator) -> None:
        """A LIMIT in a query: ``validate`` warns that rows past it are never sent; ORDER BY
        is said to be ignored; the run logs the warning too."""
        query = "SELECT * FROM orders ORDER BY id LIMIT 10"
        write_orders(config_dir, "table: orders", f"query: {query}")
        result = run("validate")
        assert result.exit_code == 0, result.output
        assert (
            "  warning: source.query: LIMIT in the query: each run reads only the rows it lets "
            "through, so rows past the limit are never sent; filter with WHERE instead"
        ) in result.stdout.splitlines()
        assert "  warning: source.query: ORDER BY in the query is ignored" in result.stdout
        result = run("sync")
        assert result.exit_code == 0, result.output
        assert "rows past the limit are never sent" in result.stderr

    @pytest.mark.parametrize("table", ['"odd.name"', 'main."odd.name"'])
    def test_table_name_with_a_dot(
        self, run: Invoke, config_dir: Path, db_url: str, emulator: Emulator, table: str
    ) -> None:
        """A table whose name holds a dot is read when double-quoted in ``source.table``."""
        execute(
            db_url,
            'CREATE TABLE "odd.name" (id INTEGER PRIMARY KEY, amount NUMERIC(10, 2), '
            "status TEXT, created_at DATETIME)",
        )
        execute(db_url, 'INSERT INTO "odd.name" SELECT * FROM orders')
        write_orders(config_dir, "table: orders", f"table: '{table}'")
        result = run("sync")
        assert result.exit_code == 0, result.output
        assert ids_in(emulator, only_dataset(emulator)) == list(range(1, ROWS + 1))

    def test_table_name_badly_quoted(self, run: Invoke, config_dir: Path) -> None:
        """A table name with an unclosed quote is a configuration error naming the file."""
        path = write_orders(config_dir, "table: orders", "table: '\"odd.name'")
        assert_config_error(run("validate"), f"{path}: source.table: ", "not closed")

    def test_validate_connect_bad_query(self, run: Invoke, config_dir: Path) -> None:
        """``validate --connect`` on a query the database refuses: exit 2, naming the file."""
        path = write_orders(config_dir, "table: orders", "query: SELECT * FROM no_such_table")
        result = run("validate", "--connect")
        assert result.exit_code == 2, result.output
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert error.startswith(f"error: {path}: source: reading the source's columns: ")
        assert "no such table: no_such_table" in error
        assert "  source: failed (see below)" in result.stdout.splitlines()
        assert "Traceback" not in result.output


class TestStatusWidth:
    """``status`` fits a 100-column terminal, whatever the job names and cursors."""

    def test_long_names_and_cursor(
        self, run: Invoke, config_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At COLUMNS=100 no line of the jobs is wider, and nothing is cut: the whole name and
        cursor are there, wrapped; piped without COLUMNS the table stays one line per job."""
        name = "nightly_orders_export_for_the_finance_team_" + "x" * 40
        code = "K" * 90
        execute(db_url, f"UPDATE orders SET status = '{code}'")
        job = ORDERS_JOB.replace("key: id", "key: [status, id]")
        (config_dir / "jobs" / "orders.yaml").write_text(f"name: {name}\n{job}")
        assert run("sync").exit_code == 0
        monkeypatch.setenv("COLUMNS", "100")
        result = run("status", "--no-lag")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert all(len(line) <= 100 for line in lines), lines
        assert name in lines
        flat = "".join(line.strip() for line in lines)
        assert code in flat
        assert f"rowssent:{ROWS}" in flat.replace(" ", "")
        monkeypatch.delenv("COLUMNS")
        piped = run("status", "--no-lag").stdout.splitlines()
        assert any(line.startswith(name) and code in line for line in piped), piped
