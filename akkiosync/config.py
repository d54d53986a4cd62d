"""Settings from the environment and job definitions from YAML files.

This is the only module that reads the environment or configuration files. Everything it
returns is frozen and already validated; every problem becomes a ``ConfigError`` whose lines
each name the file and the key path, e.g. ``jobs/orders.yaml: source.watermark: required``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from akkiosync.akkio import DEFAULT_BASE_URL
from akkiosync.errors import ConfigError, JobNotFoundError
from akkiosync.jobyaml import JobYamlError, expand, read_yaml
from akkiosync.lock import locks_dir
from akkiosync.mapping import FieldType, OnBadValue
from akkiosync.redact import redact, register_secret
from akkiosync.schedule import Schedule, parse_duration, parse_schedule
from akkiosync.source import split_table

JOB_SUFFIXES = (".yaml", ".yml")
MIN_DEFAULT_GRACE = 120.0  # seconds: the landing grace's default is never shorter
DEFAULT_BATCH_SIZE = 10_000  # rows per add-rows request
DEFAULT_BATCH_BYTES = 4_000_000  # bytes of an add-rows request's body, at most


class Settings(BaseSettings):
    """Process-wide settings: environment variables, then a ``.env`` file, then defaults."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    akkio_api_key: SecretStr | None = None
    akkio_base_url: str = DEFAULT_BASE_URL
    akkiosync_config: Path = Path("config")
    akkiosync_state: Path = Path("state/akkiosync.db")
    akkio_timeout: Annotated[float, Field(gt=0)] = 60.0  # seconds to wait for an answer
    akkio_connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    akkio_rate_limit: Annotated[float, Field(gt=0)] = 5.0  # requests per second per API key
    akkio_max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    # A batch whose answer was lost is taken as not landed only once the dataset's row count
    # has stayed put this long after the request (unset: see ``landing_grace``).
    akkiosync_landing_grace: Annotated[float, Field(ge=0)] | None = None
    akkiosync_reconcile_wait: Annotated[float, Field(ge=0)] = 0.5  # first pause between reads
    akkiosync_progress_interval: Annotated[float, Field(ge=0)] = 10.0  # log line; 0: none
    # rows to go are counted up to this many past the cursor (beyond: an estimate); 0: off
    akkiosync_progress_count_limit: Annotated[int, Field(ge=0)] = 1_000_000
    # The daemon (`akkiosync run`):
    akkiosync_log_format: Literal["auto", "json", "text"] = "auto"  # auto: text on a terminal
    akkiosync_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    akkiosync_http_port: Annotated[int, Field(ge=0, le=65535)] | None = None  # unset: off
    akkiosync_http_host: str = "0.0.0.0"  # noqa: S104 - a container's port must be reachable
    akkiosync_workers: Annotated[int, Field(ge=1, le=64)] = 4  # jobs running at once
    akkiosync_shutdown_timeout: Annotated[float, Field(gt=0)] = 30.0  # seconds
    akkiosync_reload_interval: Annotated[float, Field(gt=0)] = 2.0  # seconds between looks
    akkiosync_history_days: Annotated[int, Field(ge=1)] = 30  # runs older than this are pruned
    akkiosync_history_runs: Annotated[int, Field(ge=10)] = 1000  # runs kept per job at most
    akkiosync_alert_webhook: str | None = None  # global alerts, for jobs without their own
    akkiosync_alert_on: str = "failure,recovery"

    @field_validator("akkio_base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        try:
            url: httpx.URL | None = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                "AKKIO_BASE_URL must be an http:// or https:// URL with a host, like "
                f"{DEFAULT_BASE_URL} (or http://127.0.0.1:8765/v1 for the emulator)"
            )
        return value

    @field_validator("akkiosync_state", mode="before")
    @classmethod
    def _state_file(cls, value: Any) -> Any:
        if isinstance(value, str | Path) and not str(value).strip():
            raise ValueError(
                "AKKIOSYNC_STATE is empty: set it to the checkpoint store's file, like "
                "state/akkiosync.db"
            )
        if isinstance(value, str | Path) and Path(value).is_dir():
            raise ValueError(
                f"AKKIOSYNC_STATE {value} is a directory: set it to a file in it, like "
                f"{Path(value) / 'akkiosync.db'}"
            )
        return value

    def global_alerts(self) -> AlertsSpec | None:
        """The global alert settings, if a webhook is set."""
        if not self.akkiosync_alert_webhook:
            return None
        events = [e.strip() for e in self.akkiosync_alert_on.split(",") if e.strip()]
        try:
            spec = {"webhook": self.akkiosync_alert_webhook, "on": events}
            return AlertsSpec.model_validate(spec)
        except ValidationError as exc:
            raise ConfigError(_format_errors("AKKIOSYNC_ALERT_*", exc)) from None

    @property
    def locks_dir(self) -> Path:
        """The per-job run locks: beside the store's real file, whatever path names it."""
        return locks_dir(self.akkiosync_state)

    @property
    def daemon_file(self) -> Path:
        """Where a running daemon says who it is and when each job runs next: beside the
        store's real file, so that every path to the store finds it."""
        real = self.akkiosync_state.resolve()
        return real.with_name(real.name + ".daemon.json")

    @property
    def landing_grace(self) -> float:
        """Seconds a request may still land after it was sent. It must outlast the server's own
        work on a request whose client gave up, which does not shrink with the client's
        timeout: by default twice the request timeout, and never under two minutes."""
        if self.akkiosync_landing_grace is not None:
            return self.akkiosync_landing_grace
        return max(2 * self.akkio_timeout, MIN_DEFAULT_GRACE)

    def api_key(self) -> str:
        """The API key, or a ``ConfigError`` saying how to set it."""
        if self.akkio_api_key is None or not self.akkio_api_key.get_secret_value():
            raise ConfigError("AKKIO_API_KEY is not set (environment or .env file)")
        return self.akkio_api_key.get_secret_value()


