"""Tests for the checkpoint store, on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from akkiosync.errors import StateError
from akkiosync.redact import MASK, register_secret
from akkiosync.state import Intent, JobState, RunRecord, RunStatus, Store
from akkiosync.state import _schema as state_schema

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SCHEMA = '[{"name": "id", "type": "integer"}]'

OpenStore = Callable[[], Store]


def sqlite_rows(path: Path, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on the file with the plain sqlite3 driver, as another tool would."""
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(statement).fetchall()
        connection.commit()
    return rows


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the store lives; its directory does not exist yet."""
    return tmp_path / "state" / "akkiosync.db"


@pytest.fixture
def open_store(store_path: Path) -> Iterator[OpenStore]:
    """Open a new Store on the same file (a second "process"); all are closed afterwards."""
    opened: list[Store] = []

    def _open() -> Store:
        opened.append(Store.open(store_path))
        return opened[-1]

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    """A fresh store."""
    return open_store()


def finish(store: Store, run_id: int, status: RunStatus = "success", **changes: Any) -> None:
    """Finish a run with plausible numbers, overridden by ``changes``."""
    values: dict[str, Any] = {"rows_read": 3, "rows_sent": 3, "batches": 1, "cursor_after": "[3]"}
    store.finish_run(run_id, status=status, now=T0 + timedelta(seconds=5), **(values | changes))


class TestFreshStore:
    """A new store creates its file and directory, and knows no jobs or runs."""

    def test_creates_missing_directory_and_file(self, store: Store, store_path: Path) -> None:
        """Opening creates the parent directory and the SQLite file."""
        assert store_path.is_file()

    def test_unknown_job_has_defaults(self, store: Store) -> None:
        """An unknown job's state is all None and zero."""
        assert store.job_state("orders") == JobState(job="orders")
        assert store.job_state("orders").rows_sent == 0

    def test_knows_no_jobs_or_runs(self, store: Store) -> None:
        """Nothing is listed before anything is written."""
        assert store.job_states() == []
        assert store.runs() == []
        assert store.last_run("orders") is None


class TestJobProgress:
    """Pinning records the dataset; each committed batch sets the cursor and adds to counters."""

    def test_pin_dataset(self, store: Store) -> None:
        """The pinned dataset id, name and schema are returned as given."""
        store.pin_dataset("orders", "ds-1", "Orders", SCHEMA, T0)
        assert store.job_state("orders") == JobState(
            job="orders", dataset_id="ds-1", dataset_name="Orders", schema_json=SCHEMA
        )

    def test_commit_batches_accumulate(self, store: Store) -> None:
        """Each batch replaces the cursor and adds its rows and one batch."""
        store.pin_dataset("orders", "ds-1", "Orders", SCHEMA, T0)
        store.commit_batch("orders", '["2024-05-01", 10]', 10, T0)
        store.commit_batch("orders", '["2024-05-02", 17]', 7, T0)
        job = store.job_state("orders")
        assert (job.cursor_json, job.rows_sent, job.batches_sent) == ('["2024-05-02", 17]', 17, 2)
        assert job.dataset_id == "ds-1"

    def test_commit_before_pin_creates_the_job(self, store: Store) -> None:
        """A batch for a job the store does not know yet starts its counters."""
        store.commit_batch("orders", "[1]", 5, T0)
        assert store.job_state("orders") == JobState(
            job="orders", cursor_json="[1]", rows_sent=5, batches_sent=1
        )

    def test_repin_keeps_cursor_and_counters(self, store: Store) -> None:
        """Pinning again changes the dataset and schema only."""
        store.commit_batch("orders", "[1]", 5, T0)
        store.pin_dataset("orders", "ds-2", "Orders v2", "[]", T0)
        job = store.job_state("orders")
        assert (job.dataset_id, job.schema_json, job.cursor_json, job.rows_sent) == (
            "ds-2",
            "[]",
            "[1]",
            5,
        )

    def test_negative_rows_rejected(self, store: Store) -> None:
        """A batch with a negative row count is a programming error and changes nothing."""
        with pytest.raises(ValueError, match="-1 rows"):
            store.commit_batch("orders", "[1]", -1, T0)
        assert store.job_state("orders") == JobState(job="orders")

    def test_job_states_by_name(self, store: Store) -> None:
        """Every known job is listed, ordered by name."""
        for name in ("users", "orders", "events"):
            store.commit_batch(name, "[1]", 1, T0)
        assert [job.job for job in store.job_states()] == ["events", "orders", "users"]

    def test_concurrent_commits_lose_nothing(self, open_store: OpenStore) -> None:
        """Threads sharing a Store and a second Store on the file all add up exactly."""
        first, second = open_store(), open_store()
        work = [(first if i % 2 else second, i) for i in range(60)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda item: item[0].commit_batch("orders", "[0]", item[1], T0), work))
        job = first.job_state("orders")
        assert (job.rows_sent, job.batches_sent) == (sum(range(60)), 60)


