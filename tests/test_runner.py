"""End to end through the emulator: dataset creation, increments, values, failures."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from akkiosync.akkio import AkkioClient
from akkiosync.cursor import decode_cursor
from akkiosync.emulator import Emulator
from akkiosync.preview import preview
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY, make_job, no_sleep

MakeTable = Callable[..., sa.Table]
MICRO_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
T0 = dt.datetime(2026, 5, 1, 8, 30, 0, 123456)  # noqa: DTZ001 - naive columns on purpose


@pytest.fixture
def orders(engine: sa.Engine, make_table: MakeTable, table_name: str) -> sa.Table:
    """An orders table with 10 rows, three per watermark value."""
    table = make_table(
        table_name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("status", sa.String(20)),
        sa.Column("updated_at", MICRO_DATETIME),
    )
    insert(engine, table, range(1, 11))
    return table


def insert(engine: sa.Engine, table: sa.Table, ids: range, at: dt.datetime = T0) -> None:
    rows = [
        {
            "id": i,
            "amount": Decimal(i * 100 + 1) / 100,
            "status": "paid",
            "updated_at": at + dt.timedelta(seconds=i // 3),
        }
        for i in ids
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


def landed_ids(emulator: Emulator) -> list[int]:
    (dataset_id,) = emulator.dataset_ids()
    return [row["id"] for row in emulator.rows(dataset_id)]


class TestFirstRun:
    """The first run creates the dataset with the planned fields and sends every row."""

    def test_creates_and_fills(
        self, runner: Runner, store: Store, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """Every row lands once, in cursor order, and the dataset and schema are pinned."""
        result = runner.run(make_job(db_url, orders.name))
        assert result.ok, result.error
        assert (result.rows_sent, result.batches) == (10, 3)
        (dataset_id,) = emulator.dataset_ids()
        assert landed_ids(emulator) == list(range(1, 11))
        state = store.job_state("orders")
        assert state.dataset_id == dataset_id == result.dataset_id
        assert (state.rows_sent, state.batches_sent) == (10, 3)
        assert decode_cursor(state.cursor_json or "").key == (10,)

    def test_fields_and_types(
        self, runner: Runner, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """Akkio sees exactly the schema's fields, with the types the values imply."""
        runner.run(make_job(db_url, orders.name, columns={"rename": {"amount": "amount_usd"}}))
        (ref,) = client.list_datasets()
        info = client.get_dataset(ref.id)
        assert ref.name == "Orders"
        assert [(f.name, f.type) for f in info.fields] == [
            ("id", "integer"),
            ("amount_usd", "float"),
            ("status", "string"),
            ("updated_at", "date"),
        ]
        assert info.rows == 10

    def test_existing_dataset_id(
        self, runner: Runner, client: AkkioClient, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """``dataset_id`` adopts an existing dataset instead of creating one."""
        ref = client.create_dataset("made by hand")
        result = runner.run(make_job(db_url, orders.name, target={"dataset_id": ref.id}))
        assert result.ok, result.error
        assert emulator.dataset_ids() == [ref.id]
        assert len(emulator.rows(ref.id)) == 10


class TestIncrements:
    """Later runs send only what is new since the checkpoint."""

    def test_second_run_sends_only_new_rows(
        self, runner: Runner, emulator: Emulator, engine: sa.Engine, db_url: str, orders: sa.Table
    ) -> None:
        """New rows, including ones tied with the last watermark, are sent once; nothing else."""
        job = make_job(db_url, orders.name)
        runner.run(job)
        # id 11 shares the last watermark (T0 + 3s) with ids 9 and 10; 12-14 come later.
        insert(engine, orders, range(11, 15))
        second = runner.run(job)
        third = runner.run(job)
        assert (second.rows_sent, third.rows_sent) == (4, 0)
        assert third.ok
        assert landed_ids(emulator) == list(range(1, 15))

    def test_updated_row_is_sent_again(
        self, runner: Runner, emulator: Emulator, engine: sa.Engine, db_url: str, orders: sa.Table
    ) -> None:
        """A row whose watermark moves forward is a new version and is sent again."""
        job = make_job(db_url, orders.name)
        runner.run(job)
        with engine.begin() as conn:
            conn.execute(
                orders.update()
                .where(orders.c.id == 2)
                .values(status="refunded", updated_at=T0 + dt.timedelta(hours=1))
            )
        assert runner.run(job).rows_sent == 1
        (dataset_id,) = emulator.dataset_ids()
        assert emulator.rows(dataset_id)[-1]["status"] == "refunded"


class TestValues:
    """Values arrive JSON-safe and keep their types."""

    def test_common_types(
        self,
        runner: Runner,
        emulator: Emulator,
        engine: sa.Engine,
        make_table: MakeTable,
        table_name: str,
        db_url: str,
    ) -> None:
        """Big integers, decimals, booleans, dates, microseconds and NULL, on every database."""
        table = make_table(
            table_name,
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("price", sa.Numeric(12, 4)),
            sa.Column("flag", sa.Boolean),
            sa.Column("day", sa.Date),
            sa.Column("note", sa.String(50)),
            sa.Column("updated_at", MICRO_DATETIME),
        )
        big = 2**53 + 1
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {"id": big, "price": Decimal("1234.5678"), "flag": True,
                     "day": dt.date(2026, 2, 28), "note": "héllo \"q\"", "updated_at": T0},
                    {"id": 1, "price": None, "flag": None, "day": None, "note": None,
                     "updated_at": T0 + dt.timedelta(microseconds=1)},
                ],
            )  # fmt: skip
        assert runner.run(make_job(db_url, table_name)).ok
        (dataset_id,) = emulator.dataset_ids()
        first, second = emulator.rows(dataset_id)
        assert first == {
            "id": big,
            "price": 1234.5678,
            "flag": True,
            "day": "2026-02-28",
            "note": 'héllo "q"',
            "updated_at": "2026-05-01T08:30:00.123456",
        }
        assert second == {
            "id": 1, "price": None, "flag": None, "day": None, "note": None,
            "updated_at": "2026-05-01T08:30:00.123457",
        }  # fmt: skip

    def test_postgres_types(
        self,
        runner: Runner,
        emulator: Emulator,
        postgres_url: str,
        tmp_path: Path,
    ) -> None:
        """timestamptz keeps its offset; UUID/JSONB/bytea/arrays become strings; NaN is null
        under ``on_bad_value: null`` (JSON has no NaN)."""
        engine = sa.create_engine(postgres_url)
        metadata = sa.MetaData()
        table = sa.Table(
            f"t_{uuid.uuid4().hex[:10]}",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("uid", postgresql.UUID(as_uuid=True)),
            sa.Column("doc", postgresql.JSONB),
            sa.Column("blob", postgresql.BYTEA),
            sa.Column("tags", postgresql.ARRAY(sa.Text)),
            sa.Column("score", sa.Float),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        )
        metadata.create_all(engine)
        uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
        kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("SET TIME ZONE 'UTC'"))
                conn.execute(
                    table.insert(),
                    [{"id": 1, "uid": uid, "doc": {"a": [1, 2]}, "blob": b"\x00\xff",
                      "tags": ["x", "y"], "score": float("nan"),
                      "updated_at": dt.datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=kolkata)}],
                )  # fmt: skip
            assert runner.run(make_job(postgres_url, table.name, on_bad_value="null")).ok
        finally:
            metadata.drop_all(engine)
            engine.dispose()
        (dataset_id,) = emulator.dataset_ids()
        (row,) = emulator.rows(dataset_id)
        assert row["uid"] == str(uid)
        assert json.loads(row["doc"]) == {"a": [1, 2]}
        assert row["blob"] == "AP8="
        assert json.loads(row["tags"]) == ["x", "y"]
        assert row["score"] is None
        # The same instant, with an offset (the session's zone decides which one).
        sent = dt.datetime.fromisoformat(row["updated_at"])
        assert sent.utcoffset() is not None
        assert sent == dt.datetime(2026, 1, 1, 6, 30, 0, 5, tzinfo=dt.UTC)


