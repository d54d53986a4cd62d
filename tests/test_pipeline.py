"""Reading ahead of sending, and batches bounded by bytes: ``pipeline``, through real runs."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.config import SourceSpec
from akkiosync.emulator import Emulator, serve
from akkiosync.mapping import RecordMapper, plan_schema
from akkiosync.pipeline import BatchSizer, ReadAhead
from akkiosync.runner import Runner
from akkiosync.source import make_source
from akkiosync.state import Store
from tests.conftest import API_KEY, make_job, no_sleep

MakeTable = Callable[..., sa.Table]
T0 = dt.datetime(2026, 5, 1, 8, 30, 0)  # noqa: DTZ001 - a naive column on purpose
NOTE = "x" * 150  # each row's JSON is about 200 bytes


class Recorder(httpx.BaseTransport):
    """The emulator's transport, recording each add-rows request's body size."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.add_rows: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.method == "POST" and b'"rows"' in body:
            self.add_rows.append(len(body))
        return self.inner.handle_request(request)


@pytest.fixture
def notes(engine: sa.Engine, make_table: MakeTable, table_name: str) -> sa.Table:
    """A table of 300 wide rows, ten per watermark value."""
    table = make_table(
        table_name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("note", sa.String(200)),
    )
    add(engine, table, range(1, 301))
    return table


