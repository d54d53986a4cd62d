"""Tests for akkiosync.metrics: the figures in the exposition text, and the health port."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from akkiosync.errors import ConfigError
from akkiosync.metrics import HealthServer, Metrics
from akkiosync.results import ResultStatus, RunResult

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of ``metrics``' exposition, keyed by name and labels."""
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample's value, or ``None`` when the exposition has no such sample."""
    return samples(metrics).get((name, frozenset(labels.items())))


def names_for(metrics: Metrics, job: str) -> set[str]:
    """The names of the samples labelled with ``job``."""
    return {name for name, labels in samples(metrics) if ("job", job) in labels}


def result(job: str = "orders", status: ResultStatus = "success", **fields: Any) -> RunResult:
    """A run's result, as the runner returns it."""
    return RunResult(job=job, run_id=1, status=status, **fields)


@pytest.fixture
def metrics() -> Metrics:
    """A fresh set of figures."""
    return Metrics()


class TestRuns:
    """observe_run counts runs, rows, batches, durations and the last success."""

    def test_counters_grow_per_run_and_result(self, metrics: Metrics) -> None:
        """Each run adds to its result's counter, and its rows and batches to the job's."""
        metrics.observe_run(result(rows_sent=10, batches=2), ended_at=100.0)
        metrics.observe_run(result(rows_sent=5, batches=1), ended_at=200.0)
        metrics.observe_run(result(status="failed", rows_sent=3, batches=1), ended_at=300.0)
        metrics.observe_run(result(status="skipped"), ended_at=400.0)

        runs = "akkiosync_runs_total"
        assert value(metrics, runs, job="orders", result="success") == 2
        assert value(metrics, runs, job="orders", result="failed") == 1
        assert value(metrics, runs, job="orders", result="skipped") == 1
        assert value(metrics, "akkiosync_rows_sent_total", job="orders") == 18
        assert value(metrics, "akkiosync_batches_total", job="orders") == 4

    def test_a_jobs_results_start_at_zero(self, metrics: Metrics) -> None:
        """A job's first run shows every result's counter, the others at 0, for increase()."""
        metrics.observe_run(result(), ended_at=1.0)

        assert value(metrics, "akkiosync_runs_total", job="orders", result="failed") == 0
        assert value(metrics, "akkiosync_runs_total", job="orders", result="skipped") == 0
        assert value(metrics, "akkiosync_retries_total", job="orders") == 0

    def test_jobs_are_counted_apart(self, metrics: Metrics) -> None:
        """Two jobs' figures carry their own labels."""
        metrics.observe_run(result("a", rows_sent=1), ended_at=1.0)
        metrics.observe_run(result("b", rows_sent=7), ended_at=1.0)

        assert value(metrics, "akkiosync_rows_sent_total", job="a") == 1
        assert value(metrics, "akkiosync_rows_sent_total", job="b") == 7

    def test_last_success_moves_only_on_success(self, metrics: Metrics) -> None:
        """A failed or skipped run leaves the last success's time where it was."""
        last = "akkiosync_last_success_timestamp_seconds"
        metrics.observe_run(result(status="failed"), ended_at=50.0)
        assert value(metrics, last, job="orders") is None

        metrics.observe_run(result(), ended_at=100.0)
        metrics.observe_run(result(status="failed"), ended_at=200.0)
        metrics.observe_run(result(status="skipped"), ended_at=300.0)
        assert value(metrics, last, job="orders") == 100.0

        metrics.observe_run(result(), ended_at=400.0)
        assert value(metrics, last, job="orders") == 400.0

    def test_duration_histogram_counts_runs_that_ran(self, metrics: Metrics) -> None:
        """Successful and failed runs are observed with their seconds; skipped runs are not."""
        metrics.observe_run(result(seconds=2.0), ended_at=1.0)
        metrics.observe_run(result(status="failed", seconds=0.25), ended_at=2.0)
        metrics.observe_run(result(status="skipped"), ended_at=3.0)

        duration = "akkiosync_run_duration_seconds"
        assert value(metrics, f"{duration}_count", job="orders") == 2
        assert value(metrics, f"{duration}_sum", job="orders") == 2.25
        assert value(metrics, f"{duration}_bucket", job="orders", le="0.5") == 1
        assert value(metrics, f"{duration}_bucket", job="orders", le="+Inf") == 2

    def test_retries_are_counted(self, metrics: Metrics) -> None:
        """count_retry adds one to the job's retries."""
        metrics.count_retry("orders")
        metrics.count_retry("orders")

        assert value(metrics, "akkiosync_retries_total", job="orders") == 2


