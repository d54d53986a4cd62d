"""Write modes: ``mode: replace`` (a full refresh into a new dataset per run, the previous one
deleted once the new one is verified) and ``columns.synced_at`` (when a row version was read).

Refreshes run on real PostgreSQL and MariaDB tables; the crash cases use a SQLite source and an
emulator whose transport stops the run dead (``_Killed``, which no handler of the code under test
catches) at a chosen request, before or after the emulator carried it out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects import mysql

from akkiosync.akkio import AkkioClient
from akkiosync.cli import cli
from akkiosync.config import Job
from akkiosync.emulator import Emulator, serve
from akkiosync.errors import ConfigError
from akkiosync.mapping import SYNCED_AT, RecordMapper, Schema, SourceColumn, plan_schema
from akkiosync.pacing import RetryPolicy
from akkiosync.report import job_statuses, status_lines
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY, make_job, no_sleep

MICRO_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
T0 = dt.datetime(2026, 5, 1, 8, 30, 0, 123456)  # noqa: DTZ001 - naive columns on purpose
RUN_AT = dt.datetime(2026, 7, 1, 9, 0, 0, 250000, tzinfo=dt.UTC)


def replace_job(url: str, table: str, **overrides: Any) -> Job:
    """``make_job`` in ``mode: replace``."""
    return make_job(url, table, mode="replace", **overrides)


def fixed_clock(moment: dt.datetime = RUN_AT) -> Callable[[], dt.datetime]:
    return lambda: moment


def insert(engine: sa.Engine, table: sa.Table, ids: range, status: str = "paid") -> None:
    rows = [
        {
            "id": i,
            "amount": Decimal(i * 100 + 1) / 100,
            "status": status,
            "updated_at": T0 + dt.timedelta(seconds=i // 3),
        }
        for i in ids
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


def table_rows(engine: sa.Engine, table: sa.Table) -> dict[int, tuple[str, float]]:
    """The source table by id: (status, amount)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.id, table.c.status, table.c.amount)).all()
    return {r.id: (r.status, float(r.amount)) for r in rows}


def dataset_rows(emulator: Emulator, dataset_id: str) -> dict[int, tuple[str, float]]:
    """A dataset by id: (status, amount); fails on a key held twice."""
    rows = emulator.rows(dataset_id)
    by_id = {r["id"]: (r["status"], r["amount"]) for r in rows}
    assert len(by_id) == len(rows), "a key landed twice"
    return by_id


def named(client: AkkioClient, name: str = "Orders") -> list[str]:
    """The ids of the datasets called ``name``, oldest first."""
    return [d.id for d in client.list_datasets() if d.name == name]


# -- on the real databases ---------------------------------------------------------------------