def add(engine: sa.Engine, table: sa.Table, ids: range) -> None:
    rows = [{"id": i, "updated_at": T0 + dt.timedelta(seconds=i // 10), "note": NOTE} for i in ids]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


def landed(emulator: Emulator) -> list[int]:
    (dataset_id,) = emulator.dataset_ids()
    return sorted(row["id"] for row in emulator.rows(dataset_id))


@pytest.fixture
def recorded(emulator: Emulator) -> Recorder:
    return Recorder(emulator.transport())


@pytest.fixture
def recording_runner(store: Store, recorded: Recorder) -> Iterator[Runner]:
    """A runner whose add-rows requests are measured."""
    with AkkioClient(API_KEY, "http://emulator/v1", transport=recorded) as client:
        yield Runner(store, client, sleep=no_sleep)


class TestReadAhead:
    """Items come in order, at most ``depth`` ahead, and the producer is stopped cleanly."""

    def test_in_order_then_the_producers_error(self) -> None:
        """Every item before the producer's error comes first; then the error is raised."""

        def produce() -> Generator[int, None, None]:
            yield from range(5)
            raise ValueError("source gone")

        got: list[int] = []
        with ReadAhead(produce) as ahead, pytest.raises(ValueError, match="source gone"):
            got.extend(ahead)
        assert got == [0, 1, 2, 3, 4]

    def test_never_more_than_depth_ahead(self) -> None:
        """The producer waits while ``depth`` items wait: memory stays flat."""
        produced: list[int] = []
        ahead_by: list[int] = []

        def produce() -> Generator[int, None, None]:
            for i in range(50):
                produced.append(i)
                yield i

        with ReadAhead(produce, depth=2) as ahead:
            for consumed, _ in enumerate(ahead, start=1):
                ahead_by.append(len(produced) - consumed)
        assert max(ahead_by) <= 3  # two waiting, one being made
        assert len(produced) == 50

    def test_depth_below_one_is_refused(self) -> None:
        """A depth of 0 could never hand over an item: refused, not a hang."""

        def produce() -> Generator[int, None, None]:
            yield 1

        with pytest.raises(ValueError, match="at least 1"):
            ReadAhead(produce, depth=0)

    def test_close_stops_the_producer_in_its_own_thread(self) -> None:
        """Leaving early closes the producer's generator, in the producer's thread."""
        closed_in: list[int] = []

        def produce() -> Generator[int, None, None]:
            try:
                yield from range(1_000_000)
            finally:
                closed_in.append(threading.get_ident())

        with ReadAhead(produce) as ahead:
            for item in ahead:
                if item == 3:
                    break
        assert len(closed_in) == 1
        assert closed_in[0] != threading.get_ident()


class TestEncoding:
    """Records are encoded by orjson, not by the standard library's slower fallback."""

    def test_reflected_names_are_plain_keys(self, db_url: str, notes: sa.Table) -> None:
        """A reflected column name (SQLAlchemy's str subclass) becomes a plain str key, which
        orjson takes (it refuses str subclasses as keys)."""
        spec = SourceSpec(url=db_url, table=notes.name, watermark="updated_at", key=["id"])
        with make_source(spec) as source:
            columns = source.columns()
            assert any(type(c.name) is not str for c in columns)  # the case in point
            mapper = RecordMapper(plan_schema(columns, synced_at="_synced"), columns)
            records = mapper.records([(1, T0, "a"), (2, T0, None)])
        assert {type(key) for record in records for key in record} == {str}
        assert orjson.loads(orjson.dumps(records))[1]["note"] is None


class TestBatchSizer:
    """The rows per batch only go down, and a 413 is remembered."""

    def test_fit_to_bytes(self) -> None:
        """A body twice batch_bytes halves the rows (with room for wider rows)."""
        sizer = BatchSizer(1000, 100_000)
        body = type("Body", (), {"count": 1000, "size": 200_000})()
        assert sizer.fit(body) == 450  # type: ignore[arg-type] # a stand-in with the two fields
        assert sizer.remembered is None

    def test_refused_halves_and_remembers(self) -> None:
        """A 413 for 400 rows: 200 per batch, remembered; one row cannot be split."""
        sizer = BatchSizer(1000, 10**6)
        assert sizer.refused(400) == 200
        assert sizer.remembered == 200
        assert sizer.refused(1) is None


class TestBatchBytes:
    """No add-rows body is over batch_bytes, and every row still lands exactly once."""

    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"source": {"watermark": "updated_at"}},  # no key: cut only where the watermark moves
            {"source": {"watermark": "updated_at", "key": "id", "lookback": "1h"}},
        ],
        ids=["keyed", "keyless", "lookback"],
    )
    def test_bodies_within_batch_bytes(
        self,
        recording_runner: Runner,
        recorded: Recorder,
        emulator: Emulator,
        db_url: str,
        notes: sa.Table,
        options: dict[str, Any],
    ) -> None:
        """300 rows of ~200 bytes in batches of 100 under a 10 kB cap: many small bodies."""
        cursor = options.get("source", {"watermark": "updated_at", "key": "id"})
        source = {"url": db_url, "table": notes.name, **cursor}
        job = make_job(db_url, notes.name, source=source, batch_size=100, batch_bytes=10_000)
        result = recording_runner.run(job)
        assert result.status == "success", result.error
        assert landed(emulator) == list(range(1, 301))
        assert max(recorded.add_rows) <= 10_000
        assert len(recorded.add_rows) >= 6  # 300 rows of ~200 bytes need at least 6 bodies
        assert result.batches == len(recorded.add_rows)

    def test_cap_off_sends_batch_size_rows(
        self, recording_runner: Runner, recorded: Recorder, db_url: str, notes: sa.Table
    ) -> None:
        """With a cap the rows fit under, batches hold batch_size rows (the test above can fail)."""
        job = make_job(db_url, notes.name, batch_size=100, batch_bytes=1_000_000)
        assert recording_runner.run(job).status == "success"
        assert len(recorded.add_rows) == 3


@pytest.fixture
def small_server() -> Iterator[Any]:
    """A loopback emulator that answers 413 to a body over 12 kB, unread."""
    with serve(Emulator(api_key=API_KEY), max_body=12_000) as server:
        yield server


def runner_on(store: Store, url: str) -> Iterator[Runner]:
    with AkkioClient(API_KEY, url) as client:
        yield Runner(store, client, sleep=no_sleep)


