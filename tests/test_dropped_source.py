"""A source connection that drops mid-run (pg_terminate_backend, MariaDB KILL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.emulator import Emulator
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY

ROWS = 40_000  # ~36 MB: far more than socket buffers hold, so a killed stream soon stops
T0 = dt.datetime(2026, 1, 1)  # noqa: DTZ001 - a naive column
MARKER = "akkiosync_drop_test"


class KillAfterAdds(httpx.BaseTransport):
    """Passes requests to the emulator; after the add-rows calls numbered in ``kill_after``,
    kills the source's reading connection from another session."""

    def __init__(self, emulator: Emulator, kill: Callable[[], int], kill_after: set[int]) -> None:
        self.inner = emulator.transport()
        self.kill = kill
        self.kill_after = kill_after
        self.adds = 0
        self.killed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and b'"rows"' in request.content:
            self.adds += 1
            if self.adds in self.kill_after:
                self.killed += self.kill()
        return response


def _killer(url: str) -> Callable[[], int]:
    """A function that kills the other sessions reading the test table; returns how many."""
    engine = sa.create_engine(engine_url(url))
    if engine.dialect.name == "postgresql":
        # A server-side cursor shows its FETCH, not its query: find it by application name,
        # in its open transaction (the pool's idle connections are not the reader).
        find = (
            f"SELECT pid FROM pg_stat_activity WHERE application_name = '{MARKER}' "
            "AND state <> 'idle' AND pid <> pg_backend_pid()"
        )
        kill = "SELECT pg_terminate_backend({})"
    else:
        find = (
            "SELECT id FROM information_schema.processlist WHERE info LIKE "
            "'%akkiosync_cursor_0%' AND id <> CONNECTION_ID()"
        )
        kill = "KILL {}"

    def run() -> int:
        with engine.begin() as conn:
            ids = [int(row[0]) for row in conn.execute(sa.text(find))]
            for session in ids:
                conn.execute(sa.text(kill.format(session)))
        return len(ids)

    run.engine = engine  # type: ignore[attr-defined]  # disposed by the fixture
    return run


@pytest.fixture(params=["postgres", "mysql"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A PostgreSQL (its sessions named MARKER) or MariaDB URL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    if request.param == "postgres":
        url = (
            sa.make_url(url)
            .update_query_dict({"application_name": MARKER})
            .render_as_string(hide_password=False)
        )
    return url


@pytest.fixture
def big_table(server_url: str, table_name: str) -> Iterator[str]:
    """ROWS rows, 25 per watermark value, with a payload wide enough to fill the buffers."""
    engine = sa.create_engine(engine_url(server_url))
    metadata = sa.MetaData()
    table = sa.Table(
        table_name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("payload", sa.String(1000)),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": i, "updated_at": T0 + dt.timedelta(seconds=i // 25), "payload": "x" * 900}
                for i in range(1, ROWS + 1)
            ],
        )
    yield table_name
    metadata.drop_all(engine)
    engine.dispose()


def _job(url: str, table: str) -> Job:
    return Job.model_validate(
        {
            "name": "big",
            "source": {"url": url, "table": table, "watermark": "updated_at", "key": "id"},
            "target": {"dataset": "Big"},
            "batch_size": 500,
        }
    )


class TestDroppedSourceConnection:
    """The run reopens the source from the last checkpoint; nothing is lost or doubled."""

    @pytest.mark.parametrize("kills", [{2}, {2, 40}], ids=["once", "twice"])
    def test_resumes(
        self,
        server_url: str,
        big_table: str,
        emulator: Emulator,
        tmp_path: Path,
        kills: set[int],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Killing the reading session mid-stream costs a reconnect, not a row."""
        kill = _killer(server_url)
        transport = KillAfterAdds(emulator, kill, kills)
        try:
            with (
                Store.open(tmp_path / "state.db") as store,
                AkkioClient(API_KEY, "http://emulator/v1", transport=transport) as client,
            ):
                result = Runner(store, client, sleep=lambda _: None).run(
                    _job(server_url, big_table)
                )
        finally:
            kill.engine.dispose()  # type: ignore[attr-defined]
        # MariaDB streams from its socket buffer, so a kill may surface a few batches later.
        assert transport.killed == len(kills), "the test did not find the session to kill"
        assert result.ok, result.error
        assert "source connection lost" in caplog.text
        (dataset_id,) = emulator.dataset_ids()
        ids = [row["id"] for row in emulator.rows(dataset_id)]
        assert len(ids) == ROWS
        assert sorted(ids) == list(range(1, ROWS + 1))

    def test_gives_up_cleanly(
        self, server_url: str, big_table: str, emulator: Emulator, tmp_path: Path
    ) -> None:
        """If the connection keeps dropping, the run fails, says why, and keeps its checkpoint."""
        kill = _killer(server_url)
        transport = KillAfterAdds(emulator, kill, set(range(1, 10_000)))  # after every batch
        try:
            with (
                Store.open(tmp_path / "state.db") as store,
                AkkioClient(API_KEY, "http://emulator/v1", transport=transport) as client,
            ):
                runner = Runner(store, client, sleep=lambda _: None)
                job = _job(server_url, big_table)
                failed = runner.run(job)
                (last,) = store.runs()
                sent_before = store.job_state("big").rows_sent
                transport.kill_after = set()  # the database is back
                finished = runner.run(job)
        finally:
            kill.engine.dispose()  # type: ignore[attr-defined]
        assert not failed.ok
        assert last.status == "failed"
        assert "reading the source" in (last.error or "")
        assert sent_before == failed.rows_sent > 0
        assert finished.ok, finished.error
        (dataset_id,) = emulator.dataset_ids()
        assert sorted(row["id"] for row in emulator.rows(dataset_id)) == list(range(1, ROWS + 1))
