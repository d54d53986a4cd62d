"""Tests for settings and job files: loading, expansion, and one-line errors naming file and key."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from akkiosync import config
from akkiosync.config import Job, Settings, load_jobs, load_settings, select_jobs
from akkiosync.errors import ConfigError, JobNotFoundError
from akkiosync.mapping import FIELD_TYPES
from akkiosync.redact import MASK, redact
from akkiosync.schedule import Schedule

WriteJob = Callable[[str, str], Path]

VALID = """\
source:
  url: sqlite:///source.db
  table: orders
  watermark: updated_at
target:
  dataset: Orders
"""

FULL = """\
name: orders-eu
schedule: "*/5 * * * *"
source:
  url: postgresql+psycopg://sync@db.internal:5432/shop
  table: public.orders
  watermark: updated_at
  key: [tenant_id, id]
target:
  dataset_id: ds_123
batch_size: 250
columns:
  include: [id, tenant_id, total, updated_at]
  exclude: [secret_note]
  rename: {total: amount}
  types: {tenant_id: category, total: float}
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """``<tmp>/config`` with an empty ``jobs`` directory."""
    (tmp_path / "config" / "jobs").mkdir(parents=True)
    return tmp_path / "config"


@pytest.fixture
def write_job(config_dir: Path) -> WriteJob:
    """Write ``<config>/jobs/<file name>`` from dedented text and return its path."""

    def write(file_name: str, text: str) -> Path:
        path = config_dir / "jobs" / file_name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def load_error(config_dir: Path, env: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading ``config_dir`` raises; checks exit code 2."""
    with pytest.raises(ConfigError) as caught:
        load_jobs(config_dir, {} if env is None else env)
    assert caught.value.exit_code == 2
    return str(caught.value)


def only_job(config_dir: Path, env: dict[str, str] | None = None) -> Job:
    """Load the jobs of ``config_dir``, which must define exactly one."""
    jobs = load_jobs(config_dir, {} if env is None else env)
    assert len(jobs) == 1
    return jobs[0]


class TestValidJob:
    """A valid job file becomes a frozen Job with every key as written."""

    def test_all_keys(self, config_dir: Path, write_job: WriteJob) -> None:
        """Every documented key is read into the model."""
        path = write_job("orders.yaml", FULL)

        job = only_job(config_dir)

        assert job.name == "orders-eu"
        assert job.schedule == Schedule("cron", "*/5 * * * *")
        assert job.source.url == "postgresql+psycopg://sync@db.internal:5432/shop"
        assert job.source.table == "public.orders"
        assert job.source.query is None
        assert job.source.watermark == "updated_at"
        assert job.source.key == ("tenant_id", "id")
        assert job.target.dataset is None
        assert job.target.dataset_id == "ds_123"
        assert job.batch_size == 250
        assert job.columns.include == ("id", "tenant_id", "total", "updated_at")
        assert job.columns.exclude == ("secret_note",)
        assert job.columns.rename == {"total": "amount"}
        assert job.columns.types == {"tenant_id": "category", "total": "float"}
        assert job.path == path

    def test_defaults(self, config_dir: Path, write_job: WriteJob) -> None:
        """Optional keys default: name from the file stem, no schedule, 1000 rows, all columns."""
        write_job("orders.yaml", VALID)

        job = only_job(config_dir)

        assert job.name == "orders"
        assert job.schedule is None
        assert job.source.key == ()
        assert (job.batch_size, job.batch_bytes) == (10_000, 4_000_000)
        assert job.columns.include is None
        assert job.columns.exclude == ()
        assert job.columns.rename == {}
        assert job.columns.types == {}

    def test_key_as_string_becomes_tuple(self, config_dir: Path, write_job: WriteJob) -> None:
        """A single key column written as a string is a one-element tuple."""
        write_job("orders.yaml", VALID.replace("watermark: updated_at", "watermark: w\n  key: id"))

        assert only_job(config_dir).source.key == ("id",)

    def test_query_and_dataset(self, config_dir: Path, write_job: WriteJob) -> None:
        """``query`` may replace ``table``; ``dataset`` names a dataset to create."""
        write_job(
            "q.yaml",
            """\
            source:
              url: sqlite://
              query: "SELECT id, updated_at FROM orders WHERE region = 'eu'"
              watermark: updated_at
            target:
              dataset: Orders EU
            """,
        )

        job = only_job(config_dir)

        assert job.source.table is None
        assert job.source.query == "SELECT id, updated_at FROM orders WHERE region = 'eu'"
        assert job.target.dataset == "Orders EU"
        assert job.target.dataset_id is None

    def test_interval_schedule(self, config_dir: Path, write_job: WriteJob) -> None:
        """An interval schedule is parsed into seconds."""
        write_job("orders.yaml", "schedule: 5m\n" + VALID)

        assert only_job(config_dir).schedule == Schedule("interval", "5m", 300)

    @pytest.mark.parametrize("field_type", FIELD_TYPES)
    def test_every_field_type_accepted(
        self, config_dir: Path, write_job: WriteJob, field_type: str
    ) -> None:
        """Every Akkio field type is a valid ``columns.types`` value."""
        write_job("orders.yaml", VALID + f"columns:\n  types: {{total: {field_type}}}\n")

        assert only_job(config_dir).columns.types == {"total": field_type}

    def test_batch_bytes_set(self, config_dir: Path, write_job: WriteJob) -> None:
        """batch_bytes caps each request's body, beside batch_size."""
        write_job("orders.yaml", VALID + "batch_bytes: 1000000\n")

        assert only_job(config_dir).batch_bytes == 1_000_000

    @pytest.mark.parametrize("batch_size", [1, 100_000], ids=["smallest", "largest"])
    def test_batch_size_bounds_accepted(
        self, config_dir: Path, write_job: WriteJob, batch_size: int
    ) -> None:
        """The smallest and largest batch sizes are allowed."""
        write_job("orders.yaml", VALID + f"batch_size: {batch_size}\n")

        assert only_job(config_dir).batch_size == batch_size

    def test_job_is_frozen(self, config_dir: Path, write_job: WriteJob) -> None:
        """A loaded job cannot be changed."""
        write_job("orders.yaml", VALID)
        job = only_job(config_dir)

        with pytest.raises(ValueError, match="frozen"):
            job.batch_size = 5  # type: ignore[misc]

    def test_path_excluded_from_dump(self, config_dir: Path, write_job: WriteJob) -> None:
        """The file path is kept on the job but is not part of its data."""
        write_job("orders.yaml", VALID)

        assert "path" not in only_job(config_dir).model_dump()


class TestJobFiles:
    """Job files are ``<config>/jobs/*.yaml`` and ``*.yml``, in name order; nothing else counts."""

    def test_yml_loaded_other_suffixes_ignored(self, config_dir: Path, write_job: WriteJob) -> None:
        """``.yml`` files load; ``.json``, ``.txt``, ``.bak`` and a ``.yaml`` directory do not."""
        write_job("b.yml", VALID.replace("dataset: Orders", "dataset: B"))
        write_job("a.yaml", VALID)
        write_job("c.json", "not yaml at all: [")
        write_job("d.txt", "garbage")
        write_job("e.yaml.bak", "garbage: [")
        (config_dir / "jobs" / "f.yaml").mkdir()

        assert [job.name for job in load_jobs(config_dir, {})] == ["a", "b"]

    def test_empty_jobs_dir(self, config_dir: Path) -> None:
        """An empty jobs directory is no jobs, not an error."""
        assert load_jobs(config_dir, {}) == []

    def test_missing_jobs_dir(self, tmp_path: Path) -> None:
        """A config directory without ``jobs`` is a ConfigError naming the missing directory."""
        (tmp_path / "config").mkdir()

        message = load_error(tmp_path / "config")

        jobs_dir = tmp_path / "config" / "jobs"
        assert message == f"{jobs_dir}: no such directory (set --config or AKKIOSYNC_CONFIG)"

    def test_missing_config_dir(self, tmp_path: Path) -> None:
        """A config directory that does not exist is the same ConfigError."""
        message = load_error(tmp_path / "nowhere")

        assert message.startswith(f"{tmp_path / 'nowhere' / 'jobs'}: no such directory")

    def test_relative_config_dir(self, config_dir: Path, write_job: WriteJob) -> None:
        """A relative config directory is resolved against the working directory."""
        write_job("orders.yaml", VALID)

        assert [job.name for job in load_jobs(Path("config"), {})] == ["orders"]


class TestEnvironmentExpansion:
    """``${VAR}`` and ``${VAR:-default}`` are expanded in every string, at any depth."""

    def test_variable(self, config_dir: Path, write_job: WriteJob) -> None:
        """``${VAR}`` becomes the variable's value."""
        write_job("orders.yaml", VALID.replace("sqlite:///source.db", "${ORDERS_DB_URL}"))

        job = only_job(config_dir, {"ORDERS_DB_URL": "sqlite:///orders.db"})

        assert job.source.url == "sqlite:///orders.db"

    def test_variable_inside_text(self, config_dir: Path, write_job: WriteJob) -> None:
        """A variable may be part of a longer string."""
        write_job("orders.yaml", VALID.replace("dataset: Orders", "dataset: Orders ${REGION}"))

        assert only_job(config_dir, {"REGION": "EU"}).target.dataset == "Orders EU"

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, "fallback"),
            ({"TABLE": ""}, "fallback"),
            ({"TABLE": "orders_v2"}, "orders_v2"),
        ],
        ids=["unset", "empty", "set"],
    )
    def test_default(
        self, config_dir: Path, write_job: WriteJob, env: dict[str, str], expected: str
    ) -> None:
        """``${VAR:-default}`` uses the default when the variable is unset or empty."""
        write_job("orders.yaml", VALID.replace("table: orders", "table: ${TABLE:-fallback}"))

        assert only_job(config_dir, env).source.table == expected

    def test_empty_default(self, config_dir: Path, write_job: WriteJob) -> None:
        """``${VAR:-}`` is the empty string when the variable is unset."""
        write_job("orders.yaml", VALID.replace("dataset: Orders", "dataset: Orders${SUFFIX:-}"))

        assert only_job(config_dir).target.dataset == "Orders"

    def test_empty_variable_without_default(self, config_dir: Path, write_job: WriteJob) -> None:
        """``${VAR}`` with VAR set to the empty string expands to empty, not to an error."""
        write_job("orders.yaml", VALID.replace("dataset: Orders", "dataset: Orders${SUFFIX}"))

        assert only_job(config_dir, {"SUFFIX": ""}).target.dataset == "Orders"

    def test_dollar_escape(self, config_dir: Path, write_job: WriteJob) -> None:
        """``$$`` is a literal ``$``, so ``$${VAR}`` is the text ``${VAR}``."""
        write_job(
            "orders.yaml",
            VALID.replace("table: orders", "query: \"SELECT '$$5', '$${HOME}' FROM t\""),
        )

        job = only_job(config_dir, {"HOME": "/root"})

        assert job.source.query == "SELECT '$5', '${HOME}' FROM t"

    def test_lone_dollar_untouched(self, config_dir: Path, write_job: WriteJob) -> None:
        """A ``$`` not followed by ``{`` or ``$`` stays as written."""
        write_job("orders.yaml", VALID.replace("table: orders", "query: SELECT $1 FROM t"))

        assert only_job(config_dir).source.query == "SELECT $1 FROM t"

    def test_inside_lists_and_nested_keys(self, config_dir: Path, write_job: WriteJob) -> None:
        """Strings inside lists and nested mappings are expanded too."""
        write_job(
            "orders.yaml",
            VALID.replace("watermark: updated_at", "watermark: updated_at\n  key: [id, '${K2}']")
            + "columns:\n  rename: {total: '${PREFIX}_total'}\n  types: {total: '${T:-float}'}\n",
        )

        job = only_job(config_dir, {"K2": "tenant_id", "PREFIX": "eu"})

        assert job.source.key == ("id", "tenant_id")
        assert job.columns.rename == {"total": "eu_total"}
        assert job.columns.types == {"total": "float"}

    def test_expanded_number(self, config_dir: Path, write_job: WriteJob) -> None:
        """An expanded string that holds a number is accepted for a numeric key."""
        write_job("orders.yaml", VALID + "batch_size: ${BATCH:-500}\n")

        assert only_job(config_dir).batch_size == 500
        assert only_job(config_dir, {"BATCH": "42"}).batch_size == 42

    def test_non_strings_untouched(self, config_dir: Path, write_job: WriteJob) -> None:
        """Numbers and other scalars pass through expansion unchanged."""
        write_job("orders.yaml", VALID + "batch_size: 7\n")

        assert only_job(config_dir).batch_size == 7

    def test_env_file_values(
        self, config_dir: Path, write_job: WriteJob, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Values come from ``.env``; the real environment overrides them."""
        monkeypatch.delenv("AKKIOSYNC_T_TABLE", raising=False)
        monkeypatch.setenv("AKKIOSYNC_T_DATASET", "from-env")
        Path(".env").write_text(
            "AKKIOSYNC_T_TABLE=from_file\nAKKIOSYNC_T_DATASET=from-file\n", encoding="utf-8"
        )
        write_job(
            "orders.yaml",
            VALID.replace("table: orders", "table: ${AKKIOSYNC_T_TABLE}").replace(
                "dataset: Orders", "dataset: ${AKKIOSYNC_T_DATASET}"
            ),
        )

        job = only_job(config_dir, config.environment(Path(".env")))

        assert job.source.table == "from_file"
        assert job.target.dataset == "from-env"

    def test_load_jobs_reads_env_file_by_default(
        self, config_dir: Path, write_job: WriteJob
    ) -> None:
        """Without an explicit env, load_jobs uses ``./.env`` plus the environment."""
        Path(".env").write_text("AKKIOSYNC_T_TABLE=from_file\n", encoding="utf-8")
        write_job("orders.yaml", VALID.replace("table: orders", "table: ${AKKIOSYNC_T_TABLE}"))

        assert load_jobs(config_dir)[0].source.table == "from_file"

    def test_environment_without_env_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A missing ``.env`` file is fine: the environment alone is used."""
        monkeypatch.setenv("AKKIOSYNC_T_ONLY", "yes")

        env = config.environment(Path(".env"))

        assert env["AKKIOSYNC_T_ONLY"] == "yes"

    def test_missing_variable(self, config_dir: Path, write_job: WriteJob) -> None:
        """An unset variable without default is a one-line error naming file, key and variable."""
        path = write_job("orders.yaml", VALID.replace("sqlite:///source.db", "${ORDERS_DB_URL}"))

        message = load_error(config_dir)

        assert message == f"{path}: source.url: environment variable ORDERS_DB_URL is not set"

    def test_missing_variables_each_reported(self, config_dir: Path, write_job: WriteJob) -> None:
        """Every unset variable of a file is reported, on its own line, with its key path."""
        path = write_job(
            "orders.yaml",
            VALID.replace("sqlite:///source.db", "${DB_URL}").replace(
                "watermark: updated_at", "watermark: updated_at\n  key: [id, '${K2}']"
            ),
        )

        message = load_error(config_dir)

        assert message.splitlines() == [
            f"{path}: source.url: environment variable DB_URL is not set",
            f"{path}: source.key[1]: environment variable K2 is not set",
        ]


# (id, file text, the expected message after "<path>: ")
BAD_FILES = [
    pytest.param(
        VALID.replace("table: orders", "table: orders\n  tabel: orders"),
        "source.tabel: unknown key",
        id="unknown-source-key",
    ),
    pytest.param(
        VALID.replace("table: orders", "tabel: orders"),
        "source.tabel: unknown key",
        id="misspelt-table",
    ),
    pytest.param(VALID + "batchsize: 10\n", "batchsize: unknown key", id="unknown-top-key"),
    pytest.param(
        VALID + "columns:\n  inclue: [id]\n", "columns.inclue: unknown key", id="unknown-columns"
    ),
    pytest.param(
        VALID.replace("dataset: Orders", "dataset: Orders\n  name: X"),
        "target.name: unknown key",
        id="unknown-target-key",
    ),
    pytest.param(VALID + "path: /etc/passwd\n", "path: unknown key", id="path-key"),
    pytest.param(
        VALID.replace("  watermark: updated_at\n", ""),
        "source.watermark: required key is missing",
        id="missing-watermark",
    ),
    pytest.param(
        VALID.replace("  url: sqlite:///source.db\n", ""),
        "source.url: required key is missing",
        id="missing-url",
    ),
    pytest.param(VALID.split("target:")[0], "target: required key is missing", id="missing-target"),
    pytest.param(
        "target:\n  dataset: Orders\n", "source: required key is missing", id="missing-source"
    ),
    pytest.param(
        VALID.replace("table: orders", "table: orders\n  query: SELECT 1"),
        "source: give exactly one of 'table' or 'query'",
        id="table-and-query",
    ),
    pytest.param(
        VALID.replace("  table: orders\n", ""),
        "source: give exactly one of 'table' or 'query'",
        id="neither-table-nor-query",
    ),
    pytest.param(
        VALID.replace("dataset: Orders", "dataset: Orders\n  dataset_id: ds_1"),
        "target: give exactly one of 'dataset' or 'dataset_id'",
        id="dataset-and-dataset-id",
    ),
    pytest.param(
        VALID.replace("  dataset: Orders\n", "  {}\n"),
        "target: give exactly one of 'dataset' or 'dataset_id'",
        id="neither-dataset-nor-id",
    ),
    pytest.param(
        VALID + "batch_size: 0\n",
        "batch_size: Input should be greater than or equal to 1",
        id="batch-size-zero",
    ),
    pytest.param(
        VALID + "batch_size: -1\n",
        "batch_size: Input should be greater than or equal to 1",
        id="batch-size-negative",
    ),
    pytest.param(
        VALID + "batch_size: abc\n",
        "batch_size: Input should be a valid integer, unable to parse string as an integer",
        id="batch-size-text",
    ),
    pytest.param(
        VALID + "batch_size: 1000000000000\n",
        "batch_size: Input should be less than or equal to 100000",
        id="batch-size-huge",
    ),
    pytest.param(
        VALID + "batch_size: 1.5\n",
        "batch_size: Input should be a valid integer, got a number with a fractional part",
        id="batch-size-fraction",
    ),
    pytest.param(
        VALID + "batch_bytes: 100\n",
        "batch_bytes: Input should be greater than or equal to 10000",
        id="batch-bytes-tiny",
    ),
    pytest.param(
        VALID + "batch_bytes: 4MB\n",
        "batch_bytes: Input should be a valid integer, unable to parse string as an integer",
        id="batch-bytes-text",
    ),
    pytest.param(
        "name: 'bad name!'\n" + VALID,
        "name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.\\-]*$'",
        id="name-pattern",
    ),
    pytest.param(
        "name: _orders\n" + VALID,
        "name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.\\-]*$'",
        id="name-leading-underscore",
    ),
    pytest.param(
        "name: " + "a" * 101 + "\n" + VALID,
        "name: String should have at most 100 characters",
        id="name-too-long",
    ),
    pytest.param(
        VALID + "columns:\n  types: {total: money}\n",
        "columns.types.total: Input should be 'integer', 'float', 'string', 'category', 'date' "
        "or 'boolean'",
        id="unknown-field-type",
    ),
    pytest.param(
        VALID.replace("sqlite:///source.db", "not a url"),
        "source.url: not a valid SQLAlchemy URL (like postgresql+psycopg://user@host/dbname)",
        id="invalid-url",
    ),
    pytest.param(
        VALID.replace("sqlite:///source.db", "5"),
        "source.url: Input should be a valid string",
        id="url-not-string",
    ),
    pytest.param(
        VALID.replace("watermark: updated_at", "watermark: updated_at\n  key: 5"),
        "source.key: Input should be a valid tuple",
        id="key-not-list",
    ),
    pytest.param(
        "source: orders\ntarget:\n  dataset: Orders\n",
        "source: Input should be a valid dictionary or instance of SourceSpec",
        id="source-not-mapping",
    ),
    pytest.param(
        VALID + "columns:\n  rename: [total]\n",
        "columns.rename: Input should be a valid dictionary",
        id="rename-not-mapping",
    ),
    pytest.param(
        'schedule: "60 * * * *"\n' + VALID,
        "schedule: cron minute field: 60 is outside 0-59",
        id="bad-cron",
    ),
    pytest.param(
        "schedule: 0s\n" + VALID,
        "schedule: interval '0s' must be longer than zero",
        id="zero-interval",
    ),
    pytest.param(
        "schedule: every day\n" + VALID,
        "schedule: 'every day' is neither an interval (30s, 5m, 1h, 1d) "
        "nor a 5-field cron expression (minute hour day-of-month month day-of-week)",
        id="not-a-schedule",
    ),
    pytest.param(
        "schedule: 30\n" + VALID,
        'schedule: must be a cron expression or an interval such as "30s", "5m", "1h"',
        id="schedule-number",
    ),
    pytest.param(
        "schedule: {kind: cron, expression: garbage}\n" + VALID,
        'schedule: must be a cron expression or an interval such as "30s", "5m", "1h"',
        id="schedule-mapping",
    ),
]


class TestOneLineErrors:
    """Each kind of mistake is one line: ``<file>: <key path>: <what is wrong>``, exit code 2."""

    @pytest.mark.parametrize(("text", "expected"), BAD_FILES)
    def test_message(self, config_dir: Path, write_job: WriteJob, text: str, expected: str) -> None:
        """The whole message is exactly one line naming the file and the key path."""
        path = write_job("orders.yaml", text)

        message = load_error(config_dir)

        assert message == f"{path}: {expected}"

    @pytest.mark.parametrize(
        "text", ["name: [x\n", VALID + "batch_size: 0\n"], ids=["yaml", "validation"]
    )
    def test_no_chained_traceback(self, config_dir: Path, write_job: WriteJob, text: str) -> None:
        """The ConfigError hides the YAML or pydantic error it came from."""
        path = write_job("orders.yaml", text)

        with pytest.raises(ConfigError) as caught:
            config.load_job_file(path, {})

        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__

    def test_several_problems_in_one_file(self, config_dir: Path, write_job: WriteJob) -> None:
        """All validation problems of one file are reported, one per line."""
        path = write_job(
            "orders.yaml",
            VALID.replace("  watermark: updated_at\n", "") + "batch_size: 0\nextra: 1\n",
        )

        lines = load_error(config_dir).splitlines()

        assert sorted(lines) == sorted(
            [
                f"{path}: source.watermark: required key is missing",
                f"{path}: batch_size: Input should be greater than or equal to 1",
                f"{path}: extra: unknown key",
            ]
        )

    def test_file_stem_as_invalid_name(self, config_dir: Path, write_job: WriteJob) -> None:
        """A file name that is not a valid job name is reported under ``name``."""
        path = write_job("my orders.yaml", VALID)

        message = load_error(config_dir)

        assert message.startswith(f"{path}: name: String should match pattern")
        assert "\n" not in message


class TestDocumentErrors:
    """Files that are not a YAML mapping are a one-line error naming the file."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                "source:\n  url: x\n   table: y\n",
                "line 3, column 9: invalid YAML: mapping values are not allowed here",
                id="bad-indent",
            ),
            pytest.param(
                "name: [orders\n",
                "line 2, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'",
                id="unclosed-list",
            ),
            pytest.param(
                "name: orders\n\tbatch_size: 1\n",
                "line 2, column 1: invalid YAML: found character '\\t' that cannot start any token",
                id="tab",
            ),
            pytest.param(
                "name: a\n---\nname: b\n",
                "line 2, column 1: invalid YAML: expected a single document in the stream, "
                "but found another document",
                id="two-documents",
            ),
        ],
    )
    def test_yaml_syntax(
        self, config_dir: Path, write_job: WriteJob, text: str, expected: str
    ) -> None:
        """A YAML syntax error names the line and column, on one line."""
        path = write_job("orders.yaml", text)

        assert load_error(config_dir) == f"{path}: {expected}"

    @pytest.mark.parametrize(
        "text",
        ["", "# only a comment\n", "- a\n- b\n", "just text\n", "42\n"],
        ids=["empty", "comment-only", "list", "string", "number"],
    )
    def test_not_a_mapping(self, config_dir: Path, write_job: WriteJob, text: str) -> None:
        """An empty file or a document that is not a mapping is rejected."""
        path = write_job("orders.yaml", text)

        message = load_error(config_dir)

        assert message == f"{path}: a job file must be a mapping of keys (name, source, target...)"

    def test_not_utf8(self, config_dir: Path) -> None:
        """A file that is not UTF-8 is a ConfigError, not a UnicodeDecodeError traceback."""
        path = config_dir / "jobs" / "orders.yaml"
        path.write_bytes(b"name: caf\xe9\n")

        assert load_error(config_dir) == f"{path}: not UTF-8 text (byte 9)"


class TestSecrets:
    """Database passwords never appear in an error message."""

    def test_password_absent_when_another_key_is_wrong(
        self, config_dir: Path, write_job: WriteJob
    ) -> None:
        """A valid URL with a password plus another error: the message lacks the password."""
        write_job(
            "orders.yaml",
            VALID.replace("sqlite:///source.db", "postgresql://u:S3cretPw-cfg-41@h/db")
            + "batch_size: 0\nbogus: 1\n",
        )

        message = load_error(config_dir)

        assert "S3cretPw-cfg-41" not in message
        assert "batch_size" in message
        assert "bogus: unknown key" in message

    @pytest.mark.parametrize(
        ("url", "password"),
        [
            ("postgresql//u:Pw-typo-1a2b@h/db", "Pw-typo-1a2b"),
            ("postgresql://u:Pw-port-3c4d@h:notaport/db", "Pw-port-3c4d"),
            ("://u:Pw-scheme-5e6f@h/db", "Pw-scheme-5e6f"),
        ],
        ids=["missing-colon", "bad-port", "no-scheme"],
    )
    def test_password_absent_from_invalid_url(
        self, config_dir: Path, write_job: WriteJob, url: str, password: str
    ) -> None:
        """A malformed URL is reported without echoing it, so its password cannot leak."""
        path = write_job("orders.yaml", VALID.replace("sqlite:///source.db", f"'{url}'"))

        message = load_error(config_dir)

        assert password not in message
        assert message == (
            f"{path}: source.url: not a valid SQLAlchemy URL "
            "(like postgresql+psycopg://user@host/dbname)"
        )

    def test_password_registered_for_redaction(self, config_dir: Path, write_job: WriteJob) -> None:
        """Loading a job registers its database password, so logs redact it anywhere."""
        write_job(
            "orders.yaml", VALID.replace("sqlite:///source.db", "postgresql://u:Reg-pw-7g8h@h/db")
        )

        only_job(config_dir)

        assert redact("connect failed, password Reg-pw-7g8h") == f"connect failed, password {MASK}"

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://u:Pa@ssW0rd-zq@db.internal/shop",
            "postgresql://u:Pa@ss/W0rd-zq@db.internal/shop",
            "mysql+pymysql://me@corp:Pa@ssW0rd-zq@db.internal:3306/shop",
            "postgresql://u:Pa@ss:W0rd-zq@db.internal:5432/shop",
        ],
        ids=["raw-at", "raw-at-and-slash", "raw-at-in-user-too", "raw-at-then-colon"],
    )
    def test_raw_at_refused_without_echo(
        self, config_dir: Path, write_job: WriteJob, url: str
    ) -> None:
        """More than one raw ``@`` in the URL is refused, naming the key, asking for %40, and
        echoing no part of the password."""
        path = write_job("orders.yaml", VALID.replace("sqlite:///source.db", f"'{url}'"))

        message = load_error(config_dir, {})

        assert message.startswith(f"{path}: source.url: ")
        assert "\n" not in message
        assert "percent-encoded" in message
        assert "%40" in message
        assert "%3A" in message
        assert "%2F" in message
        for part in ("Pa@ss", "ssW0rd", "W0rd-zq", "db.internal"):
            assert part not in message

    def test_raw_at_password_registered(self, config_dir: Path, write_job: WriteJob) -> None:
        """A refused URL's raw password is still registered, so it is masked anywhere."""
        url = "postgresql://u:Pa@ssW0rd-reg1@db.internal/shop"
        write_job("orders.yaml", VALID.replace("sqlite:///source.db", f"'{url}'"))

        load_error(config_dir, {})

        assert redact("pw Pa@ssW0rd-reg1 seen") == f"pw {MASK} seen"

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://u:p%40ss%3Aw%2Frd@db.internal/shop",
            "postgresql://u:pa/ss:wd@db.internal/shop",
            "mysql+pymysql://root@127.0.0.1:3306/test",
            "sqlite:////tmp/a@b/c@d.db",
        ],
        ids=["percent-encoded", "slash-and-colon", "user-only", "sqlite-path"],
    )
    def test_one_at_or_encoded_accepted(
        self, config_dir: Path, write_job: WriteJob, url: str
    ) -> None:
        """Encoded passwords, passwords SQLAlchemy parses whole, and SQLite paths are fine."""
        write_job("orders.yaml", VALID.replace("sqlite:///source.db", f"'{url}'"))

        assert only_job(config_dir).source.url == url

    def test_password_from_env_absent(self, config_dir: Path, write_job: WriteJob) -> None:
        """A URL from the environment with a bad sibling key: the password is not echoed."""
        write_job(
            "orders.yaml",
            VALID.replace("sqlite:///source.db", "${ORDERS_DB_URL}") + "batch_size: abc\n",
        )

        message = load_error(config_dir, {"ORDERS_DB_URL": "mysql+pymysql://u:Env-pw-9i0j@h/db"})

        assert "Env-pw-9i0j" not in message
        assert "batch_size: Input should be a valid integer" in message