def load_settings(config_dir: Path | None = None) -> Settings:
    """Read the settings; ``config_dir`` (the CLI's ``--config``) overrides AKKIOSYNC_CONFIG."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_format_errors("environment", exc)) from None
    if settings.akkio_api_key is not None:
        register_secret(settings.akkio_api_key.get_secret_value())
    if config_dir is not None:
        settings = settings.model_copy(update={"akkiosync_config": config_dir})
    return settings


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Model):
    """Where rows come from and how the incremental cursor is built."""

    url: str
    table: str | None = None
    query: str | None = None
    watermark: str
    key: tuple[str, ...] = ()
    # Only rows whose watermark is older than the database's now() - settle are read.
    settle: timedelta | None = None
    # Re-read this far behind the checkpoint (a duration, or a count for integer watermarks)
    # and send only the rows not sent before.
    lookback: timedelta | int | None = None
    null_watermark: Literal["skip", "fail"] = "skip"
    # The first run starts at rows whose watermark is >= this, instead of at the beginning.
    initial_watermark: datetime | date | int | Decimal | str | None = None

    @field_validator("settle", mode="before")
    @classmethod
    def _settle_duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)
        if value is not None:
            raise ValueError('must be a duration such as "30s", "5m", "1h"')
        return value

    @field_validator("lookback", mode="before")
    @classmethod
    def _lookback(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a duration (10m) or a count of watermark units (1000)")
        if isinstance(value, str):
            return parse_duration(value)
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be more than zero")
        return value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        _, _, rest = value.partition("://")
        userinfo = rest.partition("?")[0].rpartition("@")[0]
        # The password as written runs to the last "@" (SQLAlchemy cuts it at the first one).
        register_secret(userinfo.partition(":")[2])
        raw_at = "@" in userinfo and not rest.startswith("/")  # "sqlite:////a@b/c.db": a path
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
            url = None
        if url is not None:
            register_secret(url.password if isinstance(url.password, str) else None)
        # Never echo the value: a malformed URL escapes redact's URL pattern, password and all.
        if raw_at or (url is not None and "@" in (url.host or "")):
            raise ValueError(
                "more than one raw @ before the host: special characters in user names and "
                "passwords must be percent-encoded (@ as %40, : as %3A, / as %2F)"
            )
        if url is None:
            raise ValueError(
                "not a valid SQLAlchemy URL (like postgresql+psycopg://user@host/dbname)"
            )
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None:
            split_table(value)  # a ValueError saying how to write it
        return value

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _table_or_query(self) -> SourceSpec:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.lookback is not None and not self.key:
            raise ValueError("lookback needs a key: rows are told apart by key and watermark")
        return self


class TargetSpec(_Model):
    """The Akkio dataset rows go to: created by name on the first run, or an existing one (by
    id, or by name with ``adopt``), whose own field names and types the job then writes."""

    dataset: str | None = None
    dataset_id: str | None = None
    adopt: bool = False  # `dataset` names a dataset that exists: write into it, never create
    # A dataset that already holds rows when the job first writes into it: refuse, or append.
    existing_rows: Literal["fail", "append"] = "fail"

    @model_validator(mode="after")
    def _one_target(self) -> TargetSpec:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of 'dataset' or 'dataset_id'")
        if self.adopt and self.dataset is None:
            raise ValueError(
                "adopt: true goes with 'dataset' (a 'dataset_id' always names an existing dataset)"
            )
        return self

    @property
    def existing(self) -> bool:
        """Whether the job writes into a dataset that exists before its first run."""
        return self.adopt or self.dataset_id is not None

    @property
    def identity(self) -> str:
        """The dataset as the job file names it; two jobs with one identity write one dataset."""
        if self.dataset_id is not None:
            return f"dataset_id {self.dataset_id}"
        return f"dataset {self.dataset!r}"


class ColumnsSpec(_Model):
    """Which source columns become dataset fields, under which names and types."""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    rename: dict[str, str] = Field(default_factory=dict)
    types: dict[str, FieldType] = Field(default_factory=dict)
    # An extra date field holding when the run read the row: tells versions apart in Akkio.
    synced_at: Annotated[str, Field(min_length=1)] | None = None


class AlertsSpec(_Model):
    """Where to post when a job starts failing and when it recovers."""

    webhook: str
    on: tuple[Literal["failure", "recovery"], ...] = ("failure", "recovery")

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        register_secret(value)  # webhook URLs (Slack's) carry their token in the path
        return value


class Job(_Model):
    """One sync job, as defined by one YAML file."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)]
    schedule: Schedule | None = None
    source: SourceSpec
    target: TargetSpec
    # Akkio takes about 5 requests per second, so rows per request bound a job's rows per
    # second: 10,000 rows per batch allow 50,000/s; batch_bytes keeps wide rows' bodies small.
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = DEFAULT_BATCH_SIZE
    batch_bytes: Annotated[int, Field(ge=10_000, le=100_000_000)] = DEFAULT_BATCH_BYTES
    on_mismatch: Literal["fail", "resend"] = "fail"
    # A value its field cannot hold (infinity, a year past 9999, NaN, 7.9 in an integer field):
    # fail the run before its batch is sent, or send null and warn.
    on_bad_value: OnBadValue = "fail"
    # append: every new version of a row is appended; replace: each run a whole new dataset.
    mode: Literal["append", "replace"] = "append"
    columns: ColumnsSpec = Field(default_factory=ColumnsSpec)
    run_on_start: bool = False  # the daemon runs the job once when it starts (or loads it)
    alerts: AlertsSpec | None = None
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_schedule(value)
        if value is None or isinstance(value, Schedule):
            return value
        # A mapping would otherwise build a Schedule field by field, skipping parse_schedule.
        raise ValueError('must be a cron expression or an interval such as "30s", "5m", "1h"')

    @model_validator(mode="after")
    def _mode_fits(self) -> Job:
        if self.mode == "replace" and self.target.dataset_id is not None:
            raise ValueError(
                "mode: replace makes a new dataset at every run: give target.dataset (a name), "
                "not target.dataset_id"
            )
        if self.mode == "replace" and self.target.adopt:
            raise ValueError(
                "mode: replace makes a new dataset at every run and deletes the previous one: "
                "it cannot adopt an existing dataset (target.adopt)"
            )
        if self.mode == "replace" and self.source.lookback is not None:
            raise ValueError("mode: replace reads the whole source at every run: drop lookback")
        return self


