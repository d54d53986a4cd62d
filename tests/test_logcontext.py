"""Log lines: their context, their fields, their hygiene, and how often they are said.

JSON lines are read back as a log collector reads them; text lines as a person does. The runs
are real: a SQLite (or PostgreSQL, MariaDB) source, the emulator, and the CLI or the runner.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from akkiosync.akkio import AkkioClient
from akkiosync.cli import cli, configure_logging
from akkiosync.emulator import Emulator, EmulatorServer, serve
from akkiosync.errors import AkkioError
from akkiosync.logcontext import ContextFilter, job_context
from akkiosync.logformat import JsonFormatter, TextFormatter, escape
from akkiosync.redact import MASK, RedactingFilter
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store
from tests.conftest import API_KEY, make_job, no_sleep

JOB_FILE = """\
source:
  url: ${{SRC_URL}}
  table: {table}
  watermark: updated_at
  key: id
target:
  dataset: Orders
batch_size: 4
"""


T0 = dt.datetime(2026, 3, 1, 12, 0)  # noqa: DTZ001 - a naive DATETIME column


def _rows(first: int, last: int) -> list[dict[str, Any]]:
    return [{"id": i, "updated_at": T0 + dt.timedelta(seconds=i)} for i in range(first, last + 1)]


def _crash(text: str) -> None:
    raise RuntimeError(text)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class _Lines:
    """The lines the CLI's handler chain makes of what ``akkiosync`` logs, in one format."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(RedactingFilter())
        self.handler.addFilter(ContextFilter())
        self.logger = logging.getLogger("akkiosync")

    def __enter__(self) -> _Lines:
        self.logger.addHandler(self.handler)
        self.level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self) -> list[dict[str, Any]]:
        return _json_lines(self.text)