class TestSeveralFiles:
    """Problems of every file are reported together; good files do not hide bad ones."""

    def test_all_problems_together(self, config_dir: Path, write_job: WriteJob) -> None:
        """Each bad file contributes its lines, in file order, and a good file adds none."""
        bad_yaml = write_job("a.yaml", "name: [x\n")
        write_job("b.yaml", VALID)
        bad_key = write_job("c.yml", VALID + "batch_size: 0\n")
        bad_env = write_job("d.yaml", VALID.replace("sqlite:///source.db", "${NOPE}"))

        message = load_error(config_dir)

        assert message.splitlines() == [
            f"{bad_yaml}: line 2, column 1: invalid YAML: expected ',' or ']', but got "
            "'<stream end>'",
            f"{bad_key}: batch_size: Input should be greater than or equal to 1",
            f"{bad_env}: source.url: environment variable NOPE is not set",
        ]

    def test_duplicate_name(self, config_dir: Path, write_job: WriteJob) -> None:
        """Two files defining one name: a one-line error naming both files."""
        first = write_job("a.yaml", "name: orders\n" + VALID)
        second = write_job("orders.yaml", VALID)

        message = load_error(config_dir)

        assert message == f"{second}: name: job name 'orders' is already used by {first}"

    def test_duplicate_name_from_stems(self, config_dir: Path, write_job: WriteJob) -> None:
        """``orders.yaml`` and ``orders.yml`` both default to the name ``orders``."""
        first = write_job("orders.yaml", VALID)
        second = write_job("orders.yml", VALID)

        message = load_error(config_dir)

        assert message == f"{second}: name: job name 'orders' is already used by {first}"

    def test_duplicate_and_other_problems(self, config_dir: Path, write_job: WriteJob) -> None:
        """A duplicate name is reported alongside other files' problems."""
        first = write_job("a.yaml", "name: orders\n" + VALID)
        broken = write_job("b.yaml", VALID + "oops: 1\n")
        second = write_job("c.yaml", "name: orders\n" + VALID)

        assert load_error(config_dir).splitlines() == [
            f"{broken}: oops: unknown key",
            f"{second}: name: job name 'orders' is already used by {first}",
        ]


