"""Tests for webhook alerts: when they fire, what they say, and how they are delivered."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from akkiosync.alerts import Alert, Alerter, alert_for, previous_status
from akkiosync.config import AlertsSpec, Job
from akkiosync.results import ResultStatus, RunResult
from akkiosync.state import RunStatus, Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = "XyZ-secret-token-0123456789"  # noqa: S105 - fake; tests prove it never reaches a log


@dataclass
class Request:
    """One request the fake webhook received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Webhook:
    """A local HTTP server standing in for Slack: records requests, answers from a script."""

    url: str
    requests: list[Request] = field(default_factory=list)
    answers: deque[int] = field(default_factory=deque)  # status codes; 200 once exhausted
    headers: dict[str, str] = field(default_factory=dict)  # sent with every non-2xx answer


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A ThreadingHTTPServer on 127.0.0.1, in a thread; shut down and closed afterwards."""
    lock = threading.Lock()
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                hook.requests.append(
                    Request("POST", self.path, dict(self.headers.items()), json.loads(raw))
                )
                status = hook.answers.popleft() if hook.answers else 200
            self.send_response(status)
            if status >= 300:
                for name, value in hook.headers.items():
                    self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    hook = Webhook(url=f"http://{host!s}:{port}/services/T0/B0/{TOKEN}")
    # A short poll interval: shutdown() waits for serve_forever's next look.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_url() -> str:
    """A webhook URL on a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/T0/B0/{TOKEN}"


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff waits an Alerter asked for (it never really sleeps in tests)."""
    return []


@pytest.fixture
def make_alerter(sleeps: list[float]) -> Iterator[Callable[..., Alerter]]:
    """Build Alerters with a recording sleep; all are closed afterwards."""
    made: list[Alerter] = []

    def make(global_alerts: AlertsSpec | None = None, **kwargs: Any) -> Alerter:
        alerter = Alerter(global_alerts=global_alerts, sleep=sleeps.append, **kwargs)
        made.append(alerter)
        return alerter

    yield make
    for alerter in made:
        alerter.close()


def make_job(alerts: dict[str, Any] | None = None, name: str = "orders") -> Job:
    """A minimal valid job, with the given alerts section."""
    spec: dict[str, Any] = {
        "name": name,
        "source": {"url": "sqlite://", "table": "t", "watermark": "w"},
        "target": {"dataset": "D"},
    }
    if alerts is not None:
        spec["alerts"] = alerts
    return Job.model_validate(spec)


def result(status: ResultStatus, run_id: int | None = 1, error: str | None = None) -> RunResult:
    """A run result; failed runs get an error unless one is given."""
    if status == "failed" and error is None:
        error = "Akkio answered HTTP 503"
    return RunResult("orders", run_id if status != "skipped" else None, status, error=error)


def run_sequence(alerter: Alerter, job: Job, statuses: list[ResultStatus]) -> list[Alert | None]:
    """Feed results with ids 1, 2, ... to ``alerter``, each with the previous one's status."""
    previous: RunStatus | None = None
    queued = []
    for run_id, status in enumerate(statuses, start=1):
        this = result(status, run_id)
        queued.append(alerter.after_run(job, this, previous, T0 + timedelta(minutes=run_id)))
        if status != "skipped":
            previous = status
    assert alerter.flush()
    return queued


class TestAlertFor:
    """alert_for: alerts on changes of state, never on repeats or skipped runs."""

    @pytest.mark.parametrize(
        ("previous", "status", "expected"),
        [
            (None, "success", None),
            (None, "failed", "failure"),
            (None, "skipped", None),
            ("success", "success", None),
            ("success", "failed", "failure"),
            ("success", "skipped", None),
            ("failed", "success", "recovery"),
            ("failed", "failed", None),
            ("failed", "skipped", None),
        ],
    )
    def test_every_combination(
        self, previous: RunStatus | None, status: ResultStatus, expected: str | None
    ) -> None:
        """Failure after None/success, recovery after failed, nothing otherwise."""
        alert = alert_for(result(status, 7), previous, now=T0)
        assert (alert and alert.event) == expected

    def test_alert_fields(self) -> None:
        """The alert names the job, the run, the error and the time in UTC."""
        now = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
        alert = alert_for(result("failed", 12, "boom"), "success", now=now)
        assert alert == Alert("orders", "failure", 12, "boom", T0)
        assert alert.at.tzinfo is UTC

    def test_recovery_has_no_error(self) -> None:
        """A recovery carries no error, whatever the result holds."""
        alert = alert_for(result("success", 13), "failed", now=T0)
        assert alert == Alert("orders", "recovery", 13, None, T0)

    def test_naive_now_is_refused(self) -> None:
        """The time must be aware: a naive one would be read in the server's zone."""
        with pytest.raises(ValueError, match="aware"):
            alert_for(result("failed"), None, now=datetime(2024, 5, 1))  # noqa: DTZ001 - on purpose