class TestPersistence:
    """Everything written survives closing the store, and other Stores on the file see it."""

    def test_reopen_sees_everything(self, store_path: Path) -> None:
        """A new Store on the same file returns the jobs and runs written before closing."""
        with Store.open(store_path) as store:
            store.pin_dataset("orders", "ds-1", "Orders", SCHEMA, T0)
            store.commit_batch("orders", "[9]", 9, T0)
            finish(store, store.start_run("orders", None, T0))
            before = (store.job_states(), store.runs())
        with Store.open(store_path) as store:
            assert (store.job_states(), store.runs()) == before
        assert before[0][0].rows_sent == 9

    def test_two_stores_see_each_others_commits(self, open_store: OpenStore) -> None:
        """Two Stores open on one file at once (two processes) read each other's writes."""
        daemon, cli = open_store(), open_store()
        assert cli.job_state("orders").rows_sent == 0  # cli has a pooled connection now
        daemon.commit_batch("orders", "[1]", 4, T0)
        assert cli.job_state("orders").cursor_json == "[1]"
        cli.reset("orders", T0)
        assert daemon.job_state("orders") == JobState(job="orders", new_dataset_ok=True)


class TestReset:
    """Reset forgets a job's dataset, schema, cursor and counters, and keeps its run history."""

    def test_reset_forgets_progress_keeps_runs(self, store: Store) -> None:
        """After reset the job has defaults, but its runs are still listed."""
        store.pin_dataset("orders", "ds-1", "Orders", SCHEMA, T0)
        store.commit_batch("orders", "[1]", 5, T0)
        finish(store, store.start_run("orders", None, T0))
        store.reset("orders", T0)
        assert store.job_state("orders") == JobState(job="orders", new_dataset_ok=True)
        assert [run.job for run in store.runs("orders")] == ["orders"]

    def test_reset_leaves_other_jobs_alone(self, store: Store) -> None:
        """Only the named job is forgotten."""
        store.commit_batch("orders", "[1]", 5, T0)
        store.commit_batch("users", "[2]", 6, T0)
        store.reset("orders", T0)
        assert [(job.job, job.rows_sent) for job in store.job_states()] == [
            ("orders", 0),
            ("users", 6),
        ]

    def test_reset_unknown_job(self, store: Store) -> None:
        """Resetting a job the store does not know is harmless."""
        store.reset("nobody", T0)
        assert store.job_states() == [JobState(job="nobody", new_dataset_ok=True)]

    def test_new_dataset_ok_is_used_up_by_the_pin(self, store: Store) -> None:
        """The leave to create a dataset whose name is taken lasts until a dataset is pinned."""
        store.reset("orders", T0)
        store.pin_dataset("orders", "ds-2", "Orders", SCHEMA, T0)
        assert store.job_state("orders").new_dataset_ok is False
        store.allow_new_dataset("orders", T0)
        assert store.job_state("orders").new_dataset_ok is True