class TestSelectJobs:
    """``select_jobs`` picks jobs by name, or fails listing the known ones."""

    @pytest.fixture
    def jobs(self, config_dir: Path, write_job: WriteJob) -> list[Job]:
        """Three jobs: customers, orders, products."""
        for name in ("orders", "customers", "products"):
            write_job(f"{name}.yaml", VALID.replace("dataset: Orders", f"dataset: {name}"))
        return load_jobs(config_dir, {})

    def test_no_names_means_all(self, jobs: list[Job]) -> None:
        """An empty selection is every job."""
        assert select_jobs(jobs, ()) == jobs

    def test_names_in_order_asked(self, jobs: list[Job]) -> None:
        """Named jobs come back in the order asked."""
        picked = select_jobs(jobs, ("products", "customers"))

        assert [job.name for job in picked] == ["products", "customers"]

    def test_unknown_names(self, jobs: list[Job]) -> None:
        """Unknown names raise JobNotFoundError naming them and listing the known jobs."""
        with pytest.raises(JobNotFoundError) as caught:
            select_jobs(jobs, ("orders", "nope", "gone"))

        assert str(caught.value) == (
            "no such job: nope, gone (known jobs: customers, orders, products)"
        )
        assert isinstance(caught.value, ConfigError)
        assert caught.value.exit_code == 2

    def test_no_jobs_known(self) -> None:
        """With no jobs at all, the message says so."""
        with pytest.raises(JobNotFoundError, match=r"^no such job: x \(known jobs: none\)$"):
            select_jobs([], ("x",))