class TestPayload:
    """Alert.payload: valid JSON with a Slack-compatible one-line text."""

    def test_failure_text(self) -> None:
        """A failure says the job is failing, with the error and the run."""
        alert = Alert("orders", "failure", 12, "Akkio answered HTTP 503", T0)
        assert alert.payload()["text"] == (
            "akkiosync: job orders is failing: Akkio answered HTTP 503 (run 12)"
        )

    def test_recovery_text(self) -> None:
        """A recovery says the job recovered, with the run."""
        alert = Alert("orders", "recovery", 13, None, T0)
        assert alert.payload()["text"] == "akkiosync: job orders recovered (run 13)"

    def test_text_keeps_the_first_line_and_is_short(self) -> None:
        """Only the error's first line goes in the text, cut at about 300 characters."""
        error = "x" * 1000 + "\nTraceback (most recent call last): ..."
        text = Alert("orders", "failure", 1, error, T0).payload()["text"]
        assert "\n" not in text
        assert "Traceback" not in text
        assert len(text) < 360
        assert text.endswith("… (run 1)")

    def test_text_escapes_slack_markup(self) -> None:
        """<, > and & are escaped so Slack shows them instead of reading links."""
        alert = Alert("orders", "failure", 1, "column <id> & <wm> missing", T0)
        assert "&lt;id&gt; &amp; &lt;wm&gt;" in alert.payload()["text"]

    def test_json_round_trip(self) -> None:
        """The payload serialises to JSON with every field, the time in ISO 8601."""
        alert = Alert("orders", "failure", 12, "line one\nline two", T0)
        body = json.loads(json.dumps(alert.payload()))
        assert body == {
            "text": "akkiosync: job orders is failing: line one (run 12)",
            "job": "orders",
            "event": "failure",
            "run_id": 12,
            "error": "line one\nline two",
            "at": "2024-05-01T12:00:00+00:00",
        }
        assert datetime.fromisoformat(body["at"]) == T0


class TestPreviousStatus:
    """previous_status: the newest finished run before this one, from a real store."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        """A fresh SQLite store."""
        with Store.open(tmp_path / "state.db") as store:
            yield store

    def add_run(self, store: Store, status: RunStatus, job: str = "orders") -> int:
        """Record one run of ``job`` ending with ``status`` (or left running)."""
        run_id = store.start_run(job, None, T0)
        if status != "running":
            store.finish_run(
                run_id, status=status, now=T0, rows_read=0, rows_sent=0, batches=0,
                cursor_after=None, error="boom" if status == "failed" else None,
            )  # fmt: skip
        return run_id

    def test_no_history(self, store: Store) -> None:
        """A job's first run has no previous status."""
        current = self.add_run(store, "running")
        assert previous_status(store, "orders", current) is None

    def test_skips_running_runs(self, store: Store) -> None:
        """Runs still marked running (in flight or killed) are passed over."""
        self.add_run(store, "failed")
        self.add_run(store, "running")
        current = self.add_run(store, "success")
        assert previous_status(store, "orders", current) == "failed"

    def test_newest_older_run_wins(self, store: Store) -> None:
        """The newest finished run older than this one decides, not older ones."""
        self.add_run(store, "failed")
        self.add_run(store, "success")
        current = self.add_run(store, "failed")
        assert previous_status(store, "orders", current) == "success"

    def test_ignores_newer_runs_and_other_jobs(self, store: Store) -> None:
        """Runs after this one, and other jobs' runs, do not count."""
        self.add_run(store, "success")
        current = self.add_run(store, "failed")
        self.add_run(store, "failed", job="other")
        self.add_run(store, "failed")
        assert previous_status(store, "orders", current) == "success"

    def test_without_run_id(self, store: Store) -> None:
        """Without a run id (a skipped run), the newest finished run counts."""
        self.add_run(store, "success")
        self.add_run(store, "failed")
        self.add_run(store, "running")
        assert previous_status(store, "orders", None) == "failed"


