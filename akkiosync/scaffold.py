"""``akkiosync init``: a commented job file scaffolded from a live table.

The watermark and key are picked from the table's columns and indexes (see ``pick_watermark``);
the file is never overwritten, and is validated once written.
"""

from __future__ import annotations

import json
import re

import click

from akkiosync.app import App, pass_app
from akkiosync.checks import validate
from akkiosync.errors import ConfigError
from akkiosync.source import TableOutline, outline_table, split_table

# Names that say "when this row last changed", most telling first.
WATERMARK_NAMES = (
    "updated_at",
    "modified_at",
    "last_modified",
    "last_modified_at",
    "last_updated",
    "updated_on",
    "modified_on",
    "changed_at",
    "updated",
    "modified",
)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")


def pick_watermark(outline: TableOutline) -> tuple[str, str] | None:
    """The watermark column and why it was picked: a time column named like ``updated_at``,
    else an indexed time column, else an auto-incremented integer key (new rows only)."""
    times = {c.name.lower(): c.name for c in outline.columns if c.is_time}
    for name in WATERMARK_NAMES:
        if name in times:
            return times[name], "a time column named like a change time"
    for column in outline.columns:
        if column.is_time and column.name in outline.index_leads:
            return column.name, "an indexed time column (check it grows when a row changes)"
    for column in outline.columns:
        if column.is_integer and column.autoincrement and column.name in outline.primary_key:
            return column.name, "an auto-increment key: new rows are sent, changed ones are not"
    return None


def job_text(
    *, name: str, url: str, table: str, dataset: str, watermark: str, why: str, key: tuple[str, ...]
) -> str:
    """The job file: every value quoted as JSON (a YAML subset), every choice commented."""
    key_line = (
        f"  key: {json.dumps(list(key))}             # the primary key: ties within a watermark"
        if key
        else "  # key: id                  # no primary key found: name a unique column here"
    )
    return f"""\
# Scaffolded by `akkiosync init`; see the README's "Job files" for every option.
name: {json.dumps(name)}
schedule: "15m"               # cron or 30s, 5m, 1h, 1d; remove to run only by `akkiosync sync`
source:
  url: {json.dumps(url)}
  table: {json.dumps(table)}
  watermark: {json.dumps(watermark)}  # {why}
{key_line}
  # settle: 30s               # skip rows changed in the last 30s (late commits)
target:
  dataset: {json.dumps(dataset)}  # created on the first run; or  dataset_id: <existing id>
batch_size: 10000             # rows per add-rows request (Akkio: 5 requests/s)
# columns:
#   exclude: [internal_note]
"""


@click.command()
@click.option("--url", help="The source's SQLAlchemy URL (asked for when missing).")
@click.option("--table", help="The table to sync, schema.table allowed (asked for when missing).")
@click.option("--name", help="The job's name (default: the table's).")
@click.option("--dataset", help="The Akkio dataset to create (default: the job's name).")
@click.option(
    "--url-env",
    metavar="NAME",
    help="Write source.url as ${NAME} (the URL then comes from that variable), not the URL.",
)
@pass_app
@click.pass_context
def init(
    ctx: click.Context,
    app: App,
    url: str | None,
    table: str | None,
    name: str | None,
    dataset: str | None,
    url_env: str | None,
) -> None:
    """Write <config>/jobs/NAME.yaml from a live table, then validate it."""
    if url_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", url_env):
        raise click.BadParameter("a variable name: letters, digits and _", param_hint="--url-env")
    url = url or click.prompt("Source URL (SQLAlchemy)", hide_input=True)
    table = table or click.prompt("Table")
    try:
        default_name = _NOT_NAME.sub("_", split_table(table)[1]).lstrip("_.-") or "job"
    except ValueError as exc:
        raise ConfigError(f"--table: {exc}") from None
    name = name or default_name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise click.BadParameter("letters, digits, _ . - (not first)", param_hint="--name")
    outline = outline_table(url, table)
    picked = pick_watermark(outline)
    if picked is None:
        raise ConfigError(
            f"table {table}: no column fits a watermark (a time column such as updated_at, or "
            "an auto-increment key); add one, or write the job file by hand with source.query"
        )
    path = app.settings.akkiosync_config / "jobs" / f"{name}.yaml"
    if path.exists() or path.with_suffix(".yml").exists():
        raise ConfigError(f"{path}: a job file is already there; choose another --name")
    text = job_text(
        name=name,
        url=f"${{{url_env}}}" if url_env else url.replace("$", "$$"),
        table=table,
        dataset=dataset or name,
        watermark=picked[0],
        why=picked[1],
        key=outline.primary_key,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as out:
        out.write(text)
    click.echo(f"wrote {path}: watermark {picked[0]} ({picked[1]})")
    ctx.invoke(validate, connect=True)
