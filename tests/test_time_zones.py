"""Time zones never shift a value: the same rows are sent whatever the process's TZ and the
database session's time zone, with every microsecond."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from akkiosync.akkio import AkkioClient
from akkiosync.config import Job
from akkiosync.emulator import Emulator
from akkiosync.runner import Runner
from akkiosync.state import Store
from tests.conftest import API_KEY

NAIVE = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
AWARE = sa.DateTime(timezone=True).with_variant(mysql.TIMESTAMP(fsp=6), "mysql", "mariadb")
BASE = dt.datetime(2026, 3, 1, 23, 59, 59, 999_997)  # noqa: DTZ001 - crosses midnight in UTC
ROWS = 7  # 1 µs apart, read 2 at a time: every batch boundary falls between microseconds
# (process TZ, PostgreSQL session zone, MariaDB session offset)
SETTINGS = [
    ("UTC", "UTC", "+00:00"),
    ("America/Los_Angeles", "Asia/Kolkata", "+05:30"),
    ("Asia/Kolkata", "America/Los_Angeles", "-08:00"),
]


def _session_url(url: str, dialect: str, pg_zone: str, my_offset: str) -> str:
    """The URL with the session time zone set the way a user would set it."""
    parsed = sa.make_url(url)
    if dialect == "postgresql":
        parsed = parsed.update_query_dict({"options": f"-c timezone={pg_zone}"})
    elif dialect in ("mysql", "mariadb"):
        parsed = parsed.update_query_dict({"init_command": f"SET time_zone='{my_offset}'"})
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
def process_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the process's TZ (and restore it)."""

    def set_tz(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


def _sync_once(tmp_path: Path, url: str, table: str, watermark: str) -> list[dict[str, Any]]:
    emulator = Emulator(api_key=API_KEY)
    job = Job.model_validate(
        {
            "name": "tz",
            "source": {"url": url, "table": table, "watermark": watermark, "key": "id"},
            "target": {"dataset": "TZ"},
            "batch_size": 2,
        }
    )
    with (
        Store.open(tmp_path / "state.db") as store,
        AkkioClient(API_KEY, "http://emulator/v1", transport=emulator.transport()) as client,
    ):
        runner = Runner(store, client, sleep=lambda _: None)
        assert runner.run(job).ok
        # Resume from the stored cursor, as after a restart: nothing more, nothing shifted.
        again = runner.run(job)
        assert (again.ok, again.rows_sent) == (True, 0)
    (dataset_id,) = emulator.dataset_ids()
    return emulator.rows(dataset_id)


class TestTimeZones:
    """The same sync under three process and session time zones sends identical rows."""

    @pytest.mark.parametrize("watermark", ["naive", "aware"])
    def test_identical_everywhere(
        self,
        db_url: str,
        engine: sa.Engine,
        make_table: Any,
        table_name: str,
        tmp_path: Path,
        process_tz: Any,
        watermark: str,
    ) -> None:
        """Naive values are sent unshifted, aware ones as the same instant in UTC, µs kept."""
        dialect = engine.dialect.name  # SQLite has no aware type: both columns are DATETIME
        table = make_table(
            table_name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("naive", NAIVE),
            sa.Column("aware", AWARE if dialect != "sqlite" else NAIVE),
        )
        stamps = [BASE + dt.timedelta(microseconds=i) for i in range(ROWS)]
        with engine.begin() as conn:
            if dialect in ("mysql", "mariadb"):
                conn.execute(sa.text("SET time_zone = '+00:00'"))  # TIMESTAMP values in UTC
            conn.execute(
                table.insert(),
                [
                    {
                        "id": i,
                        "naive": s,
                        "aware": s.replace(tzinfo=dt.UTC) if dialect == "postgresql" else s,
                    }
                    for i, s in enumerate(stamps)
                ],
            )
        results = []
        for n, (zone, pg_zone, my_offset) in enumerate(SETTINGS):
            process_tz(zone)
            url = _session_url(db_url, dialect, pg_zone, my_offset)
            results.append(_sync_once(tmp_path / str(n), url, table_name, watermark))
        assert results[0] == results[1] == results[2]
        assert [row["id"] for row in results[0]] == list(range(ROWS))
        # One text form per column: six digits for 00:00:00.000000 too.
        six = "microseconds"
        assert [row["naive"] for row in results[0]] == [s.isoformat(timespec=six) for s in stamps]
        if dialect != "sqlite":
            utc = [s.replace(tzinfo=dt.UTC).isoformat(timespec=six) for s in stamps]
            assert [row["aware"] for row in results[0]] == utc