@pytest.fixture
def sqlite_source(tmp_path: Path) -> str:
    """A SQLite ``orders`` table holding ids 1-10."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, updated_at DATETIME)"))
        conn.execute(sa.text("INSERT INTO orders VALUES (:id, :updated_at)"), _rows(1, 10))
    engine.dispose()
    return url


@pytest.fixture
def server(emulator: Emulator) -> Iterator[EmulatorServer]:
    """The emulator on a loopback port."""
    with serve(emulator) as running:
        yield running


@pytest.fixture
def cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: EmulatorServer, sqlite_source: str
) -> Path:
    """A deployment's variables and an ``orders`` job file; the config directory."""
    jobs = tmp_path / "config" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "orders.yaml").write_text(JOB_FILE.format(table="orders"))
    for name, value in {
        "AKKIO_API_KEY": API_KEY,
        "AKKIO_BASE_URL": server.url,
        "AKKIOSYNC_STATE": str(tmp_path / "state" / "akkiosync.db"),
        "SRC_URL": sqlite_source,
        "AKKIO_RATE_LIMIT": "1000",
        "AKKIOSYNC_LANDING_GRACE": "1",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "config"


def _invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


class TestJsonFields:
    """In JSON, each event carries its data as typed fields beside a readable message."""

    def test_real_sync(self, cli_env: Path, emulator: Emulator) -> None:
        """``sync`` logs batch_sent and run_done lines with their numbers as numbers."""
        result = _invoke(cli_env, "--log-format", "json", "sync")
        assert result.exit_code == 0, result.output
        lines = _json_lines(result.stderr)
        batches = [line for line in lines if line["event"] == "batch_sent"]
        assert [(b["batch"], b["rows"], b["rows_total"]) for b in batches] == [
            (1, 4, 4),
            (2, 4, 8),
            (3, 2, 10),
        ]
        for line in batches:
            assert line["job"] == "orders"
            assert isinstance(line["run_id"], int)
            assert isinstance(line["cursor"], str)
            assert line["message"].startswith(f"batch {line['batch']}: ")
        (done,) = [line for line in lines if line["event"] == "run_done"]
        (dataset_id,) = emulator.dataset_ids()
        assert done["level"] == "INFO"
        assert (done["rows"], done["batches"], done["dataset_id"]) == (10, 3, dataset_id)
        assert isinstance(done["seconds"], float)
        assert done["cursor"] == batches[-1]["cursor"]
        assert done["message"].startswith("run done: 10 rows in 3 batches")
        assert not [
            line for line in lines if line["event"] is None and line["logger"] != "py.warnings"
        ]

    def test_run_end_carries_lag(self, store: Store, client: AkkioClient, db_url: str) -> None:
        """A runner that measures lag puts it on the run's end line: ``lag_seconds``."""
        engine = sa.create_engine(engine_url(db_url))
        table = sa.Table(
            f"t_{uuid.uuid4().hex[:10]}",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", sa.DateTime),
        )
        table.create(engine)
        try:
            with engine.begin() as conn:
                conn.execute(table.insert(), _rows(1, 3))
            runner = Runner(store, client, sleep=no_sleep, measure_lag=True)
            with _Lines(JsonFormatter()) as lines:
                assert runner.run(make_job(db_url, table.name)).ok
        finally:
            table.drop(engine)
            engine.dispose()
        (done,) = [line for line in lines.events() if line["event"] == "run_done"]
        assert done["lag_seconds"] == 0.0
        assert "; lag 0s)" in done["message"]


class TestTextLines:
    """Text lines are one readable line each, naming the job and run once."""

    def test_job_and_run_once(self, runner: Runner, sqlite_source: str) -> None:
        """The ``[job#run]`` prefix names them; the message does not repeat them."""
        with _Lines(TextFormatter()) as lines:
            assert runner.run(make_job(sqlite_source, "orders")).ok
        ours = [line for line in lines.text.splitlines() if "[orders#" in line]
        assert len(ours) >= 4, lines.text  # started, three batches, done
        for line in ours:
            assert line.count("orders") == 1, line
            assert " run 1" not in line, line
        assert any("[orders#1] akkiosync.runner: run done: 10 rows" in line for line in ours)


class TestHygiene:
    """No secret, raw control character or unbounded server text reaches a log line."""

    def test_traceback_under_exception_redacted(self) -> None:
        """A crash's traceback is the JSON line's ``exception``, its secrets masked."""
        with _Lines(JsonFormatter()) as lines, job_context("orders", 7):
            try:
                _crash("cannot reach postgresql://app:Pw-tb9@db/shop")
            except RuntimeError:
                logging.getLogger("akkiosync.runner").exception(
                    "run crashed", extra={"event": "run_crashed"}
                )
        (line,) = lines.events()
        assert (line["message"], line["event"], line["run_id"]) == ("run crashed", "run_crashed", 7)
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert f"postgresql://app:{MASK}@db/shop" in line["exception"]
        assert "Pw-tb9" not in lines.text

    def test_traceback_in_text(self) -> None:
        """In text, the redacted traceback follows the line, once."""
        with _Lines(TextFormatter()) as lines:
            try:
                _crash("mysql://u:Pw-tt3@h/db")
            except RuntimeError:
                logging.getLogger("akkiosync").exception("crashed")
        assert lines.text.count("Traceback") == 1
        assert "Pw-tt3" not in lines.text
        assert lines.text.splitlines()[0].endswith("akkiosync: crashed")

    def test_fields_redacted(self) -> None:
        """Every field is redacted, as the message is."""
        with _Lines(JsonFormatter()) as lines:
            logging.getLogger("akkiosync").warning(
                "lost", extra={"error": "to mysql://u:Pw-f4@h/db failed", "rows": 3}
            )
        (line,) = lines.events()
        assert line["error"] == f"to mysql://u:{MASK}@h/db failed"
        assert line["rows"] == 3

    @pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
    def test_control_characters_escaped(self, formatter: logging.Formatter) -> None:
        """Escape sequences, line breaks and bidi overrides in a message or field are written
        as escapes: a line stays one line and cannot steer a terminal."""
        hostile = "id 7\x1b[2J\r\nFAKE 2026 INFO all good\u202e\x7f"
        with _Lines(formatter) as lines:
            logging.getLogger("akkiosync").warning(
                "bad value %s", hostile, extra={"value": hostile}
            )
        out = lines.text
        assert out.count("\n") == 1
        assert out.endswith("\n")
        assert not [c for c in out[:-1] if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
        assert "\u202e" not in out
        assert escape(hostile) == "id 7\\x1b[2J\\r\\nFAKE 2026 INFO all good\\u202e\\x7f"
        if isinstance(formatter, JsonFormatter):
            (line,) = _json_lines(out)
            assert line["message"] == f"bad value {escape(hostile)}"
            assert line["value"] == escape(hostile)

    def test_server_message_bounded(self) -> None:
        """A server's message quoted in an error (and so in a log line) is cut to 500
        characters."""
        body = {"status": "error", "message": "x" * 20_000}

        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400, json=body)

        transport = httpx.MockTransport(answer)
        with (
            AkkioClient(API_KEY, "http://akkio/v1", transport=transport) as c,
            pytest.raises(AkkioError) as caught,
        ):
            c.list_datasets()
        assert "x" * 500 in str(caught.value)
        assert len(str(caught.value)) < 700
        assert "(20000 characters)" in str(caught.value)


class TestLibraryWarnings:
    """Library warnings are log lines in the configured format."""

    @pytest.fixture(autouse=True)
    def _release_warnings(self) -> Iterator[None]:
        yield
        logging.captureWarnings(False)

    @pytest.mark.filterwarnings("always::sqlalchemy.exc.SAWarning")
    def test_sqlalchemy_warning_as_json(
        self, capsys: pytest.CaptureFixture[str], postgres_url: str
    ) -> None:
        """SQLAlchemy's "Did not recognize type" while reflecting a source is a JSON line."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(engine_url(postgres_url))
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {name} (id int PRIMARY KEY, p point)"))
        try:
            configure_logging("INFO", "json")
            sa.Table(name, sa.MetaData(), autoload_with=engine)
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE {name}"))
            engine.dispose()
        (line,) = [x for x in _json_lines(capsys.readouterr().err) if x["logger"] == "py.warnings"]
        assert line["level"] == "WARNING"
        assert line["event"] == "library_warning"
        assert "SAWarning: Did not recognize type 'point' of column 'p'" in line["message"]

    def test_python_warning_as_text(self, capsys: pytest.CaptureFixture[str]) -> None:
        """In text format, a warning is one text line like the others."""
        configure_logging("INFO", "text")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            configure_logging("INFO", "text")
            warnings.warn("a library says\x1b[31m so", UserWarning, stacklevel=1)
        (line,) = capsys.readouterr().err.splitlines()
        assert " WARNING py.warnings: " in line
        assert line.endswith("UserWarning: a library says\\x1b[31m so")


class TestLessNoise:
    """A daemon repeats a warning only when it changes; an idle run is one line."""

    def test_warning_once_per_change(
        self,
        runner: Runner,
        engine: sa.Engine,
        make_table: Any,
        table_name: str,
        db_url: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """NULL watermarks and unsent columns: warned at the first run, not at the next run
        with the same finding, again once the finding changes."""
        table = make_table(
            table_name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", sa.DateTime),
        )
        with engine.begin() as conn:
            conn.execute(table.insert(), [*_rows(1, 3), {"id": 4, "updated_at": None}])
        job = make_job(db_url, table_name)
        caplog.set_level(logging.INFO, logger="akkiosync")

        def warned() -> list[tuple[str, str]]:
            said = [
                (getattr(r, "event", ""), r.getMessage())
                for r in caplog.records
                if r.levelno == logging.WARNING
            ]
            caplog.clear()
            return said

        assert runner.run(job).ok
        assert warned() == [
            ("null_cursor_rows", "1 row(s) with a NULL updated_at or id are skipped "
             "(source.null_watermark: skip)"),
        ]  # fmt: skip
        assert runner.run(job).ok
        assert warned() == []
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 5, "updated_at": None}])
            conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN note VARCHAR(20)"))
        assert runner.run(job).ok
        assert sorted(warned()) == [
            ("columns_not_sent", "source column(s) note are not in the dataset's schema and "
             "are not sent"),
            ("null_cursor_rows", "2 row(s) with a NULL updated_at or id are skipped "
             "(source.null_watermark: skip)"),
        ]  # fmt: skip
        assert runner.run(job).ok
        assert warned() == []

    def test_idle_run_is_one_info_line(
        self, runner: Runner, sqlite_source: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A run with nothing new logs one line at INFO: its end, with rows=0."""
        job = make_job(sqlite_source, "orders")
        assert runner.run(job).ok
        caplog.set_level(logging.INFO)
        caplog.clear()
        assert runner.run(job).ok
        (line,) = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert (getattr(line, "event", None), getattr(line, "rows", None)) == ("run_done", 0)
        assert line.getMessage().startswith("run done: 0 rows in 0 batches")


class TestStatusWithoutStore:
    """``status`` looks without creating."""

    def test_no_store_created(self, cli_env: Path) -> None:
        """Before any run, status shows the job as never run and leaves no store behind."""
        state = Path(os.environ["AKKIOSYNC_STATE"])
        result = _invoke(cli_env, "status", "--no-lag", "--json")
        assert result.exit_code == 0, result.output
        (shown,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert shown["job"] == "orders"
        assert shown["last_run"] is None
        assert not state.exists()
        assert not state.parent.exists()


class TestIndexSuggestion:
    """``validate --connect`` suggests an index with its identifiers quoted."""

    def test_quoted_for_the_dialect(
        self, cli_env: Path, engine: sa.Engine, make_table: Any, db_url: str
    ) -> None:
        """A table and column whose names need quoting are quoted as the dialect quotes."""
        name = f"Order Lines {uuid.uuid4().hex[:6]}"
        make_table(
            name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("Updated At", sa.DateTime),
        )
        job = JOB_FILE.format(table=f'"{name}"').replace("updated_at", '"Updated At"')
        (cli_env / "jobs" / "orders.yaml").write_text(job.replace("${SRC_URL}", db_url))
        result = _invoke(cli_env, "validate", "--connect")
        assert result.exit_code == 0, result.output
        q = "`" if engine.dialect.name in ("mysql", "mariadb") else '"'
        assert f"ON {q}{name}{q} ({q}Updated At{q})" in result.stdout, result.stdout
