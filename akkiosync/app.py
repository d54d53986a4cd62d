"""Building the parts from the settings: the store, the Akkio client, the runner, the daemon.

The commands ask for what they need; nothing here reads the environment itself (``config``
does) or configures logging (``cli`` does).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
import httpx

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job, Settings, load_settings
from akkiosync.delivery import ReconcilePolicy
from akkiosync.errors import ConfigError, JobBusyError, JobNotFoundError, StateError
from akkiosync.jobset import JobSet, load_job_set
from akkiosync.lock import JobLock
from akkiosync.logcontext import current_job
from akkiosync.pacing import RetryPolicy, limiter_for
from akkiosync.progress import Hooks, ProgressHook, ProgressLog
from akkiosync.redact import redact
from akkiosync.runner import Runner
from akkiosync.state import Store

if TYPE_CHECKING:  # the daemon's parts are imported by ``daemon`` alone: see there
    from akkiosync.metrics import Metrics


class App:
    """What the commands share: settings and jobs, loaded on first use."""

    def __init__(self, config_dir: Path | None, warn: Callable[[str], None] | None = None) -> None:
        self._config_dir = config_dir
        self._settings: Settings | None = None
        self._job_set: JobSet | None = None
        self._warn = warn or _warn_on_stderr

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self._config_dir)
        return self._settings

    def job_set(self) -> JobSet:
        """The valid jobs and the invalid files, loaded once; ``ConfigError`` if there are no
        job files at all."""
        if self._job_set is None:
            config = self.settings.akkiosync_config
            loaded = load_job_set(config)
            if not loaded.jobs and not loaded.invalid:
                raise ConfigError(f"{config / 'jobs'}: no job files (*.yaml)")
            self._job_set = loaded
        return self._job_set

    def jobs(self, names: tuple[str, ...] = (), *, strict: bool = False) -> list[Job]:
        """The jobs named (all valid ones if none are). Invalid files are reported through
        ``warn`` and skipped, unless ``strict`` or a named job is one of theirs (then
        ``ConfigError``, exit 2); with no name and no valid job, ``ConfigError`` too."""
        loaded = self.job_set()
        if loaded.invalid and (strict or not (loaded.jobs or names)):
            raise ConfigError("\n".join(loaded.problems()))
        for bad in loaded.invalid:
            if not bad.names & set(names):  # a named job's file is reported as the error
                for line in bad.problem.splitlines():
                    self._warn(line)
        return loaded.select(names) if names else list(loaded.jobs)

    def known_job(self, name: str, store: Store, *, warn: bool = False) -> bool:
        """Whether a job file defines job ``name`` (valid or not: True), or only the store
        knows it (False: its file was removed); ``JobNotFoundError`` (exit 2, naming the
        known jobs) if neither does. ``warn``: report invalid job files as ``jobs`` does."""
        try:
            loaded: JobSet | None = self.job_set()
        except ConfigError:  # no job files at all: the store alone tells what is known
            loaded = None
        if loaded is not None and warn:
            for line in loaded.problems():
                self._warn(line)
        if loaded is not None and (
            name in loaded.names or any(name in bad.names for bad in loaded.invalid)
        ):
            return True
        stored = [state.job for state in store.job_states()]
        if name in stored or store.runs(name, 1):
            return False
        empty = JobSet((), ())
        raise JobNotFoundError((loaded or empty).not_found([name], also=stored))

    def client(self, metrics: Metrics | None = None) -> AkkioClient:
        """The Akkio client; its retries are counted in ``metrics`` when given."""
        settings = self.settings
        key = settings.api_key()
        return AkkioClient(
            key,
            settings.akkio_base_url,
            timeout=httpx.Timeout(settings.akkio_timeout, connect=settings.akkio_connect_timeout),
            retry=self.retry,
            limiter=limiter_for(key, settings.akkio_rate_limit),
            on_retry=_retry_counter(metrics),
        )

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.settings.akkio_max_attempts)

    def runner(
        self,
        store: Store,
        client: AkkioClient,
        lock_wait: float = 0.0,
        *,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        progress: ProgressHook | None = None,
    ) -> Runner:
        """A runner with the settings' retry, reconciliation and lock options; ``metrics``
        and ``progress`` hear of each committed batch."""
        settings = self.settings
        hooks = [h for h in (metrics, progress) if h is not None]
        return Runner(
            store,
            client,
            locks=settings.locks_dir,
            lock_wait=lock_wait,
            retry=self.retry,
            reconcile=ReconcilePolicy(
                grace=settings.landing_grace, wait=settings.akkiosync_reconcile_wait
            ),
            stop=stop,
            on_retry=_retry_counter(metrics),
            measure_lag=True,  # the run's end line and status carry it; one indexed MAX()
            progress=Hooks(hooks) if hooks else None,
            count_limit=settings.akkiosync_progress_count_limit,
        )

    def progress_log(self) -> ProgressLog:
        """A progress log line every ``AKKIOSYNC_PROGRESS_INTERVAL`` seconds of a run."""
        return ProgressLog(self.settings.akkiosync_progress_interval)

    def daemon(self) -> int:
        """Run the daemon until it is told to stop; its exit code."""
        # Only `run` needs the scheduler, metrics and alerts: every other command (a sync
        # timed by cron, `status`) starts without importing them, 30 ms sooner.
        from akkiosync.alerts import Alerter  # noqa: PLC0415 - see above
        from akkiosync.daemon import Daemon, DaemonOptions  # noqa: PLC0415 - see above
        from akkiosync.metrics import Metrics  # noqa: PLC0415 - see above

        settings = self.settings
        stop = threading.Event()
        metrics = Metrics()
        options = DaemonOptions(
            config_dir=settings.akkiosync_config,
            daemon_file=settings.daemon_file,
            reload_interval=settings.akkiosync_reload_interval,
            shutdown_timeout=settings.akkiosync_shutdown_timeout,
            workers=settings.akkiosync_workers,
            http_host=settings.akkiosync_http_host,
            http_port=settings.akkiosync_http_port,
            history_days=settings.akkiosync_history_days,
            history_runs=settings.akkiosync_history_runs,
        )
        alerter = Alerter(global_alerts=settings.global_alerts())
        with self.store() as store, self.client(metrics) as client:
            runner = self.runner(
                store, client, stop=stop, metrics=metrics, progress=self.progress_log()
            )
            daemon = Daemon(
                options, store, runner=runner, stop=stop, metrics=metrics, alerter=alerter
            )
            return daemon.run_forever()

    @contextmanager
    def store(self) -> Iterator[Store]:
        path = self.settings.akkiosync_state
        existed = path.exists()
        try:
            store = Store.open(path)
        except StateError as exc:
            if existed:  # a store that is there but unusable (corrupt, newer): not the setting
                raise
            raise ConfigError(
                f"{exc}: the checkpoint store cannot be created there; set AKKIOSYNC_STATE to "
                "a file in a writable directory (a volume, in a container)"
            ) from None
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def job_lock(
        self,
        name: str,
        wait: float = 0.0,
        *,
        undone: str = "changed",
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """Hold job ``name``'s lock, the one its runs take, while a command changes its state.

        If another process holds it, ``on_wait(pid)`` is called and the lock waited for up to
        ``wait`` seconds; then ``JobBusyError`` (saying "nothing was ``undone``")."""
        lock = JobLock(self.settings.locks_dir, name)
        if not lock.acquire(wait, on_wait=on_wait):
            raise JobBusyError(name, lock.holder(), undone)
        with lock:
            yield


def _warn_on_stderr(line: str) -> None:
    print(f"warning: {redact(line)}", file=sys.stderr)


# What each command module uses to receive the App the ``cli`` group made.
pass_app = click.make_pass_decorator(App)


def _retry_counter(metrics: Metrics | None) -> Callable[[], None] | None:
    """A callback counting a retry for the job the calling thread works on."""
    if metrics is None:
        return None
    return lambda: metrics.count_retry(current_job() or "-")
