"""The exactly-once protocol: intents, reconciliation by row count, and every branch of it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from akkiosync.akkio import AkkioClient
from akkiosync.delivery import Delivery, OnMismatch, Outcome, ReconcilePolicy
from akkiosync.emulator import Emulator
from akkiosync.errors import AkkioError, AkkioFatalError, DeliveryMismatchError
from akkiosync.pacing import RetryPolicy
from akkiosync.state import Intent, Store
from tests.conftest import API_KEY

MakeHarness = Callable[..., "Harness"]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
JOB = "orders"
GRACE = 10.0  # seconds of the virtual clock


class VirtualClock:
    """Time that passes only when the code under test sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += dt.timedelta(seconds=seconds)


class Faulty(httpx.BaseTransport):
    """The emulator behind a script of outcomes for add-rows calls, and lagging row counts.

    ``script`` entries: ``ok``; ``drop_before`` (connection lost, nothing stored);
    ``drop_after`` (stored, answer lost); ``503`` (nothing stored, server error); ``late:S``
    (a read timeout at once; the rows are stored S seconds of the clock later); ``error_after``
    (stored, then ``200 {"status": "error"}``); ``408_after`` (stored, then a 408 relayed by a
    proxy); ``400`` (refused, nothing stored). ``lag`` makes the next ``lag`` GETs after each
    add report the count from before the add.
    """

    def __init__(
        self, emulator: Emulator, script: list[str], lag: int = 0, clock: VirtualClock | None = None
    ) -> None:
        self.inner = emulator.transport()
        self.script = script
        self.lag = lag
        self.clock = clock or VirtualClock()
        self.adds = 0
        self.gets = 0
        self._stale: tuple[int, int] | None = None  # (count to report, reports left)
        self._late: list[tuple[dt.datetime, httpx.Request]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.land_due()
        if request.method == "GET" and "id=" in str(request.url):
            self.gets += 1
            response = self.inner.handle_request(request)
            if self._stale and self._stale[1] > 0:
                body = json.loads(response.read())
                body["rows"] = self._stale[0]
                self._stale = (self._stale[0], self._stale[1] - 1)
                return httpx.Response(200, json=body)
            return response
        if request.method != "POST" or b'"rows"' not in request.content:
            return self.inner.handle_request(request)
        self.adds += 1
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "drop_before":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if outcome == "503":
            return httpx.Response(503, json={"status": "error", "message": "unavailable"})
        if outcome == "400":
            return httpx.Response(400, json={"status": "error", "message": "bad rows"})
        if outcome.startswith("late:"):
            due = self.clock.now + dt.timedelta(seconds=float(outcome.split(":")[1]))
            self._late.append((due, request))
            raise httpx.ReadTimeout("timed out")
        before = self._count(request)
        response = self.inner.handle_request(request)
        if self.lag:
            self._stale = (before, self.lag)
        if outcome == "drop_after":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if outcome == "error_after":
            return httpx.Response(200, json={"status": "error", "message": "internal error"})
        if outcome == "408_after":
            return httpx.Response(408, json={"status": "error", "message": "request timeout"})
        return response

    def land_due(self) -> None:
        """Store the late requests whose time has come."""
        due = [r for when, r in self._late if when <= self.clock.now]
        self._late = [(when, r) for when, r in self._late if when > self.clock.now]
        for request in due:
            self.inner.handle_request(request)

    def _count(self, request: httpx.Request) -> int:
        dataset_id = json.loads(request.content)["id"]
        get = httpx.Request("GET", f"http://emulator/v1/datasets?api_key={API_KEY}&id={dataset_id}")
        return int(json.loads(self.inner.handle_request(get).read())["rows"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh checkpoint store."""
    with Store.open(tmp_path / "state.db") as s:
        yield s


class Harness:
    """A pinned dataset, a store and a Delivery whose transport follows a script."""

    def __init__(
        self, store: Store, emulator: Emulator, script: list[str], *, lag: int = 0,
        on_mismatch: OnMismatch = "fail", grace: float = GRACE, clock: VirtualClock | None = None,
        transport: type[Faulty] | None = None,
    ) -> None:  # fmt: skip
        self.store, self.emulator = store, emulator
        self.clock = clock or VirtualClock()
        self.transport = (transport or Faulty)(emulator, script, lag, self.clock)
        self.sleeps = self.clock.sleeps
        self.client = AkkioClient(
            API_KEY, "http://emulator/v1", transport=self.transport, sleep=self.clock.sleep
        )
        if store.job_state(JOB).dataset_id is None:
            ref = self.client.create_dataset("Orders")
            store.pin_dataset(JOB, ref.id, ref.name, "[]", NOW)
        self.dataset_id = store.job_state(JOB).dataset_id or ""
        self.delivery = Delivery(
            store,
            self.client,
            job=JOB,
            dataset_id=self.dataset_id,
            policy=ReconcilePolicy(on_mismatch=on_mismatch, grace=grace, wait=0.1),
            retry=RetryPolicy(attempts=4),
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def rows(self) -> list[int]:
        return [int(r["n"]) for r in self.emulator.rows(self.dataset_id)]

    def send(self, first: int, count: int) -> None:
        records = [{"n": i} for i in range(first, first + count)]
        before = self.store.job_state(JOB).cursor_json
        self.delivery.send(records, before, json.dumps(first + count - 1))

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def harness(store: Store, emulator: Emulator) -> Iterator[MakeHarness]:
    """Build harnesses on the test's store and emulator; close their clients afterwards."""
    made: list[Harness] = []

    def make(script: list[str], **options: Any) -> Harness:
        h = Harness(store, emulator, script, **options)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


class TestLostAnswers:
    """A lost or failed answer is settled by the dataset's row count, never by guessing."""

    def test_landed(self, harness: MakeHarness, store: Store) -> None:
        """Stored but unanswered: the count shows it landed; it is committed, not resent."""
        h = harness(["drop_after"])
        h.delivery.recover()
        h.send(1, 5)
        assert h.rows() == [1, 2, 3, 4, 5]
        assert h.transport.adds == 1
        state = store.job_state(JOB)
        assert (state.rows_sent, state.cursor_json) == (5, "5")
        assert store.pending_intent(JOB) is None

    def test_not_landed(self, harness: MakeHarness, store: Store) -> None:
        """Lost before storing: the count is unchanged after every re-read; it is sent again."""
        h = harness(["drop_before"])
        h.delivery.recover()
        h.send(1, 5)
        assert h.rows() == [1, 2, 3, 4, 5]
        assert h.transport.adds == 2
        assert store.job_state(JOB).rows_sent == 5
        # The count is watched, pauses doubling, for the whole landing grace before a resend.
        assert h.sleeps[:7] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 3.7])
        assert sum(h.sleeps[:7]) == pytest.approx(GRACE)
        assert h.transport.gets >= 8

    def test_server_error(self, harness: MakeHarness) -> None:
        """A 5xx is reconciled like a lost answer (it may have been stored) and then resent."""
        h = harness(["503", "503", "ok"])
        h.delivery.recover()
        h.send(1, 3)
        h.send(4, 2)
        assert h.rows() == [1, 2, 3, 4, 5]
        assert h.transport.adds == 4

    def test_lazy_count(self, harness: MakeHarness) -> None:
        """A count that lags behind the add is read again until it shows the batch."""
        h = harness(["drop_after"], lag=2)
        h.delivery.recover()
        h.send(1, 4)
        assert h.rows() == [1, 2, 3, 4]
        assert h.transport.adds == 1

    def test_gives_up(self, harness: MakeHarness, store: Store) -> None:
        """When every attempt is lost before storing, the error is raised and nothing commits."""
        h = harness(["drop_before"] * 10)
        h.delivery.recover()
        with pytest.raises(AkkioError):
            h.send(1, 2)
        assert h.rows() == []
        assert store.job_state(JOB).rows_sent == 0

    def test_refusal_keeps_intent_until_settled(self, harness: MakeHarness, store: Store) -> None:
        """A 400 may come from a proxy that forwarded the rows: the run fails at once, and the
        intent stays until the next run has watched the count for the landing grace."""
        h = harness([])
        h.delivery.recover()
        with pytest.raises(AkkioFatalError):
            h.delivery.send([{"n": 1}, {"m": 2}], None, "1")  # keys differ: 400
        assert store.pending_intent(JOB) is not None
        assert h.sleeps == []  # failed at once, without waiting out the grace
        h.delivery.recover()
        assert h.delivery.recovered is Outcome.NOT_LANDED
        assert sum(h.sleeps) == pytest.approx(GRACE)
        assert store.pending_intent(JOB) is None
        assert store.job_state(JOB).cursor_json is None

    def test_auth_refusal_clears_intent(self, harness: MakeHarness, store: Store) -> None:
        """A refused API key provably stored nothing: no intent is left, nothing is waited."""
        h = harness([])
        h.delivery.recover()
        bad = AkkioClient("wrong-key-000", "http://emulator/v1", transport=h.transport)
        delivery = Delivery(
            store, bad, job=JOB, dataset_id=h.dataset_id, policy=ReconcilePolicy(grace=GRACE),
            retry=RetryPolicy(attempts=2), clock=h.clock, sleep=h.clock.sleep,
        )  # fmt: skip
        with pytest.raises(AkkioFatalError):
            delivery.send([{"n": 1}], None, "1")
        bad.close()
        assert store.pending_intent(JOB) is None
        assert h.sleeps == []


class TestLateAndLyingAnswers:
    """An answer that arrives after the client gave up, or that lies, never doubles a row."""

    def test_late_landing_within_grace(self, harness: MakeHarness, store: Store) -> None:
        """The client times out; the rows land 6 s later: that is seen, and nothing is resent."""
        h = harness(["late:6"])
        h.delivery.recover()
        h.send(1, 3)
        h.send(4, 2)
        assert h.rows() == [1, 2, 3, 4, 5]
        assert h.transport.adds == 2
        assert store.job_state(JOB).rows_sent == 5

    def test_late_landing_of_a_504(self, harness: MakeHarness) -> None:
        """The same through a gateway's 5xx: the count is watched, not read once."""
        h = harness(["late:9.5"])
        h.delivery.recover()
        h.send(1, 4)
        assert h.rows() == [1, 2, 3, 4]
        assert h.transport.adds == 1

    @pytest.mark.parametrize("outcome", ["error_after", "408_after"])
    def test_error_after_storing(self, harness: MakeHarness, store: Store, outcome: str) -> None:
        """An error answer for rows that were stored is committed, not sent again."""
        h = harness([outcome])
        h.delivery.recover()
        h.send(1, 3)
        h.send(4, 1)
        assert h.rows() == [1, 2, 3, 4]
        assert h.transport.adds == 2
        assert store.pending_intent(JOB) is None
        assert store.job_state(JOB).rows_sent == 4

    def test_landing_after_the_grace_is_loud(self, harness: MakeHarness) -> None:
        """A request that lands after the grace (the assumption broken) is resent, and the
        duplicate it makes is caught by the count check: the run fails, and so does the next."""
        h = harness(["late:60"])
        h.delivery.recover()
        h.send(1, 2)  # settled as not landed after 10 s, sent again
        h.clock.sleep(60)  # ...and the first request lands after all
        slept = len(h.sleeps)
        with pytest.raises(DeliveryMismatchError, match=r"has 4 rows after .* delivered 2"):
            h.delivery.verify()
        assert len(h.sleeps) == slept  # too many rows is no lazy count: no waiting
        with pytest.raises(DeliveryMismatchError, match=r"has 4 rows before .* delivered 2"):
            harness([]).delivery.recover()

    def test_verify_waits_for_a_lazy_count(self, harness: MakeHarness) -> None:
        """After the last batch, a count that lags is read again until it is right."""
        h = harness(["ok"], lag=3)
        h.delivery.recover()
        h.send(1, 3)
        h.delivery.verify()
        assert h.transport.gets >= 4


class TestMismatch:
    """A count that fits neither outcome stops the job unless it opted into resending."""

    def _someone_else_writes(self, h: Harness) -> None:
        with AkkioClient(API_KEY, "http://emulator/v1", transport=h.transport.inner) as other:
            other.add_rows(h.dataset_id, [{"n": -1}, {"n": -2}])

    def test_fail(self, harness: MakeHarness, store: Store) -> None:
        """on_mismatch: fail raises naming both expected counts, and keeps the intent."""
        h = harness(["drop_after"])
        h.delivery.recover()
        self._someone_else_writes(h)
        with pytest.raises(DeliveryMismatchError, match=r"it has 5 rows, expected 0 .* or 3"):
            h.send(1, 3)
        assert store.pending_intent(JOB) is not None
        with pytest.raises(DeliveryMismatchError):  # and the next run stops too
            harness([]).delivery.recover()

    def test_resend(self, harness: MakeHarness, store: Store) -> None:
        """on_mismatch: resend sends again (accepting the duplicate) and carries on."""
        h = harness(["drop_after"], on_mismatch="resend")
        h.delivery.recover()
        self._someone_else_writes(h)
        h.send(1, 3)
        assert sorted(h.rows()) == [-2, -1, 1, 1, 2, 2, 3, 3]
        assert store.pending_intent(JOB) is None
        assert store.job_state(JOB).rows_sent == 3

    def test_foreign_rows_stop_the_run(self, harness: MakeHarness) -> None:
        """Before the first batch, a dataset with rows this job did not send stops the run,
        naming both counts and the ways out."""
        h = harness([])
        self._someone_else_writes(h)
        with pytest.raises(DeliveryMismatchError, match=r"has 2 rows .* delivered 0") as caught:
            h.delivery.recover()
        assert "akkiosync accept orders" in str(caught.value)
        assert "akkiosync reset orders" in str(caught.value)

    def test_foreign_rows_warned_with_resend(
        self, harness: MakeHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With on_mismatch: resend, the same is a warning and the run goes on."""
        h = harness([], on_mismatch="resend")
        self._someone_else_writes(h)
        h.delivery.recover()
        assert "exactly-once cannot be verified" in caplog.text
        assert h.delivery.rows_before == 2


class TestRecovery:
    """An intent left by a crash is settled at the start of the next run."""

    def _crash_with_intent(self, h: Harness, store: Store, *, landed: bool) -> None:
        store.record_intent(Intent(JOB, h.dataset_id, 3, 0, None, "3", NOW))
        if landed:
            with AkkioClient(API_KEY, "http://emulator/v1", transport=h.transport.inner) as c:
                c.add_rows(h.dataset_id, [{"n": 1}, {"n": 2}, {"n": 3}])

    def test_landed_before_crash(self, harness: MakeHarness, store: Store) -> None:
        """Killed after Akkio stored the batch: the batch is committed, not sent again."""
        h = harness([])
        self._crash_with_intent(h, store, landed=True)
        h.delivery.recover()
        assert h.delivery.recovered is Outcome.LANDED
        state = store.job_state(JOB)
        assert (state.cursor_json, state.rows_sent) == ("3", 3)
        assert store.pending_intent(JOB) is None
        assert h.delivery.rows_before == 3

    def test_not_landed_before_crash(self, harness: MakeHarness, store: Store) -> None:
        """Killed before the batch reached Akkio: the intent is dropped, the cursor stays."""
        h = harness([])
        self._crash_with_intent(h, store, landed=False)
        h.delivery.recover()
        assert h.delivery.recovered is Outcome.NOT_LANDED
        assert store.job_state(JOB).cursor_json is None
        assert store.pending_intent(JOB) is None

    def test_intent_of_another_dataset(self, harness: MakeHarness, store: Store) -> None:
        """An intent for a dataset the job no longer uses (after reset) is discarded."""
        h = harness([])
        store.record_intent(Intent(JOB, "old-dataset", 3, 0, None, "3", NOW))
        h.delivery.recover()
        assert h.delivery.recovered is None
        assert store.pending_intent(JOB) is None


class TestLedgerThroughRecovery:
    """A lookback batch's ledger entries travel with its intent and land with its commit."""

    def test_landed_intent_commits_its_ledger(self, harness: MakeHarness, store: Store) -> None:
        """After a crash between send and commit, recovery writes the batch's ledger entries
        and prunes by the intent's bound, exactly as the commit would have."""
        h = harness([])
        store.commit_batch(JOB, "0", 0, NOW, ledger=[("old", 1.0), ("kept", 50.0)])
        extra = {"entries": [["a", 100.0], ["b", 101.0]], "prune_below": 10.0}
        store.record_intent(Intent(JOB, h.dataset_id, 2, 0, None, "2", NOW, json.dumps(extra)))
        with AkkioClient(API_KEY, "http://emulator/v1", transport=h.transport.inner) as c:
            c.add_rows(h.dataset_id, [{"n": 1}, {"n": 2}])
        h.delivery.recover()
        assert h.delivery.recovered is Outcome.LANDED
        assert store.ledger_entries(JOB) == {"kept", "a", "b"}
        assert store.job_state(JOB).cursor_json == "2"