class TestAdoptedMigration:
    """Version 6 marks the datasets a job found holding rows as adopted, never its own."""

    def test_rows_at_pin_means_adopted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A version 5 store: a job pinned with rows there is adopted, one pinned empty not."""
        path = tmp_path / "old.db"
        monkeypatch.setattr(state_schema, "MIGRATIONS", state_schema.MIGRATIONS[:5])
        with Store.open(path) as old, old._transaction(write=True) as connection:
            for name, rows in (("theirs", 7), ("ours", 0)):
                connection.execute(
                    sa.text(
                        "INSERT INTO jobs (name, dataset_id, rows_at_pin, updated_at) "
                        "VALUES (:n, :d, :r, :u)"
                    ),
                    {"n": name, "d": f"ds-{name}", "r": rows, "u": "2026-01-01T00:00:00+00:00"},
                )
        monkeypatch.undo()
        with Store.open(path) as store:
            assert store.job_state("theirs").adopted is True
            assert store.job_state("ours").adopted is False


class TestInterruptedMigration:
    """Version 7 rebuilds ``runs`` so that a run may be ``interrupted``, keeping every run."""

    def test_runs_survive_and_interrupted_is_accepted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A version 6 store with runs: after the upgrade they are all there, unchanged, new
        ids stay above theirs, the index is back, and a run can end interrupted."""
        path = tmp_path / "old.db"
        monkeypatch.setattr(state_schema, "MIGRATIONS", state_schema.MIGRATIONS[:6])
        with Store.open(path) as old:
            first = old.start_run("orders", None, T0)
            finish(old, first, rows_skipped=2)
            second = old.start_run("orders", "[3]", T0)
            finish(old, second, "failed", error="boom")
            running = old.start_run("events", None, T0)
            before = old.runs()
            with pytest.raises(StateError, match="CHECK"):  # version 6 refuses the status
                finish(old, running, "interrupted")
        monkeypatch.undo()
        with Store.open(path) as store:
            assert store.runs() == before
            finish(store, running, "interrupted")
            found = store.run(running)
            assert found is not None
            assert found.status == "interrupted"
            assert store.start_run("orders", None, T0) > running
        indexes = sqlite_rows(path, "SELECT name FROM sqlite_master WHERE tbl_name = 'runs'")
        assert ("ix_runs_job_id",) in indexes
        assert sqlite_rows(path, "SELECT name FROM sqlite_master WHERE name = 'runs_v7'") == []
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            sqlite_rows(path, "UPDATE runs SET status = 'bogus'")


class TestRebaseline:
    """Restarting the cursor keeps the dataset; accepting a count changes what is expected."""

    def test_restart_cursor_keeps_dataset(self, store: Store) -> None:
        """The cursor, its columns, intent and ledger go; the dataset's rows become expected."""
        store.pin_dataset("orders", "ds-1", "Orders", SCHEMA, T0, rows_at_pin=2)
        store.set_cursor_columns("orders", '{"watermark": ["updated_at", "datetime"]}', T0)
        store.commit_batch("orders", "[1]", 5, T0, ledger=[("a", 1.0)])
        store.record_intent(Intent("orders", "ds-1", 3, 7, "[1]", "[2]", T0))
        store.restart_cursor("orders", T0)
        state = store.job_state("orders")
        assert (state.dataset_id, state.schema_json) == ("ds-1", SCHEMA)
        assert (state.cursor_json, state.cursor_columns_json) == (None, None)
        assert (state.rows_at_pin, state.rows_sent, state.rows_expected) == (7, 0, 7)
        assert store.pending_intent("orders") is None
        assert store.ledger_entries("orders") == set()

    def test_accept_count(self, store: Store) -> None:
        """The accepted count becomes the expected one; an unsettled intent is dropped."""
        store.pin_dataset("orders", "ds-1", "Orders", SCHEMA, T0)
        store.commit_batch("orders", "[1]", 5, T0)
        store.record_intent(Intent("orders", "ds-1", 3, 5, "[1]", "[2]", T0))
        store.accept_count("orders", 9, T0)
        state = store.job_state("orders")
        assert (state.rows_expected, state.rows_sent, state.cursor_json) == (9, 5, "[1]")
        assert store.pending_intent("orders") is None