class _FailingAdds(httpx.BaseTransport):
    """Passes requests to the emulator, but answers ``status`` to the add-rows calls numbered in
    ``fail`` (before the emulator sees them, so those rows do not land)."""

    def __init__(self, emulator: Emulator, fail: set[int], status: int) -> None:
        self._inner = emulator.transport()
        self._fail = fail
        self._status = status
        self.adds = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and b'"rows"' in request.content:
            self.adds += 1
            if self.adds in self._fail:
                return httpx.Response(self._status, json={"status": "error", "message": "boom"})
        return self._inner.handle_request(request)


class TestFailures:
    """A failed run keeps the last good checkpoint and says why in the run history."""

    def test_failed_batch_keeps_checkpoint(
        self, store: Store, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """A refused batch ends the run; the next run resumes after the last accepted batch."""
        transport = _FailingAdds(emulator, fail={2}, status=400)
        with AkkioClient(API_KEY, "http://emulator/v1", transport=transport) as client:
            runner = Runner(store, client, sleep=no_sleep)
            job = make_job(db_url, orders.name)
            failed = runner.run(job)
            assert not failed.ok
            assert "HTTP 400" in (failed.error or "")
            assert (failed.rows_sent, store.job_state("orders").rows_sent) == (4, 4)
            (last,) = store.runs("orders")
            assert (last.status, last.rows_sent) == ("failed", 4)
            assert "boom" in (last.error or "")
            assert runner.run(job).ok
        assert landed_ids(emulator) == list(range(1, 11))

    def test_server_error_is_reconciled(
        self, store: Store, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """A 5xx may or may not have stored the rows: the row count decides, nothing doubles."""
        transport = _FailingAdds(emulator, fail={2, 3}, status=503)
        with AkkioClient(API_KEY, "http://emulator/v1", transport=transport) as client:
            result = Runner(store, client, sleep=no_sleep).run(make_job(db_url, orders.name))
        assert result.ok, result.error
        assert transport.adds == 5  # batches 2 and 3 were each sent twice
        assert landed_ids(emulator) == list(range(1, 11))

    def test_deleted_dataset(
        self, runner: Runner, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """If the pinned dataset disappears, the run fails with a message that points to reset."""
        job = make_job(db_url, orders.name)
        first = runner.run(job)
        assert first.dataset_id is not None
        client.delete_dataset(first.dataset_id)
        result = runner.run(job)
        assert not result.ok
        assert "no longer exists" in (result.error or "")
        assert "akkiosync reset orders" in (result.error or "")

    def test_dropped_column(
        self, runner: Runner, engine: sa.Engine, db_url: str, orders: sa.Table
    ) -> None:
        """A column of the pinned schema that disappears from the source fails the run clearly."""
        job = make_job(db_url, orders.name)
        runner.run(job)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {orders.name} DROP COLUMN status"))
        result = runner.run(job)
        assert not result.ok
        assert "status" in (result.error or "")
        assert "no longer exist" in (result.error or "")

    def test_added_column_is_ignored(
        self,
        runner: Runner,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A new source column is not sent (the dataset's keys are fixed) and a warning says so."""
        job = make_job(db_url, orders.name)
        runner.run(job)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {orders.name} ADD COLUMN extra INTEGER"))
        insert(engine, orders, range(11, 13), at=T0 + dt.timedelta(days=1))
        result = runner.run(job)
        assert result.ok, result.error
        assert "extra" in caplog.text
        (dataset_id,) = emulator.dataset_ids()
        assert all("extra" not in row for row in emulator.rows(dataset_id))

    def test_password_never_stored(self, runner: Runner, store: Store, postgres_url: str) -> None:
        """A database error does not carry the URL's password into the run history."""
        secret = "s3cret-pw"  # noqa: S105 - the value the test looks for, not a credential
        url = sa.make_url(postgres_url).set(password=secret, database="no_such_db_here")
        result = runner.run(make_job(url.render_as_string(hide_password=False), "orders"))
        assert not result.ok
        assert "s3cret-pw" not in (result.error or "")
        assert all("s3cret-pw" not in (run.error or "") for run in store.runs())


class TestPreview:
    """Preview shows the schema and the next records and sends nothing."""

    def test_preview(self, store: Store, emulator: Emulator, db_url: str, orders: sa.Table) -> None:
        """The planned schema and the first records, with no request to Akkio."""
        shown = preview(make_job(db_url, orders.name), store, limit=3)
        assert [f.name for f in shown.schema.fields] == ["id", "amount", "status", "updated_at"]
        assert [r["id"] for r in shown.records] == [1, 2, 3]
        assert not shown.pinned
        assert emulator.request_count() == 0


class _LoseCreateAnswers(httpx.BaseTransport):
    """Creates datasets on the emulator but loses the first ``lose`` answers to a create."""

    def __init__(self, emulator: Emulator, lose: int) -> None:
        self._inner = emulator.transport()
        self._lose = lose

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.method == "POST" and b'"name"' in request.content and self._lose > 0:
            self._lose -= 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return response


class TestDatasetCreation:
    """A create whose answer was lost is adopted by the next run, not made twice."""

    def test_lost_create_answer(
        self, store: Store, emulator: Emulator, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """The next run adopts the one new dataset of that name; an older namesake is left."""
        older = client.create_dataset("Orders")  # someone else's dataset with the same name
        store.allow_new_dataset("orders", T0.replace(tzinfo=dt.UTC))  # sync --new-dataset
        transport = _LoseCreateAnswers(emulator, lose=1)
        with AkkioClient(API_KEY, "http://emulator/v1", transport=transport) as lossy:
            runner = Runner(store, lossy, sleep=no_sleep)
            job = make_job(db_url, orders.name)
            failed = runner.run(job)
            assert not failed.ok
            assert store.pending_creation("orders") is not None
            second = runner.run(job)
        assert second.ok, second.error
        assert len(emulator.dataset_ids()) == 2
        assert second.dataset_id != older.id
        assert emulator.rows(older.id) == []
        assert [r["id"] for r in emulator.rows(second.dataset_id or "")] == list(range(1, 11))
        assert store.pending_creation("orders") is None


class TestLostState:
    """A store with no record of a job never makes a second dataset of the same name."""

    def test_namesake_stops_the_first_run(
        self, store: Store, emulator: Emulator, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """A dataset of the target's name and no record in the store: the run fails before
        creating or sending anything, saying how to adopt it or make a new one."""
        older = client.create_dataset("Orders")
        result = Runner(store, client, sleep=no_sleep).run(make_job(db_url, orders.name))
        assert not result.ok
        assert f"dataset_id: {older.id}" in (result.error or "")
        assert "--new-dataset" in (result.error or "")
        assert emulator.dataset_ids() == [older.id]
        assert emulator.rows(older.id) == []

    def test_new_dataset_when_allowed(
        self, store: Store, emulator: Emulator, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """After `reset` (or with --new-dataset) the run creates its own dataset beside it,
        and the leave is used up by that creation."""
        older = client.create_dataset("Orders")
        store.reset("orders", T0.replace(tzinfo=dt.UTC))
        result = Runner(store, client, sleep=no_sleep).run(make_job(db_url, orders.name))
        assert result.ok, result.error
        assert result.dataset_id != older.id
        assert len(emulator.rows(result.dataset_id or "")) == 10
        assert store.job_state("orders").new_dataset_ok is False


class TestCursorColumns:
    """A job whose watermark or key changed after the first run stops before reading."""

    def test_watermark_changed(
        self, store: Store, emulator: Emulator, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """Changing the watermark fails the run naming both columns and how to re-baseline;
        nothing more is sent and the cursor stays."""
        runner = Runner(store, client, sleep=no_sleep)
        first = runner.run(make_job(db_url, orders.name))
        assert first.ok, first.error
        cursor = store.job_state("orders").cursor_json
        source = {"url": db_url, "table": orders.name, "watermark": "id", "key": "id"}
        changed = runner.run(make_job(db_url, orders.name, source=source))
        assert not changed.ok
        error = changed.error or ""
        assert "watermark updated_at (datetime)" in error
        assert "watermark id (int)" in error
        assert "akkiosync reset orders --keep-dataset" in error
        assert store.job_state("orders").cursor_json == cursor
        assert len(emulator.rows(first.dataset_id or "")) == 10

    def test_key_changed(
        self, store: Store, emulator: Emulator, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """Dropping the key (or adding one) fails the same way, instead of an IndexError."""
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(make_job(db_url, orders.name)).ok
        source = {"url": db_url, "table": orders.name, "watermark": "updated_at"}
        changed = runner.run(make_job(db_url, orders.name, source=source))
        assert not changed.ok
        assert "key id (int)" in (changed.error or "")
        assert "key none" in (changed.error or "")

    def test_watermark_gains_a_time_zone(
        self, store: Store, client: AkkioClient, postgres_url: str, table_name: str
    ) -> None:
        """``timestamp`` retyped to ``timestamptz`` after the first run: the naive position
        no longer fits, and the run says so before reading."""
        engine = sa.create_engine(engine_url(postgres_url))
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table_name} (id int primary key, at timestamp)"))
            conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (1, '2026-01-01 10:00')"))
        try:
            runner = Runner(store, client, sleep=no_sleep)
            source = {"url": postgres_url, "table": table_name, "watermark": "at", "key": "id"}
            assert runner.run(make_job(postgres_url, table_name, source=source)).ok
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {table_name} ALTER at TYPE timestamptz"))
            changed = runner.run(make_job(postgres_url, table_name, source=source))
            assert not changed.ok
            assert "watermark at (datetime)" in (changed.error or "")
            assert "watermark at (datetime+tz)" in (changed.error or "")
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE {table_name}"))
            engine.dispose()

    def test_legacy_cursor_key_length(
        self, store: Store, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """A cursor stored before its columns were recorded is still checked by its key's
        length."""
        runner = Runner(store, client, sleep=no_sleep)
        assert runner.run(make_job(db_url, orders.name)).ok
        with store._transaction(write=True) as connection:  # as a version 3 store left it
            connection.execute(sa.text("UPDATE jobs SET cursor_columns_json = NULL"))
        source = {"url": db_url, "table": orders.name, "watermark": "updated_at"}
        changed = runner.run(make_job(db_url, orders.name, source=source))
        assert not changed.ok
        assert "has 1 key value(s)" in (changed.error or "")

    def test_keep_dataset_restarts_the_cursor(
        self, store: Store, emulator: Emulator, client: AkkioClient, db_url: str, orders: sa.Table
    ) -> None:
        """`reset --keep-dataset` lets the changed job run into the same dataset from its
        initial_watermark, and the count check still holds."""
        runner = Runner(store, client, sleep=no_sleep)
        first = runner.run(make_job(db_url, orders.name))
        assert first.ok
        store.restart_cursor("orders", T0.replace(tzinfo=dt.UTC))
        source = {
            "url": db_url, "table": orders.name, "watermark": "id", "key": "id",
            "initial_watermark": 11,
        }  # fmt: skip
        again = runner.run(make_job(db_url, orders.name, source=source))
        assert again.ok, again.error
        assert again.dataset_id == first.dataset_id
        assert again.rows_sent == 0
        assert len(emulator.rows(first.dataset_id or "")) == 10
