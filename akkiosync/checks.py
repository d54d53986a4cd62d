"""Commands that look without sending: ``validate`` and ``preview``.

They read the job files, the store (never creating it) and, where a job maps onto an existing
dataset and an API key is set, that dataset's fields; they change nothing anywhere.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, suppress

import click
import httpx

from akkiosync.adopt import describe, mapping_lines, mapping_report, planned_schema
from akkiosync.akkio import AkkioClient
from akkiosync.app import App, pass_app
from akkiosync.config import Job
from akkiosync.dataset import schema_drift
from akkiosync.errors import (
    AkkioAuthError,
    AkkioError,
    AkkioFatalError,
    AkkioTransportError,
    ConfigError,
    SourceError,
)
from akkiosync.mapping import Schema
from akkiosync.pacing import RetryPolicy
from akkiosync.preview import preview
from akkiosync.redact import redact
from akkiosync.source import Bounds, engine_url, make_source, query_warnings, split_table


@click.command()
@click.option(
    "--connect",
    is_flag=True,
    help="Also open each source and check its columns, and read how a job maps onto an "
    "existing dataset (with AKKIO_API_KEY).",
)
@pass_app
def validate(app: App, *, connect: bool) -> None:
    """Check the settings and every job file (two jobs may not write one dataset); exit 2 on
    a problem."""
    jobs = app.jobs(strict=True)
    pinned = _pinned_schemas(app)
    problems: list[str] = []  # found connecting: reported together, once every job is shown
    with ExitStack() as stack:
        client: AkkioClient | None = None
        listed: set[str] | None = None  # the dataset ids the key sees, once Akkio answered
        if connect and _has_api_key(app):
            listed, problem = _akkio_check(app)
            if problem is not None:
                problems.append(problem)
            else:
                client = stack.enter_context(app.client())
                click.echo(f"akkio: ok, the API key sees {len(listed or ())} dataset(s)")
        elif connect:
            click.echo("akkio: skipped (no AKKIO_API_KEY): the key, base URL and datasets")
        for job in jobs:
            what = f"table {job.source.table}" if job.source.table else "query"
            target = job.target.dataset or f"id {job.target.dataset_id}"
            schedule = job.schedule or "manual (sync only)"
            click.echo(f"{job.name}: {what} -> dataset {target}, schedule {schedule}")
            if not job.source.key:
                click.echo(
                    f"  warning: {job.name} has no source.key; batches end only where the "
                    "watermark changes (a unique key is recommended)"
                )
            for warning in query_warnings(job.source.query or ""):
                click.echo(f"  warning: source.query: {warning}")
            if job.name in pinned and job.mode == "append":  # a refresh plans anew each run
                for warning in schema_drift(job.columns, pinned[job.name], job=job.name).warnings:
                    click.echo(f"  warning: {warning}")
            if not connect:
                continue
            missing = job.target.dataset_id is not None and listed is not None
            if missing and job.target.dataset_id not in (listed or set()):
                problems.append(
                    f"{job.path}: target.dataset_id: no dataset {job.target.dataset_id} is "
                    "visible to AKKIO_API_KEY; check the id (or the key's account)"
                )
            try:
                with make_source(job.source) as source:
                    columns = source.columns()
                    schema = planned_schema(job, columns)
                    source.check(_bounds_of(job))  # do settle and lookback fit the watermark?
                    unindexed = source.unindexed()
            except (ConfigError, SourceError) as exc:  # a bad query, table or URL: exit 2
                click.echo("  source: failed (see below)")
                text = str(exc)
                problems.append(
                    f"{job.path}: {text if text.startswith('source') else f'source: {text}'}"
                )
                continue
            if not job.target.existing:
                fields = ", ".join(f"{f.name}:{f.type}" for f in schema.fields)
                click.echo(f"  source ok; fields: {fields}")
            elif job.name in pinned:
                click.echo("  source ok; mapped onto its dataset (pinned):")
                for line in mapping_lines(pinned[job.name]):
                    click.echo(f"    {line}")
            elif missing and job.target.dataset_id not in (listed or set()):
                click.echo("  source ok; its dataset is missing (see below)")
            elif client is None and not _has_api_key(app):
                named = job.target.dataset or job.target.dataset_id
                click.echo(
                    f"  source ok; the mapping onto dataset {named} needs AKKIO_API_KEY: skipped"
                )
            elif client is None:  # Akkio did not answer as it should: said below
                click.echo("  source ok; the mapping onto its dataset: skipped (see below)")
            else:  # its own fields decide: show how the columns map onto them
                lines, found = mapping_report(job, columns, client)
                for line in [f"source ok; {lines[0]}", *lines[1:]] if lines else ["source ok"]:
                    click.echo(f"  {line}")
                problems += found
            for column in unindexed:
                click.echo(
                    f"  warning: no index starts with {column}: every run scans the table "
                    f"({_index_statement(job, column)})"
                )
    if problems:
        raise ConfigError("\n".join(problems))
    click.echo(f"{len(jobs)} job(s) valid")


def _akkio_check(app: App) -> tuple[set[str] | None, str | None]:
    """List the datasets once: the ids the key sees, or the one line saying what is wrong
    with the key or ``AKKIO_BASE_URL``."""
    settings = app.settings
    base = redact(settings.akkio_base_url)
    timeout = httpx.Timeout(settings.akkio_timeout, connect=settings.akkio_connect_timeout)
    # One try: a check reports what it sees now, not after minutes of backoff.
    probe = AkkioClient(
        settings.api_key(), settings.akkio_base_url, timeout=timeout, retry=RetryPolicy(attempts=1)
    )
    try:
        with probe:
            return {d.id for d in probe.list_datasets()}, None
    except AkkioAuthError as exc:
        return None, f"AKKIO_API_KEY was refused by {base} ({exc}): set a valid API key"
    except AkkioTransportError as exc:
        if exc.status_code is None:  # no answer at all: the message names the host
            return None, f"akkio: {exc}"
        return None, _not_akkio(base, exc)
    except AkkioFatalError as exc:  # a 404 page, or JSON without Akkio's shape
        return None, _not_akkio(base, exc)
    except AkkioError as exc:  # 5xx or 429 after the retries: Akkio, but not answering now
        return None, f"akkio: {exc}"


def _not_akkio(base: str, exc: AkkioError) -> str:
    return (
        f"AKKIO_BASE_URL does not look like Akkio's API: {base} answered {exc}; set it to the "
        "API's base URL (such as https://api.akkio.com/v1)"
    )


def _has_api_key(app: App) -> bool:
    try:
        app.settings.api_key()
    except ConfigError:
        return False
    return True


def _pinned_schemas(app: App) -> dict[str, Schema]:
    """The schema pinned for each job that has run; an absent store is not created."""
    if not app.settings.akkiosync_state.exists():
        return {}
    with app.store() as store:
        states = store.job_states()
    return {s.job: Schema.from_json(s.schema_json) for s in states if s.schema_json is not None}


@click.command(name="preview")
@click.argument("name")
@click.option("--rows", default=5, show_default=True, type=click.IntRange(0, 1000))
@pass_app
def preview_command(app: App, name: str, rows: int) -> None:
    """Show the dataset schema and the next records JOB would send; sends nothing."""
    (job,) = app.jobs((name,))
    with app.store() as store, ExitStack() as stack:
        client = None
        if job.target.existing and store.job_state(job.name).schema_json is None:
            with suppress(ConfigError):  # no API key: said below, the planned schema shown
                client = stack.enter_context(app.client())
        shown = preview(job, store, rows, client=client)
    if shown.needs_key:
        target = job.target.dataset or job.target.dataset_id
        click.echo(
            f"the mapping onto dataset {target} needs AKKIO_API_KEY (that dataset's fields "
            "decide it); shown instead: the schema planned from the source"
        )
    if shown.mapped_onto is not None:
        click.echo(f"schema (mapped onto {describe(shown.mapped_onto)}):")
        for line in mapping_lines(shown.schema):
            click.echo(f"  {line}")
    else:
        where = "pinned" if shown.pinned else "would be created with"
        click.echo(f"schema ({where}):")
        for field in shown.schema.fields:
            origin = "" if field.name == field.source else f"  <- {field.source}"
            click.echo(f"  {field.name}: {field.type}{origin}")
    if shown.new_columns:
        click.echo(f"not sent (not in the pinned schema): {', '.join(shown.new_columns)}")
    start = shown.cursor.describe() if shown.cursor else "the start"
    click.echo(f"next {len(shown.records)} record(s) after {start}:")
    for record in shown.records:
        click.echo(json.dumps(record, ensure_ascii=False))


def _bounds_of(job: Job) -> Bounds:
    """Bounds with every option the job sets, to check them against the watermark's type."""
    spec = job.source
    window = None if spec.lookback is None else (None, spec.lookback)  # type, not anchor
    return Bounds(settle=spec.settle, window=window)


def _index_statement(job: Job, column: str) -> str:
    """The index to suggest for ``column``, its identifiers quoted as the source's dialect
    quotes them (a name in any case or with any character pastes as it is)."""
    quote = engine_url(job.source.url).get_dialect()().identifier_preparer.quote_identifier
    schema, table = split_table(job.source.table or "")
    name = ".".join(quote(part) for part in (schema, table) if part)
    return f"CREATE INDEX {quote(f'{table}_{column}_idx')} ON {name} ({quote(column)})"


@click.command(name="list")
@pass_app
def list_command(app: App) -> None:
    """The jobs, one line each: name, schedule and target; invalid files as warnings."""
    for job in sorted(app.jobs(), key=lambda job: job.name):
        target = job.target.dataset or f"id {job.target.dataset_id}"
        schedule = job.schedule or "manual"
        click.echo(f"{job.name}\t{schedule}\tdataset {target}")