class TestSettings:
    """Settings come from the environment, then ``./.env``, then defaults; --config wins."""

    def test_defaults(self) -> None:
        """With nothing set, the documented defaults apply."""
        settings = load_settings()

        assert settings.akkio_api_key is None
        assert settings.akkio_base_url == "https://api.akkio.com/v1"
        assert settings.akkiosync_config == Path("config")
        assert settings.akkiosync_state == Path("state/akkiosync.db")

    @pytest.mark.parametrize(
        ("timeout", "grace", "expected"),
        [(None, None, 120.0), ("1", None, 120.0), ("90", None, 180.0), ("1", "5", 5.0)],
    )
    def test_landing_grace(
        self, monkeypatch: pytest.MonkeyPatch, timeout: str | None, grace: str | None,
        expected: float,
    ) -> None:  # fmt: skip
        """The landing grace is twice AKKIO_TIMEOUT and never under two minutes by default (a
        server's own work does not end with the client's patience); an explicit one wins."""
        for name, value in (("AKKIO_TIMEOUT", timeout), ("AKKIOSYNC_LANDING_GRACE", grace)):
            if value is not None:
                monkeypatch.setenv(name, value)
        assert load_settings().landing_grace == expected

    def test_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every setting is read from its environment variable."""
        monkeypatch.setenv("AKKIO_API_KEY", "env-key-1234")
        monkeypatch.setenv("AKKIO_BASE_URL", "http://localhost:8080/v1")
        monkeypatch.setenv("AKKIOSYNC_CONFIG", "/etc/akkiosync")
        monkeypatch.setenv("AKKIOSYNC_STATE", "/var/lib/akkiosync/state.db")

        settings = load_settings()

        assert settings.api_key() == "env-key-1234"
        assert settings.akkio_base_url == "http://localhost:8080/v1"
        assert settings.akkiosync_config == Path("/etc/akkiosync")
        assert settings.akkiosync_state == Path("/var/lib/akkiosync/state.db")

    def test_from_env_file(self) -> None:
        """Every setting is read from ``.env`` in the working directory; other lines are ignored."""
        Path(".env").write_text(
            "AKKIO_API_KEY=file-key-5678\n"
            "AKKIO_BASE_URL=http://emulator/v1\n"
            "AKKIOSYNC_CONFIG=conf\n"
            "AKKIOSYNC_STATE=data/s.db\n"
            "ORDERS_DB_URL=sqlite://\n",
            encoding="utf-8",
        )

        settings = load_settings()

        assert settings.api_key() == "file-key-5678"
        assert settings.akkio_base_url == "http://emulator/v1"
        assert settings.akkiosync_config == Path("conf")
        assert settings.akkiosync_state == Path("data/s.db")

    def test_environment_overrides_env_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A variable set in the environment wins over the same one in ``.env``."""
        Path(".env").write_text(
            "AKKIO_BASE_URL=http://from-file/v1\nAKKIOSYNC_STATE=file.db\n", encoding="utf-8"
        )
        monkeypatch.setenv("AKKIO_BASE_URL", "http://from-env/v1")

        settings = load_settings()

        assert settings.akkio_base_url == "http://from-env/v1"
        assert settings.akkiosync_state == Path("file.db")

    def test_config_option_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``--config`` (the ``config_dir`` argument) wins over AKKIOSYNC_CONFIG."""
        monkeypatch.setenv("AKKIOSYNC_CONFIG", "/from/env")

        assert load_settings(Path("/from/cli")).akkiosync_config == Path("/from/cli")
        assert load_settings().akkiosync_config == Path("/from/env")

    def test_settings_frozen(self) -> None:
        """Settings cannot be changed after loading."""
        settings = load_settings()

        with pytest.raises(ValueError, match="frozen"):
            settings.akkio_base_url = "http://elsewhere"  # type: ignore[misc]

    @pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
    def test_api_key_missing(self, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
        """Asking for an unset or empty API key is a ConfigError saying how to set it."""
        if value is not None:
            monkeypatch.setenv("AKKIO_API_KEY", value)
        settings = load_settings()

        with pytest.raises(ConfigError) as caught:
            settings.api_key()

        assert str(caught.value) == "AKKIO_API_KEY is not set (environment or .env file)"
        assert caught.value.exit_code == 2

    def test_api_key_registered_as_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """After loading, the API key from the environment is masked by ``redact``."""
        key = "sk-env-registered-4f2a9c"
        monkeypatch.setenv("AKKIO_API_KEY", key)

        load_settings()

        assert redact("x " + key) == f"x {MASK}"

    def test_api_key_from_env_file_registered(self) -> None:
        """An API key read from ``.env`` is registered as a secret too."""
        key = "sk-file-registered-8b1d7e"
        Path(".env").write_text(f"AKKIO_API_KEY={key}\n", encoding="utf-8")

        load_settings()

        assert redact(f"Bearer {key}") == f"Bearer {MASK}"

    def test_key_hidden_in_repr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The settings' repr does not show the key."""
        monkeypatch.setenv("AKKIO_API_KEY", "sk-repr-hidden-3e5f")

        assert "sk-repr-hidden-3e5f" not in repr(load_settings())

    def test_settings_type(self) -> None:
        """load_settings returns Settings."""
        assert isinstance(load_settings(), Settings)


