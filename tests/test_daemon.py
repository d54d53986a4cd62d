"""``akkiosync run`` as a real process: schedules, live reload, health, metrics, SIGTERM.

The daemon syncs a PostgreSQL table into the emulator (served by this test process) on a one
second interval; the test edits job files under it, reads its HTTP port and stops it.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from akkiosync.emulator import Emulator, FaultPlan, serve
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY, until
from tests.test_lock_races import Gate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


JOB = """\
schedule: {schedule}
source:
  url: ${{DAEMON_DB_URL}}
  table: {table}
  watermark: id
  key: id
target:
  dataset: {dataset}
batch_size: {batch_size}
"""


class Daemon:
    """A running ``akkiosync run`` and everything around it."""

    def __init__(self, root: Path, emulator: Emulator, base_url: str, db_url: str) -> None:
        self.root, self.emulator = root, emulator
        self.jobs = root / "config" / "jobs"
        self.jobs.mkdir(parents=True)
        self.log = root / "daemon.log"
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AKKIO", "PYTEST"))},
            "AKKIO_API_KEY": API_KEY,
            "AKKIO_BASE_URL": base_url,
            "AKKIOSYNC_STATE": str(root / "state" / "akkiosync.db"),
            "AKKIOSYNC_HTTP_PORT": str(self.port),
            "AKKIOSYNC_HTTP_HOST": "127.0.0.1",
            "AKKIOSYNC_RELOAD_INTERVAL": "0.2",
            "AKKIOSYNC_LOG_FORMAT": "json",
            "AKKIO_RATE_LIMIT": "1000",
            # The emulator stores what it received within milliseconds: a batch cut short by a
            # second signal is settled by the next run in a second, not the default two minutes.
            "AKKIOSYNC_LANDING_GRACE": "1",
            "DAEMON_DB_URL": db_url,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def write_job(self, name: str, **values: Any) -> None:
        values = {"schedule": "1s", "batch_size": 50, "dataset": name.title(), **values}
        (self.jobs / f"{name}.yaml").write_text(JOB.format(**values))

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "akkiosync", "--config", str(self.root / "config"), "run"],
                env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        lines = []
        for text in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                lines.append({"message": text})
        return lines

    def logged(self, fragment: str) -> bool:
        return any(fragment in str(line.get("message", "")) for line in self.lines())

    def logged_event(self, event: str, **fields: object) -> bool:
        """Whether a line of ``event`` with these field values was logged."""
        return any(
            line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
            for line in self.lines()
        )

    def get(self, path: str) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=5) as http:
            return http.get(f"http://127.0.0.1:{self.port}{path}")

    def healthy(self) -> bool:
        try:
            return self.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def ids(self, dataset: str) -> list[int]:
        for dataset_id in self.emulator.dataset_ids():
            rows = self.emulator.rows(dataset_id)
            if self._name(dataset_id) == dataset:
                return [row["id"] for row in rows]
        return []

    def _name(self, dataset_id: str) -> str:
        status, _, body = self.emulator.handle(
            "GET", f"/v1/datasets?api_key={API_KEY}&id={dataset_id}", {}, b""
        )
        return str(json.loads(body)["name"]) if status == 200 else ""

    def metric(self, name: str, **labels: str) -> float | None:
        text = self.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def sync_to_the_end(self) -> None:
        """``akkiosync sync`` with the daemon's settings: what the daemon left undone."""
        sync = subprocess.run(
            [sys.executable, "-m", "akkiosync", "--config", str(self.root / "config"), "sync"],
            env=self.env, cwd=self.root, capture_output=True, check=False, timeout=300,
        )  # fmt: skip
        assert sync.returncode == 0, sync.stderr.decode()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def table(postgres_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """A PostgreSQL table of (id, note); 20 rows to begin with."""
    engine = sa.create_engine(engine_url(postgres_url))
    metadata = sa.MetaData()
    t = sa.Table(
        f"daemon_{os.getpid()}_{time.monotonic_ns() % 10**6}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("note", sa.String(20)),
    )
    metadata.create_all(engine)
    insert(engine, t, range(1, 21))
    yield engine, t
    metadata.drop_all(engine)
    engine.dispose()


def insert(engine: sa.Engine, table: sa.Table, ids: range) -> None:
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "note": f"n{i}"} for i in ids])