class TestAlerter:
    """Alerter: posts state changes to the webhook, in the background, never raising."""

    def test_sequence_posts_changes_only(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter]
    ) -> None:
        """success, fail, fail, fail, success, success, fail -> failure, recovery, failure."""
        job = make_job({"webhook": webhook.url})
        statuses: list[ResultStatus] = [
            "success", "failed", "failed", "failed", "success", "success", "failed",
        ]  # fmt: skip
        queued = run_sequence(make_alerter(), job, statuses)
        assert [a and a.event for a in queued] == [
            None, "failure", None, None, "recovery", None, "failure",
        ]  # fmt: skip
        assert [r.body["text"] for r in webhook.requests] == [
            "akkiosync: job orders is failing: Akkio answered HTTP 503 (run 2)",
            "akkiosync: job orders recovered (run 5)",
            "akkiosync: job orders is failing: Akkio answered HTTP 503 (run 7)",
        ]
        assert [r.body["event"] for r in webhook.requests] == ["failure", "recovery", "failure"]

    def test_request_shape(self, webhook: Webhook, make_alerter: Callable[..., Alerter]) -> None:
        """One JSON POST to the webhook's path, with the payload as its body."""
        job = make_job({"webhook": webhook.url})
        alerter = make_alerter()
        alert = alerter.after_run(job, result("failed", 3, "boom"), None, T0)
        assert alert is not None
        assert alerter.flush()
        [request] = webhook.requests
        assert request.method == "POST"
        assert request.path == f"/services/T0/B0/{TOKEN}"
        assert request.headers["Content-Type"] == "application/json"
        assert request.body == alert.payload()
        assert request.body["text"] == "akkiosync: job orders is failing: boom (run 3)"

    def test_on_failure_only(self, webhook: Webhook, make_alerter: Callable[..., Alerter]) -> None:
        """With on: [failure], recoveries are not posted."""
        job = make_job({"webhook": webhook.url, "on": ["failure"]})
        queued = run_sequence(make_alerter(), job, ["failed", "success", "failed"])
        assert [a and a.event for a in queued] == ["failure", None, "failure"]
        assert [r.body["event"] for r in webhook.requests] == ["failure", "failure"]

    def test_on_recovery_only(self, webhook: Webhook, make_alerter: Callable[..., Alerter]) -> None:
        """With on: [recovery], failures are not posted."""
        job = make_job({"webhook": webhook.url, "on": ["recovery"]})
        run_sequence(make_alerter(), job, ["failed", "success", "failed"])
        assert [r.body["event"] for r in webhook.requests] == ["recovery"]

    def test_global_spec_for_jobs_without_alerts(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter]
    ) -> None:
        """A job without an alerts section uses the global webhook."""
        global_alerts = AlertsSpec.model_validate({"webhook": webhook.url})
        run_sequence(make_alerter(global_alerts), make_job(), ["failed", "success"])
        assert [r.body["event"] for r in webhook.requests] == ["failure", "recovery"]

    def test_job_spec_wins_over_global(
        self, webhook: Webhook, dead_url: str, make_alerter: Callable[..., Alerter]
    ) -> None:
        """A job's own alerts section is used instead of the global one."""
        global_alerts = AlertsSpec.model_validate({"webhook": dead_url})
        job = make_job({"webhook": webhook.url, "on": ["failure"]})
        run_sequence(make_alerter(global_alerts), job, ["failed", "success"])
        assert [r.body["event"] for r in webhook.requests] == ["failure"]

    def test_no_spec_posts_nothing(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter]
    ) -> None:
        """Without a job or global spec, nothing is queued or posted."""
        queued = run_sequence(make_alerter(), make_job(), ["failed", "success", "failed"])
        assert queued == [None, None, None]
        assert webhook.requests == []

    def test_skipped_runs_never_alert(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter]
    ) -> None:
        """A skipped run neither alerts nor hides the next change."""
        job = make_job({"webhook": webhook.url})
        queued = run_sequence(make_alerter(), job, ["skipped", "failed", "skipped", "failed"])
        assert [a and a.event for a in queued] == [None, "failure", None, None]
        assert len(webhook.requests) == 1

    def test_5xx_is_retried(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter], sleeps: list[float]
    ) -> None:
        """A webhook answering 500 twice then 200 gets the alert on the third try, once."""
        webhook.answers.extend([500, 500])
        job = make_job({"webhook": webhook.url})
        alerter = make_alerter(retry_attempts=3)
        alerter.after_run(job, result("failed", 4), None, T0)
        assert alerter.flush()
        assert len(webhook.requests) == 3
        assert webhook.requests[0].body == webhook.requests[2].body
        assert len(sleeps) == 2
        assert all(0 < s <= 5 for s in sleeps)

    def test_gives_up_after_retry_attempts(
        self,
        webhook: Webhook,
        make_alerter: Callable[..., Alerter],
        sleeps: list[float],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A webhook that keeps failing is tried retry_attempts times, then a warning."""
        webhook.answers.extend([503] * 5)
        alerter = make_alerter(retry_attempts=3)
        alerter.after_run(make_job({"webhook": webhook.url}), result("failed"), None, T0)
        assert alerter.flush()
        assert len(webhook.requests) == 3
        assert len(sleeps) == 2
        assert "job orders: failure alert not sent: webhook answered HTTP 503" in caplog.text

    def test_4xx_is_not_retried(
        self,
        webhook: Webhook,
        make_alerter: Callable[..., Alerter],
        sleeps: list[float],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 4xx answer means the request is wrong: one try, then a warning."""
        webhook.answers.append(404)
        alerter = make_alerter()
        alerter.after_run(make_job({"webhook": webhook.url}), result("failed"), None, T0)
        assert alerter.flush()
        assert len(webhook.requests) == 1
        assert sleeps == []
        assert "HTTP 404" in caplog.text

    def test_429_honours_retry_after(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter], sleeps: list[float]
    ) -> None:
        """A 429 is retried after the webhook's Retry-After."""
        webhook.answers.append(429)
        webhook.headers["Retry-After"] = "7"
        alerter = make_alerter()
        alerter.after_run(make_job({"webhook": webhook.url}), result("failed"), None, T0)
        assert alerter.flush()
        assert len(webhook.requests) == 2
        assert sleeps == [7.0]

    def test_dead_webhook_never_raises_nor_leaks_the_url(
        self,
        dead_url: str,
        make_alerter: Callable[..., Alerter],
        sleeps: list[float],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Connection refused: after_run returns, a warning names job and event, not the URL."""
        caplog.set_level(logging.WARNING, logger="akkiosync.alerts")
        alerter = make_alerter(retry_attempts=2)
        job = make_job({"webhook": dead_url})
        alert = alerter.after_run(job, result("failed", 9), None, T0)
        assert alert is not None
        assert alerter.flush()
        assert len(sleeps) == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "job orders: failure alert not sent: ConnectError" in warnings[0].getMessage()
        assert TOKEN not in caplog.text
        assert "/services/" not in caplog.text

    def test_slow_webhook_does_not_block_after_run(
        self, webhook: Webhook, make_alerter: Callable[..., Alerter]
    ) -> None:
        """after_run only queues: it returns while the webhook is still being called."""
        gate = threading.Event()
        calls: list[float] = []

        def blocked_sleep(seconds: float) -> None:
            calls.append(seconds)
            gate.wait(10)

        webhook.answers.append(500)  # the first try fails, and the retry waits on the gate
        alerter = Alerter(global_alerts=None, sleep=blocked_sleep)
        try:
            job = make_job({"webhook": webhook.url})
            assert alerter.after_run(job, result("failed"), None, T0) is not None
            assert alerter.flush(timeout=0.05) is False  # still busy: after_run did not wait
            gate.set()
            assert alerter.flush()
        finally:
            gate.set()
            alerter.close()
        assert len(webhook.requests) == 2

    def test_flush_with_nothing_queued(self, make_alerter: Callable[..., Alerter]) -> None:
        """flush returns True at once when nothing was ever queued."""
        assert make_alerter().flush(timeout=0) is True

    def test_after_close_nothing_is_queued(
        self,
        webhook: Webhook,
        make_alerter: Callable[..., Alerter],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Alerts after close are refused with a warning, and nothing is posted."""
        alerter = make_alerter()
        alerter.close()
        job = make_job({"webhook": webhook.url})
        assert alerter.after_run(job, result("failed"), None, T0) is None
        assert webhook.requests == []
        assert "alerts are shut down" in caplog.text

    def test_close_sends_what_is_queued(self, webhook: Webhook) -> None:
        """close delivers the alerts already queued before it stops."""
        with Alerter(global_alerts=None) as alerter:
            alerter.after_run(make_job({"webhook": webhook.url}), result("failed"), None, T0)
        assert len(webhook.requests) == 1
