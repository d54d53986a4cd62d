"""Progress of a run while it goes: the log line, the terminal display, rows to go, metrics."""

from __future__ import annotations

import datetime as dt
import logging
import os
import pty
import select
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.emulator import Emulator, serve
from akkiosync.metrics import Metrics
from akkiosync.progress import Hooks, ProgressLog, Sent, figures
from akkiosync.runner import Runner
from akkiosync.source import Source, open_engine
from akkiosync.state import Store
from tests.conftest import API_KEY, make_job, no_sleep
from tests.test_metrics import value

START = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC).replace(tzinfo=None)  # a naive DATETIME


def fill(engine: sa.Engine, make_table: Any, name: str, rows: int) -> None:
    """A table ``name`` of ``rows`` rows, one second of watermark apart."""
    table = make_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
    )
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "updated_at": START + dt.timedelta(seconds=i)} for i in range(1, rows + 1)],
        )


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestProgressLog:
    """Off a terminal, a progress line every interval, not every batch."""

    def sent(self, rows_sent: int, to_go: int | None = 100) -> Sent:
        return Sent("orders", 10, rows_sent, rows_sent // 10, to_go)

    def lines(self, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == "progress"]

    def test_line_at_the_interval(self, caplog: pytest.LogCaptureFixture) -> None:
        """Batches within the interval log nothing; the first batch past it logs the figures."""
        caplog.set_level(logging.INFO, logger="akkiosync")
        clock = FakeClock()
        log = ProgressLog(10.0, clock)
        log.started("orders", 100)
        for second, sent in ((3, 10), (6, 20), (9.9, 30)):
            clock.now = 100 + second
            log.sent(self.sent(sent, 100 - sent))
        assert self.lines(caplog) == []
        clock.now = 110.0
        log.sent(self.sent(40, 60))
        clock.now = 115.0
        log.sent(self.sent(50, 50))
        (line,) = self.lines(caplog)
        assert line.getMessage() == "progress: 40 rows sent, 60 to go, 4 rows/s, ETA 15s"
        assert line.__dict__["rows_total"] == 40
        assert line.__dict__["rows_to_go"] == 60
        assert line.__dict__["eta_seconds"] == 15
        clock.now = 120.0
        log.sent(self.sent(60, 40))
        assert len(self.lines(caplog)) == 2

    def test_zero_interval_logs_nothing(self, caplog: pytest.LogCaptureFixture) -> None:
        """An interval of 0 turns the line off."""
        caplog.set_level(logging.INFO, logger="akkiosync")
        clock = FakeClock()
        log = ProgressLog(0, clock)
        log.started("orders", None)
        clock.now = 1000.0
        log.sent(self.sent(10, None))
        assert self.lines(caplog) == []

    def test_unknown_to_go(self) -> None:
        """Without a count, rows to go and the ETA show as ``?``."""
        assert str(figures(3000, None, 2.0)) == "3,000 rows sent, ? to go, 1,500 rows/s, ETA ?"


class TestRowsAfter:
    """Rows to go: a count past the cursor, bounded by a limit."""

    @pytest.fixture
    def source(self, db_url: str, engine: sa.Engine, make_table: Any, table_name: str) -> Any:
        """A source on a table of ten rows."""
        fill(engine, make_table, table_name, 10)
        with Source(
            open_engine(db_url), watermark="updated_at", key=("id",), table=table_name
        ) as s:
            yield s

    def test_counts_past_the_cursor(self, source: Source) -> None:
        """From the start all rows; past the fourth row, six."""
        assert source.rows_after(None, 1000) == 10
        with closing(source.batches(None, 4)) as batches:
            fourth = next(batches).cursor  # as a run checkpoints it, on every dialect
        assert source.rows_after(fourth, 1000) == 6

    def test_limit(self, source: Source) -> None:
        """A limit of 0 counts nothing; past the limit a later read is not counted at all."""
        assert source.rows_after(None, 0) is None
        with closing(source.batches(None, 1)) as batches:
            first = next(batches).cursor
        assert source.rows_after(first, 9) == 9  # under the limit: counted
        assert source.rows_after(first, 5) is None

    def test_estimate_for_a_large_first_read(
        self, source: Source, engine: sa.Engine, table_name: str
    ) -> None:
        """A first read past the limit takes the table's row estimate (none on SQLite)."""
        dialect = engine.dialect.name
        with engine.begin() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(f'ANALYZE "{table_name}"'))
            elif dialect != "sqlite":
                conn.execute(sa.text(f"ANALYZE TABLE `{table_name}`"))
        estimate = source.rows_after(None, 5)
        if dialect == "sqlite":
            assert estimate is None
        else:
            assert estimate is not None
            assert estimate > 0