def _format_errors(where: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(top)"
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc}: {redact(message)}")
    return "\n".join(lines)


def environment(settings_env_file: Path = Path(".env")) -> dict[str, str]:
    """The variables job files may use: the ``.env`` file, overridden by the real environment."""
    values = {k: v for k, v in dotenv_values(settings_env_file).items() if v is not None}
    values.update(os.environ)
    return values


def load_job_file(path: Path, env: Mapping[str, str]) -> Job:
    """Parse, expand and validate one job file (see ``jobyaml`` for the bounds on its cost)."""
    where = str(path)
    try:
        document = read_yaml(path)
    except JobYamlError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{where}: a job file must be a mapping of keys (name, source, target...)"
        )
    problems: list[str] = []
    expanded = expand(document, env, "", problems)
    if "path" in expanded:  # a field set by the loader, not a key users may write
        problems.append("path: unknown key")
    if problems:
        raise ConfigError("\n".join(f"{where}: {p}" for p in problems))
    expanded.setdefault("name", path.stem)
    expanded["path"] = path
    try:
        return Job.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_format_errors(where, exc)) from None


def job_files(config_dir: Path) -> list[Path]:
    """The job files under ``<config>/jobs``, sorted by name."""
    jobs_dir = config_dir / "jobs"
    if not jobs_dir.is_dir():
        raise ConfigError(f"{jobs_dir}: no such directory (set --config or AKKIOSYNC_CONFIG)")
    return sorted(p for p in jobs_dir.iterdir() if p.suffix in JOB_SUFFIXES and p.is_file())


