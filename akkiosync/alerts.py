"""Webhook alerts when a job starts failing and when it recovers, not on every failed run.

``alert_for`` decides from this run and the job's previous finished run (``previous_status``
reads it from the store); ``Alerter`` posts the alert as JSON with a Slack-compatible ``text``
field, from a background thread, so a slow or dead webhook never delays syncing. Webhook URLs
carry their token in the path: they never appear in a log line or an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from akkiosync.config import AlertsSpec, Job
from akkiosync.redact import MASK, redact
from akkiosync.results import RunResult
from akkiosync.state import RunStatus, Store

logger = logging.getLogger(__name__)

AlertEvent = Literal["failure", "recovery"]
TEXT_ERROR_CHARS = 300  # the error's share of the one-line text
HISTORY_LOOKUP = 20  # runs read to find the previous finished one
_BACKOFF_BASE = 0.5  # seconds before the second try; doubles per try
_BACKOFF_CAP = 5.0
_RETRY_AFTER_CAP = 30.0  # never wait longer than this for a webhook's Retry-After


@dataclass(frozen=True, slots=True)
class Alert:
    """A change of a job's health worth telling someone about."""

    job: str
    event: AlertEvent
    run_id: int | None
    error: str | None
    at: datetime  # aware, UTC

    @property
    def text(self) -> str:
        """One readable line, escaped for Slack (which reads ``<...>`` as a link)."""
        run = "" if self.run_id is None else f" (run {self.run_id})"
        if self.event == "recovery":
            line = f"akkiosync: job {self.job} recovered{run}"
        else:
            error = _first_line(self.error) if self.error else ""
            line = f"akkiosync: job {self.job} is failing{': ' + error if error else ''}{run}"
        return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def payload(self) -> dict[str, Any]:
        """The JSON body posted to the webhook."""
        return {
            "text": self.text,
            "job": self.job,
            "event": self.event,
            "run_id": self.run_id,
            "error": self.error,
            "at": self.at.isoformat(),
        }


def alert_for(result: RunResult, previous: RunStatus | None, *, now: datetime) -> Alert | None:
    """The alert this run calls for, given the status of the job's previous finished run.

    ``failure`` when this run failed and the previous one did not (or there was none);
    ``recovery`` when this run succeeded and the previous one failed; otherwise ``None``.
    Skipped runs (another process held the job) never alert.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if result.status == "failed" and previous != "failed":
        event: AlertEvent = "failure"
    elif result.status == "success" and previous == "failed":
        event = "recovery"
    else:
        return None
    error = None if result.error is None or event == "recovery" else redact(result.error)
    return Alert(result.job, event, result.run_id, error, now.astimezone(UTC))


def previous_status(store: Store, job: str, run_id: int | None) -> RunStatus | None:
    """The status of ``job``'s newest finished run older than ``run_id`` (any run if ``None``)."""
    for run in store.runs(job, limit=HISTORY_LOOKUP):  # newest first
        if run_id is not None and run.id >= run_id:
            continue
        if run.status != "running":  # a run still going, or killed mid-way, has no verdict
            return run.status
    return None


@dataclass(frozen=True, slots=True)
class _Outgoing:
    alert: Alert
    webhook: str


class Alerter:
    """Posts alerts to the job's webhook (or the global one) from a background thread.

    Delivery is best effort: transport errors, 429 and 5xx answers are retried a few times,
    then the alert is dropped with a warning. Nothing here ever raises into the caller.
    """

    def __init__(
        self,
        *,
        global_alerts: AlertsSpec | None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        retry_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``retry_attempts`` counts every try of one alert, the first included (at least 1)."""
        if retry_attempts < 1:
            raise ValueError(f"retry_attempts must be at least 1, not {retry_attempts}")
        self._global = global_alerts
        self._timeout = timeout
        self._attempts = retry_attempts
        self._sleep = sleep
        self._client = httpx.Client(
            transport=transport, timeout=timeout, headers={"User-Agent": "akkiosync-alerts"}
        )
        self._changed = threading.Condition()
        self._queue: deque[_Outgoing] = deque()
        self._unsent = 0  # queued or being sent
        self._closed = False
        self._worker: threading.Thread | None = None

    def after_run(
        self, job: Job, result: RunResult, previous: RunStatus | None, now: datetime
    ) -> Alert | None:
        """Queue the alert this run calls for, if the job's (or the global) spec wants it."""
        spec = job.alerts or self._global
        if spec is None:
            return None
        alert = alert_for(result, previous, now=now)
        if alert is None or alert.event not in spec.on:
            return None
        with self._changed:
            if self._closed:
                logger.warning("job %s: %s alert not sent: alerts are shut down", *_who(alert))
                return None
            self._queue.append(_Outgoing(alert, spec.webhook))
            self._unsent += 1
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="akkiosync-alerts", daemon=True
                )
                self._worker.start()
            self._changed.notify_all()
        return alert

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert is sent (or given up); ``True`` if none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._unsent == 0, timeout)

    def close(self) -> None:
        """Send what is queued (waiting at most the request timeout), then stop."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(self._timeout)
        with self._changed:
            dropped = list(self._queue)
            self._queue.clear()
            self._unsent -= len(dropped)
            self._changed.notify_all()
        for item in dropped:
            logger.warning("job %s: %s alert dropped at shutdown", *_who(item.alert))
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue) or self._closed)
                if not self._queue:
                    return
                item = self._queue.popleft()
            try:
                self._deliver(item)
            except Exception as exc:  # noqa: BLE001 - an alert must never kill its thread
                _warn(item, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                with self._changed:
                    self._unsent -= 1
                    self._changed.notify_all()

    def _deliver(self, item: _Outgoing) -> None:
        body = item.alert.payload()
        for attempt in range(1, self._attempts + 1):
            retry_after: float | None = None
            try:
                response = self._client.post(item.webhook, json=body)
            except httpx.TransportError as exc:
                # The class name and message only: the exception holds the request and its URL.
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    logger.info("job %s: %s alert sent", *_who(item.alert))
                    return
                problem = f"webhook answered HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # the request itself is wrong: trying again cannot help
                retry_after = _retry_after(response)
            if attempt < self._attempts:
                backoff = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** (attempt - 1))
                self._sleep(max(backoff, retry_after or 0.0))
        _warn(item, f"{problem} (after {attempt} tries)")


def _warn(item: _Outgoing, problem: str) -> None:
    cleaned = redact(problem).replace(item.webhook, MASK)
    logger.warning("job %s: %s alert not sent: %s", *_who(item.alert), cleaned)


def _who(alert: Alert) -> tuple[str, str]:
    return alert.job, alert.event


def _first_line(error: str) -> str:
    lines = error.strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > TEXT_ERROR_CHARS:
        line = line[: TEXT_ERROR_CHARS - 1].rstrip() + "…"
    return line


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:  # absent, or an HTTP date: the backoff is enough
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)
