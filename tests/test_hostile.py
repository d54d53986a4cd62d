"""Hostile or broken job files: YAML alias bombs, huge files, nested ``${...}`` defaults.

Each is refused quickly, with one line naming the file, and never stalls the other jobs: in the
commands (CliRunner) and in the daemon's reload (a real process).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from akkiosync.cli import cli
from akkiosync.config import load_job_file
from akkiosync.errors import ConfigError
from akkiosync.jobyaml import MAX_FILE_BYTES, MAX_NESTING
from akkiosync.source import Source, open_engine, split_table
from tests import test_daemon
from tests.conftest import until
from tests.test_daemon import Daemon, insert

daemon = test_daemon.daemon
table = test_daemon.table

# Nine levels of nine aliases each: 9**9 (387 million) strings from about 400 bytes.
BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{','.join(f'*{p}' for _ in range(9))}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "",
    ]
)

VALID = """\
source:
  url: sqlite:///source.db
  table: orders
  watermark: updated_at
target:
  dataset: Orders
"""


def load(path: Path, env: dict[str, str] | None = None) -> str:
    """The message of the ``ConfigError`` loading ``path`` raises."""
    with pytest.raises(ConfigError) as caught:
        load_job_file(path, env or {})
    return str(caught.value)


def job_path(tmp_path: Path, text: str, name: str = "orders.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestQueryText:
    """A query's duplicate column names are said as such on every database."""

    def test_duplicate_column_names(self, db_url: str, make_table: Any, table_name: str) -> None:
        """Two columns named ``id`` (SQLite renames one ``id:1``; MariaDB refuses the derived
        table; PostgreSQL keeps both): one ``ConfigError`` naming the column."""
        make_table(table_name, sa.Column("id", sa.Integer, primary_key=True))
        query = f"SELECT a.id, b.id FROM {table_name} a JOIN {table_name} b ON a.id = b.id"
        source = Source(open_engine(db_url), watermark="id", query=query)
        with source, pytest.raises(ConfigError) as caught:
            source.columns()
        assert str(caught.value).startswith(
            "source.query: more than one column named id: give each column its own name"
        )

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("orders", (None, "orders")),
            ("public.orders", ("public", "orders")),
            ('"odd.name"', (None, "odd.name")),
            ('public."odd.name"', ("public", "odd.name")),
            ('"my ""quoted"" one"', (None, 'my "quoted" one')),
        ],
    )
    def test_split_table(self, text: str, expected: tuple[str | None, str]) -> None:
        """A dot separates the schema; double quotes keep a name whole."""
        assert split_table(text) == expected

    @pytest.mark.parametrize("text", ['"odd.name', 'a"b.c', "a.b.c", "a.", '"x"y'])
    def test_split_table_refused(self, text: str) -> None:
        """Unclosed or partial quotes, three parts or an empty part are refused."""
        with pytest.raises(ValueError, match=re.escape(repr(text))):
            split_table(text)


class TestAliasBomb:
    """YAML aliases are counted as what they expand to, and refused past a bound, fast."""

    def test_billion_laughs_refused_fast(self, tmp_path: Path) -> None:
        """The 400-byte bomb is refused in well under a second, naming the file."""
        path = job_path(tmp_path, BOMB)
        assert len(BOMB) < 500
        start = time.perf_counter()
        message = load(path)
        assert time.perf_counter() - start < 1.0
        assert message.startswith(f"{path}: line ")
        assert "aliases expand to more than" in message

    def test_self_reference_refused(self, tmp_path: Path) -> None:
        """An alias inside the value it names (a cycle) is refused, not recursed into."""
        path = job_path(tmp_path, "a: &a [1, *a]\n")
        assert "an alias refers to a value that contains it" in load(path)

    def test_modest_aliases_still_work(self, tmp_path: Path) -> None:
        """Anchors used as YAML intends (a shared value) load as before."""
        text = VALID.replace("table: orders", "table: &t orders").replace(
            "dataset: Orders", "dataset: *t"
        )
        job = load_job_file(job_path(tmp_path, text), {})
        assert job.target.dataset == "orders"

    def test_other_jobs_still_sync(self, tmp_path: Path) -> None:
        """``validate`` refuses the bomb at once; ``status`` still shows the other job."""
        jobs = tmp_path / "config" / "jobs"
        jobs.mkdir(parents=True)
        (jobs / "bomb.yaml").write_text(BOMB)
        (jobs / "orders.yaml").write_text(VALID + "schedule: 5m\n")
        runner = CliRunner()
        env = {"AKKIOSYNC_STATE": str(tmp_path / "state.db")}
        result = runner.invoke(cli, ["--config", str(tmp_path / "config"), "validate"], env=env)
        assert result.exit_code == 2
        assert "aliases expand to more than" in result.stderr
        args = ["--config", str(tmp_path / "config"), "status", "--no-lag"]
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
        assert any(line.split()[:2] == ["orders", "5m"] for line in result.stdout.splitlines())
        assert "warning: " in result.stderr