class TestMetricsMidRun:
    """The daemon's figures move with each committed batch, not at the run's end."""

    def test_counters_after_each_batch(
        self,
        store: Store,
        client: AkkioClient,
        engine: sa.Engine,
        make_table: Any,
        table_name: str,
        db_url: str,
    ) -> None:
        """After each batch, rows_sent_total equals the rows sent so far; rows to go falls."""
        fill(engine, make_table, table_name, 10)
        metrics = Metrics()
        seen: list[tuple[float | None, ...]] = []

        class Probe:
            def started(self, job: str, to_go: int | None) -> None:
                seen.append((value(metrics, "akkiosync_rows_to_go", job=job),))

            def sent(self, batch: Sent) -> None:
                seen.append(
                    tuple(
                        value(metrics, name, job="orders")
                        for name in (
                            "akkiosync_rows_sent_total",
                            "akkiosync_batches_total",
                            "akkiosync_rows_to_go",
                        )
                    )
                )

        runner = Runner(
            store,
            client,
            sleep=no_sleep,
            progress=Hooks([metrics, Probe()]),
            count_limit=1000,
            measure_lag=True,
        )
        result = runner.run(make_job(db_url, table_name))
        assert result.ok, result.error
        assert seen == [(10.0,), (4.0, 1.0, 6.0), (8.0, 2.0, 2.0), (10.0, 3.0, 0.0)]
        assert value(metrics, "akkiosync_cursor_lag", job="orders") == 0.0
        metrics.observe_run(result, ended_at=1.0, counted=runner.reports_progress)
        assert value(metrics, "akkiosync_rows_sent_total", job="orders") == 10


@pytest.mark.slow
class TestTerminal:
    """On a terminal, ``akkiosync sync`` draws a live display with the figures."""

    def test_display_in_a_pty(self, tmp_path: Path) -> None:
        """Through a pseudo-terminal the output shows rows sent, rows to go and the rate."""
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        engine = sa.create_engine(url)
        fill(engine, lambda name, *c: _create(engine, name, *c), "orders", 50)
        engine.dispose()
        jobs = tmp_path / "config" / "jobs"
        jobs.mkdir(parents=True)
        (jobs / "orders.yaml").write_text(
            f"source:\n  url: {url}\n  table: orders\n  watermark: updated_at\n  key: id\n"
            "target:\n  dataset: Orders\nbatch_size: 10\n"
        )
        with serve(Emulator(api_key=API_KEY)) as server:
            env = {
                **os.environ,
                "AKKIO_API_KEY": API_KEY,
                "AKKIO_BASE_URL": server.url,
                "AKKIO_RATE_LIMIT": "1000",
                "AKKIOSYNC_RECONCILE_WAIT": "0",
                "AKKIOSYNC_LANDING_GRACE": "1",
                "AKKIOSYNC_STATE": str(tmp_path / "state.db"),
                "COLUMNS": "160",
            }
            output = _run_in_pty(
                [sys.executable, "-m", "akkiosync", "--config", str(tmp_path / "config"), "sync"],
                env,
                tmp_path,
            )
        assert "orders" in output
        assert "50 rows sent, 0 to go" in output, output
        assert "rows/s" in output


def _create(engine: sa.Engine, name: str, *columns: Any) -> sa.Table:
    table = sa.Table(name, sa.MetaData(), *columns)
    table.create(engine)
    return table


def _run_in_pty(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run ``argv`` with a pseudo-terminal as its stdout and stderr; all it wrote."""
    main, child = pty.openpty()
    process = subprocess.Popen(argv, stdout=child, stderr=child, env=env, cwd=cwd)
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        assert process.wait(timeout=10) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    return b"".join(chunks).decode(errors="replace")