class TestRuns:
    """Runs are recorded from start to finish and listed newest first."""

    def test_started_run_is_running(self, store: Store) -> None:
        """A started run has status 'running', no end and zero counts."""
        run_id = store.start_run("orders", "[0]", T0)
        assert store.last_run("orders") == RunRecord(
            id=run_id,
            job="orders",
            started_at=T0,
            ended_at=None,
            status="running",
            rows_read=0,
            rows_sent=0,
            batches=0,
            cursor_before="[0]",
            cursor_after=None,
            error=None,
        )

    def test_finished_run_records_outcome(self, store: Store) -> None:
        """Finishing stores the status, end, counts, cursor and error."""
        run_id = store.start_run("orders", "[0]", T0)
        finish(store, run_id, "failed", rows_read=7, rows_sent=4, error="Akkio said 500")
        run = store.last_run("orders")
        assert run is not None
        assert (run.status, run.ended_at, run.rows_read, run.rows_sent, run.batches) == (
            "failed",
            T0 + timedelta(seconds=5),
            7,
            4,
            1,
        )
        assert (run.cursor_before, run.cursor_after, run.error) == ("[0]", "[3]", "Akkio said 500")

    def test_runs_newest_first(self, store: Store) -> None:
        """Runs of all jobs come newest first."""
        ids = [store.start_run(job, None, T0) for job in ("orders", "users", "orders")]
        assert [run.id for run in store.runs()] == ids[::-1]
        assert ids == sorted(ids)

    def test_runs_filtered_by_job(self, store: Store) -> None:
        """Asking for one job lists only its runs, and last_run is its newest."""
        ids = [store.start_run(job, None, T0) for job in ("orders", "users", "orders")]
        assert [run.id for run in store.runs("orders")] == [ids[2], ids[0]]
        last = store.last_run("users")
        assert last is not None
        assert last.id == ids[1]

    def test_runs_limit(self, store: Store) -> None:
        """The limit keeps the newest runs."""
        ids = [store.start_run("orders", None, T0) for _ in range(5)]
        assert [run.id for run in store.runs("orders", limit=2)] == [ids[4], ids[3]]
        assert len(store.runs()) == 5

    def test_finish_unknown_run(self, store: Store) -> None:
        """Finishing a run that was never started is a StateError."""
        with pytest.raises(StateError, match="no run 42"):
            finish(store, 42)


class TestTimestamps:
    """Timestamps round-trip as aware UTC datetimes, to the microsecond."""

    def test_round_trip(self, store: Store) -> None:
        """A UTC datetime comes back equal, aware and in UTC."""
        finish(store, store.start_run("orders", None, T0))
        run = store.last_run("orders")
        assert run is not None
        assert run.started_at == T0
        assert run.started_at.tzinfo is not None
        assert run.started_at.utcoffset() == timedelta(0)
        assert run.ended_at == T0 + timedelta(seconds=5)

    def test_other_offset_becomes_utc(self, store: Store) -> None:
        """An aware datetime in another zone is stored as the same instant in UTC."""
        paris = T0.astimezone(timezone(timedelta(hours=2)))
        store.start_run("orders", None, paris)
        run = store.last_run("orders")
        assert run is not None
        assert run.started_at == T0
        assert run.started_at.utcoffset() == timedelta(0)

    def test_naive_datetime_rejected(self, store: Store) -> None:
        """A naive datetime is refused before anything is written."""
        with pytest.raises(ValueError, match="naive"):
            store.start_run("orders", None, T0.replace(tzinfo=None))
        assert store.runs() == []

    def test_stored_as_iso_text(self, store: Store, store_path: Path) -> None:
        """On disk a timestamp is ISO 8601 text with its offset."""
        store.start_run("orders", None, T0)
        assert sqlite_rows(store_path, "SELECT started_at FROM runs") == [
            ("2024-05-01T12:00:00.123456+00:00",)
        ]