class TestSizeLimit:
    """A job file over ``MAX_FILE_BYTES`` is refused without being parsed."""

    def test_over_the_limit(self, tmp_path: Path) -> None:
        """A valid job padded past the limit with a comment is refused, naming the file."""
        path = job_path(tmp_path, VALID + "#" * MAX_FILE_BYTES + "\n")
        message = load(path)
        assert message == (
            f"{path}: larger than {MAX_FILE_BYTES:,} bytes: not a job file (a job file is a "
            "few lines)"
        )

    def test_at_the_limit(self, tmp_path: Path) -> None:
        """A file of exactly the limit still loads."""
        padding = MAX_FILE_BYTES - len(VALID) - 1
        path = job_path(tmp_path, VALID + "#" * padding + "\n")
        assert path.stat().st_size == MAX_FILE_BYTES
        assert load_job_file(path, {}).source.table == "orders"


class TestNestedDefaults:
    """``${A:-${B}}`` defaults may nest: they expand, or are an error, never literal text."""

    @pytest.mark.parametrize(
        ("value", "env", "expected"),
        [
            ("${A:-${B}}", {"B": "from_b"}, "from_b"),
            ("${A:-${B}}", {"A": "from_a", "B": "from_b"}, "from_a"),
            ("${A:-${B:-fallback}}", {}, "fallback"),
            ("${A:-${B:-${C}}}_x", {"C": "c"}, "c_x"),
            ("${A:-pre_${B}_post}", {"B": "b"}, "pre_b_post"),
            ("${A:-$${B}}", {}, "${B}"),
        ],
        ids=["inner", "outer-set", "two-levels", "three-levels", "inside-text", "escaped"],
    )
    def test_expands(self, tmp_path: Path, value: str, env: dict[str, str], expected: str) -> None:
        """The innermost default that applies is used; ``$$`` stays a literal ``$``."""
        text = VALID.replace("dataset: Orders", f"dataset: '{value}'")
        assert load_job_file(job_path(tmp_path, text), env).target.dataset == expected

    def test_unset_inner_variable(self, tmp_path: Path) -> None:
        """An unset variable inside a used default is an error naming the key and variable."""
        path = job_path(tmp_path, VALID.replace("dataset: Orders", "dataset: '${A:-${B}}'"))
        assert load(path) == f"{path}: target.dataset: environment variable B is not set"

    def test_unset_inner_variable_unused(self, tmp_path: Path) -> None:
        """A default that is not used is not expanded: its variables need not be set."""
        path = job_path(tmp_path, VALID.replace("dataset: Orders", "dataset: '${A:-${B}}'"))
        assert load_job_file(path, {"A": "a"}).target.dataset == "a"

    def test_unclosed(self, tmp_path: Path) -> None:
        """A default missing its closing brace is an error, not the literal text."""
        path = job_path(tmp_path, VALID.replace("dataset: Orders", "dataset: '${A:-${B}'"))
        assert load(path) == f"{path}: target.dataset: ${{A:-... has no closing }}"

    def test_too_deep(self, tmp_path: Path) -> None:
        """Defaults nested past ``MAX_NESTING`` are an error."""
        depth = MAX_NESTING + 2
        value = "".join(f"${{V{i}:-" for i in range(depth)) + "x" + "}" * depth
        path = job_path(tmp_path, VALID.replace("dataset: Orders", f"dataset: '{value}'"))
        assert f"nested more than {MAX_NESTING} deep" in load(path)


@pytest.mark.postgres
@pytest.mark.slow
class TestDaemonReload:
    """The daemon's reload refuses a bomb at once; the other job keeps running."""

    def test_bomb_does_not_stall(self, daemon: Daemon, table: tuple[sa.Engine, sa.Table]) -> None:
        """A bomb written beside a running job is logged as invalid within seconds, and rows
        inserted after it still reach the dataset."""
        engine, t = table
        daemon.start()
        until("the first rows", lambda: daemon.ids("Orders") == list(range(1, 21)))
        (daemon.jobs / "bomb.yaml").write_text(BOMB)
        until("the bomb refused", lambda: daemon.logged("aliases expand"), deadline=10)
        insert(engine, t, range(21, 31))
        until("rows after the bomb", lambda: daemon.ids("Orders") == list(range(1, 31)))