class TestRefused:
    """A 413 splits the batch, halves the rows per batch and remembers it for the job."""

    def test_413_splits_and_is_remembered(
        self,
        store: Store,
        small_server: Any,
        engine: sa.Engine,
        db_url: str,
        notes: sa.Table,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """100 rows (~20 kB) are refused; 50 (~10 kB) pass; the next run starts at 50."""
        job = make_job(db_url, notes.name, batch_size=100)
        for runner in runner_on(store, small_server.url):
            result = runner.run(job)
        assert result.status == "success", result.error
        assert landed(small_server.emulator) == list(range(1, 301))
        assert result.batches == 6
        limit = json.loads(store.job_state("orders").batch_limit_json or "{}")
        assert limit == {"rows": 50, "batch_size": 100, "batch_bytes": 4_000_000}
        refusals = [r for r in caplog.records if getattr(r, "event", "") == "batch_refused"]
        assert len(refusals) == 1

        add(engine, notes, range(301, 401))
        caplog.clear()
        for runner in runner_on(store, small_server.url):
            again = runner.run(job)
        assert (again.status, again.batches) == ("success", 2)
        assert not [r for r in caplog.records if getattr(r, "event", "") == "batch_refused"]
        assert landed(small_server.emulator) == list(range(1, 401))

    def test_edited_batch_size_forgets_the_limit(
        self, store: Store, small_server: Any, engine: sa.Engine, db_url: str, notes: sa.Table
    ) -> None:
        """Once batch_size is edited, the job file's number holds again (and is tested anew)."""
        for runner in runner_on(store, small_server.url):
            assert runner.run(make_job(db_url, notes.name, batch_size=100)).status == "success"
        add(engine, notes, range(301, 341))
        for runner in runner_on(store, small_server.url):
            result = runner.run(make_job(db_url, notes.name, batch_size=40))
        assert (result.status, result.batches) == ("success", 1)  # 40 rows: one 8 kB body
        assert landed(small_server.emulator) == list(range(1, 341))

    def test_a_row_too_wide_fails_clearly(
        self,
        store: Store,
        small_server: Any,
        engine: sa.Engine,
        db_url: str,
        make_table: MakeTable,
        table_name: str,
    ) -> None:
        """A single row over the server's limit fails the run, naming the cause; nothing lands."""
        table = make_table(
            table_name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("note", sa.Text),
        )
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "updated_at": T0, "note": "y" * 20_000}])
        for runner in runner_on(store, small_server.url):
            result = runner.run(make_job(db_url, table.name))
        assert result.status == "failed"
        assert "413" in (result.error or "")
        assert "cannot be split" in (result.error or "")
        assert store.job_state("orders").cursor_json is None
        assert all(not small_server.emulator.rows(d) for d in small_server.emulator.dataset_ids())


class TestReopen:
    """A long read is closed and opened again from its last batch: no transaction lasts."""

    @pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
    def test_each_read_is_its_own_transaction(
        self, store: Store, client: AkkioClient, emulator: Emulator, db_url: str, notes: sa.Table
    ) -> None:
        """Reopened after every batch, the reader's transaction starts afresh; every row once."""
        url = f"{db_url}?application_name=akkiosync_reopen_{notes.name}"
        starts = self._reader_transactions(store, client, url, notes, reopen_after=0.0)
        assert landed(emulator) == list(range(1, 301))
        assert len(set(starts)) >= 3

    @pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
    def test_one_transaction_without_reopening(
        self, store: Store, client: AkkioClient, db_url: str, notes: sa.Table
    ) -> None:
        """Within ``reopen_after`` the read is one query, one transaction (the test above
        can fail)."""
        url = f"{db_url}?application_name=akkiosync_reopen_{notes.name}"
        starts = self._reader_transactions(store, client, url, notes, reopen_after=3600.0)
        assert len(set(starts)) == 1

    @staticmethod
    def _reader_transactions(
        store: Store, client: AkkioClient, url: str, table: sa.Table, *, reopen_after: float
    ) -> list[Any]:
        """Run the job in batches of 20; after each batch, the reader's transaction start."""
        watcher = sa.create_engine(url)
        app = url.rsplit("=", 1)[1]
        starts: list[Any] = []

        class Hook:
            def started(self, job: str, to_go: int | None) -> None:
                pass

            def sent(self, batch: Any) -> None:
                query = sa.text(
                    "SELECT xact_start FROM pg_stat_activity "
                    "WHERE application_name = :app AND xact_start IS NOT NULL "
                    "AND pid <> pg_backend_pid()"
                )
                with watcher.connect() as conn:
                    starts.extend(conn.execute(query, {"app": app}).scalars())

        runner = Runner(store, client, sleep=no_sleep, progress=Hook(), reopen_after=reopen_after)
        try:
            result = runner.run(make_job(url, table.name, batch_size=20))
        finally:
            watcher.dispose()
        assert result.status == "success", result.error
        assert starts  # the reader was seen
        return starts