class TestMigrations:
    """The schema version is recorded and only missing migrations run, one transaction each."""

    def test_version_recorded(self, store: Store, store_path: Path) -> None:
        """A new store is at the newest version the code knows."""
        rows = sqlite_rows(store_path, "SELECT value FROM meta WHERE key = 'schema_version'")
        assert rows == [(str(len(state_schema.MIGRATIONS)),)]

    def test_missing_migrations_run_once(
        self, store_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A new migration runs on the next open only, and the data written before stays."""
        with Store.open(store_path) as store:
            store.commit_batch("orders", "[1]", 5, T0)
        calls: list[int] = []

        def add_notes(connection: sa.Connection) -> None:
            calls.append(1)
            connection.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")

        monkeypatch.setattr(state_schema, "MIGRATIONS", (*state_schema.MIGRATIONS, add_notes))
        with Store.open(store_path) as store:
            assert store.job_state("orders").rows_sent == 5
        with Store.open(store_path):
            pass
        assert calls == [1]
        latest = len(state_schema.MIGRATIONS)  # includes the added one
        assert sqlite_rows(store_path, "SELECT value FROM meta") == [(str(latest),)]

    def test_failed_migration_rolls_back(
        self, store: Store, store_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A migration that fails halfway leaves neither its changes nor a new version."""

        def broken(connection: sa.Connection) -> None:
            connection.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
            connection.exec_driver_sql("SELECT * FROM no_such_table")

        monkeypatch.setattr(state_schema, "MIGRATIONS", (*state_schema.MIGRATIONS, broken))
        with pytest.raises(StateError, match="no such table"):
            Store.open(store_path)
        current = len(state_schema.MIGRATIONS) - 1  # without the broken one
        assert sqlite_rows(store_path, "SELECT value FROM meta") == [(str(current),)]
        assert sqlite_rows(store_path, "SELECT name FROM sqlite_master WHERE name = 'notes'") == []

    def test_newer_version_refused(self, store: Store, store_path: Path) -> None:
        """A store written by a newer akkiosync is a StateError naming both versions."""
        sqlite_rows(store_path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        known = len(state_schema.MIGRATIONS)
        with pytest.raises(StateError, match=rf"schema version 99, newer than .* \({known}\)"):
            Store.open(store_path)
        assert sqlite_rows(store_path, "SELECT value FROM meta") == [("99",)]


class TestBrokenFiles:
    """A path that cannot hold a store is a StateError, not a driver traceback."""

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A text file is refused and left untouched."""
        path = tmp_path / "notes.txt"
        path.write_text("these are not the rows you are looking for\n" * 20)
        with pytest.raises(StateError, match="not a database"):
            Store.open(path)
        assert path.read_text().startswith("these are not")

    def test_directory(self, tmp_path: Path) -> None:
        """A directory where the file should be is refused."""
        with pytest.raises(StateError, match="unable to open"):
            Store.open(tmp_path)

    def test_parent_is_a_file(self, tmp_path: Path) -> None:
        """A parent directory that cannot be created is refused."""
        (tmp_path / "state").write_text("")
        with pytest.raises(StateError, match="checkpoint store"):
            Store.open(tmp_path / "state" / "akkiosync.db")


class TestRedaction:
    """Error texts are stored redacted: the store never holds a secret."""

    def test_registered_secret(self, store: Store, store_path: Path) -> None:
        """A registered secret inside an error is masked."""
        register_secret("ak-state-test-0123456789")
        run_id = store.start_run("orders", None, T0)
        finish(store, run_id, "failed", error="401 for key ak-state-test-0123456789")
        run = store.last_run("orders")
        assert run is not None
        assert run.error == f"401 for key {MASK}"
        on_disk = b"".join(path.read_bytes() for path in store_path.parent.iterdir())
        assert b"0123456789" not in on_disk  # neither in the database nor in its WAL

    def test_url_password(self, store: Store) -> None:
        """A password inside a database URL is masked."""
        run_id = store.start_run("orders", None, T0)
        error = "could not connect to postgresql://app:pa55word@db:5432/shop"
        finish(store, run_id, "failed", error=error)
        run = store.last_run("orders")
        assert run is not None
        assert run.error == f"could not connect to postgresql://app:{MASK}@db:5432/shop"


class TestSqliteSettings:
    """The file is in WAL mode and every connection is durable, patient and enforces keys."""

    def test_wal_mode(self, store: Store, store_path: Path) -> None:
        """The file's journal mode is WAL, as any other reader sees it."""
        assert sqlite_rows(store_path, "PRAGMA journal_mode") == [("wal",)]

    def test_connection_pragmas(self, store: Store) -> None:
        """Each pooled connection has synchronous=FULL, a 30 s busy timeout and foreign keys."""
        engine: sa.Engine = store._engine  # the pragmas are per connection: look at one
        with engine.connect() as connection:
            values = [
                connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("synchronous", "busy_timeout", "foreign_keys")
            ]
        assert values == [2, 30000, 1]  # synchronous: 2 is FULL
