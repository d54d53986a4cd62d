"""kill -9 at random moments, lost answers, concurrent syncs: every row lands exactly once.

``akkiosync sync`` runs as a real subprocess against a real PostgreSQL table and the emulator on
a loopback port, and is killed with SIGKILL at random points of its request stream; then it
runs to completion and the dataset is compared with the table by key.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from akkiosync.emulator import Emulator, EmulatorServer, FaultPlan, serve
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY

ROWS = 50_000
TIE = 10  # rows per watermark value
KILLS = 12
T0 = dt.datetime(2026, 6, 1, 12, 0, 0)  # noqa: DTZ001 - a naive column
# Where to append the figures too (``-s`` shows them on the terminal).
REPORT = (
    Path(os.environ["AKKIOSYNC_CRASH_REPORT"]) if "AKKIOSYNC_CRASH_REPORT" in os.environ else None
)


@pytest.fixture(scope="module")
def big_table(postgres_url: str) -> Iterator[str]:
    """ROWS rows, TIE per watermark value, ids not in watermark order."""
    name = f"crash_{os.getpid()}"
    engine = sa.create_engine(engine_url(postgres_url))
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("note", sa.String(40)),
    )
    metadata.drop_all(engine)
    metadata.create_all(engine)
    rng = random.Random(7)
    ids = list(range(1, ROWS + 1))
    rng.shuffle(ids)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": i,
                    "updated_at": (T0 + dt.timedelta(microseconds=7 * (n // TIE))).replace(
                        tzinfo=dt.UTC
                    ),
                    "amount": n % 9973,
                    "note": f"row {i}",
                }
                for n, i in enumerate(ids)
            ],
        )
    yield name
    metadata.drop_all(engine)
    engine.dispose()


class Deployment:
    """A config directory, a store and the environment of one akkiosync installation."""

    def __init__(
        self,
        root: Path,
        server: EmulatorServer,
        url: str,
        table: str,
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        (root / "config" / "jobs").mkdir(parents=True)
        (root / "config" / "jobs" / "big.yaml").write_text(
            "source:\n"
            "  url: ${BIG_DB_URL}\n"
            f"  table: {table}\n"
            "  watermark: updated_at\n"
            "  key: id\n"
            f"{extra}"
            "target:\n"
            "  dataset: Big\n"
            "batch_size: 500\n"
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AKKIO", "PYTEST"))},
            "AKKIO_API_KEY": API_KEY,
            "AKKIO_BASE_URL": server.url,
            "AKKIOSYNC_STATE": str(root / "state" / "akkiosync.db"),
            "BIG_DB_URL": url,
            "AKKIO_RATE_LIMIT": "1000",
            "AKKIO_MAX_ATTEMPTS": "12",
            "AKKIO_TIMEOUT": "5",
            "AKKIOSYNC_RECONCILE_WAIT": "0.02",
            # The emulator stores a request it received within milliseconds, even when its
            # client was killed: a short grace keeps recovery after each kill quick.
            "AKKIOSYNC_LANDING_GRACE": "1",
            **(env or {}),
        }

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "akkiosync", "--log-level", "WARNING"]
        return subprocess.Popen(
            [*command, "--config", str(self.root / "config"), "sync", *args],
            env=self.env,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def dataset_id(self) -> str:
        with Store.open(Path(self.env["AKKIOSYNC_STATE"])) as store:
            dataset_id = store.job_state("big").dataset_id
        assert dataset_id is not None
        return dataset_id


def _kill_at_random_points(
    deployment: Deployment, emulator: Emulator, rng: random.Random, kills: int
) -> int:
    """Start syncs and SIGKILL each after a random number of further requests; returns kills."""
    done = 0
    for _ in range(kills * 3):
        target = emulator.request_count() + rng.randint(0, 12)
        process = deployment.start()
        deadline = time.monotonic() + 60
        while emulator.request_count() < target and process.poll() is None:
            assert time.monotonic() < deadline, "the sync made no progress"
            time.sleep(0.001)
        if process.poll() is None:
            # A little further, so kills also land between requests, not only on them.
            if rng.random() < 0.5:
                time.sleep(rng.random() * 0.02)
            process.send_signal(signal.SIGKILL)
            process.communicate()
            done += 1
            if done == kills:
                return done
        else:  # it finished before the chosen moment
            process.communicate()
            return done
    return done


def _finish_and_count(deployment: Deployment, emulator: Emulator) -> dict[str, Any]:
    process = deployment.start()
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()
    assert emulator.settle(30), "a late store was still pending"
    landed = collections.Counter(row["id"] for row in emulator.rows(deployment.dataset_id()))
    expected = set(range(1, ROWS + 1))
    return {
        "datasets": len(emulator.dataset_ids()),
        "rows": sum(landed.values()),
        "missing": len(expected - set(landed)),
        "duplicates": sum(n - 1 for n in landed.values() if n > 1),
        "unknown": len(set(landed) - expected),
    }


def _report(name: str, figures: dict[str, Any]) -> None:
    line = f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line)  # the figures are the point of this test; shown with -s
    if REPORT is not None:
        with REPORT.open("a") as report:
            report.write(line + "\n")


@pytest.mark.postgres
@pytest.mark.slow
class TestKill9:
    """SIGKILL at random moments never loses or doubles a row."""

    def test_kills(self, postgres_url: str, big_table: str, tmp_path: Path) -> None:
        """At least ten kills, then a full run: the dataset equals the table, by key."""
        emulator = Emulator(api_key=API_KEY)
        with serve(emulator) as server:
            deployment = Deployment(tmp_path, server, postgres_url, big_table)
            kills = _kill_at_random_points(deployment, emulator, random.Random(11), KILLS)
            figures = {"kills": kills, **_finish_and_count(deployment, emulator)}
        _report("kill -9", figures)
        assert kills >= 10
        assert figures == {**figures, "datasets": 1, "rows": ROWS, "missing": 0, "duplicates": 0}

    def test_kills_with_lookback(self, postgres_url: str, big_table: str, tmp_path: Path) -> None:
        """With lookback, every run re-reads the whole window; the ledger, committed with each
        batch and carried by its intent, still lets each row through exactly once."""
        emulator = Emulator(api_key=API_KEY)
        with serve(emulator) as server:
            deployment = Deployment(tmp_path, server, postgres_url, big_table, "  lookback: 1h\n")
            kills = _kill_at_random_points(deployment, emulator, random.Random(17), KILLS)
            figures = {"kills": kills, **_finish_and_count(deployment, emulator)}
        _report("kill -9 with lookback", figures)
        assert kills >= 10
        assert figures == {**figures, "datasets": 1, "rows": ROWS, "missing": 0, "duplicates": 0}

    def test_kills_with_faults(self, postgres_url: str, big_table: str, tmp_path: Path) -> None:
        """The same with every emulator fault on: lost answers after storing, requests that
        land after the client gave up (``slow`` past the timeout, a gateway's 504 while the
        backend stores later) and error answers for rows that were stored."""
        plan = FaultPlan(
            rates={
                "429": 0.03,
                "500": 0.03,
                "503": 0.03,
                "slow": 0.03,
                "drop_before": 0.03,
                "drop_after": 0.05,
                "late": 0.04,
                "error_after": 0.03,
                "408_after": 0.03,
            },
            seed=5,
            retry_after=0.0,
            delay=0.8,  # slow and late: the rows land 0.8 s after the request...
        )
        emulator = Emulator(api_key=API_KEY, faults=plan)
        # ...when the client has given up after 0.4 s; the grace outlasts the landing.
        timing = {"AKKIO_TIMEOUT": "0.4", "AKKIOSYNC_LANDING_GRACE": "2.5"}
        with serve(emulator) as server:
            deployment = Deployment(tmp_path, server, postgres_url, big_table, env=timing)
            kills = _kill_at_random_points(deployment, emulator, random.Random(13), KILLS)
            figures = {"kills": kills, **_finish_and_count(deployment, emulator)}
            fired = {k: v for k, v in emulator.fault_counts().items() if v}
        _report("kill -9 with faults", {**figures, "faults": fired})
        assert kills >= 10
        assert sum(fired.values()) >= 20
        for kind in ("drop_after", "late", "slow", "error_after", "408_after"):
            assert fired.get(kind, 0) > 0, kind
        assert figures == {**figures, "datasets": 1, "rows": ROWS, "missing": 0, "duplicates": 0}


@pytest.mark.postgres
@pytest.mark.slow
class TestLateLanding:
    """A request answered late, or by a gateway that gave up, is never sent twice."""

    @pytest.mark.parametrize("kind", ["slow", "late"])
    def test_lands_after_the_client_gave_up(
        self, postgres_url: str, big_table: str, tmp_path: Path, kind: str
    ) -> None:
        """AKKIO_TIMEOUT=1 and a server that stores a batch 4 s after it was sent, with the
        default landing grace: the count is watched until the batch shows, nothing is resent,
        and the run ends with the dataset exact."""
        plan = FaultPlan(script=["ok", kind], only="add", delay=4.0)
        emulator = Emulator(api_key=API_KEY, faults=plan)
        with serve(emulator) as server:
            deployment = Deployment(
                tmp_path, server, postgres_url, big_table, env={"AKKIO_TIMEOUT": "1"}
            )
            del deployment.env["AKKIOSYNC_LANDING_GRACE"]  # the default: two minutes
            figures = _finish_and_count(deployment, emulator)
            fired = emulator.fault_counts()[kind]
        _report(f"late landing ({kind})", {**figures, "fired": fired})
        assert fired == 1
        assert figures == {**figures, "datasets": 1, "rows": ROWS, "missing": 0, "duplicates": 0}


@pytest.mark.postgres
@pytest.mark.slow
class TestConcurrentSyncs:
    """Two syncs of one job at once never both run it."""

    def test_two_at_once(self, postgres_url: str, big_table: str, tmp_path: Path) -> None:
        """The second either waits (--wait) or is skipped; the dataset is exact either way."""
        # 20 ms per answer: the first sync's 100 batches outlast the others' start-up.
        emulator = Emulator(api_key=API_KEY, latency=0.02)
        with serve(emulator) as server:
            deployment = Deployment(tmp_path, server, postgres_url, big_table)
            first = deployment.start()
            deadline = time.monotonic() + 60
            while emulator.request_count() < 5:  # the first one holds the job now
                assert first.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.001)
            skipped = deployment.start()
            waiting = deployment.start("--wait", "300")
            outputs = [p.communicate(timeout=600) for p in (first, skipped, waiting)]
            codes = [p.returncode for p in (first, skipped, waiting)]
            landed = collections.Counter(
                row["id"] for row in emulator.rows(deployment.dataset_id())
            )
        assert codes == [0, 1, 0], outputs
        assert b"SKIPPED: already running in another process" in outputs[1][1]
        assert b"big: ok, 0 rows" in outputs[2][0]
        assert len(landed) == ROWS
        assert max(landed.values()) == 1
