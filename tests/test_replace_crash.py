"""``mode: replace`` under kill -9, as real processes: ``akkiosync sync`` refreshes a PostgreSQL
table into the emulator on a loopback port and is killed with SIGKILL at random points; the
table changes between runs. Also ``akkiosync run`` (the daemon) refreshing on a schedule.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.emulator import Emulator, EmulatorServer, serve
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY, until
from tests.test_crash import Deployment
from tests.test_daemon import Daemon

ROWS = 5000  # ten batches of 500 per refresh
KILLS = 16
T0 = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
Content = frozenset[tuple[int, str]]


@pytest.fixture
def table(postgres_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """ROWS rows of (id, updated_at, note)."""
    engine = sa.create_engine(engine_url(postgres_url))
    metadata = sa.MetaData()
    t = sa.Table(
        f"replace_{os.getpid()}_{time.monotonic_ns() % 10**6}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("note", sa.String(40)),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            t.insert(),
            [
                {"id": i, "updated_at": T0 + dt.timedelta(seconds=i % 97), "note": f"v0-{i}"}
                for i in range(1, ROWS + 1)
            ],
        )
    yield engine, t
    metadata.drop_all(engine)
    engine.dispose()


def content(engine: sa.Engine, table: sa.Table) -> Content:
    with engine.connect() as conn:
        return frozenset((r.id, r.note) for r in conn.execute(sa.select(table.c.id, table.c.note)))


def change(engine: sa.Engine, table: sa.Table, rng: random.Random, version: int) -> None:
    """Update, delete and insert a few rows, as a live table does between two refreshes."""
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(table.c.id)).scalars())
        picked = rng.sample(ids, 60)
        conn.execute(
            table.update()
            .where(table.c.id.in_(picked[:50]))
            .values(note=f"v{version}", updated_at=T0 + dt.timedelta(hours=version))
        )
        conn.execute(table.delete().where(table.c.id.in_(picked[50:])))
        top = max(ids)
        conn.execute(
            table.insert(),
            [
                {"id": top + n, "updated_at": T0 + dt.timedelta(hours=version), "note": "new"}
                for n in range(1, 11)
            ],
        )


class Referee:
    """What the emulator and the store hold after a kill, and the invariant they keep."""

    def __init__(self, deployment: Deployment, emulator: Emulator, server: EmulatorServer):
        self.deployment, self.emulator = deployment, emulator
        self.client = AkkioClient(API_KEY, server.url)
        self.snapshots: set[Content] = set()  # the table as each run could have read it
        self.phases: collections.Counter[str] = collections.Counter()

    def datasets(self) -> list[str]:
        return [d.id for d in self.client.list_datasets() if d.name == "Big"]

    def complete(self, dataset_id: str) -> bool:
        """Holds the whole table as one run read it: each key once, nothing else."""
        rows = self.emulator.rows(dataset_id)
        held = frozenset((r["id"], r["note"]) for r in rows)
        return len(held) == len(rows) == len({r["id"] for r in rows}) and held in self.snapshots

    def check(self) -> None:
        """The previous dataset is never lost, and after recovery never two: the job points at
        a complete dataset of the name; besides it there is at most one other dataset of the
        name, and the store holds the refresh that deletes it at the next run (its partial
        one, or the one it replaced)."""
        assert self.emulator.settle(30), "a request was still landing"
        with Store.open(Path(self.deployment.env["AKKIOSYNC_STATE"])) as store:
            pinned = store.job_state("big").dataset_id
            refresh = store.refresh("big")
            creation = store.pending_creation("big")
        self.phases[refresh.phase if refresh else "none"] += 1
        names = self.datasets()
        assert pinned in names, (pinned, names)
        assert self.complete(pinned), "the job's dataset is not whole"
        others = [d for d in names if d != pinned]
        assert len(others) <= 1, others
        for other in others:
            assert refresh is not None, f"dataset {other} is known to no refresh"
            if refresh.phase == "deleting":
                assert refresh.previous_id == other
            elif refresh.phase == "filling":
                assert refresh.dataset_id == other
            else:
                assert creation is not None
                assert other not in creation.known_ids

    def finish(self) -> None:
        process = self.deployment.start()
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode()


@pytest.mark.postgres
@pytest.mark.slow
class TestKill9DuringRefreshes:
    """SIGKILL at random points of refreshes never loses the job's dataset nor leaves two."""

    def test_kills(
        self, postgres_url: str, table: tuple[sa.Engine, sa.Table], tmp_path: Path
    ) -> None:
        """A first refresh, then runs killed at random requests while the table changes, then
        a run to the end: one dataset of the name, exactly the current table."""
        engine, t = table
        rng = random.Random(29)
        emulator = Emulator(api_key=API_KEY)
        with serve(emulator) as server:
            # Not indented: a top-level key after the source's (the file is test_crash's).
            deployment = Deployment(tmp_path, server, postgres_url, t.name, "mode: replace\n")
            referee = Referee(deployment, emulator, server)
            referee.snapshots.add(content(engine, t))
            referee.finish()
            referee.check()
            kills = 0
            for version in range(1, KILLS * 3):
                change(engine, t, rng, version)
                referee.snapshots.add(content(engine, t))
                # A refresh takes about 15 requests; the last few switch and delete.
                ahead = rng.randint(0, 18) if rng.random() < 0.6 else rng.randint(12, 16)
                target = emulator.request_count() + ahead
                process = deployment.start()
                deadline = time.monotonic() + 60
                while emulator.request_count() < target and process.poll() is None:
                    assert time.monotonic() < deadline, "the sync made no progress"
                    time.sleep(0.001)
                if process.poll() is None:
                    if rng.random() < 0.5:  # also between requests, not only on them
                        time.sleep(rng.random() * 0.02)
                    process.send_signal(signal.SIGKILL)
                    kills += 1
                process.communicate()
                referee.check()
                if kills == KILLS:
                    break
            referee.finish()
            referee.check()
            (only,) = referee.datasets()
            rows = emulator.rows(only)
            referee.client.close()
        print(f"replace kill -9: kills={kills}, store at kills: {dict(referee.phases)}")
        assert kills == KILLS
        assert referee.phases["filling"] > 0
        assert collections.Counter(r["id"] for r in rows).most_common(1)[0][1] == 1
        assert frozenset((r["id"], r["note"]) for r in rows) == content(engine, t)


