"""The ``akkiosync`` command line: commands, logging set-up and exit codes.

Exit codes: 0 success, 1 a job failed, 2 bad configuration or usage (for ``sync`` of every job:
an invalid job file, once the valid jobs ran without failing).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from akkiosync import emulator as emulator_module
from akkiosync.app import App, pass_app
from akkiosync.checks import list_command, preview_command, validate
from akkiosync.config import Settings
from akkiosync.demo import run_demo
from akkiosync.emulator import FAULT_KINDS, FaultPlan
from akkiosync.errors import AkkioSyncError, ConfigError
from akkiosync.logcontext import ContextFilter
from akkiosync.logformat import JsonFormatter, TextFormatter
from akkiosync.operate import accept, reset
from akkiosync.progress import ProgressDisplay, ProgressHook
from akkiosync.redact import RedactingFilter, redact
from akkiosync.report import (
    POLL_INTERVAL,
    daemon_info,
    follow_runs,
    job_statuses,
    parse_since,
    result_line,
    run_json,
    run_line,
    status_lines,
)
from akkiosync.scaffold import init
from akkiosync.state import Store


class _Group(click.Group):
    """Turns an ``AkkioSyncError`` into ``error:`` lines on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AkkioSyncError as exc:
            for line in redact(str(exc)).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(exc.exit_code)


def configure_logging(level: str, fmt: str = "auto") -> None:
    """One line per event on stderr: JSON, or text on a terminal (``auto``); every line
    redacted and marked with its job and run. Library warnings (``warnings``, such as
    SQLAlchemy's "Did not recognize type") are log lines in the same format."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; GET URLs carry the API key (redacted anyway).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Off, then on: whoever set ``warnings.showwarning`` since (pytest, catch_warnings) put
    # their own back, and logging's switch would otherwise believe it still holds.
    logging.captureWarnings(False)
    logging.captureWarnings(True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Configuration directory (default: $AKKIOSYNC_CONFIG or ./config).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Default: $AKKIOSYNC_LOG_LEVEL or INFO.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    help="Default: $AKKIOSYNC_LOG_FORMAT or auto (text on a terminal, else JSON).",
)
@click.version_option(package_name="akkiosync")
@click.pass_context
def cli(
    ctx: click.Context, config_dir: Path | None, log_level: str | None, log_format: str | None
) -> None:
    """Keep Akkio datasets fed from SQL databases, exactly once."""
    app = App(config_dir)
    try:
        settings: Settings | None = app.settings
    except ConfigError:
        settings = None  # reported by the command that needs the settings
    configure_logging(
        log_level or (settings.akkiosync_log_level if settings else "INFO"),
        log_format or (settings.akkiosync_log_format if settings else "auto"),
    )
    ctx.obj = app


@cli.command()
@pass_app
def run(app: App) -> None:
    """Run the daemon: every job on its schedule, job files reloaded as they change.

    SIGHUP reloads now; SIGTERM/SIGINT stop after the batches in flight (a second one at once).
    """
    sys.exit(app.daemon())


@cli.command()
@click.argument("names", nargs=-1)
@click.option(
    "--wait",
    default=0.0,
    type=click.FloatRange(0),
    help="Seconds to wait for a job that another process is running (default: skip it).",
)
@click.option(
    "--new-dataset",
    is_flag=True,
    help="Let the named jobs create their dataset even if one of that name exists.",
)
@pass_app
def sync(app: App, names: tuple[str, ...], wait: float, *, new_dataset: bool) -> None:
    """Run jobs now, once each, to the end of their sources (all jobs if none are named).

    An invalid job file is reported (warning: lines) and skipped: the other jobs run. Exit 1 if
    a job failed; else 2 if, with no job named, a job file is invalid; else 0."""
    if new_dataset and not names:
        raise click.UsageError("--new-dataset needs the names of the jobs it is for")
    jobs = app.jobs(names)
    with ExitStack() as stack:
        store, client = stack.enter_context(app.store()), stack.enter_context(app.client())
        runner = app.runner(store, client, lock_wait=wait, progress=_progress(app, stack))
        results = [runner.run(job, new_dataset=new_dataset) for job in jobs]
    for result in results:
        click.echo(result_line(result), err=not result.ok)
    if any(not r.ok for r in results):
        sys.exit(1)
    if app.job_set().invalid and not names:  # all that could run did: the files still need a fix
        sys.exit(2)


def _progress(app: App, stack: ExitStack) -> ProgressHook | None:
    """A live display on a terminal, else a progress log line every interval; none when
    ``AKKIOSYNC_PROGRESS_INTERVAL`` is 0."""
    if app.settings.akkiosync_progress_interval <= 0:
        return None
    if sys.stderr.isatty():
        return stack.enter_context(ProgressDisplay().shown())
    return app.progress_log()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
@click.option("--no-lag", is_flag=True, help="Do not connect to the sources to measure lag.")
@pass_app
def status(app: App, *, as_json: bool, no_lag: bool) -> None:
    """Per job: schedule, next and last run, dataset, rows sent, cursor, and its lag: how far
    the cursor is behind the source's newest watermark (? if the source cannot be read)."""
    try:
        jobs = app.jobs()
    except ConfigError as exc:  # the store still tells what happened; say why jobs are missing
        for line in redact(str(exc)).splitlines():
            click.echo(f"warning: {line}", err=True)
        jobs = []
    daemon = daemon_info(app.settings.daemon_file)
    with ExitStack() as stack:
        if app.settings.akkiosync_state.exists():
            store = stack.enter_context(app.store())
        else:  # nothing ran yet: every job shows as never run, and no store is left behind
            empty = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "empty.db"
            store = stack.enter_context(Store.open(empty))
        statuses = job_statuses(store, jobs, daemon=daemon, with_lag=not no_lag)
    # A terminal's width (or COLUMNS); piped output keeps one line per job, for grep.
    sized = sys.stdout.isatty() or "COLUMNS" in os.environ
    width = shutil.get_terminal_size().columns if sized else None
    for line in status_lines(
        statuses, daemon=daemon, with_lag=not no_lag, as_json=as_json, width=width
    ):
        click.echo(line)


