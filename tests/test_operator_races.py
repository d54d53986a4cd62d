"""Commands that change a job's state by hand, after a crash left a batch of unknown fate.

``akkiosync`` runs as real subprocesses against a real PostgreSQL table and the emulator on a
loopback port, behind the gate of ``test_lock_races``: a sync is killed (``kill -9``) while an
add-rows request is held, the request then lands, and an operator command follows.
"""

from __future__ import annotations

import signal
import sys
import time

import pytest

from akkiosync.state import Store
from tests import test_lock_races
from tests.conftest import DEADLINE, until
from tests.test_lock_races import BATCH_SIZE, PASSED, ROWS, Process, Rig, dataset_of

rig = test_lock_races.rig  # the fixtures of its rig, shared
source_table = test_lock_races.source_table


def killed_while_sending(rig: Rig, state_name: str = "akkiosync.db") -> str:
    """A sync killed while its batch PASSED + 1 is held; the batch then lands. The dataset's id."""
    state = rig.deployment.root / state_name
    sync = rig.start_held_sync(state)
    sync.popen.kill()
    sync.popen.wait()
    rig.gate.open()
    assert rig.emulator.settle(), "the held batch did not land"
    (dataset_id,) = rig.emulator.dataset_ids()
    assert len(rig.emulator.rows(dataset_id)) == (PASSED + 1) * BATCH_SIZE
    return dataset_id


@pytest.mark.postgres
@pytest.mark.slow
class TestAcceptAfterCrash:
    """``accept`` never forgets a batch that landed: its rows would be sent a second time."""

    def test_landed_batch_is_committed(self, rig: Rig) -> None:
        """A batch in flight when the sync was killed, that landed: ``accept`` commits it rather
        than forgetting it, and the next sync sends every row exactly once."""
        dataset_id = killed_while_sending(rig)
        state = rig.deployment.root / "akkiosync.db"
        code, out, err = rig.deployment.start(state, "accept", "big", "--yes").finish()
        assert code == 0, (out, err)
        assert "landed" in out
        assert "sent again" not in out
        assert dataset_of(state) == (dataset_id, (PASSED + 1) * BATCH_SIZE)
        code, out, err = rig.deployment.start(state, "sync").finish()
        assert code == 0, (out, err)
        landed = rig.landed(dataset_id)
        assert set(landed) == set(range(1, ROWS + 1))
        assert max(landed.values()) == 1, "rows sent twice"


@pytest.mark.postgres
@pytest.mark.slow
class TestStopDuringLandingGrace:
    """SIGTERM while a batch's landing grace runs: a clean, prompt exit; the next start exact."""

    def test_sigterm_then_next_sync(self, rig: Rig) -> None:
        """The daemon stops watching the count at once (the run fails naming the shutdown, not as
        an internal error), exits 0 long before the grace is over, and keeps the intent; once
        the held batch lands, the next sync commits it and sends every other row once."""
        root = rig.deployment.root
        job = root / "config" / "jobs" / "big.yaml"
        job.write_text(job.read_text() + 'schedule: "1s"\n')
        state = root / "akkiosync.db"
        env = {
            **rig.deployment.env,
            "AKKIOSYNC_STATE": str(state),
            "AKKIO_TIMEOUT": "1",  # the held request times out: its rows may land later
            "AKKIOSYNC_LANDING_GRACE": str(2 * DEADLINE),
            "AKKIOSYNC_SHUTDOWN_TIMEOUT": str(DEADLINE / 2),
        }
        command = [sys.executable, "-m", "akkiosync", "--log-format", "text"]
        daemon = Process([*command, "--config", str(root / "config"), "run"], env, root, "run")
        rig.deployment.started.append(daemon)
        until("the landing grace to start", lambda: "watching it" in daemon.stderr())
        started = time.monotonic()
        daemon.popen.send_signal(signal.SIGTERM)
        code, _, err = daemon.finish()
        assert time.monotonic() - started < DEADLINE / 4, "shutdown waited for the grace"
        assert code == 0, err
        assert "internal error" not in err, err
        assert "settled by the next run" in err
        with Store.open(state) as store:
            intent = store.pending_intent("big")
            (last,) = store.runs("big", limit=1)
        assert intent is not None
        assert intent.rows == BATCH_SIZE
        assert last.status == "failed"
        assert "shutting down" in (last.error or "")
        rig.gate.open()
        assert rig.emulator.settle(), "the held batch did not land"
        code, out, err = rig.deployment.start(state, "sync").finish()
        assert code == 0, (out, err)
        (dataset_id,) = rig.emulator.dataset_ids()
        landed = rig.landed(dataset_id)
        assert set(landed) == set(range(1, ROWS + 1))
        assert max(landed.values()) == 1, "rows sent twice"