@pytest.fixture(params=["postgres", "mysql"])
def server_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL and MariaDB."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def server_table(server_url: str, table_name: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """An orders table with ids 1..12 on the server."""
    engine = sa.create_engine(engine_url(server_url))
    metadata = sa.MetaData()
    table = sa.Table(
        table_name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("status", sa.String(20)),
        sa.Column("updated_at", MICRO_DATETIME),
    )
    metadata.create_all(engine)
    insert(engine, table, range(1, 13))
    yield engine, table
    metadata.drop_all(engine)
    engine.dispose()


class TestReplaceOnServers:
    """A refresh leaves one dataset of the name, holding exactly the current table."""

    def test_updates_and_deletes_are_mirrored(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        server_url: str,
        server_table: tuple[sa.Engine, sa.Table],
    ) -> None:
        """After updates, deletes and inserts in the source the next run's dataset is the table;
        the previous dataset is gone and the job points at the new one."""
        engine, table = server_table
        runner = Runner(store, client, sleep=no_sleep)
        job = replace_job(server_url, table.name)
        first = runner.run(job)
        assert first.ok, first.error
        (before,) = named(client)
        assert dataset_rows(emulator, before) == table_rows(engine, table)
        with engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id.in_([2, 5]))
                .values(status="refunded", updated_at=T0 + dt.timedelta(hours=1))
            )
            conn.execute(table.update().where(table.c.id == 7).values(amount=Decimal("9.99")))
            conn.execute(table.delete().where(table.c.id.in_([1, 12])))
        insert(engine, table, range(20, 23), status="new")
        second = runner.run(job)
        assert second.ok, second.error
        (after,) = named(client)
        assert after != before
        assert before not in emulator.dataset_ids()
        current = table_rows(engine, table)
        assert dataset_rows(emulator, after) == current
        assert current[2] == ("refunded", 2.01)
        assert current[7] == ("paid", 9.99)
        assert 1 not in current
        state = store.job_state("orders")
        assert (state.dataset_id, second.dataset_id) == (after, after)
        assert state.rows_sent == state.rows_expected == len(current) == second.rows_sent
        assert state.replaced_at is not None
        assert store.refresh("orders") is None

    def test_status_shows_the_current_dataset(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        server_url: str,
        server_table: tuple[sa.Engine, sa.Table],
    ) -> None:
        """``status`` names the dataset the last refresh made and when it replaced the old one."""
        runner = Runner(store, client, sleep=no_sleep, clock=fixed_clock())
        job = replace_job(server_url, server_table[1].name)
        assert runner.run(job).ok
        assert runner.run(job).ok
        (current,) = named(client)
        (status,) = job_statuses(store, [job], with_lag=False)
        assert (status.dataset_id, status.replaced_at) == (current, RUN_AT)
        text = "\n".join(status_lines([status], with_lag=False))
        assert f"orders: dataset Orders ({current}) replaced at 2026-07-01T09:00:00Z" in text
        (line,) = status_lines([status], with_lag=False, as_json=True)
        assert json.loads(line)["replaced_at"] == RUN_AT.isoformat()


# -- the refresh's steps, crashes and failures (SQLite source) ------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'source.db'}"


@pytest.fixture
def source(sqlite_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """A SQLite orders table with ids 1..10."""
    engine = sa.create_engine(sqlite_url)
    metadata = sa.MetaData()
    table = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("status", sa.String(20)),
        sa.Column("updated_at", sa.DateTime),
    )
    metadata.create_all(engine)
    insert(engine, table, range(1, 11))
    yield engine, table
    engine.dispose()


class _Killed(BaseException):
    """Stands for kill -9: the code under test catches ``Exception``, never this."""


def _action(request: httpx.Request) -> str:
    """``list``, ``get``, ``create``, ``add`` or ``delete``."""
    if request.method == "GET":
        return "get" if "id" in request.url.params else "list"
    if request.method == "DELETE":
        return "delete"
    body = json.loads(request.read() or b"{}")
    return "add" if "rows" in body else "create"


class Dying(httpx.BaseTransport):
    """The emulator, until the ``nth`` request of kind ``action``: then the run is killed,
    before the emulator sees the request or (``landed``) after it carried it out."""

    def __init__(self, emulator: Emulator, action: str, nth: int = 1, *, landed: bool) -> None:
        self._inner = emulator.transport()
        self._action, self._left, self._landed = action, nth, landed
        self.deleted: list[str] = []  # the id of every delete request, in order

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        action = _action(request)
        if action == "delete":
            self.deleted.append(json.loads(request.read())["id"])
        if action == self._action:
            self._left -= 1
            if self._left == 0:
                if self._landed:
                    self._inner.handle_request(request)
                raise _Killed
        return self._inner.handle_request(request)


def client_on(transport: httpx.BaseTransport) -> AkkioClient:
    return AkkioClient(
        API_KEY, "http://emulator/v1", transport=transport, retry=RetryPolicy(attempts=1)
    )


def killed_run(
    store: Store, emulator: Emulator, job: Job, action: str, nth: int = 1, *, landed: bool
) -> None:
    """Run ``job`` until it is killed at that request."""
    with client_on(Dying(emulator, action, nth, landed=landed)) as dying, pytest.raises(_Killed):
        Runner(store, dying, sleep=no_sleep).run(job)


class TestCrashes:
    """A killed refresh never loses the previous dataset; the next run cleans up, once."""

    @pytest.fixture
    def job(self, sqlite_url: str) -> Job:
        return replace_job(sqlite_url, "orders")

    @pytest.fixture
    def refreshed(
        self, store: Store, client: AkkioClient, emulator: Emulator, job: Job, source: Any
    ) -> str:
        """One complete refresh: the dataset it made."""
        assert Runner(store, client, sleep=no_sleep).run(job).ok
        (dataset_id,) = emulator.dataset_ids()
        return dataset_id

    def _recovers(
        self, store: Store, client: AkkioClient, emulator: Emulator, job: Job, source: Any
    ) -> str:
        """The next run succeeds, leaving exactly one dataset, equal to the table."""
        result = Runner(store, client, sleep=no_sleep).run(job)
        assert result.ok, result.error
        (only,) = named(client)
        assert emulator.dataset_ids() == [only]
        assert dataset_rows(emulator, only) == table_rows(*source)
        assert store.job_state(job.name).dataset_id == only
        assert store.refresh(job.name) is None
        return only

    @pytest.mark.parametrize("nth", [1, 2, 3])
    def test_killed_while_filling(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        job: Job,
        source: Any,
        refreshed: str,
        nth: int,
    ) -> None:
        """Killed after the nth batch landed: the previous dataset is whole and still the job's;
        the next run deletes the partial one and refreshes again."""
        killed_run(store, emulator, job, "add", nth, landed=True)
        partial = [d for d in emulator.dataset_ids() if d != refreshed]
        assert len(partial) == 1
        assert len(emulator.rows(partial[0])) == min(4 * nth, 10)
        assert dataset_rows(emulator, refreshed) == table_rows(*source)
        assert store.job_state(job.name).dataset_id == refreshed
        pending = store.refresh(job.name)
        assert pending is not None
        assert (pending.phase, pending.dataset_id, pending.previous_id) == (
            "filling", partial[0], refreshed,
        )  # fmt: skip
        (status,) = job_statuses(store, [job], with_lag=False)
        assert status.dataset_id == refreshed
        sent = 4 * (nth - 1)  # the nth batch landed, but was not committed: its fate is unknown
        assert f"into dataset {partial[0]}: {sent} rows so far" in (status.refresh or "")
        new = self._recovers(store, client, emulator, job, source)
        assert new not in (refreshed, partial[0])

    @pytest.mark.parametrize("landed", [False, True])
    def test_killed_creating(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        job: Job,
        source: Any,
        refreshed: str,
        landed: bool,
    ) -> None:
        """Killed at the create request (its answer lost if it landed): the next run finds the
        dataset it may have made by name, deletes it, and refreshes."""
        killed_run(store, emulator, job, "create", landed=landed)
        assert len(emulator.dataset_ids()) == (2 if landed else 1)
        assert store.job_state(job.name).dataset_id == refreshed
        pending = store.refresh(job.name)
        assert pending is not None
        assert (pending.phase, pending.dataset_id) == ("creating", None)
        self._recovers(store, client, emulator, job, source)

    def test_a_late_creation_is_waited_for(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        job: Job,
        source: Any,
        refreshed: str,
    ) -> None:
        """Killed at a create request that Akkio carries out only later: the next run watches
        the name for the landing grace and deletes the dataset once it shows, rather than
        taking it as never made and leaving it beside the new one."""

        class LateCreate(httpx.BaseTransport):
            def __init__(self) -> None:
                self.inner = emulator.transport()
                self.pending: httpx.Request | None = None
                self.lists = 0

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                action = _action(request)
                if action == "create" and self.lists == 0:
                    self.pending = request
                    raise _Killed
                if action == "list" and self.pending is not None:
                    self.lists += 1
                    if self.lists == 2:  # the second look of the next run: it lands now
                        self.inner.handle_request(self.pending)
                        self.pending = None
                return self.inner.handle_request(request)

        late = LateCreate()
        with client_on(late) as dying, pytest.raises(_Killed):
            Runner(store, dying, sleep=no_sleep).run(job)
        assert emulator.dataset_ids() == [refreshed]
        with client_on(late) as slow:
            assert Runner(store, slow, sleep=no_sleep).run(job).ok
        assert late.lists >= 2
        (only,) = named(client)
        assert emulator.dataset_ids() == [only]

    def test_killed_creating_on_the_first_run(
        self, store: Store, client: AkkioClient, emulator: Emulator, job: Job, source: Any
    ) -> None:
        """The job's own half-made first dataset is not taken for someone else's."""
        killed_run(store, emulator, job, "create", landed=True)
        assert len(emulator.dataset_ids()) == 1
        self._recovers(store, client, emulator, job, source)

    @pytest.mark.parametrize("landed", [False, True])
    def test_killed_deleting_the_previous(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        job: Job,
        source: Any,
        refreshed: str,
        landed: bool,
    ) -> None:
        """Killed at the delete of the previous dataset: the job already points at the new,
        verified one; the next run deletes the previous one (a 404 counts as done)."""
        killed_run(store, emulator, job, "delete", landed=landed)
        state = store.job_state(job.name)
        assert state.dataset_id not in (None, refreshed)
        assert state.dataset_id is not None
        assert dataset_rows(emulator, state.dataset_id) == table_rows(*source)
        pending = store.refresh(job.name)
        assert pending is not None
        assert (pending.phase, pending.previous_id) == ("deleting", refreshed)
        assert (refreshed in emulator.dataset_ids()) is not landed
        self._recovers(store, client, emulator, job, source)

    def test_each_deletion_is_sent_once(
        self, store: Store, emulator: Emulator, job: Job, source: Any, refreshed: str
    ) -> None:
        """Killed while filling, then a good run: one delete for the partial dataset and one for
        the previous; nothing else is deleted."""
        killed_run(store, emulator, job, "add", 2, landed=True)
        (partial,) = (d for d in emulator.dataset_ids() if d != refreshed)
        recorder = Dying(emulator, "never", landed=False)
        with client_on(recorder) as watched:
            assert Runner(store, watched, sleep=no_sleep).run(job).ok
        assert recorder.deleted == [partial, refreshed]


class TestFailures:
    """A refresh that fails (not killed) removes its partial dataset at once."""

    def test_bad_value_deletes_the_partial_dataset(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """A value that does not fit fails the run; the previous dataset stays, the new one is
        deleted, and no refresh is left pending."""
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(replace_job(sqlite_url, "orders")).ok
        (previous,) = emulator.dataset_ids()
        bad = replace_job(sqlite_url, "orders", columns={"types": {"status": "integer"}})
        result = runner.run(bad)
        assert not result.ok
        assert "column status holds 'paid'" in (result.error or "")
        assert emulator.dataset_ids() == [previous]
        assert store.job_state("orders").dataset_id == previous
        assert store.refresh("orders") is None

    def test_lost_create_answer_fails_then_recovers(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """A create whose answer is lost fails the run; the dataset it made is not left behind
        beside the next one."""
        job = replace_job(sqlite_url, "orders")
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(job).ok
        (previous,) = emulator.dataset_ids()

        class LosesCreate(httpx.BaseTransport):
            def __init__(self) -> None:
                self.inner = emulator.transport()

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                response = self.inner.handle_request(request)
                if _action(request) == "create":
                    raise httpx.ReadTimeout("answer lost", request=request)
                return response

        with client_on(LosesCreate()) as losing:
            failed = Runner(store, losing, sleep=no_sleep).run(job)
        assert not failed.ok
        assert store.job_state("orders").dataset_id == previous
        assert previous in emulator.dataset_ids()
        assert runner.run(job).ok
        (only,) = named(client)
        assert emulator.dataset_ids() == [only]
        assert dataset_rows(emulator, only) == table_rows(*source)

    def test_create_never_sent_is_forgotten_at_once(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """A create request that provably never left (connection refused) leaves no refresh
        for the next run to watch the name for."""
        job = replace_job(sqlite_url, "orders")
        assert Runner(store, client, sleep=no_sleep).run(job).ok

        class RefusesCreate(httpx.BaseTransport):
            def __init__(self) -> None:
                self.inner = emulator.transport()

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if _action(request) == "create":
                    raise httpx.ConnectError("connection refused", request=request)
                return self.inner.handle_request(request)

        with client_on(RefusesCreate()) as refusing:
            assert not Runner(store, refusing, sleep=no_sleep).run(job).ok
        assert store.refresh("orders") is None
        assert store.pending_creation("orders") is None

    def test_stop_abandons_the_refresh(
        self,
        store: Store,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
        client: AkkioClient,
    ) -> None:
        """A shutdown mid-refresh keeps the previous dataset and removes the partial one."""
        import threading  # noqa: PLC0415 - only this test

        job = replace_job(sqlite_url, "orders")
        assert Runner(store, client, sleep=no_sleep).run(job).ok
        (previous,) = emulator.dataset_ids()
        stop = threading.Event()

        class StopsAfterAnAdd(httpx.BaseTransport):
            def __init__(self) -> None:
                self.inner = emulator.transport()

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if _action(request) == "add":
                    stop.set()
                return self.inner.handle_request(request)

        with client_on(StopsAfterAnAdd()) as stopping:
            Runner(store, stopping, sleep=no_sleep, stop=stop).run(job)
        assert emulator.dataset_ids() == [previous]
        assert store.job_state("orders").dataset_id == previous
        assert store.refresh("orders") is None


class TestTargets:
    """Which datasets a refresh may create beside, and which it deletes."""

    def test_first_run_refuses_a_taken_name(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """A dataset of the name that the store knows nothing of is not replaced: the first run
        stops, as in append mode; ``new_dataset`` creates one beside it."""
        theirs = client.create_dataset("Orders").id
        runner = Runner(store, client, sleep=no_sleep)
        job = replace_job(sqlite_url, "orders")
        result = runner.run(job)
        assert not result.ok
        assert "already exists" in (result.error or "")
        assert runner.run(job, new_dataset=True).ok
        assert theirs in emulator.dataset_ids()
        assert len(emulator.dataset_ids()) == 2

    def test_a_later_refresh_keeps_others_datasets(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """Once the job has its dataset, another dataset of the same name is not its own: it is
        neither an obstacle nor deleted."""
        runner = Runner(store, client, sleep=no_sleep)
        job = replace_job(sqlite_url, "orders")
        assert runner.run(job).ok
        (mine,) = emulator.dataset_ids()
        theirs = client.create_dataset("Orders").id
        assert runner.run(job).ok
        assert theirs in emulator.dataset_ids()
        assert mine not in emulator.dataset_ids()
        assert len(emulator.dataset_ids()) == 2

    def test_append_then_replace(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """Switching a job to ``replace`` replaces the dataset it appended to."""
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(make_job(sqlite_url, "orders")).ok
        (appended,) = emulator.dataset_ids()
        assert runner.run(replace_job(sqlite_url, "orders")).ok
        (only,) = emulator.dataset_ids()
        assert only != appended
        assert dataset_rows(emulator, only) == table_rows(*source)

    def test_an_adopted_dataset_is_not_deleted(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """A job that wrote into someone's dataset (``adopt``, rows already there) and is then
        switched to ``replace`` never deletes that dataset: a refresh deletes only datasets it
        made."""
        theirs = client.create_dataset("Orders").id
        row = {"id": 999, "amount": 1.0, "status": "csv", "updated_at": "2020-01-01T00:00:00"}
        client.add_rows(theirs, [row])
        runner = Runner(store, client, sleep=no_sleep)
        target = {"dataset": "Orders", "adopt": True, "existing_rows": "append"}
        assert runner.run(make_job(sqlite_url, "orders", target=target)).ok
        kept = emulator.rows(theirs)
        first = runner.run(replace_job(sqlite_url, "orders"))
        assert first.ok, first.error
        second = runner.run(replace_job(sqlite_url, "orders"))  # replaces only its own
        assert second.ok, second.error
        assert emulator.dataset_ids() == [theirs, second.dataset_id]
        assert emulator.rows(theirs) == kept
        assert dataset_rows(emulator, second.dataset_id or "") == table_rows(*source)

    def test_replace_then_append_goes_on_from_the_refresh(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """Back to ``append``, the job goes on in the last refresh's dataset from its end."""
        engine, table = source
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(replace_job(sqlite_url, "orders")).ok
        insert(engine, table, range(11, 14))
        appended = runner.run(make_job(sqlite_url, "orders"))
        assert appended.ok, appended.error
        assert appended.rows_sent == 3
        (only,) = emulator.dataset_ids()
        assert dataset_rows(emulator, only) == table_rows(engine, table)

    def test_every_run_sends_the_whole_source(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """The incremental cursor does not limit a refresh; the schema is planned afresh."""
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(replace_job(sqlite_url, "orders")).rows_sent == 10
        renamed = replace_job(sqlite_url, "orders", columns={"rename": {"status": "state"}})
        again = runner.run(renamed)
        assert again.rows_sent == 10
        (only,) = emulator.dataset_ids()
        assert set(emulator.rows(only)[0]) == {"id", "amount", "state", "updated_at"}


class TestInferredTypes:
    """Each refresh's dataset has its field types read back, as a new dataset does."""

    def test_checked_after_the_switch(
        self, store: Store, client: AkkioClient, sqlite_url: str
    ) -> None:
        """A float column NULL in the whole first batch is reported for the new dataset."""
        engine = sa.create_engine(sqlite_url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE m (id INTEGER PRIMARY KEY, score FLOAT)"))
            conn.execute(
                sa.text("INSERT INTO m VALUES (:id, :score)"),
                [{"id": i, "score": None if i <= 4 else i / 2} for i in range(1, 9)],
            )
        engine.dispose()
        job = make_job(
            sqlite_url,
            "m",
            mode="replace",
            source={"url": sqlite_url, "table": "m", "watermark": "id", "key": "id"},
        )
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(job).ok
        first = store.job_state("orders").type_warnings_json
        assert first is not None
        assert "score" in first
        assert runner.run(job).ok
        assert store.job_state("orders").type_warnings_json == first


class TestConfig:
    """What ``mode`` accepts."""

    def test_default_is_append(self, sqlite_url: str) -> None:
        """Without ``mode`` a job appends."""
        assert make_job(sqlite_url, "orders").mode == "append"

    def test_replace_needs_a_dataset_name(self, sqlite_url: str) -> None:
        """A refresh makes a new dataset each run: it needs a name, not an id."""
        with pytest.raises(ValueError, match=r"target\.dataset"):
            replace_job(sqlite_url, "orders", target={"dataset_id": "abc"})

    def test_replace_refuses_lookback(self, sqlite_url: str) -> None:
        """A refresh reads the whole source: lookback has no use."""
        source = {"url": sqlite_url, "table": "orders", "watermark": "updated_at", "key": "id"}
        with pytest.raises(ValueError, match="lookback"):
            replace_job(sqlite_url, "orders", source={**source, "lookback": "1h"})

    def test_unknown_mode(self, sqlite_url: str) -> None:
        """Only append and replace."""
        with pytest.raises(ValueError, match="mode"):
            make_job(sqlite_url, "orders", mode="merge")


# -- columns.synced_at -------------------------------------------------------------------------


class TestSyncedAt:
    """``columns.synced_at`` adds a date field holding when the run read the row."""

    def test_plan_adds_a_date_field_last(self) -> None:
        """The field comes after the columns' fields, typed date, filled by no column."""
        columns = [SourceColumn("id", int)]
        schema = plan_schema(columns, synced_at="_synced_at")
        assert [(f.name, f.type) for f in schema.fields] == [
            ("id", "integer"), ("_synced_at", "date"),
        ]  # fmt: skip
        assert schema.fields[1].source == SYNCED_AT
        assert Schema.from_json(schema.to_json()) == schema

    def test_name_taken_by_a_column(self) -> None:
        """The field cannot take a column's field name."""
        with pytest.raises(ConfigError, match=r"columns\.synced_at"):
            plan_schema([SourceColumn("id", int)], synced_at="id")

    def test_mapper_fills_the_run_time(self) -> None:
        """Every record carries the run's time as ISO 8601 in UTC; without one, null."""
        schema = plan_schema([SourceColumn("id", int)], synced_at="_synced_at")
        kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
        mapper = RecordMapper(schema, ["id"], synced_at=RUN_AT.astimezone(kolkata))
        assert mapper.records([(1,), (2,)]) == [
            {"id": 1, "_synced_at": "2026-07-01T09:00:00.250000+00:00"},
            {"id": 2, "_synced_at": "2026-07-01T09:00:00.250000+00:00"},
        ]
        assert RecordMapper(schema, ["id"]).record((1,)) == {"id": 1, "_synced_at": None}

    def test_rows_carry_their_run_time(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """Each run's rows carry that run's time; Akkio sees a date field."""
        engine, table = source
        job = make_job(sqlite_url, "orders", columns={"synced_at": "_synced_at"})
        assert Runner(store, client, sleep=no_sleep, clock=fixed_clock()).run(job).ok
        later = RUN_AT + dt.timedelta(days=1)
        with engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == 3)
                .values(status="refunded", updated_at=T0 + dt.timedelta(hours=1))
            )
        assert Runner(store, client, sleep=no_sleep, clock=fixed_clock(later)).run(job).ok
        (dataset_id,) = emulator.dataset_ids()
        versions = [
            (r["status"], r["_synced_at"]) for r in emulator.rows(dataset_id) if r["id"] == 3
        ]
        assert versions == [
            ("paid", "2026-07-01T09:00:00.250000+00:00"),
            ("refunded", "2026-07-02T09:00:00.250000+00:00"),
        ]
        fields = {f.name: f.type for f in client.get_dataset(dataset_id).fields}
        assert fields["_synced_at"] == "date"

    def test_replace_mode(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
    ) -> None:
        """A refresh's rows all carry its run's time."""
        job = replace_job(sqlite_url, "orders", columns={"synced_at": "_synced_at"})
        assert Runner(store, client, sleep=no_sleep, clock=fixed_clock()).run(job).ok
        (dataset_id,) = emulator.dataset_ids()
        assert {r["_synced_at"] for r in emulator.rows(dataset_id)} == {
            "2026-07-01T09:00:00.250000+00:00"
        }

    def test_added_after_the_first_run_is_drift(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Set after the dataset exists, it is reported and not sent; the pinned schema stays."""
        engine, table = source
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(make_job(sqlite_url, "orders")).ok
        pinned = store.job_state("orders").schema_json
        insert(engine, table, range(11, 13))
        caplog.set_level(logging.WARNING, logger="akkiosync")
        result = runner.run(make_job(sqlite_url, "orders", columns={"synced_at": "_synced_at"}))
        assert result.ok, result.error
        assert any(
            "columns.synced_at" in r.getMessage() and "_synced_at" in r.getMessage()
            for r in caplog.records
        ), caplog.text
        (dataset_id,) = emulator.dataset_ids()
        assert all("_synced_at" not in r for r in emulator.rows(dataset_id))
        assert store.job_state("orders").schema_json == pinned

    def test_removed_after_the_first_run_is_sent_null(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        sqlite_url: str,
        source: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Dropped from the job file, the pinned field is sent as null, with a warning."""
        engine, table = source
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(make_job(sqlite_url, "orders", columns={"synced_at": "_synced_at"})).ok
        insert(engine, table, range(11, 13))
        caplog.set_level(logging.WARNING, logger="akkiosync")
        assert runner.run(make_job(sqlite_url, "orders")).ok
        assert "columns.synced_at" in caplog.text
        (dataset_id,) = emulator.dataset_ids()
        assert [r["_synced_at"] for r in emulator.rows(dataset_id)[-2:]] == [None, None]


# -- the command line ----------------------------------------------------------------------------


class TestCommands:
    """``sync``, ``status`` and ``reset`` of a replace job."""

    @pytest.fixture
    def deployment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: Emulator, sqlite_url: str
    ) -> Iterator[Path]:
        """A config directory with a replace job, and the emulator on a loopback port."""
        jobs = tmp_path / "config" / "jobs"
        jobs.mkdir(parents=True)
        (jobs / "orders.yaml").write_text(
            "mode: replace\n"
            "source:\n"
            f"  url: {sqlite_url}\n"
            "  table: orders\n"
            "  watermark: updated_at\n"
            "  key: id\n"
            "target:\n"
            "  dataset: Orders\n"
            "batch_size: 4\n"
        )
        with serve(emulator) as server:
            for name, value in {
                "AKKIO_API_KEY": API_KEY,
                "AKKIO_BASE_URL": server.url,
                "AKKIOSYNC_STATE": str(tmp_path / "state" / "akkiosync.db"),
                "AKKIO_RATE_LIMIT": "1000",
                "AKKIOSYNC_RECONCILE_WAIT": "0",
                "AKKIOSYNC_LANDING_GRACE": "0",
            }.items():
                monkeypatch.setenv(name, value)
            yield tmp_path / "config"

    def test_sync_twice_then_status(
        self, deployment: Path, emulator: Emulator, client: AkkioClient, source: Any
    ) -> None:
        """Two syncs leave one dataset; ``status`` names it and its replacement time."""
        for _ in range(2):
            result = CliRunner().invoke(cli, ["--config", str(deployment), "sync"])
            assert result.exit_code == 0, result.output
        (only,) = emulator.dataset_ids()
        assert f"to dataset {only}" in result.output
        status = CliRunner().invoke(cli, ["--config", str(deployment), "status", "--no-lag"])
        assert status.exit_code == 0, status.output
        assert f"orders: dataset Orders ({only}) replaced at " in status.output

    def test_preview_shows_a_whole_refresh(
        self, deployment: Path, emulator: Emulator, source: Any
    ) -> None:
        """After a run, ``preview`` still shows the first rows and a schema planned afresh:
        the next refresh reads everything into a new dataset."""
        assert CliRunner().invoke(cli, ["--config", str(deployment), "sync"]).exit_code == 0
        shown = CliRunner().invoke(cli, ["--config", str(deployment), "preview", "orders"])
        assert shown.exit_code == 0, shown.output
        assert "schema (would be created with):" in shown.output
        assert "next 5 record(s) after the start:" in shown.output
        assert '"id": 1,' in shown.output

    def test_validate_reports_no_drift(
        self, deployment: Path, emulator: Emulator, source: Any
    ) -> None:
        """``columns:`` edited after a refresh is no drift: the next refresh plans anew."""
        assert CliRunner().invoke(cli, ["--config", str(deployment), "sync"]).exit_code == 0
        job_file = deployment / "jobs" / "orders.yaml"
        job_file.write_text(
            job_file.read_text() + "columns:\n  rename: {status: state}\n  synced_at: _at\n"
        )
        checked = CliRunner().invoke(cli, ["--config", str(deployment), "validate"])
        assert checked.exit_code == 0, checked.output
        assert "warning" not in checked.output

    def test_reset_forgets_the_refresh(
        self, deployment: Path, emulator: Emulator, source: Any, tmp_path: Path
    ) -> None:
        """``reset --delete-dataset`` of a job killed mid-refresh deletes its dataset and the
        partial one, and forgets the refresh."""
        state = tmp_path / "state" / "akkiosync.db"
        job = replace_job(f"sqlite:///{tmp_path / 'source.db'}", "orders")
        with Store.open(state) as store:
            with client_on(emulator.transport()) as good:
                assert Runner(store, good, sleep=no_sleep).run(job).ok
            killed_run(store, emulator, job, "add", 2, landed=True)
        assert len(emulator.dataset_ids()) == 2
        result = CliRunner().invoke(
            cli, ["--config", str(deployment), "reset", "orders", "--yes", "--delete-dataset"]
        )
        assert result.exit_code == 0, result.output
        assert emulator.dataset_ids() == []
        with Store.open(state) as store:
            assert store.refresh("orders") is None
            assert store.job_state("orders").dataset_id is None

    @pytest.mark.parametrize("delete", [True, False])
    def test_reset_after_a_lost_creation(
        self, deployment: Path, emulator: Emulator, source: Any, tmp_path: Path, *, delete: bool
    ) -> None:
        """A refresh killed after its create request landed, its answer lost: ``reset
        --delete-dataset`` finds that dataset by name and deletes it too; without the flag,
        reset says it may stay, rather than leaving a second dataset of the name unmentioned."""
        state = tmp_path / "state" / "akkiosync.db"
        job = replace_job(f"sqlite:///{tmp_path / 'source.db'}", "orders")
        with Store.open(state) as store:
            with client_on(emulator.transport()) as good:
                assert Runner(store, good, sleep=no_sleep).run(job).ok
            (previous,) = emulator.dataset_ids()
            killed_run(store, emulator, job, "create", landed=True)
        (partial,) = (d for d in emulator.dataset_ids() if d != previous)
        args = ["--config", str(deployment), "reset", "orders", "--yes"]
        result = CliRunner().invoke(cli, args + (["--delete-dataset"] if delete else []))
        assert result.exit_code == 0, result.output
        if delete:
            assert emulator.dataset_ids() == []
            assert f"deleted dataset {partial}, left by a refresh" in result.output
        else:
            assert sorted(emulator.dataset_ids()) == sorted([previous, partial])
            assert "creation of a dataset 'Orders' was never confirmed" in result.output
        with Store.open(state) as store:
            assert store.pending_creation("orders") is None


def test_store_switch_is_one_transaction(store: Store) -> None:
    """The switch moves the job to the refreshed dataset with its counters and time, and leaves
    the previous one recorded for deletion."""
    now = RUN_AT
    store.pin_dataset("orders", "old", "Orders", "[]", now)
    store.begin_refresh("orders", "Orders", "old", ["old"], now)
    store.refresh_created("orders", "new")
    store.commit_refresh_batch("orders", '{"c": 1}', 4)
    store.commit_refresh_batch("orders", '{"c": 2}', 3)
    store.switch_refresh("orders", '[["id", "id", "integer"]]', None, batches=2, now=now)
    state = store.job_state("orders")
    assert (state.dataset_id, state.rows_sent, state.rows_at_pin, state.batches_sent) == (
        "new", 7, 0, 2,
    )  # fmt: skip
    assert (state.cursor_json, state.replaced_at) == ('{"c": 2}', RUN_AT)
    pending = store.refresh("orders")
    assert pending is not None
    assert (pending.phase, pending.previous_id) == ("deleting", "old")
    store.end_refresh("orders")
    assert store.refresh("orders") is None
