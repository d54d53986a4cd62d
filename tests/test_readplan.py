"""``preview`` shows exactly what the next run sends, for every option that shapes a read.

Each test sets a job up, previews it, runs it into the in-process emulator, and compares the
preview's records with the first records that run sent. Both read one plan (``readplan``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.cursor import decode_cursor
from akkiosync.emulator import Emulator
from akkiosync.mapping import Schema
from akkiosync.preview import preview
from akkiosync.readplan import ReadPlan
from akkiosync.runner import Runner
from akkiosync.source import make_source
from akkiosync.state import Store
from tests.conftest import make_job, no_sleep

MakeTable = Callable[..., sa.Table]
T0 = dt.datetime(2026, 3, 1, 8, 0)  # noqa: DTZ001 - naive columns on purpose
NOW = dt.datetime(2026, 6, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)  # the injected clock
MICRO_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def clock() -> dt.datetime:
    """Preview and run read the same time, for ``columns.synced_at``."""
    return NOW


@pytest.fixture
def orders(engine: sa.Engine, make_table: MakeTable, table_name: str) -> sa.Table:
    """An orders table with rows 1-6 an hour apart."""
    table = make_table(
        table_name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(20)),
        sa.Column("updated_at", MICRO_DATETIME),
    )
    add(engine, table, {i: T0 + dt.timedelta(hours=i) for i in range(1, 7)})
    return table


def add(engine: sa.Engine, table: sa.Table, rows: dict[int, dt.datetime]) -> None:
    """Insert rows by id and watermark."""
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "status": f"s{i}", "updated_at": at} for i, at in rows.items()],
        )


def compare(
    job: Job, store: Store, client: AkkioClient, emulator: Emulator, limit: int = 3
) -> list[dict[str, Any]]:
    """Preview ``job``, run it, and assert the preview showed the first records the run sent
    (all of them when it sent fewer); returns the preview's records."""
    before = {d: len(emulator.rows(d)) for d in emulator.dataset_ids()}
    shown = preview(job, store, limit, client=client, clock=clock)
    result = Runner(store, client, sleep=no_sleep, clock=clock).run(job)
    assert result.ok, result.error
    dataset_id = store.job_state(job.name).dataset_id
    assert dataset_id is not None
    sent = emulator.rows(dataset_id)[before.get(dataset_id, 0) :]
    assert sent, "the run sent nothing: the comparison would prove nothing"
    assert shown.records == sent[:limit]
    return shown.records


