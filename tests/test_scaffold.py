"""``akkiosync init`` on live tables, and ``akkiosync list``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from akkiosync.cli import cli
from akkiosync.config import Job, load_job_file


def load_job(path: Path) -> Job:
    """The job a written file defines (its URL given as written)."""
    return load_job_file(path, {})


def invoke(config: Path, *args: str, user_input: str | None = None) -> Result:
    """``akkiosync --config CONFIG ARGS...``."""
    return CliRunner().invoke(cli, ["--config", str(config), *args], input=user_input)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty configuration directory, the store beside it, no API key."""
    monkeypatch.setenv("AKKIOSYNC_STATE", str(tmp_path / "state" / "akkiosync.db"))
    return tmp_path / "config"


class TestInit:
    """``init`` writes a job file whose watermark and key fit the table, then validates it."""

    def test_prefers_updated_at(
        self, config: Path, db_url: str, make_table: Any, table_name: str
    ) -> None:
        """A time column named updated_at is the watermark; the primary key is the key."""
        make_table(
            table_name,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("created_at", sa.DateTime, index=True),
            sa.Column("updated_at", sa.DateTime),
        )
        result = invoke(config, "init", "--url", db_url, "--table", table_name, "--name", "t")
        assert result.exit_code == 0, result.output
        job = load_job(config / "jobs" / "t.yaml")
        assert (job.source.watermark, job.source.key) == ("updated_at", ("id",))
        assert job.target.dataset == "t"
        assert "1 job(s) valid" in result.stdout

    def test_indexed_time_then_autoincrement(
        self, config: Path, db_url: str, make_table: Any, table_name: str
    ) -> None:
        """Without a change-time name: an indexed time column; without one: the serial key."""
        make_table(
            table_name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("born", sa.DateTime),
            sa.Column("seen", sa.DateTime, index=True),
        )
        make_table(
            f"{table_name}_b",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("note", sa.String(20)),
        )
        for table, name in ((table_name, "a"), (f"{table_name}_b", "b")):
            result = invoke(config, "init", "--url", db_url, "--table", table, "--name", name)
            assert result.exit_code == 0, result.output
        assert load_job(config / "jobs" / "a.yaml").source.watermark == "seen"
        assert load_job(config / "jobs" / "b.yaml").source.watermark == "id"

    def test_refuses_to_overwrite(
        self, config: Path, db_url: str, make_table: Any, table_name: str
    ) -> None:
        """A second init of the same name: exit 2, the first file untouched."""
        make_table(table_name, sa.Column("id", sa.Integer, primary_key=True))
        args = ("init", "--url", db_url, "--table", table_name, "--name", "t")
        assert invoke(config, *args).exit_code == 0
        before = (config / "jobs" / "t.yaml").read_text()
        result = invoke(config, *args)
        assert result.exit_code == 2
        assert "already there" in result.stderr
        assert (config / "jobs" / "t.yaml").read_text() == before

    def test_no_watermark(
        self, config: Path, db_url: str, make_table: Any, table_name: str
    ) -> None:
        """A table with no time column and no serial key: exit 2, no file written."""
        make_table(table_name, sa.Column("code", sa.String(10), primary_key=True))
        result = invoke(config, "init", "--url", db_url, "--table", table_name)
        assert result.exit_code == 2
        assert "no column fits a watermark" in result.stderr
        assert not (config / "jobs").exists() or not list((config / "jobs").iterdir())


class TestInitPrompts:
    """``init`` asks for what it is not given, and can keep the URL in a variable."""

    def test_asks_and_writes_variable(
        self, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """URL and table asked for; --url-env writes ${NAME}; validate runs with it set."""
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, updated_at DATETIME)")
            )
        engine.dispose()
        monkeypatch.setenv("SHOP_URL", url)
        result = invoke(config, "init", "--url-env", "SHOP_URL", user_input=f"{url}\norders\n")
        assert result.exit_code == 0, result.output
        text = (config / "jobs" / "orders.yaml").read_text()
        assert "${SHOP_URL}" in text
        assert url not in text
        assert url not in result.output  # the URL prompt does not echo it
        assert "1 job(s) valid" in result.stdout


class TestList:
    """``list`` prints each job with its schedule and target, and warns of invalid files."""

    def test_lists_jobs_and_warns(self, config: Path, tmp_path: Path) -> None:
        """One line per valid job, sorted; a broken file is a warning, exit 0."""
        jobs = config / "jobs"
        jobs.mkdir(parents=True)
        url = f"sqlite:///{tmp_path / 'x.db'}"
        body = "source: {{url: '{u}', table: t, watermark: w}}\ntarget: {{{t}}}\n"
        (jobs / "b.yaml").write_text("schedule: 5m\n" + body.format(u=url, t="dataset: B"))
        (jobs / "a.yaml").write_text(body.format(u=url, t="dataset_id: ds-1"))
        (jobs / "broken.yaml").write_text("source: [\n")
        result = invoke(config, "list")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].split("\t") == ["a", "manual", "dataset id ds-1"]
        assert lines[1].split("\t")[0] == "b"
        assert lines[1].split("\t")[2] == "dataset B"
        assert "broken.yaml" in result.stderr