@pytest.fixture
def daemon(
    tmp_path: Path, postgres_url: str, table: tuple[sa.Engine, sa.Table]
) -> Iterator[Daemon]:
    """A daemon with one job, ``orders``, on the table (not started yet)."""
    emulator = Emulator(api_key=API_KEY)
    with serve(emulator) as server:
        d = Daemon(tmp_path, emulator, server.url, postgres_url)
        d.write_job("orders", table=table[1].name)
        try:
            yield d
        finally:
            d.stop()


@pytest.mark.postgres
@pytest.mark.slow
class TestDaemonProcess:
    """The deployed process: it syncs on schedule, follows job files, reports, and stops."""

    def test_lifecycle(self, daemon: Daemon, table: tuple[sa.Engine, sa.Table]) -> None:
        """Schedules, reload (add, edit, invalid edit, remove), health and metrics, SIGTERM."""
        engine, t = table
        daemon.start()
        until("/healthz", daemon.healthy)
        until("/readyz", lambda: daemon.get("/readyz").status_code == 200)
        until("the first rows", lambda: daemon.ids("Orders") == list(range(1, 21)))

        insert(engine, t, range(21, 31))
        until("rows inserted while it runs", lambda: daemon.ids("Orders") == list(range(1, 31)))

        daemon.write_job("second", table=t.name, dataset="Second")
        until("an added job", lambda: len(daemon.ids("Second")) == 30)

        daemon.write_job("orders", table=t.name, schedule="2s", batch_size=7)
        until("an edited job", lambda: daemon.logged_event("job_reloaded", job="orders"))
        daemon_file = Path(daemon.env["AKKIOSYNC_STATE"] + ".daemon.json")
        until("the new schedule", lambda: '"schedule": "2s"' in daemon_file.read_text())

        (daemon.jobs / "orders.yaml").write_text("nonsense: [\n")
        until("an invalid edit reported", lambda: daemon.logged("invalid job file"))
        assert daemon.logged("job orders keeps its previous version")
        insert(engine, t, range(31, 41))
        until("the old version still runs", lambda: daemon.ids("Orders") == list(range(1, 41)))

        (daemon.jobs / "second.yaml").unlink()
        until("a removed job", lambda: daemon.logged_event("job_removed", job="second"))
        # The daemon file is rewritten at the main loop's next turn, just after the log line.
        until("the daemon file without it", lambda: '"second"' not in daemon_file.read_text())

        assert daemon.metric("akkiosync_rows_sent_total", job="orders") == 40
        runs = daemon.metric("akkiosync_runs_total", job="orders", result="success")
        assert runs is not None
        assert runs >= 3
        assert daemon.metric("akkiosync_up") == 1
        assert daemon.metric("akkiosync_cursor_lag", job="orders") == 0
        lines = daemon.lines()
        assert any(line.get("job") == "orders" and line.get("run_id") for line in lines)
        assert API_KEY not in daemon.log.read_text()

        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
        assert not daemon_file.exists()

    def test_sighup_reloads_now(self, daemon: Daemon, table: tuple[sa.Engine, sa.Table]) -> None:
        """With file watching all but off, SIGHUP makes a new job file take effect at once."""
        daemon.env["AKKIOSYNC_RELOAD_INTERVAL"] = "3600"
        daemon.start()
        until("/readyz", lambda: daemon.healthy() and daemon.get("/readyz").status_code == 200)
        daemon.write_job("second", table=table[1].name, dataset="Second")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        until("the job loaded on SIGHUP", lambda: daemon.logged_event("job_loaded", job="second"))
        until("its rows", lambda: len(daemon.ids("Second")) == 20)
        assert daemon.logged("reloading job files (SIGHUP)")

    def test_sigterm_mid_sync(self, daemon: Daemon, table: tuple[sa.Engine, sa.Table]) -> None:
        """SIGTERM while a long sync is in flight: exit 0, the run recorded interrupted with
        its rows, and nothing lost or doubled."""
        engine, t = table
        insert(engine, t, range(21, 20_001))
        daemon.write_job("orders", table=t.name, batch_size=100)
        daemon.start()
        until("the sync to be under way", lambda: len(daemon.ids("Orders")) >= 500)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
        partial = daemon.ids("Orders")
        assert 500 <= len(partial) < 20_000, "the run should have stopped early"
        assert daemon.logged("stops early: shutting down")
        with Store.open(Path(daemon.env["AKKIOSYNC_STATE"])) as store:
            cut = store.runs("orders")[0]
        assert (cut.status, cut.rows_sent) == ("interrupted", len(partial))

        daemon.sync_to_the_end()
        landed = collections.Counter(daemon.ids("Orders"))
        assert sorted(landed) == list(range(1, 20_001))
        assert max(landed.values()) == 1

    def test_second_signal_exits_at_once(
        self, daemon: Daemon, table: tuple[sa.Engine, sa.Table]
    ) -> None:
        """A second signal does not wait; the next run still delivers every row once."""
        engine, t = table
        insert(engine, t, range(21, 20_001))
        daemon.write_job("orders", table=t.name, batch_size=100)
        # One request every two seconds: the first signal then waits seconds for the batch in
        # flight, time enough for the second signal to arrive while it waits (once the daemon
        # has stopped, Python's finalisation would let a signal kill it instead).
        daemon.env["AKKIO_RATE_LIMIT"] = "0.5"
        daemon.start()
        until("the sync to be under way", lambda: len(daemon.ids("Orders")) >= 200)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        # Two signals sent back to back may merge into one: send the second once the first
        # has been taken.
        until("the first signal taken", lambda: daemon.logged("shutting down"))
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 128 + signal.SIGTERM
        daemon.env["AKKIO_RATE_LIMIT"] = "1000"
        daemon.sync_to_the_end()
        landed = collections.Counter(daemon.ids("Orders"))
        assert sorted(landed) == list(range(1, 20_001))
        assert max(landed.values()) == 1


