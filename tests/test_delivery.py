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


class Faulty(httpx.BaseTransport):
    """The emulator behind a script of outcomes for add-rows calls, and lagging row counts.

    ``script`` entries: ``ok``; ``drop_before`` (connection lost, nothing stored);
    ``drop_after`` (stored, answer lost); ``503`` (nothing stored, server error).
    ``lag`` makes the next ``lag`` GETs after each add report the count from before the add.
    """

    def __init__(self, emulator: Emulator, script: list[str], lag: int = 0) -> None:
        self.inner = emulator.transport()
        self.script = script
        self.lag = lag
        self.adds = 0
        self.gets = 0
        self._stale: tuple[int, int] | None = None  # (count to report, reports left)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
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
        before = self._count(request)
        response = self.inner.handle_request(request)
        if self.lag:
            self._stale = (before, self.lag)
        if outcome == "drop_after":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return response

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
        on_mismatch: OnMismatch = "fail", reads: int = 3,
    ) -> None:  # fmt: skip
        self.store, self.emulator = store, emulator
        self.transport = Faulty(emulator, script, lag)
        self.sleeps: list[float] = []
        self.client = AkkioClient(
            API_KEY, "http://emulator/v1", transport=self.transport, sleep=self.sleeps.append
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
            policy=ReconcilePolicy(on_mismatch=on_mismatch, reads=reads, wait=0.1),
            retry=RetryPolicy(attempts=4),
            clock=lambda: NOW,
            sleep=self.sleeps.append,
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
        assert h.sleeps[:2] == [0.1, 0.2]  # re-read twice (lazy counting) before concluding

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
        h = harness(["drop_after"], lag=2, reads=3)
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

    def test_refusal_clears_intent(self, harness: MakeHarness, store: Store) -> None:
        """A request Akkio refuses outright provably stored nothing: no intent is left."""
        h = harness([])
        h.delivery.recover()
        with pytest.raises(AkkioFatalError):
            h.delivery.send([{"n": 1}, {"m": 2}], None, "1")  # keys differ: 400
        assert store.pending_intent(JOB) is None


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

    def test_foreign_rows_warned(
        self, harness: MakeHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """At the start of a run, a dataset with rows this job did not send is reported."""
        h = harness([])
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
