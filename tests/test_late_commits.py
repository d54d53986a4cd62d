"""Late commits on PostgreSQL and MariaDB: settle and lookback deliver them exactly once.

Transaction A stamps its rows and stays open; transaction B stamps later rows and commits; a
sync runs; A commits; the next sync must deliver A's rows once. Without settle or lookback
they are lost: the test below documents that (the README says so too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.emulator import Emulator
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY

NAIVE = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
AWARE = sa.DateTime(timezone=True).with_variant(mysql.TIMESTAMP(fsp=6), "mysql", "mariadb")
A_ROWS, B_ROWS = [1, 2, 3], [4, 5, 6]


@pytest.fixture(params=["postgres", "mysql"])
def server(request: pytest.FixtureRequest, table_name: str) -> Iterator[tuple[str, sa.Engine]]:
    """A PostgreSQL or MariaDB URL and an engine on it; drops the test's tables after."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(engine_url(url))
    yield url, engine
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table_name}"))
    engine.dispose()


class Sync:
    """One job, its store and the emulator: ``run()`` is one sync, ``landed()`` what arrived."""

    def __init__(self, tmp_path: Path, emulator: Emulator, url: str, table: str, **source: Any):
        self.emulator = emulator
        self.job = Job.model_validate(
            {
                "name": "late",
                "source": {"url": url, "table": table, "watermark": "wm", "key": "id", **source},
                "target": {"dataset": "Late"},
                "batch_size": 2,
            }
        )
        self.store = Store.open(tmp_path / "state.db")
        self.client = AkkioClient(API_KEY, "http://emulator/v1", transport=emulator.transport())

    def run(self) -> int:
        result = Runner(self.store, self.client, sleep=lambda _: None).run(self.job)
        assert result.ok, result.error
        return result.rows_sent

    def landed(self) -> list[int]:
        ids = self.emulator.dataset_ids()
        return [row["id"] for row in self.emulator.rows(ids[0])] if ids else []

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture
def make_sync(tmp_path: Path, emulator: Emulator) -> Iterator[Any]:
    """Build a Sync; closes it after the test."""
    made: list[Sync] = []

    def make(url: str, table: str, **source: Any) -> Sync:
        made.append(Sync(tmp_path, emulator, url, table, **source))
        return made[-1]

    yield make
    for sync in made:
        sync.close()


def _table(engine: sa.Engine, name: str, wm_type: sa.types.TypeEngine[Any]) -> sa.Table:
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("wm", wm_type),
    )
    table.create(engine)
    return table


def _db_now(engine: sa.Engine, aware: bool) -> dt.datetime:
    """The database's clock, as a value for the watermark column."""
    query = "SELECT now()" if aware else "SELECT LOCALTIMESTAMP"
    if engine.dialect.name != "postgresql":
        query = "SELECT UTC_TIMESTAMP(6)" if aware else "SELECT NOW(6)"
    with engine.connect() as conn:
        now: dt.datetime = conn.execute(sa.text(query)).scalar_one()
    return now


class TestLateCommit:
    """A transaction that commits after a newer one: lost without a remedy, found with one."""

    def _scenario(
        self, engine: sa.Engine, table: sa.Table, sync: Sync, a_at: Any, b_at: Any
    ) -> int:
        """A stamps a_at and stays open; B stamps b_at and commits; sync; A commits."""
        with engine.connect() as a:
            transaction = a.begin()
            a.execute(table.insert(), [{"id": i, "wm": a_at} for i in A_ROWS])
            with engine.begin() as b:
                b.execute(table.insert(), [{"id": i, "wm": b_at} for i in B_ROWS])
            first = sync.run()
            transaction.commit()
        return first

    def test_without_remedy_rows_are_lost(
        self, server: tuple[str, sa.Engine], table_name: str, make_sync: Any
    ) -> None:
        """Documented behaviour: the checkpoint passed A's rows before they were visible."""
        url, engine = server
        table = _table(engine, table_name, NAIVE)
        sync = make_sync(url, table_name)
        t0 = dt.datetime(2026, 1, 1, 12)  # noqa: DTZ001 - a naive column
        assert self._scenario(engine, table, sync, t0, t0 + dt.timedelta(seconds=1)) == 3
        assert sync.run() == 0
        assert sync.landed() == B_ROWS  # A's rows never arrive: use settle or lookback

    @pytest.mark.parametrize("lookback", ["1m", "2s"])
    def test_lookback(
        self, server: tuple[str, sa.Engine], table_name: str, make_sync: Any, lookback: str
    ) -> None:
        """The window behind the checkpoint is re-read; only rows not sent before go out."""
        url, engine = server
        table = _table(engine, table_name, NAIVE)
        sync = make_sync(url, table_name, lookback=lookback)
        t0 = dt.datetime(2026, 1, 1, 12)  # noqa: DTZ001 - a naive column
        assert self._scenario(engine, table, sync, t0, t0 + dt.timedelta(seconds=1)) == 3
        assert sync.run() == 3
        assert sync.run() == 0
        assert sorted(sync.landed()) == A_ROWS + B_ROWS
        assert len(sync.landed()) == 6

    def test_lookback_sends_updated_rows(
        self, server: tuple[str, sa.Engine], table_name: str, make_sync: Any
    ) -> None:
        """A row whose watermark moves (an update) is a new version, sent again once."""
        url, engine = server
        table = _table(engine, table_name, NAIVE)
        sync = make_sync(url, table_name, lookback="1h")
        t0 = dt.datetime(2026, 1, 1, 12)  # noqa: DTZ001 - a naive column
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "wm": t0} for i in A_ROWS])
        sync.run()
        with engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == 2).values(wm=t0 + dt.timedelta(1)))
        assert sync.run() == 1
        assert sync.run() == 0
        assert sync.landed() == [1, 2, 3, 2]

    @pytest.mark.parametrize("wm_type", [NAIVE, AWARE], ids=["naive", "aware"])
    def test_settle(
        self,
        server: tuple[str, sa.Engine],
        table_name: str,
        make_sync: Any,
        wm_type: sa.types.TypeEngine[Any],
    ) -> None:
        """Rows younger than settle (by the database's clock) wait; A's rows then go first."""
        url, engine = server
        aware = wm_type is AWARE
        table = _table(engine, table_name, wm_type)
        sync = make_sync(url, table_name, settle="25s")
        now = _db_now(engine, aware)
        a_at, b_at = now - dt.timedelta(seconds=10), now - dt.timedelta(seconds=5)
        assert self._scenario(engine, table, sync, a_at, b_at) == 0  # B has not settled yet
        minute = (
            "interval '1 minute'" if engine.dialect.name == "postgresql" else "INTERVAL 1 MINUTE"
        )
        with engine.begin() as conn:  # a minute passes: every stamp is a minute older
            conn.execute(sa.text(f"UPDATE {table_name} SET wm = wm - {minute}"))
        assert sync.run() == 6
        assert sync.landed() == A_ROWS + B_ROWS