class _Hooks(BaseHTTPRequestHandler):
    """Records every webhook POST body on the server."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.calls.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver: its URL and the JSON bodies it received."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    server.calls = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook/secret-token", server.calls  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.mark.postgres
@pytest.mark.slow
class TestDaemonAlerts:
    """The daemon posts one alert when a job starts failing and one when it recovers."""

    def test_failure_then_recovery(
        self,
        daemon: Daemon,
        table: tuple[sa.Engine, sa.Table],
        webhook: tuple[str, list[dict[str, Any]]],
    ) -> None:
        """Several failed runs in a row give one failure alert; the next success one recovery."""
        engine, t = table
        url, calls = webhook
        daemon.env["AKKIOSYNC_ALERT_WEBHOOK"] = url
        daemon.start()
        until("the first sync", lambda: len(daemon.ids("Orders")) == 20)
        with engine.begin() as conn:  # the source breaks: every run fails
            conn.execute(sa.text(f"ALTER TABLE {t.name} RENAME TO {t.name}_away"))
        until("a failure alert", lambda: calls)
        until("more failed runs", lambda: daemon.logged_event("run_failed", run_id=4))
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {t.name}_away RENAME TO {t.name}"))
        until("a recovery alert", lambda: len(calls) >= 2)
        until("more good runs", lambda: daemon.logged_event("run_done", run_id=7))
        assert [c["event"] for c in calls] == ["failure", "recovery"]
        assert calls[0]["text"].startswith("akkiosync: job orders is failing:")
        assert calls[1]["text"].startswith("akkiosync: job orders recovered")
        assert "secret-token" not in daemon.log.read_text()


@pytest.mark.postgres
@pytest.mark.slow
class TestMetricsMidRun:
    """A live daemon's metrics move with every committed batch, not at the end of the run."""

    def test_scraped_while_a_batch_is_held(
        self, tmp_path: Path, postgres_url: str, table: tuple[sa.Engine, sa.Table]
    ) -> None:
        """Two batches of five landed and the third held by the emulator: /metrics already
        counts ten rows and two batches, with ten rows to go; then the run completes."""
        gate = Gate(passed=2)
        plan = FaultPlan(rates={"slow": 1.0}, only="add", delay=0.0)
        emulator = Emulator(api_key=API_KEY, faults=plan, sleep=gate)
        with serve(emulator) as server:
            daemon = Daemon(tmp_path, emulator, server.url, postgres_url)
            daemon.write_job("orders", table=table[1].name, batch_size=5)
            try:
                daemon.start()
                until("the third batch held", lambda: gate.waiting == 1)
                assert len(daemon.ids("Orders")) == 10
                rows = daemon.metric("akkiosync_rows_sent_total", job="orders")
                assert (rows, daemon.metric("akkiosync_batches_total", job="orders")) == (10, 2)
                assert daemon.metric("akkiosync_rows_to_go", job="orders") == 10
                gate.open()
                until("the rest", lambda: len(daemon.ids("Orders")) == 20)
            finally:
                gate.open()
                daemon.stop()
