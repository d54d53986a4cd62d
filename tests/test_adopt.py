"""Writing into an existing dataset (its own field names and types), one writer per dataset, and
the types Akkio inferred for a new dataset's fields.

The source is a temporary SQLite database; Akkio is the emulator, in-process. The existing
dataset is made the way a CSV upload would leave it: field names such as ``Customer ID`` and
``Order Total``, typed by a first row added through the emulator.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from akkiosync.adopt import adopted_schema, akkio_field_type
from akkiosync.akkio import AkkioClient, DatasetField, DatasetInfo
from akkiosync.config import Job
from akkiosync.emulator import Emulator, serve
from akkiosync.errors import SchemaError
from akkiosync.inferred import differs, warning_text
from akkiosync.mapping import DatasetField as PlannedField
from akkiosync.mapping import Schema, SourceColumn, new_columns
from akkiosync.report import job_statuses, status_lines
from akkiosync.runner import Runner
from akkiosync.state import Store
from tests.conftest import API_KEY, no_sleep, until

SHOP = "Shop orders"  # the existing dataset's name
SHOP_FIELDS = [("Customer ID", "integer"), ("Order Total", "float"), ("status", "category")]
SOURCE_COLUMNS = (
    SourceColumn("id", int),
    SourceColumn("customer_id", str),
    SourceColumn("order_total", int),
    SourceColumn("Status", str),
    SourceColumn("note", str),
)


class Recorder(httpx.BaseTransport):
    """The emulator's in-process transport, counting add-rows requests."""

    def __init__(self, emulator: Emulator) -> None:
        self._inner = emulator.transport()
        self.adds = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and b'"rows"' in request.read():
            self.adds += 1
        return self._inner.handle_request(request)


@pytest.fixture
def recorder(emulator: Emulator) -> Recorder:
    """Counts the add-rows requests the job's client makes."""
    return Recorder(emulator)


@pytest.fixture
def recorded(recorder: Recorder) -> Iterator[AkkioClient]:
    """An Akkio client on the emulator whose add-rows requests are counted."""
    with AkkioClient(API_KEY, "http://emulator/v1", transport=recorder) as c:
        yield c


@pytest.fixture
def runner(store: Store, recorded: AkkioClient) -> Runner:
    """A runner on the store and the recorded emulator client."""
    return Runner(store, recorded, sleep=no_sleep)


@pytest.fixture
def source(tmp_path: Path) -> str:
    """A SQLite ``orders`` table whose names differ from the dataset's in case, ``_`` and
    spaces, and whose types differ too (the customer id is text, the total an integer)."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    execute(
        url,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id TEXT, order_total INTEGER, "
        '"Status" TEXT, note TEXT)',
    )
    add_orders(url, range(1, 6))
    return url


def execute(url: str, sql: str, rows: list[dict[str, Any]] | None = None) -> None:
    """Run one statement on the source."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), rows or {})
    finally:
        engine.dispose()


def add_orders(url: str, ids: range) -> None:
    """Insert orders with these ids."""
    execute(
        url,
        'INSERT INTO orders (id, customer_id, order_total, "Status", note) '
        "VALUES (:id, :customer, :total, 'paid', 'n')",
        [{"id": i, "customer": str(40 + i), "total": 10 * i} for i in ids],
    )


def shop_dataset(client: AkkioClient, name: str = SHOP) -> str:
    """A dataset with fields typed by a first row, as an upload leaves it: 1 row."""
    ref = client.create_dataset(name)
    client.add_rows(ref.id, [{"Customer ID": 1, "Order Total": 9.5, "status": True}])
    return ref.id


def make_job(url: str, name: str = "shop", **spec: Any) -> Job:
    """A job on the ``orders`` table, by id, in batches of 2."""
    target = spec.pop("target", {"dataset": SHOP, "adopt": True})
    return Job.model_validate(
        {
            "name": name,
            "source": {"url": url, "table": "orders", "watermark": "id", "key": "id"},
            "target": target,
            "batch_size": 2,
            **spec,
        }
    )