class TestGauges:
    """Lag, scheduled jobs and up."""

    def test_set_lag_and_remove_it(self, metrics: Metrics) -> None:
        """A lag is shown until it is set to None, which removes the sample."""
        metrics.set_lag("orders", 42.5)
        assert value(metrics, "akkiosync_cursor_lag", job="orders") == 42.5

        metrics.set_lag("orders", 3)
        assert value(metrics, "akkiosync_cursor_lag", job="orders") == 3

        metrics.set_lag("orders", None)
        assert value(metrics, "akkiosync_cursor_lag", job="orders") is None

    def test_removing_an_unknown_lag_is_harmless(self, metrics: Metrics) -> None:
        """set_lag(job, None) for a job never seen does nothing."""
        metrics.set_lag("never", None)

        assert names_for(metrics, "never") == set()

    def test_set_jobs_counts_them(self, metrics: Metrics) -> None:
        """akkiosync_jobs is the number of distinct scheduled jobs."""
        metrics.set_jobs(["a", "b", "a"])
        assert value(metrics, "akkiosync_jobs") == 2

        metrics.set_jobs([])
        assert value(metrics, "akkiosync_jobs") == 0

    def test_set_jobs_forgets_departed_jobs(self, metrics: Metrics) -> None:
        """Every sample of a job no longer scheduled goes; the remaining jobs' stay."""
        metrics.set_jobs(["a", "b"])
        for job in ("a", "b"):
            metrics.observe_run(result(job, rows_sent=1, seconds=1.0), ended_at=1.0)
            metrics.count_retry(job)
            metrics.set_lag(job, 5.0)

        metrics.set_jobs(["b"])

        assert names_for(metrics, "a") == set()
        assert "akkiosync_cursor_lag" in names_for(metrics, "b")
        assert value(metrics, "akkiosync_runs_total", job="b", result="success") == 1
        assert value(metrics, "akkiosync_retries_total", job="b") == 1

    def test_a_returning_job_starts_from_zero(self, metrics: Metrics) -> None:
        """A job removed and scheduled again counts afresh, with zero samples in place."""
        metrics.set_jobs(["a"])
        metrics.observe_run(result("a", rows_sent=9), ended_at=1.0)
        metrics.set_jobs([])

        metrics.set_jobs(["a"])

        assert value(metrics, "akkiosync_rows_sent_total", job="a") == 0
        assert value(metrics, "akkiosync_runs_total", job="a", result="success") == 0

    def test_set_up(self, metrics: Metrics) -> None:
        """akkiosync_up is 1 while the scheduler runs, 0 otherwise."""
        assert value(metrics, "akkiosync_up") == 0
        metrics.set_up(True)
        assert value(metrics, "akkiosync_up") == 1
        metrics.set_up(False)
        assert value(metrics, "akkiosync_up") == 0


class TestRegistry:
    """Each Metrics has its own registry."""

    def test_instances_do_not_share_figures(self) -> None:
        """Figures recorded in one instance never appear in another."""
        first, second = Metrics(), Metrics()
        first.observe_run(result(rows_sent=4), ended_at=1.0)
        first.set_up(True)

        assert value(first, "akkiosync_rows_sent_total", job="orders") == 4
        assert names_for(second, "orders") == set()
        assert value(second, "akkiosync_up") == 0

    def test_render_gives_the_text_format(self, metrics: Metrics) -> None:
        """render returns the exposition and Prometheus' content type."""
        body, content_type = metrics.render()

        assert content_type == CONTENT_TYPE_LATEST
        assert b"# TYPE akkiosync_runs_total counter" in body


class _Checks:
    """Liveness and readiness that a test flips."""

    def __init__(self) -> None:
        self.live = True
        self.ready: tuple[bool, str] = (True, "")

    def is_live(self) -> bool:
        return self.live

    def is_ready(self) -> tuple[bool, str]:
        return self.ready


def _raise() -> Any:
    raise RuntimeError("store at postgresql://sync:hunter2@db/state is unreachable")


@pytest.fixture
def checks() -> _Checks:
    """Health checks whose answers a test sets."""
    return _Checks()


@pytest.fixture
def serve(metrics: Metrics, checks: _Checks) -> Iterator[Callable[..., httpx.Client]]:
    """Start a HealthServer on loopback and return an httpx client on its URL."""
    opened: list[tuple[HealthServer, httpx.Client]] = []

    def start(**overrides: Any) -> httpx.Client:
        served = overrides.pop("metrics", metrics)
        options: dict[str, Any] = {"live": checks.is_live, "ready": checks.is_ready}
        server = HealthServer(served, **{**options, "host": "127.0.0.1", **overrides})
        http = httpx.Client(base_url=server.url, trust_env=False, timeout=10)
        opened.append((server, http))
        return http

    yield start
    for server, http in opened:
        http.close()
        server.close()