class TestTargetOptions:
    """``target.adopt`` and ``target.existing_rows``: writing into a dataset that exists."""

    def test_defaults(self, config_dir: Path, write_job: WriteJob) -> None:
        """A job creates its dataset, and refuses one that holds rows, unless told otherwise."""
        write_job("orders.yaml", VALID)
        target = only_job(config_dir).target
        assert (target.adopt, target.existing_rows) == (False, "fail")

    def test_adopt_and_append(self, config_dir: Path, write_job: WriteJob) -> None:
        """Both keys are read as written."""
        write_job(
            "orders.yaml",
            VALID.replace(
                "dataset: Orders", "dataset: Orders\n  adopt: true\n  existing_rows: append"
            ),
        )
        target = only_job(config_dir).target
        assert (target.adopt, target.existing_rows) == (True, "append")

    @pytest.mark.parametrize(
        ("target", "expected"),
        [
            pytest.param(
                "dataset_id: ds_1\n  adopt: true",
                "target: adopt: true goes with 'dataset' (a 'dataset_id' always names an "
                "existing dataset)",
                id="adopt-with-id",
            ),
            pytest.param(
                "dataset: Orders\n  existing_rows: maybe",
                "target.existing_rows: Input should be 'fail' or 'append'",
                id="bad-existing-rows",
            ),
        ],
    )
    def test_errors(
        self, config_dir: Path, write_job: WriteJob, target: str, expected: str
    ) -> None:
        """Misused target keys are one-line errors naming the file and key."""
        path = write_job("orders.yaml", VALID.replace("dataset: Orders", target))
        assert load_error(config_dir) == f"{path}: {expected}"


