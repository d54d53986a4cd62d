"""Races between processes sharing one store: a second sync through another path to the store,
and ``reset`` while a sync runs.

``akkiosync`` runs as real subprocesses against a real PostgreSQL table and the emulator on a
loopback port. Every add-rows request is a ``slow`` fault whose wait is a gate: the first few
pass, the next waits until the test opens the gate, so a sync is held mid-run for exactly as
long as the test needs, without any timing guess.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from akkiosync.emulator import Emulator, EmulatorServer, FaultPlan, serve
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY, DEADLINE, until

ROWS = 3000
BATCH_SIZE = 100
PASSED = 3  # add-rows requests the gate lets through before it holds the sync
T0 = dt.datetime(2026, 6, 1, 12, 0, 0)  # noqa: DTZ001 - a naive column


class Gate:
    """The emulator's ``slow`` wait: lets ``passed`` requests through, holds the rest until
    opened (or until the deadline, so that a failing test cannot hang)."""

    def __init__(self, passed: int) -> None:
        self._passed = passed
        self._opened = threading.Event()
        self._lock = threading.Lock()
        self.waiting = 0

    def __call__(self, seconds: float) -> None:
        with self._lock:
            if self._passed > 0:
                self._passed -= 1
                return
            self.waiting += 1
        self._opened.wait(DEADLINE)
        with self._lock:
            self.waiting -= 1

    def open(self) -> None:
        self._opened.set()


@pytest.fixture(scope="module")
def source_table(postgres_url: str) -> Iterator[str]:
    """ROWS rows, one watermark value each."""
    name = f"races_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(engine_url(postgres_url))
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("note", sa.String(40)),
    )
    metadata.create_all(engine)
    rows = [
        {"id": i, "updated_at": T0 + dt.timedelta(seconds=i), "note": f"row {i}"}
        for i in range(1, ROWS + 1)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    yield name
    metadata.drop_all(engine)
    engine.dispose()


class Process:
    """A running ``akkiosync`` command whose output goes to files, readable while it runs."""

    def __init__(self, args: list[str], env: dict[str, str], root: Path, label: str) -> None:
        name = f"{label}-{uuid.uuid4().hex[:6]}"
        self._out, self._err = root / f"{name}.out", root / f"{name}.err"
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self.popen = subprocess.Popen(args, env=env, cwd=root, stdout=out, stderr=err)
        self.pid = self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self._err.read_text()

    def finish(self) -> tuple[int, str, str]:
        """Wait for the end: exit code, stdout, stderr."""
        try:
            code = self.popen.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.popen.args!r} did not end in time; stderr:\n{self.stderr()}")
        return code, self._out.read_text(), self.stderr()

    def stop(self) -> None:
        """Kill it if it still runs (a failed test must leave no process behind)."""
        if self.running():
            self.popen.kill()
            self.popen.wait()


class Deployment:
    """A config directory with the ``big`` job and the environment pointing at the emulator."""

    def __init__(self, root: Path, server: EmulatorServer, url: str, table: str) -> None:
        self.root = root
        self.started: list[Process] = []
        (root / "config" / "jobs").mkdir(parents=True)
        (root / "config" / "jobs" / "big.yaml").write_text(
            "source:\n"
            "  url: ${BIG_DB_URL}\n"
            f"  table: {table}\n"
            "  watermark: updated_at\n"
            "  key: id\n"
            "target:\n"
            "  dataset: Big\n"
            f"batch_size: {BATCH_SIZE}\n"
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AKKIO", "PYTEST"))},
            "AKKIO_API_KEY": API_KEY,
            "AKKIO_BASE_URL": server.url,
            "BIG_DB_URL": url,
            "AKKIO_RATE_LIMIT": "1000",
            "AKKIO_TIMEOUT": str(2 * DEADLINE),  # a request held at the gate is not lost
            "AKKIOSYNC_RECONCILE_WAIT": "0.02",
        }

    def start(self, state: Path, *args: str) -> Process:
        """``akkiosync <args>`` with the store at ``state`` (as given: a link, relative...)."""
        command = [sys.executable, "-m", "akkiosync", "--log-level", "WARNING"]
        process = Process(
            [*command, "--config", str(self.root / "config"), *args],
            {**self.env, "AKKIOSYNC_STATE": str(state)},
            self.root,
            args[0],
        )
        self.started.append(process)
        return process


class Rig:
    """The emulator behind its gate, served on a loopback port, and one deployment."""

    def __init__(self, root: Path, url: str, table: str) -> None:
        self.gate = Gate(PASSED)
        self.emulator = Emulator(
            api_key=API_KEY,
            faults=FaultPlan(rates={"slow": 1.0}, only="add", delay=1.0),
            sleep=self.gate,
        )
        self.server = serve(self.emulator)
        self.deployment = Deployment(root, self.server, url, table)

    def start_held_sync(self, state: Path) -> Process:
        """A sync that has sent PASSED batches and waits at the gate with the next one."""
        sync = self.deployment.start(state, "sync")
        until("the sync to reach the gate", lambda: self.gate.waiting or not sync.running())
        assert sync.running(), sync.finish()
        return sync

    def landed(self, dataset_id: str) -> collections.Counter[int]:
        """How often each id landed in the dataset."""
        return collections.Counter(row["id"] for row in self.emulator.rows(dataset_id))


@pytest.fixture
def rig(tmp_path: Path, postgres_url: str, source_table: str) -> Iterator[Rig]:
    """A fresh emulator and deployment; the gate is opened at the end whatever happened."""
    made = Rig(tmp_path, postgres_url, source_table)
    with made.server:
        try:
            yield made
        finally:
            made.gate.open()
            for process in made.deployment.started:
                process.stop()


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``store/`` and ``mnt/``, the same directory: ``mnt`` is a bind mount of ``store``."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    store.mkdir()
    mnt.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount/umount command to make a bind mount with")
    done = subprocess.run(
        [mount, "--bind", str(store), str(mnt)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(
            "mounting is not permitted here (a bind mount needs root or CAP_SYS_ADMIN): "
            + done.stderr.strip()
        )
    try:
        yield store / "akkiosync.db", mnt / "akkiosync.db"
    finally:
        subprocess.run([umount, str(mnt)], check=True)


def dataset_of(state: Path) -> tuple[str | None, int]:
    """The job's dataset id and rows sent, as its store says."""
    with Store.open(state) as store:
        job = store.job_state("big")
    return job.dataset_id, job.rows_sent