class TestHealthServer:
    """/healthz, /readyz and /metrics over a real loopback port."""

    def test_healthz_follows_live(
        self, serve: Callable[..., httpx.Client], checks: _Checks
    ) -> None:
        """/healthz is 200 while live() is True and 503 once it turns False."""
        http = serve()
        ok = http.get("/healthz")
        assert (ok.status_code, ok.json()) == (200, {"status": "ok"})

        checks.live = False
        down = http.get("/healthz")
        assert (down.status_code, down.json()) == (503, {"status": "down"})

    def test_readyz_gives_the_reason(
        self, serve: Callable[..., httpx.Client], checks: _Checks
    ) -> None:
        """/readyz is 200 when ready, else 503 with ready()'s reason."""
        http = serve()
        ready = http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

        checks.ready = (False, "scheduler not started")
        not_ready = http.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not ready", "reason": "scheduler not started"}

    def test_metrics_serves_the_exposition(
        self, serve: Callable[..., httpx.Client], metrics: Metrics
    ) -> None:
        """/metrics answers the registry's text with Prometheus' content type."""
        metrics.observe_run(result(rows_sent=12), ended_at=1.0)
        http = serve()

        response = http.get("/metrics")

        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        [rows] = families["akkiosync_rows_sent"].samples
        assert (rows.labels, rows.value) == ({"job": "orders"}, 12)

    def test_unknown_path_is_404(self, serve: Callable[..., httpx.Client]) -> None:
        """A path the server does not know answers 404."""
        response = serve().get("/nope")

        assert (response.status_code, response.json()) == (404, {"status": "not found"})

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PURGE"])
    def test_other_methods_are_405(self, serve: Callable[..., httpx.Client], method: str) -> None:
        """Any method but GET answers 405 and says GET is allowed."""
        response = serve().request(method, "/healthz")

        assert response.status_code == 405
        assert response.headers["allow"] == "GET"

    def test_head_is_405_without_a_body(self, serve: Callable[..., httpx.Client]) -> None:
        """HEAD answers 405 with no body."""
        response = serve().head("/metrics")

        assert (response.status_code, response.content) == (405, b"")

    def test_raising_checks_answer_503_with_a_redacted_reason(
        self, serve: Callable[..., httpx.Client]
    ) -> None:
        """A raising live() or ready() makes its endpoint 503 with the reason, secrets masked."""
        http = serve(live=_raise, ready=_raise)

        for path, status in (("/healthz", "down"), ("/readyz", "not ready")):
            response = http.get(path)
            assert response.status_code == 503
            assert response.json()["status"] == status
            assert response.json()["reason"].startswith("RuntimeError: store at postgresql://")
            assert "hunter2" not in response.text
        assert http.get("/metrics").status_code == 200

    def test_a_failing_scrape_answers_503(self, serve: Callable[..., httpx.Client]) -> None:
        """/metrics answers 503 when the figures cannot be rendered."""

        class Broken(Metrics):
            def render(self) -> tuple[bytes, str]:
                raise RuntimeError("the registry is gone")

        response = serve(metrics=Broken()).get("/metrics")

        assert response.status_code == 503
        assert response.json() == {
            "status": "error",
            "reason": "RuntimeError: the registry is gone",
        }

    def test_requests_are_logged_at_debug_only(
        self,
        serve: Callable[..., httpx.Client],
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """Requests, even failing ones, log at DEBUG and print nothing to stderr."""
        caplog.set_level(logging.DEBUG, logger="akkiosync.metrics")
        http = serve(live=_raise)
        for path in ("/healthz", "/readyz", "/metrics", "/nope"):
            http.get(path)
        http.post("/metrics")

        requests = [r for r in caplog.records if r.getMessage().startswith("http 127.0.0.1")]
        assert len(requests) == 5
        assert {r.levelno for r in requests} == {logging.DEBUG}
        assert capfd.readouterr().err == ""


def _always(metrics: Metrics, **options: Any) -> HealthServer:
    """A HealthServer that is always live and ready."""
    return HealthServer(metrics, live=lambda: True, ready=lambda: (True, ""), **options)


class TestLifecycle:
    """Ports, URLs and closing."""

    def test_default_host_listens_everywhere_with_a_loopback_url(self, metrics: Metrics) -> None:
        """On 0.0.0.0 the server picks a free port and its URL points at 127.0.0.1."""
        with _always(metrics) as server, httpx.Client(trust_env=False) as http:
            assert server.port > 0
            assert server.url == f"http://127.0.0.1:{server.port}"
            assert http.get(f"{server.url}/healthz").status_code == 200

    def test_a_busy_port_is_a_config_error(self, metrics: Metrics) -> None:
        """Listening on a port already taken raises ConfigError naming it."""
        with _always(metrics, host="127.0.0.1") as first:
            port = first.port
            with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
                _always(metrics, host="127.0.0.1", port=port)

    def test_close_releases_the_port_and_is_idempotent(self, metrics: Metrics) -> None:
        """After close the port refuses connections; closing twice is harmless."""
        server = _always(metrics, host="127.0.0.1")
        server.close()
        server.close()

        with httpx.Client(trust_env=False) as http, pytest.raises(httpx.ConnectError):
            http.get(f"{server.url}/healthz")
