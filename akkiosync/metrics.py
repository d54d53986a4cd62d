"""The daemon's Prometheus figures, and the HTTP port that serves them beside its health checks.

Every ``Metrics`` has a registry of its own (never prometheus_client's global one), so tests and
several daemons in one process never share figures. ``HealthServer`` answers ``/healthz``
(liveness), ``/readyz`` (readiness) and ``/metrics`` from a background thread; it logs at DEBUG
only, and a check that raises makes its endpoint answer 503 with the reason, not a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from akkiosync.errors import ConfigError
from akkiosync.progress import Sent
from akkiosync.redact import redact
from akkiosync.results import ResultStatus, RunResult

logger = logging.getLogger(__name__)
RESULTS: tuple[ResultStatus, ...] = ("success", "failed", "skipped")
# runs last from under a second (a caught-up job) to hours (a first full load)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
Answer = tuple[int, dict[str, str]]


class Metrics:
    """The daemon's figures, for /metrics."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        job = ["job"]
        self._runs = Counter(
            "akkiosync_runs_total", "Runs by result.", [*job, "result"], registry=r
        )
        self._rows = Counter("akkiosync_rows_sent_total", "Rows sent to Akkio.", job, registry=r)
        self._batches = Counter("akkiosync_batches_total", "Batches sent.", job, registry=r)
        self._retries = Counter(
            "akkiosync_retries_total", "Retried requests, batches, reconnects.", job, registry=r
        )
        self._last_success = Gauge(
            "akkiosync_last_success_timestamp_seconds",
            "Unix time at which the last successful run ended.", job, registry=r,
        )  # fmt: skip
        self._duration = Histogram(
            "akkiosync_run_duration_seconds", "How long runs took (skipped runs excluded).",
            job, buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self._lag = Gauge(
            "akkiosync_cursor_lag",
            "Source's newest watermark minus the job's cursor (seconds, or units for numbers).",
            job, registry=r,
        )  # fmt: skip
        self._to_go = Gauge(
            "akkiosync_rows_to_go", "Rows past the cursor still to send (an estimate).",
            job, registry=r,
        )  # fmt: skip
        self._jobs = Gauge("akkiosync_jobs", "Jobs scheduled.", registry=r)
        self._up = Gauge("akkiosync_up", "1 while the scheduler runs.", registry=r)
        self._per_job: tuple[Counter | Gauge | Histogram, ...] = (
            self._rows, self._batches, self._retries, self._last_success, self._duration, self._lag,
            self._to_go,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._known: set[str] = set()  # jobs that may have samples, for set_jobs to forget

    def _touch(self, job: str) -> None:
        with self._lock:
            if job in self._known:
                return
            self._known.add(job)
        # zero samples from the start, so that increase() sees a job's first run
        for result in RESULTS:
            self._runs.labels(job, result)
        for counter in (self._rows, self._batches, self._retries):
            counter.labels(job)

    def observe_run(self, result: RunResult, *, ended_at: float, counted: bool = False) -> None:
        """Count one run; ``ended_at`` (unix time) becomes the last success if it succeeded.
        ``counted``: its rows and batches were counted as they were sent (``sent``)."""
        job = result.job
        self._touch(job)
        self._runs.labels(job, result.status).inc()
        if not counted:  # a failed run's delivered rows count too
            self._rows.labels(job).inc(result.rows_sent)
            self._batches.labels(job).inc(result.batches)
        if result.status != "skipped":  # a skipped run did nothing: its 0 s would skew the figure
            self._duration.labels(job).observe(result.seconds)
        if result.status == "success":
            self._last_success.labels(job).set(ended_at)

    def started(self, job: str, to_go: int | None) -> None:
        """A run of ``job`` starts reading, ``to_go`` rows past its cursor (a progress hook)."""
        self._set_to_go(job, to_go)

    def sent(self, batch: Sent) -> None:
        """A batch was committed: the figures move now, not at the run's end."""
        self._touch(batch.job)
        self._rows.labels(batch.job).inc(batch.rows)
        self._batches.labels(batch.job).inc()
        self._set_to_go(batch.job, batch.to_go)
        if batch.lag is not None:
            self._lag.labels(batch.job).set(batch.lag)

    def _set_to_go(self, job: str, to_go: int | None) -> None:
        if to_go is None:
            _remove(self._to_go, job)
        else:
            self._touch(job)
            self._to_go.labels(job).set(to_go)

    def count_retry(self, job: str) -> None:
        """Count one retry (of a request, a batch or a source reconnect) for ``job``."""
        self._touch(job)
        self._retries.labels(job).inc()

    def set_lag(self, job: str, lag: float | None) -> None:
        """Set ``job``'s cursor lag; ``None`` (unknown) removes its sample."""
        if lag is None:
            _remove(self._lag, job)
        else:
            self._touch(job)
            self._lag.labels(job).set(lag)

    def set_jobs(self, names: Iterable[str]) -> None:
        """Set the scheduled jobs; every sample of a job no longer scheduled is removed."""
        jobs = set(names)
        self._jobs.set(len(jobs))
        for job in jobs:
            self._touch(job)
        with self._lock:
            gone, self._known = self._known - jobs, self._known & jobs
        for job in gone:
            for result in RESULTS:
                _remove(self._runs, job, result)
            for metric in self._per_job:
                _remove(metric, job)

    def set_up(self, up: bool) -> None:
        """Set ``akkiosync_up``: 1 while the scheduler runs."""
        self._up.set(1 if up else 0)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    # prometheus_client before 0.22 raises KeyError for a label set that has no sample
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _reason(exc: Exception) -> str:
    return redact(f"{type(exc).__name__}: {exc}")  # httpx and SQLAlchemy errors embed URLs


def _liveness(live: Callable[[], bool]) -> Answer:
    try:
        alive = live()
    except Exception as exc:  # noqa: BLE001 - a check that fails means "down", not a crash
        return 503, {"status": "down", "reason": _reason(exc)}
    return (200, {"status": "ok"}) if alive else (503, {"status": "down"})


def _readiness(ready: Callable[[], tuple[bool, str]]) -> Answer:
    try:
        is_ready, reason = ready()
    except Exception as exc:  # noqa: BLE001 - a check that fails means "not ready", not a crash
        is_ready, reason = False, _reason(exc)
    if is_ready:
        return 200, {"status": "ready"}
    return 503, {"status": "not ready", "reason": redact(str(reason))}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "akkiosync"
    timeout = 30  # a client that stalls mid-request frees its thread eventually

    def do_GET(self) -> None:
        health = self.server.health
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                body, content_type = health.metrics.render()
            except Exception as exc:  # noqa: BLE001 - a broken scrape answers 503, not a crash
                self._json(503, {"status": "error", "reason": _reason(exc)})
            else:
                self._send(200, body, content_type)
        elif path == "/healthz":
            self._json(*_liveness(health.live))
        elif path == "/readyz":
            self._json(*_readiness(health.ready))
        else:
            self._json(404, {"status": "not found"})

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>: every method but GET gets 405 rather than 501
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._json(405, {"status": "method not allowed"}, allow="GET")

    def _json(self, code: int, payload: dict[str, str], allow: str | None = None) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json", allow)

    def _send(self, code: int, body: bytes, content_type: str, allow: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("http %s: %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's open connection must not block shutdown
    allow_reuse_port = False  # a second daemon on our port must fail, not share our scrapes

    def __init__(self, address: tuple[str, int], health: HealthServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.health = health

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; a client that hung up is not worth one
        logger.debug("http %s: request failed", client_address, exc_info=True)


class HealthServer:
    """/healthz (liveness), /readyz (readiness) and /metrics on one port, in a background thread."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        live: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",  # noqa: S104 - a container's port must be reachable
        port: int = 0,
    ) -> None:
        """Listen on ``host:port`` (``port=0``: a free one) and serve until ``close``."""
        self.metrics, self.live, self.ready = metrics, live, ready
        try:
            self._server = _Server((host, port), self)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.port: int = self._server.server_address[1]
        local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - not a bind
        self.url = (
            f"http://[{local}]:{self.port}" if ":" in local else f"http://{local}:{self.port}"
        )
        # a short poll interval makes close() quick: shutdown() waits for the loop to notice
        loop = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=loop, name="akkiosync-http", daemon=True)
        self._thread.start()
        self._closed = False
        logger.debug("http: /healthz, /readyz and /metrics on %s port %d", host, self.port)

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