class TestOneWriter:
    """Two job files may not write one dataset: exactly once is only checkable for one writer."""

    @pytest.mark.parametrize(
        ("first", "second", "named"),
        [
            pytest.param("dataset: Orders", "dataset: Orders", "dataset 'Orders'", id="name"),
            pytest.param("dataset_id: ds_1", "dataset_id: ds_1", "dataset_id ds_1", id="id"),
            pytest.param(
                "dataset: Orders\n  adopt: true", "dataset: Orders", "dataset 'Orders'", id="adopt"
            ),
        ],
    )
    def test_same_target_refused(
        self, config_dir: Path, write_job: WriteJob, first: str, second: str, named: str
    ) -> None:
        """The second file is refused, naming the target and both files."""
        one = write_job("a.yaml", VALID.replace("dataset: Orders", first))
        two = write_job("b.yaml", VALID.replace("dataset: Orders", second))
        message = load_error(config_dir)
        assert message.startswith(f"{two}: target: {named} is also the target of {one}")
        assert "one job per dataset" in message

    def test_different_targets(self, config_dir: Path, write_job: WriteJob) -> None:
        """Different names, or a name and an id, are different targets."""
        write_job("a.yaml", VALID)
        write_job("b.yaml", VALID.replace("dataset: Orders", "dataset: Orders EU"))
        write_job("c.yaml", VALID.replace("dataset: Orders", "dataset_id: Orders"))
        assert [j.name for j in load_jobs(config_dir, {})] == ["a", "b", "c"]