class TestPreviewIsTheNextRun:
    """Preview's records are the first records the next run sends, option by option."""

    def test_plain_cursor(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """After a run, the rows past the checkpoint, ties with its watermark included."""
        job = make_job(db_url, orders.name)
        compare(job, store, client, emulator)
        add(engine, orders, {7: T0 + dt.timedelta(hours=6), 8: T0 + dt.timedelta(hours=9)})
        shown = compare(job, store, client, emulator)
        assert [r["id"] for r in shown] == [7, 8]

    def test_initial_watermark(
        self, store: Store, client: AkkioClient, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """The first run starts at ``initial_watermark``: rows before it are not shown."""
        start = (T0 + dt.timedelta(hours=4)).isoformat()
        job = _with_source(make_job(db_url, orders.name), initial_watermark=start)
        shown = compare(job, store, client, emulator, limit=2)
        assert [r["id"] for r in shown] == [4, 5]

    def test_settle(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """Rows younger than ``settle`` by the database's clock are not shown, as not sent."""
        add(engine, orders, {9: dt.datetime(2999, 1, 1)})  # noqa: DTZ001 - naive column
        job = _with_source(make_job(db_url, orders.name), settle="1h")
        shown = compare(job, store, client, emulator, limit=10)
        assert [r["id"] for r in shown] == [1, 2, 3, 4, 5, 6]

    def test_lookback_ledger(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """A row committed late behind the checkpoint is shown; rows already sent are not."""
        job = _with_source(make_job(db_url, orders.name), lookback="1d")
        compare(job, store, client, emulator)
        late = T0 + dt.timedelta(hours=5, minutes=30)  # behind the checkpoint (hour 6)
        add(engine, orders, {10: late, 11: T0 + dt.timedelta(hours=7)})
        shown = compare(job, store, client, emulator)
        assert [r["id"] for r in shown] == [10, 11]

    def test_columns_drift(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """A column excluded after pinning is shown as null, as it is sent."""
        compare(make_job(db_url, orders.name), store, client, emulator)
        add(engine, orders, {7: T0 + dt.timedelta(hours=7)})
        shown = compare(
            make_job(db_url, orders.name, columns={"exclude": ["status"]}), store, client, emulator
        )
        assert shown[0]["status"] is None

    def test_synced_at(
        self, store: Store, client: AkkioClient, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """``columns.synced_at`` holds the run's read time, shown as it is sent."""
        job = make_job(db_url, orders.name, columns={"synced_at": "synced"})
        shown = compare(job, store, client, emulator)
        assert shown[0]["synced"] == "2026-06-01T12:00:00.250000+00:00"

    def test_replace(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """``mode: replace``: the whole source from the start, every run."""
        job = make_job(db_url, orders.name, mode="replace")
        compare(job, store, client, emulator)
        add(engine, orders, {0: T0})
        shown = compare(job, store, client, emulator)
        assert [r["id"] for r in shown] == [0, 1, 2]

    def test_replace_initial_watermark_and_settle(
        self,
        store: Store,
        client: AkkioClient,
        emulator: Emulator,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """A refresh reads from ``initial_watermark`` and only settled rows."""
        add(engine, orders, {9: dt.datetime(2999, 1, 1)})  # noqa: DTZ001 - naive column
        start = (T0 + dt.timedelta(hours=5)).isoformat()
        job = _with_source(
            make_job(db_url, orders.name, mode="replace"), settle="1h", initial_watermark=start
        )
        shown = compare(job, store, client, emulator, limit=10)
        assert [r["id"] for r in shown] == [5, 6]


class TestDialectValues:
    """Values a dialect reads its own way are shown as they are sent."""

    @pytest.mark.parametrize("through", ["table", "query"])
    def test_mariadb_timestamp_is_utc(
        self, store: Store, client: AkkioClient, emulator: Emulator, mysql_url: str, through: str
    ) -> None:
        """A MariaDB ``TIMESTAMP`` (read in a UTC session) is shown and sent with ``+00:00``,
        from a table or through a query."""
        engine = sa.create_engine(mysql_url)
        name = f"t_ts_{id(store):x}"
        table = sa.Table(
            name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("status", sa.String(20)),
            sa.Column("updated_at", mysql.TIMESTAMP(fsp=6)),
        )
        table.create(engine)
        try:
            add(engine, table, {i: T0 + dt.timedelta(hours=i) for i in range(1, 4)})
            source = {"url": mysql_url, "watermark": "updated_at", "key": "id"}
            source |= {"table": name} if through == "table" else {"query": f"SELECT * FROM {name}"}
            shown = compare(make_job(mysql_url, name, source=source), store, client, emulator)
        finally:
            table.drop(engine)
            engine.dispose()
        assert str(shown[0]["updated_at"]).endswith("+00:00")


class TestAdopted:
    """A job writing into an existing dataset is shown with that dataset's mapping."""

    def test_adopted_mapping(
        self, store: Store, client: AkkioClient, emulator: Emulator, db_url: str, orders: sa.Table
    ) -> None:
        """The dataset's own field names and types, as the run then sends them."""
        ref = client.create_dataset("Shop")
        client.add_rows(ref.id, [{"ID": 1, "Status": "x", "Updated At": "2026-01-01"}])
        job = make_job(
            db_url, orders.name, target={"dataset_id": ref.id, "existing_rows": "append"}
        )
        shown = compare(job, store, client, emulator)
        assert list(shown[0]) == ["ID", "Status", "Updated At"]


class TestReadPlan:
    """The plan's steps are a run's batches; reading them writes nothing."""

    def test_lookback_steps(
        self,
        store: Store,
        client: AkkioClient,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """A batch of rows all sent before comes empty but counted as read; the checkpoint a
        step carries never moves back behind the job's."""
        job = _with_source(make_job(db_url, orders.name), lookback="1d")
        Runner(store, client, sleep=no_sleep).run(job)
        add(engine, orders, {10: T0 + dt.timedelta(hours=5, minutes=30)})
        cursor = decode_cursor(store.job_state(job.name).cursor_json or "")
        schema = Schema.from_json(store.job_state(job.name).schema_json or "")
        with make_source(job.source) as source:
            steps = list(ReadPlan(job, source, schema).steps(store, cursor, job.batch_size))
        assert [(len(s.rows), s.read) for s in steps] == [(0, 4), (1, 3)]
        assert [row[0] for row in steps[1].rows] == [10]
        assert steps[1].cursor == cursor  # the late row is behind the checkpoint
        assert len(steps[1].entries) == 1

    def test_preview_writes_nothing(
        self,
        store: Store,
        client: AkkioClient,
        engine: sa.Engine,
        db_url: str,
        orders: sa.Table,
    ) -> None:
        """Previewing a lookback job leaves its checkpoint and ledger as they were."""
        job = _with_source(make_job(db_url, orders.name), lookback="1d")
        Runner(store, client, sleep=no_sleep).run(job)
        add(engine, orders, {10: T0 + dt.timedelta(hours=5, minutes=30)})
        before = (store.job_state(job.name), store.ledger_entries(job.name))
        assert [r["id"] for r in preview(job, store).records] == [10]
        assert (store.job_state(job.name), store.ledger_entries(job.name)) == before


def _with_source(job: Job, **options: Any) -> Job:
    """``job`` with more ``source:`` options."""
    spec = job.model_dump()
    spec["source"].update(options)
    return Job.model_validate(spec)
