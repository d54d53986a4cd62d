"""Exactly-once under any interleaving of answers, checked with hypothesis.

Each example is a job of ``n`` rows sent in batches, through runs that go on until one ends
well; every add-rows request meets the next outcome of a drawn script: landed now, landed late
(within the landing grace), not landed, stored but answered with an error, refused, or the
process dying before or after the rows were stored. Whatever the script, the dataset never
holds a row twice, a run that reports success leaves it holding exactly the rows committed, and
once the faults run out the job completes with every row exactly once.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akkiosync.emulator import Emulator
from akkiosync.errors import AkkioSyncError
from akkiosync.state import Store
from tests.conftest import API_KEY
from tests.test_delivery import GRACE, JOB, Faulty, Harness, VirtualClock


class Crash(BaseException):
    """The process died: nothing below the run catches it, nothing is cleaned up."""


class Dying(Faulty):
    """``Faulty`` plus ``crash_before`` (killed while sending) and ``crash_after`` (killed once
    the rows were stored, before the answer was read)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        adding = request.method == "POST" and b'"rows"' in request.content
        step = self.script[0] if adding and self.script else ""
        if step in ("crash_before", "crash_after"):
            self.script.pop(0)
            self.adds += 1
            if step == "crash_after":
                self.inner.handle_request(request)
            raise Crash
        return super().handle_request(request)


STEPS = (
    *("ok", "drop_before", "drop_after", "503", "error_after", "408_after", "400"),
    *("crash_before", "crash_after"),
)
OUTCOMES = st.one_of(
    st.sampled_from(STEPS),
    # Late landings within the grace: the assumption the guarantee rests on.
    st.floats(0.1, GRACE - 0.5).map(lambda seconds: f"late:{seconds:.2f}"),
)
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _run(
    store: Store, emulator: Emulator, clock: VirtualClock, script: list[str], n: int, size: int
) -> bool:
    """One run: recover, send what is past the cursor, verify; whether it ended well."""
    harness = Harness(store, emulator, script, clock=clock, transport=Dying)  # a shared script
    try:
        harness.delivery.recover()
        done = int(store.job_state(JOB).cursor_json or 0)
        for first in range(done + 1, n + 1, size):
            harness.send(first, min(size, n - first + 1))
        harness.delivery.verify()
    except (AkkioSyncError, Crash):
        return False
    finally:
        harness.close()
    return True


class TestAnyInterleaving:
    """Whatever answers come, and whenever the process dies, no row is lost or doubled."""

    @PROPERTY
    @given(
        n=st.integers(1, 12),
        size=st.integers(1, 5),
        script=st.lists(OUTCOMES, max_size=12),
    )
    def test_exactly_once_or_failed(self, n: int, size: int, script: list[str]) -> None:
        """Runs go on until one succeeds: never a duplicate, every success exact, and the
        job completes once the faults are spent."""
        emulator, clock, pending = Emulator(api_key=API_KEY), VirtualClock(), list(script)
        with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.db") as store:
            for _ in range(len(script) + 2):
                ok = _run(store, emulator, clock, pending, n, size)
                clock.sleep(0.001)  # the next run starts a moment later
                dataset = store.job_state(JOB).dataset_id or ""
                landed = collections.Counter(int(r["n"]) for r in emulator.rows(dataset))
                assert max(landed.values(), default=1) == 1, f"a row landed twice: {landed}"
                if ok:
                    done = int(store.job_state(JOB).cursor_json or 0)
                    assert sorted(landed) == list(range(1, done + 1))
                    break
            else:
                raise AssertionError(f"no run succeeded once the script was spent: {script}")
        assert sorted(landed) == list(range(1, n + 1))
