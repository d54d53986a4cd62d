"""A far API and a big one: add-rows answers delayed by ``latency`` without holding up other
requests, and ``keep_only`` rows that keep one field while every count stays exact."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from akkiosync.cli import cli
from akkiosync.emulator import DEFAULT_API_KEY, Emulator, serve
from tests.conftest import DEADLINE
from tests.emulator.helpers import add, create, until

KEY = DEFAULT_API_KEY
LATENCY = 0.25
ROWS = "/../_emulator/rows"


class Gate:
    """The emulator's ``sleep``: records each wait, and while ``hold`` is set blocks in it until
    released (so a test can see what goes on while one answer is delayed)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.waits: list[float] = []
        self.hold = hold
        self.waiting = threading.Event()
        self.release = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.hold:
            self.waiting.set()
            self.release.wait(DEADLINE)


def described(client: httpx.Client, dataset_id: str) -> dict[str, Any]:
    """The dataset as ``GET ?id=`` describes it."""
    response = client.get("/datasets", params={"api_key": KEY, "id": dataset_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestLatency:
    """Each add-rows answer waits ``latency`` after storing; the wait blocks nothing else."""

    @pytest.fixture
    def gate(self) -> Gate:
        """The emulator's recorded (and, if asked, blocking) sleep."""
        return Gate()

    @pytest.fixture
    def emu(self, gate: Gate) -> Iterator[Emulator]:
        """An emulator whose add-rows answers wait LATENCY through ``gate``."""
        emulator = Emulator(latency=LATENCY, sleep=gate)
        yield emulator
        gate.release.set()
        assert emulator.settle(10), "a request was still in flight 10 s after the test"

    def test_add_rows_waits_the_latency(self, any_client: httpx.Client, gate: Gate) -> None:
        """An add-rows request waits once, LATENCY; creating, describing and listing don't."""
        dataset_id = create(any_client)
        described(any_client, dataset_id)
        any_client.get("/datasets", params={"api_key": KEY})
        assert gate.waits == []
        assert add(any_client, dataset_id, [{"a": 1}]).json() == {"status": "success"}
        assert gate.waits == [LATENCY]

    def test_refused_add_rows_waits_too(self, any_client: httpx.Client, gate: Gate) -> None:
        """A refusal comes back from as far: rows that break the schema wait LATENCY, 400."""
        dataset_id = create(any_client)
        add(any_client, dataset_id, [{"a": 1}])
        assert add(any_client, dataset_id, [{"b": 1}]).status_code == 400
        assert gate.waits == [LATENCY, LATENCY]

    def test_other_requests_go_on_while_an_answer_waits(
        self, any_client: httpx.Client, gate: Gate, emu: Emulator
    ) -> None:
        """While one answer is held in its wait, its rows are counted already and another
        add-rows request to the same dataset is stored: the wait holds no lock."""
        dataset_id = create(any_client)
        gate.hold = True
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(add, any_client, dataset_id, [{"a": 1}, {"a": 2}])
            assert gate.waiting.wait(DEADLINE)
            assert described(any_client, dataset_id)["rows"] == 2
            second = pool.submit(add, any_client, dataset_id, [{"a": 3}])
            until("the second batch to be stored", lambda: len(emu.rows(dataset_id)) == 3)
            assert not first.done()
            gate.release.set()
            assert first.result(DEADLINE).status_code == 200
            assert second.result(DEADLINE).status_code == 200
        assert gate.waits == [LATENCY, LATENCY]

    def test_real_wait_delays_the_answer_on_a_socket(self) -> None:
        """With the real sleep, an add-rows answer over a loopback port takes at least it."""
        with (
            serve(Emulator(latency=LATENCY)) as server,
            httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as client,
        ):
            dataset_id = create(client)
            start = time.monotonic()
            assert add(client, dataset_id, [{"a": 1}]).status_code == 200
            assert time.monotonic() - start >= LATENCY

    @pytest.mark.parametrize("latency", [-0.1, math.nan])
    def test_not_a_duration_is_refused(self, latency: float) -> None:
        """A negative or NaN latency is a ValueError naming it."""
        with pytest.raises(ValueError, match="latency must be a number of seconds"):
            Emulator(latency=latency)


class TestKeepOnly:
    """``keep_only`` stores that one field of each row; counts and inferred fields stay whole."""

    @pytest.fixture
    def emu(self) -> Emulator:
        """An emulator that keeps only each row's ``id``."""
        return Emulator(keep_only="id")

    def test_rows_keep_the_field_and_counts_stay_exact(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """The rows hold only ids (also over /_emulator/rows); the count and the fields,
        inferred from whole rows, are as without the option."""
        dataset_id = create(any_client)
        add(any_client, dataset_id, [{"id": 1, "name": "a", "day": "2026-01-01"}])
        add(any_client, dataset_id, [{"id": 2, "name": "b", "day": "2026-01-02"}] * 2)
        assert emu.rows(dataset_id) == [{"id": 1}, {"id": 2}, {"id": 2}]
        listed = any_client.get(ROWS, params={"api_key": KEY, "id": dataset_id}).json()
        assert listed["rows"] == [{"id": 1}, {"id": 2}, {"id": 2}]
        body = described(any_client, dataset_id)
        assert body["rows"] == 3
        assert body["fields"] == [
            {"name": "id", "type": "integer"},
            {"name": "name", "type": "string"},
            {"name": "day", "type": "date"},
        ]

    def test_whole_rows_are_still_checked(self, any_client: httpx.Client, emu: Emulator) -> None:
        """A row whose keys differ from the dataset's fields is refused, not cut down."""
        dataset_id = create(any_client)
        add(any_client, dataset_id, [{"id": 1, "name": "a"}])
        assert add(any_client, dataset_id, [{"id": 2}]).status_code == 400
        assert described(any_client, dataset_id)["rows"] == 1

    def test_a_dataset_without_the_field_keeps_empty_rows(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """Rows without the field are stored as empty rows: still counted."""
        dataset_id = create(any_client)
        add(any_client, dataset_id, [{"n": 1}, {"n": 2}])
        assert emu.rows(dataset_id) == [{}, {}]
        assert described(any_client, dataset_id)["rows"] == 2

    def test_journal_replays_what_was_kept(self, tmp_path: Path) -> None:
        """With a data file, the cut-down rows are journalled and replayed."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal, keep_only="id")
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            dataset_id = create(c)
            add(c, dataset_id, [{"id": 7, "note": "x" * 100}])
        assert b"x" * 100 not in journal.read_bytes()
        assert Emulator(data_file=journal).rows(dataset_id) == [{"id": 7}]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TestCommandOptions:
    """``akkiosync emulator --latency SECONDS --keep-only FIELD`` reach the emulator."""

    def test_help_lists_them(self) -> None:
        """``--help`` shows both options."""
        result = CliRunner().invoke(cli, ["emulator", "--help"])
        assert result.exit_code == 0
        assert "--latency" in result.output
        assert "--keep-only" in result.output

    @pytest.mark.parametrize("value", ["-1", "nan", "soon"])
    def test_bad_latency_is_a_usage_error(self, value: str) -> None:
        """A latency that is no duration exits 2 naming the option, before serving."""
        result = CliRunner().invoke(cli, ["emulator", "--port", "0", "--latency", value])
        assert result.exit_code == 2, result.output
        assert "--latency" in result.output

    def test_a_process_delays_answers_and_keeps_ids(self, tmp_path: Path) -> None:
        """An emulator process started with both options delays add-rows answers by the
        latency and keeps only the ids."""
        port = free_port()
        command = [sys.executable, "-m", "akkiosync", "emulator", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--latency", str(LATENCY), "--keep-only", "id"],
            env={**os.environ, "AKKIO_EMULATOR_API_KEY": KEY},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}/v1"
            with httpx.Client(base_url=base, timeout=DEADLINE, trust_env=False) as client:

                def answers() -> bool:
                    assert process.poll() is None, "the emulator exited"
                    try:
                        return client.get("/../_emulator/health").status_code == 200
                    except httpx.TransportError:
                        return False

                until("the emulator to answer", answers)
                dataset_id = create(client)
                start = time.monotonic()
                assert add(client, dataset_id, [{"id": 5, "name": "e"}]).status_code == 200
                assert time.monotonic() - start >= LATENCY
                listed = client.get(ROWS, params={"api_key": KEY, "id": dataset_id}).json()
            assert listed["rows"] == [{"id": 5}]
        finally:
            process.terminate()
            process.wait(timeout=DEADLINE)