def info(fields: list[tuple[str, str]], rows: int = 1) -> DatasetInfo:
    """A dataset as ``GET ?id=`` describes it."""
    return DatasetInfo("ds1", SHOP, rows, tuple(DatasetField(n, t) for n, t in fields))


def mapping(schema: Schema) -> dict[str, str]:
    """Dataset field -> the source column that feeds it."""
    return {f.name: f.source for f in schema.fields}


class TestMatching:
    """Source columns are matched to the dataset's fields: rename, then exact, then normalised."""

    def test_normalised_names_and_dataset_types(self) -> None:
        """Case, spaces, ``_`` and ``-`` are ignored; each field keeps the dataset's name and
        type; columns the dataset lacks are listed as not sent."""
        adoption = adopted_schema(make_job("sqlite://"), SOURCE_COLUMNS, info(SHOP_FIELDS))
        assert [(f.name, f.source, f.type) for f in adoption.schema.fields] == [
            ("Customer ID", "customer_id", "integer"),
            ("Order Total", "order_total", "float"),
            ("status", "Status", "category"),
        ]
        assert adoption.schema.unsent == ("id", "note")

    def test_exact_name_before_normalised(self) -> None:
        """A column named exactly like the field wins over one that only normalises to it."""
        columns = (*SOURCE_COLUMNS, SourceColumn("status", str))
        adoption = adopted_schema(make_job("sqlite://"), columns, info(SHOP_FIELDS))
        assert mapping(adoption.schema)["status"] == "status"
        assert "Status" in adoption.schema.unsent

    def test_rename_always_wins(self) -> None:
        """``columns.rename`` names the dataset field a column feeds, before any name match."""
        job = make_job("sqlite://", columns={"rename": {"note": "Order Total"}})
        adoption = adopted_schema(job, SOURCE_COLUMNS, info(SHOP_FIELDS))
        assert mapping(adoption.schema)["Order Total"] == "note"
        assert "order_total" in adoption.schema.unsent

    def test_dashes_ignored(self) -> None:
        """``order-total`` also matches ``Order Total``."""
        columns = (SourceColumn("order-total", float),)
        adoption = adopted_schema(make_job("sqlite://"), columns, info([("Order Total", "float")]))
        assert mapping(adoption.schema) == {"Order Total": "order-total"}

    def test_missing_field(self) -> None:
        """A field no column feeds fails, naming it and suggesting columns.rename."""
        fields = [*SHOP_FIELDS, ("Region", "category")]
        with pytest.raises(SchemaError) as raised:
            adopted_schema(make_job("sqlite://"), SOURCE_COLUMNS, info(fields))
        message = str(raised.value)
        assert "Region" in message
        assert 'columns.rename: {source_column: "Region"}' in message

    def test_ambiguous_columns(self) -> None:
        """Two columns that both normalise to one field: refused, naming both."""
        columns = (*SOURCE_COLUMNS, SourceColumn("CustomerID", str))
        with pytest.raises(SchemaError, match=r"customer_id.*CustomerID|CustomerID.*customer_id"):
            adopted_schema(make_job("sqlite://"), columns, info(SHOP_FIELDS))

    def test_rename_to_unknown_field(self) -> None:
        """A rename whose target is no field of the dataset is refused, naming it."""
        job = make_job("sqlite://", columns={"rename": {"note": "Remarks"}})
        with pytest.raises(SchemaError, match="Remarks"):
            adopted_schema(job, SOURCE_COLUMNS, info(SHOP_FIELDS))

    def test_excluded_column_named_in_missing_field(self) -> None:
        """A field whose column the job excludes says so."""
        job = make_job("sqlite://", columns={"exclude": ["Status"]})
        with pytest.raises(SchemaError, match=r"status.*Status.*exclude"):
            adopted_schema(job, SOURCE_COLUMNS, info(SHOP_FIELDS))

    def test_empty_dataset_planned_from_source(self) -> None:
        """A dataset with no fields yet gets the schema a new one would."""
        adoption = adopted_schema(make_job("sqlite://"), SOURCE_COLUMNS, info([], rows=0))
        assert [f.name for f in adoption.schema.fields] == [c.name for c in SOURCE_COLUMNS]
        assert adoption.schema.unsent == ()

    @pytest.mark.parametrize(
        ("akkio", "ours"),
        [
            ("integer", "integer"),
            ("float", "float"),
            ("number", "float"),
            ("date", "date"),
            ("category", "category"),
            ("string", "string"),
            ("id", "string"),
            ("geometry", "string"),
            ("", "string"),
        ],
    )
    def test_akkio_types(self, akkio: str, ours: str) -> None:
        """Akkio's field types map to ours; unknown ones are strings."""
        assert akkio_field_type(akkio) == ours


