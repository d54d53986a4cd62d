"""The per-job watermark options: null_watermark, initial_watermark, settle and lookback
checks against the watermark's type, and validate's index warning."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from akkiosync.akkio import AkkioClient
from akkiosync.cli import cli
from akkiosync.config import Job
from akkiosync.emulator import Emulator
from akkiosync.results import RunResult
from akkiosync.runner import Runner
from akkiosync.state import Store

T0 = dt.datetime(2026, 2, 1, 8, 0)  # noqa: DTZ001 - a naive column


@pytest.fixture
def source_db(tmp_path: Path) -> Iterator[tuple[str, sa.Table, sa.Engine]]:
    """A SQLite table: ids 1-6 stamped an hour apart, id 7 and 8 with no stamp, and a number."""
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    table = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime),
        sa.Column("seq", sa.Integer),
    )
    table.create(engine)
    rows = [{"id": i, "at": T0 + dt.timedelta(hours=i), "seq": i * 10} for i in range(1, 7)]
    rows += [{"id": 7, "at": None, "seq": 70}, {"id": 8, "at": None, "seq": 80}]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    yield url, table, engine
    engine.dispose()


@pytest.fixture
def run_job(tmp_path: Path, store: Store, emulator: Emulator, client: AkkioClient) -> Any:
    """Run a job on the events table with these source options."""

    def run(url: str, **source: Any) -> RunResult:
        job = Job.model_validate(
            {
                "name": "events",
                "source": {"url": url, "table": "events", "watermark": "at", "key": "id", **source},
                "target": {"dataset": "Events"},
                "batch_size": 4,
            }
        )
        return Runner(store, client, sleep=lambda _: None).run(job)

    return run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh checkpoint store."""
    with Store.open(tmp_path / "state.db") as s:
        yield s


def _landed(emulator: Emulator) -> list[int]:
    ids = emulator.dataset_ids()
    return [row["id"] for row in emulator.rows(ids[0])] if ids else []


class TestNullWatermark:
    """Rows with a NULL watermark are never silently dropped: counted, or the run fails."""

    def test_skip_is_counted(
        self, source_db: Any, run_job: Any, emulator: Emulator, store: Store,
        caplog: pytest.LogCaptureFixture,
    ) -> None:  # fmt: skip
        """skip (the default): the other rows go; the run history and the log count the two."""
        result = run_job(source_db[0])
        assert result.ok
        assert result.rows_skipped == 2
        assert store.runs()[0].rows_skipped == 2
        assert "2 row(s) with a NULL at or id are skipped" in caplog.text
        assert _landed(emulator) == [1, 2, 3, 4, 5, 6]

    def test_fail(self, source_db: Any, run_job: Any, emulator: Emulator) -> None:
        """fail: the run stops before sending anything, naming the count and the option."""
        result = run_job(source_db[0], null_watermark="fail")
        assert not result.ok
        assert "2 row(s) have a NULL at or id" in (result.error or "")
        assert "null_watermark" in (result.error or "")
        assert _landed(emulator) == []


class TestInitialWatermark:
    """initial_watermark starts the first run past old history."""

    @pytest.mark.parametrize(
        "initial", ["2026-02-01T11:00:00", "2026-02-01 11:00:00", T0 + dt.timedelta(hours=3)],
        ids=["iso-text", "space-text", "yaml-datetime"],
    )  # fmt: skip
    def test_starts_at_the_value(
        self, source_db: Any, run_job: Any, emulator: Emulator, initial: Any
    ) -> None:
        """Rows stamped before it are not sent; rows at it and after are."""
        assert run_job(source_db[0], initial_watermark=initial).ok
        assert _landed(emulator) == [3, 4, 5, 6]

    def test_integer_watermark(self, source_db: Any, run_job: Any, emulator: Emulator) -> None:
        """An integer watermark takes an integer start."""
        assert run_job(source_db[0], watermark="seq", initial_watermark=45).ok
        assert _landed(emulator) == [5, 6, 7, 8]

    def test_wrong_type(self, source_db: Any, run_job: Any) -> None:
        """A start that is not a value of the watermark's type is a clear error."""
        result = run_job(source_db[0], watermark="seq", initial_watermark="yesterday")
        assert not result.ok
        assert "source.initial_watermark: 'yesterday' is not a value" in (result.error or "")


class TestOptionTypes:
    """settle and lookback must fit the watermark's type; a mismatch names the option."""

    def test_settle_needs_time(self, source_db: Any, run_job: Any) -> None:
        """settle on an integer watermark is refused."""
        result = run_job(source_db[0], watermark="seq", settle="5m")
        assert "source.settle: needs a timestamp watermark; seq is int" in (result.error or "")

    def test_lookback_duration_needs_time(self, source_db: Any, run_job: Any) -> None:
        """A duration lookback on an integer watermark is refused."""
        result = run_job(source_db[0], watermark="seq", lookback="5m")
        assert "source.lookback: a duration needs a time watermark" in (result.error or "")

    def test_lookback_count_needs_number(self, source_db: Any, run_job: Any) -> None:
        """A count lookback on a timestamp watermark is refused."""
        result = run_job(source_db[0], lookback=10)
        assert "source.lookback: a count needs a number watermark" in (result.error or "")

    def test_lookback_count_on_integers(
        self, source_db: Any, run_job: Any, emulator: Emulator
    ) -> None:
        """A count lookback re-reads that many watermark units and sends nothing twice."""
        url, table, engine = source_db
        assert run_job(url, watermark="seq", lookback=25).ok
        with engine.begin() as conn:  # a late row, 20 units behind the checkpoint (seq 80)
            conn.execute(table.insert(), [{"id": 9, "at": T0, "seq": 60}])
            conn.execute(table.insert(), [{"id": 10, "at": T0, "seq": 40}])  # outside: lost
        assert run_job(url, watermark="seq", lookback=25).rows_sent == 1
        assert _landed(emulator) == [1, 2, 3, 4, 5, 6, 7, 8, 9]

    def test_settle_on_sqlite(self, source_db: Any, run_job: Any, emulator: Emulator) -> None:
        """On SQLite, settle compares by julianday with SQLite's clock (UTC)."""
        url, table, engine = source_db
        fresh = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 20, "at": fresh, "seq": 200}])
        assert run_job(url, settle="10m").ok
        assert 20 not in _landed(emulator)
        assert len(_landed(emulator)) == 6


class TestValidateIndexes:
    """validate --connect warns when the watermark leads no index."""

    def test_warning(self, source_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unindexed watermark gets a warning with the index to create; the key does not."""
        jobs = tmp_path / "config" / "jobs"
        jobs.mkdir(parents=True)
        (jobs / "events.yaml").write_text(
            f"source:\n  url: {source_db[0]}\n  table: events\n  watermark: at\n  key: id\n"
            "target:\n  dataset: Events\n"
        )
        result = CliRunner().invoke(
            cli, ["--config", str(tmp_path / "config"), "validate", "--connect"]
        )
        assert result.exit_code == 0, result.output
        assert "warning: no index starts with at" in result.output
        assert "no index starts with id" not in result.output
        with source_db[2].begin() as conn:
            conn.execute(sa.text("CREATE INDEX ix_events_at ON events (at, id)"))
        result = CliRunner().invoke(
            cli, ["--config", str(tmp_path / "config"), "validate", "--connect"]
        )
        assert "no index starts with" not in result.output