def load_jobs(config_dir: Path, env: Mapping[str, str] | None = None) -> list[Job]:
    """Every job under ``<config>/jobs``; all problems of all files are reported together."""
    jobs, refused = load_files(config_dir, env)
    if refused:
        raise ConfigError("\n".join(r.problem for r in refused))
    return jobs


@dataclass(frozen=True, slots=True)
class Refused:
    """A job file that defines no job: its problem (lines naming the file), and the job it
    would define were it not for another file's name or target (None: it is invalid itself)."""

    path: Path
    problem: str
    job: Job | None = None


def load_files(
    config_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[list[Job], list[Refused]]:
    """The valid jobs under ``<config>/jobs``, and the files refused. As in the daemon's first
    scan, a file whose job name or target an earlier file (by name) has is the refused one."""
    env = environment() if env is None else env
    jobs: list[Job] = []
    refused: list[Refused] = []
    seen: dict[str, Path] = {}
    targets: dict[str, Path] = {}  # one writer per dataset
    for path in job_files(config_dir):
        try:
            job = load_job_file(path, env)
        except ConfigError as exc:
            refused.append(Refused(path, str(exc)))
            continue
        if job.name in seen:
            problem = f"{path}: name: job name {job.name!r} is already used by {seen[job.name]}"
            refused.append(Refused(path, problem, job))
            continue
        if (owner := targets.get(job.target.identity)) is not None:
            refused.append(Refused(path, shared_target(path, job, owner), job))
            continue
        seen[job.name] = path
        targets[job.target.identity] = path
        jobs.append(job)
    return jobs, refused


def shared_target(path: Path, job: Job, owner: Path) -> str:
    """The problem of a job file whose target the job file ``owner`` already writes."""
    return (
        f"{path}: target: {job.target.identity} is also the target of {owner}: one job per "
        "dataset (exactly once can only be checked for a dataset one job writes); give one "
        "of them another target"
    )


def select_jobs(jobs: list[Job], names: tuple[str, ...]) -> list[Job]:
    """The jobs named (all when ``names`` is empty), or ``JobNotFoundError``."""
    if not names:
        return jobs
    by_name = {job.name: job for job in jobs}
    missing = [name for name in names if name not in by_name]
    if missing:
        known = ", ".join(sorted(by_name)) or "none"
        raise JobNotFoundError(f"no such job: {', '.join(missing)} (known jobs: {known})")
    return [by_name[name] for name in names]