class TestPinnedSchema:
    """An adopted schema keeps the columns it leaves unsent, through the store's JSON."""

    def test_round_trip(self) -> None:
        """``unsent`` survives ``to_json``/``from_json``."""
        adoption = adopted_schema(make_job("sqlite://"), SOURCE_COLUMNS, info(SHOP_FIELDS))
        assert Schema.from_json(adoption.schema.to_json()) == adoption.schema

    def test_plain_list_without_unsent(self) -> None:
        """Nothing unsent: the plain list older stores hold, read back the same."""
        schema = Schema((PlannedField("id", "id", "integer"),))
        assert json.loads(schema.to_json()) == [["id", "id", "integer"]]
        assert Schema.from_json(schema.to_json()) == schema

    def test_unsent_are_not_new_columns(self) -> None:
        """Columns left unsent at pinning are not reported as added to the source."""
        schema = adopted_schema(make_job("sqlite://"), SOURCE_COLUMNS, info(SHOP_FIELDS)).schema
        grown = (*SOURCE_COLUMNS, SourceColumn("added", str))
        assert new_columns(schema, grown) == ["added"]


class TestAdoptedRun:
    """A job writing into an existing dataset sends what that dataset expects, or nothing."""

    def test_records_carry_the_dataset_fields(
        self,
        runner: Runner,
        store: Store,
        recorded: AkkioClient,
        emulator: Emulator,
        source: str,
    ) -> None:
        """Each record has exactly the dataset's field names, each value the field's type;
        rows are appended after the ones there and the count check holds on the next run."""
        dataset_id = shop_dataset(recorded)
        job = make_job(source, target={"dataset_id": dataset_id, "existing_rows": "append"})
        result = runner.run(job)
        assert result.ok, result.error
        assert emulator.dataset_ids() == [dataset_id]
        rows = emulator.rows(dataset_id)
        assert len(rows) == 6
        assert rows[1] == {"Customer ID": 41, "Order Total": 10.0, "status": "paid"}
        for row in rows[1:]:
            assert list(row) == ["Customer ID", "Order Total", "status"]
            assert type(row["Customer ID"]) is int
            assert type(row["Order Total"]) is float
        assert store.job_state("shop").rows_at_pin == 1
        add_orders(source, range(6, 8))
        again = runner.run(job)
        assert again.ok, again.error
        assert (again.rows_sent, len(emulator.rows(dataset_id))) == (2, 8)

    def test_adopted_by_name(
        self, runner: Runner, recorded: AkkioClient, emulator: Emulator, source: str
    ) -> None:
        """``target.adopt: true`` writes into the existing dataset of that name."""
        dataset_id = shop_dataset(recorded)
        job = make_job(source, target={"dataset": SHOP, "adopt": True, "existing_rows": "append"})
        result = runner.run(job)
        assert result.ok, result.error
        assert (emulator.dataset_ids(), result.dataset_id) == ([dataset_id], dataset_id)
        assert len(emulator.rows(dataset_id)) == 6

    def test_adopt_needs_the_dataset(
        self, runner: Runner, recorder: Recorder, emulator: Emulator, source: str
    ) -> None:
        """``adopt: true`` with no dataset of that name fails; nothing is created or sent."""
        result = runner.run(make_job(source))
        assert not result.ok
        assert f"no dataset named {SHOP!r}" in (result.error or "")
        assert (emulator.dataset_ids(), recorder.adds) == ([], 0)

    def test_missing_field_fails_before_sending(
        self, runner: Runner, store: Store, recorder: Recorder, recorded: AkkioClient, source: str
    ) -> None:
        """A dataset field no column feeds fails the run before any add-rows request."""
        ref = recorded.create_dataset(SHOP)
        recorded.add_rows(ref.id, [{"Customer ID": 1, "Order Total": 9.5, "Region": "EU"}])
        adds = recorder.adds
        job = make_job(source, target={"dataset_id": ref.id, "existing_rows": "append"})
        result = runner.run(job)
        assert not result.ok
        assert "Region" in (result.error or "")
        assert "columns.rename" in (result.error or "")
        assert recorder.adds == adds
        assert store.job_state("shop").dataset_id is None

    def test_rows_there_need_append(
        self,
        runner: Runner,
        store: Store,
        recorder: Recorder,
        recorded: AkkioClient,
        emulator: Emulator,
        source: str,
    ) -> None:
        """A dataset holding rows is refused without ``existing_rows: append``: the message
        names its count and the options; nothing is sent or pinned."""
        dataset_id = shop_dataset(recorded)
        adds = recorder.adds
        result = runner.run(make_job(source, target={"dataset_id": dataset_id}))
        assert not result.ok
        error = result.error or ""
        for part in ("1 row", "existing_rows: append", "source.initial_watermark"):
            assert part in error
        assert recorder.adds == adds
        assert len(emulator.rows(dataset_id)) == 1
        assert store.job_state("shop").dataset_id is None

    def test_unsent_columns_warned_once(
        self,
        runner: Runner,
        recorded: AkkioClient,
        source: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Columns the dataset lacks are listed once, when the dataset is pinned; later runs
        warn of nothing (names matched by normalising are no column drift)."""
        dataset_id = shop_dataset(recorded)
        job = make_job(source, target={"dataset_id": dataset_id, "existing_rows": "append"})
        caplog.set_level(logging.WARNING, logger="akkiosync")
        assert runner.run(job).ok
        first = [r.getMessage() for r in caplog.records if "note" in r.getMessage()]
        assert len(first) == 1
        assert "id, note" in first[0]
        caplog.clear()
        add_orders(source, range(6, 8))
        assert runner.run(job).ok
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    def test_taken_name_names_adopt(
        self, runner: Runner, recorded: AkkioClient, emulator: Emulator, source: str
    ) -> None:
        """A taken name without ``adopt`` still stops the first run; the message names the
        way to write into that dataset."""
        dataset_id = shop_dataset(recorded)
        result = runner.run(make_job(source, target={"dataset": SHOP}))
        assert not result.ok
        assert "adopt: true" in (result.error or "")
        assert emulator.dataset_ids() == [dataset_id]

    def test_text_column_into_a_date_field(
        self,
        runner: Runner,
        store: Store,
        recorded: AkkioClient,
        emulator: Emulator,
        tmp_path: Path,
    ) -> None:
        """Text feeding a dataset's date field is sent as ISO 8601 (``2024-01-02 10:00:00``
        becomes ``2024-01-02T10:00:00``); text that is no date fails the run naming the
        column, the row's key and the value, before its batch is sent."""
        url = f"sqlite:///{tmp_path / 'dates.db'}"
        execute(url, "CREATE TABLE orders (id INTEGER PRIMARY KEY, ordered_at TEXT)")
        execute(
            url,
            "INSERT INTO orders VALUES (:id, :at)",
            [
                {"id": 1, "at": "2024-01-02 10:00:00"},
                {"id": 2, "at": "2024-01-03"},
                {"id": 3, "at": "03/01/2024"},
            ],
        )
        ref = recorded.create_dataset(SHOP)
        recorded.add_rows(ref.id, [{"Ordered At": "2023-12-31T00:00:00"}])
        result = runner.run(make_job(url, target={"dataset_id": ref.id, "existing_rows": "append"}))
        assert not result.ok
        for part in ("ordered_at", "id=3", "03/01/2024"):
            assert part in (result.error or "")
        assert emulator.rows(ref.id)[1:] == [
            {"Ordered At": "2024-01-02T10:00:00"},
            {"Ordered At": "2024-01-03"},
        ]
        assert store.job_state("shop").cursor_json is not None

    def test_second_job_on_a_pinned_dataset(
        self, runner: Runner, recorded: AkkioClient, emulator: Emulator, source: str
    ) -> None:
        """A job whose dataset another job of the store already writes is refused, naming it."""
        dataset_id = shop_dataset(recorded)
        target = {"dataset_id": dataset_id, "existing_rows": "append"}
        assert runner.run(make_job(source, target=target)).ok
        other = runner.run(make_job(source, name="other", target=target))
        assert not other.ok
        assert "job shop" in (other.error or "")
        assert len(emulator.rows(dataset_id)) == 6


