"""``akkiosync run``: schedules, live reload of job files, signals, health and alerts.

The main thread watches ``<config>/jobs`` (a look every ``reload_interval`` seconds, or at
once on SIGHUP): an added or edited file is validated and rescheduled, a removed one
unscheduled; an invalid edit is logged and the previous version of that job keeps running. A
file whose job name or target dataset a loaded file already has is invalid (one writer each).
Runs happen in the scheduler's worker threads, each with the job definition it started with.
SIGTERM/SIGINT stop new runs and let each run in flight commit its current batch; a second
signal exits at once (the exactly-once protocol makes that safe).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from akkiosync.alerts import Alerter, previous_status
from akkiosync.config import Job, environment, job_files, load_job_file, shared_target
from akkiosync.errors import AkkioSyncError, ConfigError
from akkiosync.metrics import HealthServer, Metrics
from akkiosync.results import utc_now
from akkiosync.runner import Runner
from akkiosync.scheduler import Scheduler
from akkiosync.state import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """How the daemon behaves (from the settings)."""

    config_dir: Path
    daemon_file: Path
    reload_interval: float = 2.0
    shutdown_timeout: float = 30.0
    workers: int = 4
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    history_days: int = 30
    history_runs: int = 1000


class Daemon:
    """The long-running process: owns the scheduler, the job definitions and the signals."""

    def __init__(
        self,
        options: DaemonOptions,
        store: Store,
        *,
        runner: Runner,
        stop: threading.Event,
        metrics: Metrics,
        alerter: Alerter,
    ) -> None:
        self._options = options
        self._store = store
        self._runner = runner
        self._stop = stop
        self._metrics = metrics
        self._alerter = alerter
        self._scheduler = Scheduler(self._run_job, workers=options.workers)
        self._jobs: dict[str, Job] = {}  # the current valid definition of each job
        self._files: dict[Path, tuple[int, int, str | None]] = {}  # mtime, size, job name
        self._conflicted: set[Path] = set()  # refused for a name or target another file has
        self._reload = threading.Event()
        self._loaded = False
        self._signals = 0
        self._started = utc_now()

    # -- the main loop ---------------------------------------------------------------------

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT; the exit code."""
        self._install_signals()
        server = self._health_server()
        try:
            self._scan()
            self._loaded = True
            self._scheduler.start()
            self._metrics.set_up(True)
            logger.info(
                "daemon started: %d job(s), pid %d", len(self._jobs), os.getpid(),
                extra={"event": "daemon_started", "jobs": len(self._jobs), "pid": os.getpid()},
            )  # fmt: skip
            while not self._stop.is_set():
                self._write_daemon_file()
                if self._reload.wait(self._options.reload_interval):
                    self._reload.clear()
                    if not self._stop.is_set():
                        logger.info("reloading job files (SIGHUP)", extra={"event": "reloading"})
                if not self._stop.is_set():
                    self._scan()
            return self._shut_down()
        finally:
            self._metrics.set_up(False)
            self._alerter.close()
            if server is not None:
                server.close()
            self._options.daemon_file.unlink(missing_ok=True)

    def _shut_down(self) -> int:
        logger.info(
            "shutting down: runs in flight finish their current batch",
            extra={"event": "shutting_down"},
        )
        waiter = threading.Thread(target=self._scheduler.shutdown, kwargs={"wait": True})
        waiter.start()
        waiter.join(self._options.shutdown_timeout)
        self._alerter.flush(timeout=5)
        if waiter.is_alive():
            logger.warning(
                "runs still in flight after %.0fs; exiting anyway (their batches are reconciled "
                "on the next start)",
                self._options.shutdown_timeout,
                extra={"event": "shutdown_timeout", "seconds": self._options.shutdown_timeout},
            )
        logger.info("daemon stopped", extra={"event": "daemon_stopped"})
        return 0

    # -- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def _on_stop_signal(self, signum: int, _: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second signal: exiting now", extra={"event": "second_signal"})
            os._exit(128 + signum)  # nothing to flush: every batch is intent-protected
        self._stop.set()
        self._reload.set()  # wake the main loop

    # -- job files -------------------------------------------------------------------------

    def _scan(self) -> None:
        """Bring the scheduled jobs in line with the job files."""
        try:
            paths = job_files(self._options.config_dir)
        except ConfigError as exc:
            logger.error(  # noqa: TRY400 - a configuration problem, not a crash
                "%s", exc, extra={"event": "config_error", "error": str(exc)}
            )
            paths = []
        seen = set(paths)
        env: dict[str, str] | None = None
        changed = False
        for path in paths:
            stamp = _stamp(path)
            known = self._files.get(path)
            if stamp is None or (known and known[:2] == stamp):
                continue
            env = env if env is not None else environment()
            self._load(path, stamp, env)
            changed = True
        for path in [p for p in self._files if p not in seen]:
            name = self._files.pop(path)[2]
            self._conflicted.discard(path)
            changed = True
            if name is not None and self._owner(name) is None:
                self._drop(name, f"{path} was removed")
        # A file refused for a name or target another file held may fit now that files changed.
        for path in sorted(self._conflicted & seen) if changed else ():
            if (stamp := _stamp(path)) is not None:
                self._load(path, stamp, env if env is not None else environment())
        self._metrics.set_jobs(self._jobs)

    def _load(self, path: Path, stamp: tuple[int, int], env: dict[str, str]) -> None:
        previous = self._files.get(path)
        try:
            job = load_job_file(path, env)
        except ConfigError as exc:
            self._reject(path, stamp, str(exc))
            return
        if (owner := self._owner(job.name, besides=path)) is not None:
            problem = f"{path}: name: {job.name!r} is already used by {owner}"
            self._reject(path, stamp, problem, conflict=True)
            return
        if (owner := self._target_owner(job, besides=path)) is not None:
            # One writer per dataset.
            self._reject(path, stamp, shared_target(path, job, owner), conflict=True)
            return
        self._conflicted.discard(path)
        old_name = previous[2] if previous else None
        self._files[path] = (*stamp, job.name)
        if old_name is not None and old_name != job.name:
            self._drop(old_name, f"{path} now defines {job.name}")
        self._put(job, new=old_name != job.name)

    def _reject(
        self, path: Path, stamp: tuple[int, int], problem: str, *, conflict: bool = False
    ) -> None:
        """Log an invalid edit; the file's previous valid job (if any) stays scheduled.
        ``conflict``: refused only for what another file holds, so tried again on changes."""
        if conflict:
            self._conflicted.add(path)
        else:
            self._conflicted.discard(path)
        previous = self._files.get(path)
        kept = previous[2] if previous else None
        note = f"; job {kept} keeps its previous version" if kept else ""
        for line in problem.splitlines():
            logger.error(
                "invalid job file: %s%s", line, note,
                extra={"event": "job_file_invalid", "path": str(path), "error": line},
            )  # fmt: skip
        self._files[path] = (*stamp, kept)

    def _owner(self, name: str, besides: Path | None = None) -> Path | None:
        return next((p for p, (*_, n) in self._files.items() if n == name and p != besides), None)

    def _target_owner(self, job: Job, besides: Path) -> Path | None:
        """The file of another loaded job that writes ``job``'s dataset."""
        for path, (*_, name) in self._files.items():
            other = self._jobs.get(name) if name is not None and path != besides else None
            if other is not None and other.target.identity == job.target.identity:
                return path
        return None

    def _put(self, job: Job, *, new: bool) -> None:
        old = self._jobs.get(job.name)
        self._jobs[job.name] = job
        run_now = job.run_on_start and new
        if job.schedule is None:
            self._scheduler.remove(job.name)
            if run_now:
                self._scheduler.run_once(job.name)
        elif old is None or old.schedule != job.schedule or run_now:
            self._scheduler.put(job.name, job.schedule, run_now=run_now)
        verb = "loaded" if old is None else "reloaded"
        logger.info(
            "job %s (schedule %s)", verb, job.schedule or "manual",
            extra={"event": f"job_{verb}", "job": job.name},
        )  # fmt: skip

    def _drop(self, name: str, why: str) -> None:
        self._jobs.pop(name, None)
        self._scheduler.remove(name)
        self._metrics.set_lag(name, None)
        logger.info("job removed: %s", why, extra={"event": "job_removed", "job": name})

    # -- one run ---------------------------------------------------------------------------

    def _run_job(self, name: str) -> None:
        """Called in a worker thread by the scheduler."""
        job = self._jobs.get(name)
        if job is None or self._stop.is_set():
            return
        result = self._runner.run(job)
        now = utc_now()
        self._metrics.observe_run(
            result, ended_at=time.time(), counted=self._runner.reports_progress
        )
        if result.run_id is not None:
            previous = previous_status(self._store, name, result.run_id)
            self._alerter.after_run(job, result, previous, now)
            self._store.prune_runs(
                older_than=now - dt.timedelta(days=self._options.history_days),
                keep_per_job=self._options.history_runs,
            )
        if result.ok:  # the runner measured it on its own read (see Runner(measure_lag=True))
            self._metrics.set_lag(name, result.lag)

    # -- what others can see ---------------------------------------------------------------

    def live(self) -> bool:
        """Liveness: the scheduler is running (or starting up)."""
        return not self._loaded or self._scheduler.running

    def ready(self) -> tuple[bool, str]:
        """Readiness: job files loaded and the store reachable."""
        if not self._loaded:
            return False, "job files not loaded yet"
        try:
            self._store.job_states()
        except AkkioSyncError as exc:
            return False, f"checkpoint store unreachable: {exc}"
        return True, "ready"

    def _health_server(self) -> HealthServer | None:
        if self._options.http_port is None:
            return None
        server = HealthServer(
            self._metrics,
            live=self.live,
            ready=self.ready,
            host=self._options.http_host,
            port=self._options.http_port,
        )
        logger.info(
            "health and metrics on port %d (/healthz, /readyz, /metrics)", server.port,
            extra={"event": "http_started", "port": server.port},
        )  # fmt: skip
        return server

    def _write_daemon_file(self) -> None:
        next_runs = self._scheduler.next_runs()
        info = {
            "pid": os.getpid(),
            "started_at": self._started.isoformat(),
            "updated_at": utc_now().isoformat(),
            "jobs": {
                name: {
                    "schedule": str(job.schedule) if job.schedule else None,
                    "next_run": (t.isoformat() if (t := next_runs.get(name)) else None),
                }
                for name, job in self._jobs.items()
            },
        }
        path = self._options.daemon_file
        temporary = path.with_name(path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(info))
            temporary.replace(path)
        except OSError as exc:
            logger.warning(
                "cannot write %s: %s", path, exc.strerror,
                extra={"event": "daemon_file_unwritable", "path": str(path)},
            )  # fmt: skip


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's modification time and size (None once it is gone): what tells an edit."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size)
