"""Shared fixtures: hermetic environment, real databases, the emulator.

Database tests take their URLs from ``AKKIOSYNC_TEST_POSTGRES_URL`` and
``AKKIOSYNC_TEST_MYSQL_URL``; where one is unset they start a container with testcontainers,
and where that is impossible they skip, unless ``AKKIOSYNC_REQUIRE_DB=1`` (as in CI), where
they fail: a database test that silently did not run proves nothing.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.emulator import Emulator
from akkiosync.runner import Runner
from akkiosync.source import engine_url
from akkiosync.state import Store

API_KEY = "test-key-0123456789"
_OUR_VARIABLES = ("AKKIO_", "AKKIOSYNC_")
_KEEP = ("AKKIOSYNC_TEST_POSTGRES_URL", "AKKIOSYNC_TEST_MYSQL_URL", "AKKIOSYNC_REQUIRE_DB")


DEADLINE = 60.0  # seconds any one expectation of a test may take before the test fails


def until(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true (and return that); fail after
    ``deadline`` seconds. How tests wait for another thread or process, never by sleeping."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def no_sleep(seconds: float) -> None:
    """Injected as ``sleep``: backoff and settling waits pass without waiting for real."""


def make_job(url: str, table: str, **overrides: Any) -> Job:
    """A job as a YAML file would define it: ``orders`` by ``updated_at`` and ``id`` into the
    dataset ``Orders``, in batches of 4."""
    spec: dict[str, Any] = {
        "name": "orders",
        "source": {"url": url, "table": table, "watermark": "updated_at", "key": "id"},
        "target": {"dataset": "Orders"},
        "batch_size": 4,
    }
    spec.update(overrides)
    return Job.model_validate(spec)


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test sees the developer's AKKIO* variables, proxies or ./.env; each runs in tmp_path."""
    for name in list(os.environ):
        if name.startswith(_OUR_VARIABLES) and name not in _KEEP:
            monkeypatch.delenv(name)
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points the root logger at CliRunner's (soon closed) stderr: undo that after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    akkiosync_level = logging.getLogger("akkiosync").level  # `demo` quiets it
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("akkiosync").setLevel(akkiosync_level)


def _unavailable(what: str, reason: object) -> None:
    message = f"{what} is not available: {reason}"
    if os.environ.get("AKKIOSYNC_REQUIRE_DB") == "1":
        pytest.fail(message + " (AKKIOSYNC_REQUIRE_DB=1)", pytrace=False)
    pytest.skip(message)


def _server_url(env_var: str, what: str, image: str) -> Iterator[str]:
    url = os.environ.get(env_var)
    if url:
        yield url
        return
    try:
        if what == "PostgreSQL":
            from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - optional, needs Docker

            container: Any = PostgresContainer(image, driver="psycopg")
        else:
            from testcontainers.mysql import MySqlContainer  # noqa: PLC0415 - optional, needs Docker

            container = MySqlContainer(image, dialect="pymysql")
        container.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start a container means no database
        _unavailable(what, f"{env_var} is unset and no container could start ({exc!r})")
        return
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL (env or testcontainers)."""
    yield from _server_url("AKKIOSYNC_TEST_POSTGRES_URL", "PostgreSQL", "postgres:15")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A MySQL/MariaDB URL (env or testcontainers)."""
    yield from _server_url("AKKIOSYNC_TEST_MYSQL_URL", "MariaDB/MySQL", "mariadb:10.11")


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.db'}"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on ``db_url``; checks that the database answers at all."""
    eng = sa.create_engine(engine_url(db_url))
    try:
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        eng.dispose()
        _unavailable(db_url.split(":")[0], exc.orig)
    yield eng
    eng.dispose()


@pytest.fixture
def table_name() -> str:
    """A fresh table name, so tests never see each other's rows."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_table(engine: sa.Engine) -> Iterator[Any]:
    """Create tables on ``engine`` and drop them after the test."""
    metadata = sa.MetaData()

    def make(name: str, *columns: sa.Column[Any]) -> sa.Table:
        table = sa.Table(name, metadata, *columns)
        table.create(engine)
        return table

    yield make
    metadata.drop_all(engine)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh checkpoint store, where the settings would put it."""
    with Store.open(tmp_path / "state" / "akkiosync.db") as s:
        yield s


@pytest.fixture
def runner(store: Store, client: AkkioClient) -> Runner:
    """A runner on the store and the in-process emulator."""
    return Runner(store, client, sleep=no_sleep)


@pytest.fixture
def emulator() -> Emulator:
    """A fresh in-process Akkio emulator."""
    return Emulator(api_key=API_KEY)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[AkkioClient]:
    """An Akkio client talking to ``emulator`` in-process."""
    with AkkioClient(API_KEY, "http://emulator/v1", transport=emulator.transport()) as c:
        yield c