def one_runs_the_other_skips(rig: Rig, first_path: Path, second_path: Path) -> None:
    """A sync through ``first_path`` holds the job; one through ``second_path`` is skipped."""
    first = rig.start_held_sync(first_path)
    second = rig.deployment.start(second_path, "sync")
    # Were the second to run the job too, its first add-rows request would wait at the gate.
    until("the second sync to end", lambda: not second.running() or rig.gate.waiting > 1)
    assert not second.running(), "both syncs run the job at once"
    code, out, err = second.finish()
    assert code == 1, (out, err)
    assert f"big: SKIPPED: already running in another process (pid {first.pid})" in err
    rig.gate.open()
    code, out, err = first.finish()
    assert code == 0, (out, err)
    assert f"big: ok, {ROWS} rows" in out
    (dataset_id,) = rig.emulator.dataset_ids()
    landed = rig.landed(dataset_id)
    assert set(landed) == set(range(1, ROWS + 1))
    assert max(landed.values()) == 1


@pytest.mark.postgres
@pytest.mark.slow
class TestOneStoreManyPaths:
    """Two syncs of one store never both run a job, whatever path each names the store by."""

    def test_symlink_and_real_path(self, rig: Rig, tmp_path: Path) -> None:
        """A sync through a symlink to the store and one through its real path: one runs, the
        other is skipped, every row lands once."""
        real = tmp_path / "state" / "akkiosync.db"
        real.parent.mkdir()
        link = tmp_path / "link.db"
        link.symlink_to(real)  # dangling until the first sync creates the store
        one_runs_the_other_skips(rig, link, real)

    def test_bind_mounted_directory(self, rig: Rig, bind_mount: tuple[Path, Path]) -> None:
        """Through a bind mount of the store's directory: the lock files beside the store are
        the same files, so the second sync is skipped."""
        store, mounted = bind_mount
        one_runs_the_other_skips(rig, store, mounted)


@pytest.mark.postgres
@pytest.mark.slow
class TestResetDuringSync:
    """``reset`` never interleaves with a run of the same job."""

    def test_refused(self, rig: Rig, tmp_path: Path) -> None:
        """Without ``--wait``, reset exits 1 naming the running sync's pid and changes
        nothing: the sync completes into its dataset, which the store still pins."""
        state = tmp_path / "state" / "akkiosync.db"
        sync = rig.start_held_sync(state)
        reset = rig.deployment.start(state, "reset", "big", "--yes", "--delete-dataset")
        code, out, err = reset.finish()
        assert code == 1, (out, err)
        assert (
            f"error: job big is running in another process (pid {sync.pid}): nothing was reset;"
            " wait for it to finish or use --wait SECONDS"
        ) in err
        rig.gate.open()
        code, out, err = sync.finish()
        assert code == 0, (out, err)
        (dataset_id,) = rig.emulator.dataset_ids()
        assert dataset_of(state) == (dataset_id, ROWS)
        assert sorted(rig.landed(dataset_id).elements()) == list(range(1, ROWS + 1))

    def test_waits_then_resets(self, rig: Rig, tmp_path: Path) -> None:
        """With ``--wait``, reset says whom it waits for, resets once the sync is done, and
        the next sync sends every row exactly once into a new dataset."""
        state = tmp_path / "state" / "akkiosync.db"
        sync = rig.start_held_sync(state)
        reset = rig.deployment.start(state, "reset", "big", "--yes", "--wait", "300")
        waiting = f"waiting for job big, running in process {sync.pid}..."
        until("reset to wait", lambda: waiting in reset.stderr() or not reset.running())
        assert reset.running(), reset.finish()
        rig.gate.open()
        code, out, err = sync.finish()
        assert code == 0, (out, err)
        code, out, err = reset.finish()
        assert code == 0, (out, err)
        assert "big: reset;" in out
        assert dataset_of(state) == (None, 0)
        code, out, err = rig.deployment.start(state, "sync").finish()
        assert code == 0, (out, err)
        assert f"big: ok, {ROWS} rows" in out
        old, new = rig.emulator.dataset_ids()
        assert dataset_of(state) == (new, ROWS)
        assert sorted(rig.landed(new).elements()) == list(range(1, ROWS + 1))
        assert sorted(rig.landed(old).elements()) == list(range(1, ROWS + 1))