class TestInferredTypes:
    """After a new dataset's first batch, the types Akkio chose are compared with the plan."""

    @pytest.fixture
    def readings(self, tmp_path: Path) -> str:
        """A SQLite table whose float column is NULL in the first three rows."""
        url = f"sqlite:///{tmp_path / 'readings.db'}"
        execute(url, "CREATE TABLE readings (id INTEGER PRIMARY KEY, amount REAL, label TEXT)")
        execute(
            url,
            "INSERT INTO readings VALUES (:id, :amount, 'x')",
            [{"id": i, "amount": None if i <= 3 else i / 2} for i in range(1, 7)],
        )
        return url

    def job(self, url: str, batch_size: int) -> Job:
        """The readings job, in batches of ``batch_size``."""
        return Job.model_validate(
            {
                "name": "readings",
                "source": {"url": url, "table": "readings", "watermark": "id", "key": "id"},
                "target": {"dataset": "Readings"},
                "batch_size": batch_size,
            }
        )

    def test_null_first_batch_warned_and_shown(
        self, runner: Runner, store: Store, readings: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A float column NULL in the whole first batch becomes a string field: warned with
        its meaning, stored, and shown by ``status``."""
        caplog.set_level(logging.WARNING, logger="akkiosync")
        job = self.job(readings, batch_size=3)
        assert runner.run(job).ok
        (warning,) = [r.getMessage() for r in caplog.records if "Akkio inferred" in r.getMessage()]
        assert "field amount: planned float, Akkio inferred string" in warning
        assert "akkiosync reset readings" in warning
        stored = store.job_state("readings").type_warnings_json
        assert json.loads(stored or "null") == [["amount", "float", "string"]]
        lines = status_lines(job_statuses(store, [job], with_lag=False), with_lag=False)
        assert any(
            line.startswith(
                "readings: type warning: field amount: planned float, Akkio inferred string"
            )
            for line in lines
        ), lines

    def test_values_in_first_batch(
        self, runner: Runner, store: Store, readings: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the first batch has a value for every field, Akkio agrees: no warning."""
        caplog.set_level(logging.WARNING, logger="akkiosync")
        assert runner.run(self.job(readings, batch_size=4)).ok
        assert "Akkio inferred" not in caplog.text
        assert store.job_state("readings").type_warnings_json == "[]"


class TestTypeDifferences:
    """Which inferred types are worth a warning, and what the warning says."""

    @pytest.mark.parametrize(
        ("planned", "inferred", "warned"),
        [
            ("float", "float", False),
            ("integer", "float", False),  # whole numbers fit a float field
            ("integer", "number", False),
            ("string", "category", False),  # text either way
            ("category", "string", False),
            ("integer", "id", False),  # an identifier: never computed with
            ("float", "string", True),
            ("date", "string", True),
            ("float", "integer", True),
            ("string", "date", True),
            ("string", "float", True),
        ],
    )
    def test_differs(self, planned: str, inferred: str, *, warned: bool) -> None:
        """Only a difference that changes what the values are in Akkio is warned of."""
        assert differs(planned, inferred) is warned

    @pytest.mark.parametrize(
        ("planned", "inferred", "meaning"),
        [
            ("float", "string", "its values are text in Akkio, numbers sent later too"),
            ("date", "category", "its values are text in Akkio, dates sent later too"),
            ("float", "integer", "Akkio expects whole numbers there"),
            ("string", "number", "Akkio expects numbers there"),
            ("category", "date", "Akkio expects dates there"),
        ],
    )
    def test_text(self, planned: str, inferred: str, meaning: str) -> None:
        """The warning names the field, both types, what it means and the way out."""
        text = warning_text("orders", "amount", planned, inferred)
        assert text.startswith(f"field amount: planned {planned}, Akkio inferred {inferred}: ")
        assert meaning in text
        assert "`akkiosync reset orders`" in text


JOB_FILE = """\
schedule: 1s
source:
  url: {url}
  table: orders
  watermark: id
  key: id
target:
  dataset: Orders
"""


@contextmanager
def two_writers(tmp_path: Path, source: str, emulator: Emulator) -> Iterator[tuple[Path, Path]]:
    """``akkiosync run`` over job files ``a`` and ``b`` that both write ``Orders``; yields the
    jobs directory and the daemon's log, and stops the daemon after."""
    jobs = tmp_path / "config" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "a.yaml").write_text(JOB_FILE.format(url=source))
    (jobs / "b.yaml").write_text(JOB_FILE.format(url=source))
    log = tmp_path / "daemon.log"
    with serve(emulator) as server, log.open("ab") as out:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AKKIO", "PYTEST"))},
            "AKKIO_API_KEY": API_KEY,
            "AKKIO_BASE_URL": server.url,
            "AKKIOSYNC_STATE": str(tmp_path / "state" / "akkiosync.db"),
            "AKKIOSYNC_LOG_FORMAT": "text",
            "AKKIOSYNC_RELOAD_INTERVAL": "0.2",
            "AKKIO_RATE_LIMIT": "1000",
        }
        command = [sys.executable, "-m", "akkiosync", "--config", str(tmp_path / "config")]
        process = subprocess.Popen(
            [*command, "run"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield jobs, log
        finally:
            process.terminate()
            process.wait(timeout=60)


@pytest.mark.slow
class TestDaemonOneWriter:
    """The daemon refuses a job file whose target another loaded job already writes."""

    def test_first_keeps_running(self, tmp_path: Path, source: str) -> None:
        """Of two files with one target, the later is reported invalid; the first runs."""
        emulator = Emulator(api_key=API_KEY)

        def landed() -> list[int]:
            """The row count of each dataset on the emulator."""
            return [len(emulator.rows(d)) for d in emulator.dataset_ids()]

        with two_writers(tmp_path, source, emulator) as (jobs, log):
            until("a's first run", lambda: landed() == [5])
            add_orders(source, range(6, 8))
            until("a's next run", lambda: landed() == [7])
        text = log.read_text()
        assert f"invalid job file: {jobs / 'b.yaml'}: target: dataset 'Orders'" in text
        assert str(jobs / "a.yaml") in text
        assert "[a] akkiosync.daemon: job loaded" in text
        assert "[b] akkiosync.daemon: job loaded" not in text
        assert len(emulator.dataset_ids()) == 1

    def test_refused_file_loads_once_the_conflict_is_gone(
        self, tmp_path: Path, source: str
    ) -> None:
        """The later file is loaded, without being touched, once the first one stops writing
        the same dataset."""
        emulator = Emulator(api_key=API_KEY)
        with two_writers(tmp_path, source, emulator) as (jobs, log):
            until("a's first run", lambda: len(emulator.dataset_ids()) == 1)
            (jobs / "a.yaml").write_text(
                JOB_FILE.format(url=source).replace("dataset: Orders", "dataset: Other")
            )
            until("b loaded", lambda: "[b] akkiosync.daemon: job loaded" in log.read_text())
            # It runs (and, as a's dataset keeps that name, stops before creating another).
            until("b's first run", lambda: "[b#" in log.read_text())
        assert len(emulator.dataset_ids()) == 1