@pytest.mark.postgres
@pytest.mark.slow
class TestDaemonRefreshes:
    """``akkiosync run`` runs a replace job like any other."""

    def test_run_replaces_on_schedule(
        self, tmp_path: Path, postgres_url: str, table: tuple[sa.Engine, sa.Table]
    ) -> None:
        """Every scheduled run makes a new dataset and deletes the one before."""
        emulator = Emulator(api_key=API_KEY)
        with serve(emulator) as server:
            daemon = Daemon(tmp_path, emulator, server.url, postgres_url)
            (daemon.jobs / "big.yaml").write_text(
                "schedule: 1s\n"
                "mode: replace\n"
                "source:\n"
                "  url: ${DAEMON_DB_URL}\n"
                f"  table: {table[1].name}\n"
                "  watermark: updated_at\n"
                "  key: id\n"
                "target:\n"
                "  dataset: Big\n"
                "batch_size: 1000\n"
            )
            seen: set[str] = set()

            def replaced_twice() -> bool:
                with Store.open(tmp_path / "state" / "akkiosync.db") as store:
                    state = store.job_state("big")
                if state.dataset_id is not None:
                    seen.add(state.dataset_id)
                return len(seen) >= 3

            try:
                daemon.start()
                until("three refreshes", replaced_twice, deadline=120)
            finally:
                daemon.stop()
            daemon.sync_to_the_end()
            ids = emulator.dataset_ids()
        assert len(ids) == 1
        assert len(emulator.rows(ids[0])) == ROWS