@cli.command()
@click.argument("name", required=False)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only runs started since WHEN: a duration ago (30m, 1h, 2d) or an ISO date or time "
    "(UTC unless it has an offset).",
)
@click.option("--failed", is_flag=True, help="Only failed runs.")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Oldest first, then keep showing runs as they start and end, until Ctrl-C.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--poll-interval", default=POLL_INTERVAL, type=click.FloatRange(0), hidden=True)
@click.option("--polls", type=click.IntRange(0), hidden=True)  # tests: stop after N looks
@pass_app
def logs(
    app: App,
    name: str | None,
    since: str | None,
    *,
    failed: bool,
    follow: bool,
    as_json: bool,
    limit: int,
    poll_interval: float,
    polls: int | None,
) -> None:
    """The run history, newest first (of one job, or all)."""
    try:
        start = None if since is None else parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    show = run_json if as_json else run_line
    with app.store() as store:
        if name is not None:
            app.known_job(name, store, warn=True)
        if not follow:
            records = store.runs(name, limit, since=start, failed=failed)
            if not records and not as_json:
                click.echo("no matching runs" if start or failed else "no runs yet")
            for record in records:
                click.echo(show(record))
            return
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            for record in follow_runs(
                store,
                name,
                since=start,
                failed=failed,
                limit=limit,
                stop=stop,
                interval=poll_interval,
                polls=polls,
            ):
                click.echo(show(record))
        except KeyboardInterrupt:  # Ctrl-C is how following ends: exit 0
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    envvar="AKKIO_EMULATOR_API_KEY",
    default=emulator_module.DEFAULT_API_KEY,
    show_default=True,
    show_envvar=True,
    help="The key clients must send. Prefer the variable: a command line is visible to "
    "every local user (ps).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Persist to FILE, an emulator journal (a new or empty file, or one it wrote).",
)
@click.option(
    "--max-body",
    default=emulator_module.DEFAULT_MAX_BODY,
    show_default=True,
    type=click.IntRange(1),
    help="Refuse a request body over this many bytes (413), unread.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=RATE",
    help=f"Inject a fault into that share of requests; KIND: {', '.join(FAULT_KINDS)}.",
)
@click.option("--fault-script", metavar="KIND,KIND,...", help="Outcomes (or 'ok') in order.")
@click.option("--fault-seed", type=int, help="Seed for reproducible fault draws.")
@click.option(
    "--fault-only",
    type=click.Choice(["all", "add"]),
    default="all",
    show_default=True,
    help="Which requests faults hit: all, or only add-rows calls.",
)
@click.option("--retry-after", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option(
    "--slow-delay",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a slow answer takes, and a late one's rows take to land.",
)
@click.option(
    "--latency",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds each add-rows answer is delayed, as from a far API (requests overlap).",
)
@click.option(
    "--keep-only",
    metavar="FIELD",
    help="Store only this field of each row (row counts stay exact): for big benchmarks.",
)
def emulator(
    host: str,
    port: int,
    api_key: str,
    data: Path | None,
    max_body: int,
    faults: tuple[str, ...],
    fault_script: str | None,
    fault_seed: int | None,
    fault_only: str,
    retry_after: float,
    slow_delay: float,
    latency: float,
    keep_only: str | None,
) -> None:
    """Serve a local Akkio-compatible API, optionally with injected faults.

    Faults can also be changed while it runs: POST /_emulator/faults.
    """
    plan = None
    if faults or fault_script:
        try:
            plan = FaultPlan.parse(
                rates=faults,
                script=fault_script,
                seed=fault_seed,
                only=fault_only,
                retry_after=retry_after,
                delay=slow_delay,
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fault/--fault-script") from None
    if not latency >= 0:  # FloatRange lets NaN through
        raise click.BadParameter(f"{latency} is not a number of seconds", param_hint="--latency")
    try:
        emu = emulator_module.Emulator(
            api_key=api_key, data_file=data, faults=plan, latency=latency, keep_only=keep_only
        )
    except (ValueError, OSError) as exc:  # not a journal, a corrupt one, or unreadable
        raise ConfigError(f"emulator: --data: {exc}") from None
    try:
        emulator_module.serve_forever(emu, host, port, max_body=max_body)
    except emulator_module.ListenError as exc:  # a port in use: one line, exit 2
        raise ConfigError(str(exc)) from None


@cli.command()
@click.option("--rows", default=2000, show_default=True, type=click.IntRange(10, 1_000_000))
@click.option("--verbose", is_flag=True, help="Also show the sync's own log lines.")
def demo(rows: int, *, verbose: bool) -> None:
    """Everything on embedded defaults: a sample database, the emulator, two syncs."""
    if not verbose:  # the demo tells its own story; the log lines would drown it
        logging.getLogger("akkiosync").setLevel(logging.ERROR)
    run_demo(rows, echo=click.echo)


cli.add_command(validate)
cli.add_command(init)
cli.add_command(list_command)
cli.add_command(preview_command)
cli.add_command(reset)
cli.add_command(accept)


def main() -> None:
    """Console-script entry point."""
    freeze_startup_objects()
    cli(prog_name="akkiosync")


def freeze_startup_objects() -> None:
    """Keep what is loaded by now out of every garbage collection: the modules, SQLAlchemy's
    and pydantic's machinery live as long as the process, and each full collection walking
    them again cost a run of 200,000 rows a fifth of its CPU (bench/throughput.py)."""
    # No collection first: at this point it walks ~90,000 objects (45 ms) to free about 50.
    gc.freeze()
