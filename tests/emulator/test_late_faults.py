"""Answers that come late or lie: rows that land after the client gave up, or under an error."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from akkiosync.cli import cli
from akkiosync.emulator import (
    DEFAULT_API_KEY,
    FAULT_KINDS,
    Emulator,
    EmulatorServer,
    FaultPlan,
)
from tests.emulator.helpers import add, create, until

KEY = DEFAULT_API_KEY
FAULTS = "/../_emulator/faults"
LIST = f"/v1/datasets?api_key={KEY}"
NO_FAULTS = dict.fromkeys(FAULT_KINDS, 0)
LATE = 0.5  # long enough to see the rows missing right after the answer, short for a test
GATEWAY_TIMEOUT = {"status": "error", "message": "gateway timeout (injected fault)"}
ERROR_AFTER = {"status": "error", "message": "internal error after storing (injected fault)"}
TIMEOUT_AFTER = {"status": "error", "message": "request timeout (injected fault)"}


def count(emu: Emulator, dataset_id: str) -> int:
    """The dataset's row count, read without a request (a request must not make rows land)."""
    return len(emu.rows(dataset_id))


def described_rows(client: httpx.Client, dataset_id: str) -> int:
    """The row count as a client reads it: ``GET ?id=``."""
    response = client.get("/datasets", params={"api_key": KEY, "id": dataset_id})
    rows: int = response.json()["rows"]
    return rows


def in_process(emu: Emulator, timeout: float | None) -> httpx.Client:
    """An in-process client with the given timeout."""
    return httpx.Client(transport=emu.transport(), base_url="http://emulator/v1", timeout=timeout)


class TestLate:
    """late answers 504 at once while the backend stores the rows `delay` seconds later."""

    def test_answers_504_and_the_rows_land_after_the_delay(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """The count is still `before` right after the 504, and `before + n` only after delay."""
        dataset_id = create(any_client)
        assert add(any_client, dataset_id, [{"a": 0}]).status_code == 200
        before = described_rows(any_client, dataset_id)
        emu.set_faults(FaultPlan(script=["late"], delay=LATE))
        start = time.monotonic()
        response = add(any_client, dataset_id, [{"a": 1}, {"a": 2}])
        assert (response.status_code, response.json()) == (504, GATEWAY_TIMEOUT)
        assert described_rows(any_client, dataset_id) == before
        until("the late rows", lambda: count(emu, dataset_id) == before + 2)
        assert time.monotonic() - start >= LATE
        assert described_rows(any_client, dataset_id) == before + 2
        assert emu.rows(dataset_id) == [{"a": 0}, {"a": 1}, {"a": 2}]
        assert emu.fault_counts() == NO_FAULTS | {"late": 1}

    def test_other_requests_get_a_plain_503(self, any_client: httpx.Client, emu: Emulator) -> None:
        """A late read or create is a 503 that changes nothing, then or later."""
        emu.set_faults(FaultPlan(script=["late", "late"], delay=0))
        response = any_client.get("/datasets", params={"api_key": KEY})
        assert response.status_code == 503
        assert response.json()["message"] == "service unavailable (injected fault)"
        assert any_client.post("/datasets", json={"api_key": KEY, "name": "n"}).status_code == 503
        assert emu.settle(10)
        assert emu.dataset_ids() == []
        assert emu.fault_counts() == NO_FAULTS | {"late": 2}

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"api_key": KEY, "rows": [{"b": 1}]}, id="wrong-fields"),
            pytest.param({"api_key": "wrong", "rows": [{"a": 1}]}, id="wrong-key"),
            pytest.param({"api_key": KEY, "rows": "[{not json"}, id="bad-rows"),
        ],
    )
    def test_a_late_add_is_still_checked(
        self,
        local: httpx.Client,
        emu: Emulator,
        caplog: pytest.LogCaptureFixture,
        body: dict[str, Any],
    ) -> None:
        """A late add the store refuses is dropped quietly: a debug line, no rows, no error."""
        caplog.set_level(logging.DEBUG, logger="akkiosync.emulator")
        dataset_id = create(local)
        assert add(local, dataset_id, [{"a": 0}]).status_code == 200
        emu.set_faults(FaultPlan(script=["late"], delay=0, only="add"))
        assert local.post("/datasets", json={"id": dataset_id, **body}).status_code == 504
        assert emu.settle(10)
        assert emu.rows(dataset_id) == [{"a": 0}]
        assert "refused" in caplog.text
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert "wrong" not in caplog.text

    def test_rows_land_in_the_order_they_land(self, local: httpx.Client, emu: Emulator) -> None:
        """A late batch lands after a batch sent later but answered at once."""
        dataset_id = create(local)
        emu.set_faults(FaultPlan(script=["late", "ok"], delay=LATE, only="add"))
        assert add(local, dataset_id, [{"a": 1}]).status_code == 504
        assert add(local, dataset_id, [{"a": 2}]).status_code == 200
        assert emu.settle(10)
        assert emu.rows(dataset_id) == [{"a": 2}, {"a": 1}]


class TestStoredThenError:
    """error_after and 408_after store the rows and still answer an error."""

    @pytest.mark.parametrize(
        ("kind", "status", "body"),
        [("error_after", 200, ERROR_AFTER), ("408_after", 408, TIMEOUT_AFTER)],
    )
    def test_rows_are_stored_and_the_answer_is_an_error(
        self,
        any_client: httpx.Client,
        emu: Emulator,
        kind: str,
        status: int,
        body: dict[str, str],
    ) -> None:
        """The add is applied at once; the answer is the injected error."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan(script=[kind]))
        response = add(any_client, dataset_id, [{"a": 1}, {"a": 2}])
        assert (response.status_code, response.json()) == (status, body)
        assert described_rows(any_client, dataset_id) == 2
        assert emu.fault_counts() == NO_FAULTS | {kind: 1}

    @pytest.mark.parametrize("kind", ["error_after", "408_after"])
    def test_other_requests_get_a_plain_500(
        self, any_client: httpx.Client, emu: Emulator, kind: str
    ) -> None:
        """A read or create hit by them is a 500 that changes nothing."""
        emu.set_faults(FaultPlan(script=[kind, kind]))
        response = any_client.get("/datasets", params={"api_key": KEY})
        assert response.status_code == 500
        assert response.json()["message"] == "internal server error (injected fault)"
        assert any_client.post("/datasets", json={"api_key": KEY, "name": "n"}).status_code == 500
        assert emu.dataset_ids() == []

    def test_a_refused_add_still_answers_the_injected_error(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """The proxy's error replaces whatever the backend said, a refusal included."""
        dataset_id = create(local)
        assert add(local, dataset_id, [{"a": 0}]).status_code == 200
        emu.set_faults(FaultPlan(script=["408_after"]))
        assert add(local, dataset_id, [{"b": 1}]).status_code == 408
        assert emu.rows(dataset_id) == [{"a": 0}]


class TestSlowPastTheTimeout:
    """A slow answer that outlasts the client's read timeout still lands, on both adapters."""

    def test_in_process_raises_read_timeout_and_lands_later(self) -> None:
        """The transport waits the read timeout (injected sleep), raises, and the rows land."""
        waits: list[float] = []
        emu = Emulator(faults=FaultPlan(script=["ok", "slow"], delay=LATE), sleep=waits.append)
        with in_process(emu, timeout=0.2) as client:
            dataset_id = create(client)
            start = time.monotonic()
            with pytest.raises(httpx.ReadTimeout) as info:
                add(client, dataset_id, [{"a": 1}, {"a": 2}])
            assert info.value.request.url.path == "/v1/datasets"
            assert waits == [0.2]
            assert count(emu, dataset_id) == 0
            until("the slow rows", lambda: count(emu, dataset_id) == 2)
            assert time.monotonic() - start >= LATE
            assert described_rows(client, dataset_id) == 2
        assert emu.fault_counts() == NO_FAULTS | {"slow": 1}

    @pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "longer-timeout"])
    def test_in_process_within_the_timeout_answers(self, timeout: float | None) -> None:
        """Without a read timeout, or within it, slow waits its delay and answers as before."""
        waits: list[float] = []
        emu = Emulator(faults=FaultPlan(script=["ok", "slow"], delay=3.5), sleep=waits.append)
        with in_process(emu, timeout=timeout) as client:
            dataset_id = create(client)
            assert add(client, dataset_id, [{"a": 1}]).json() == {"status": "success"}
        assert waits == [3.5]
        assert emu.rows(dataset_id) == [{"a": 1}]
        assert emu.settle(0)

    def test_in_process_a_timed_out_create_creates_later(self) -> None:
        """The backend finishes whatever request it was given: a create too."""
        emu = Emulator(faults=FaultPlan(script=["slow"], delay=0.05), sleep=lambda _: None)
        with in_process(emu, timeout=0.01) as client, pytest.raises(httpx.ReadTimeout):
            client.post("/datasets", json={"api_key": KEY, "name": "n"})
        assert emu.settle(10)
        assert len(emu.dataset_ids()) == 1

    def test_loopback_client_times_out_and_the_rows_land(
        self, server: EmulatorServer, emu: Emulator
    ) -> None:
        """Over a socket, the handler keeps working after the client's timeout and stores."""
        with httpx.Client(base_url=server.url, timeout=0.2, trust_env=False) as client:
            dataset_id = create(client)
            emu.set_faults(FaultPlan(script=["slow"], delay=1.0))
            with pytest.raises(httpx.ReadTimeout):
                add(client, dataset_id, [{"a": 1}, {"a": 2}])
            assert count(emu, dataset_id) == 0
            until("the slow rows", lambda: count(emu, dataset_id) == 2)


class TestSettle:
    """settle waits until nothing is in flight or scheduled to land."""

    def test_settle_waits_for_pending_late_stores(self, local: httpx.Client, emu: Emulator) -> None:
        """After settle returns True, the late rows are there."""
        dataset_id = create(local)
        emu.set_faults(FaultPlan(script=["late"], delay=LATE))
        start = time.monotonic()
        assert add(local, dataset_id, [{"a": 1}]).status_code == 504
        assert emu.settle(10)
        assert time.monotonic() - start >= LATE
        assert emu.rows(dataset_id) == [{"a": 1}]

    def test_settle_says_false_when_its_timeout_passes_first(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """A timeout shorter than the landing returns False, with the rows not landed yet."""
        dataset_id = create(local)
        emu.set_faults(FaultPlan(script=["late"], delay=LATE))
        assert add(local, dataset_id, [{"a": 1}]).status_code == 504
        assert emu.settle(0.01) is False
        assert emu.rows(dataset_id) == []
        assert emu.settle(10) is True

    def test_settle_with_nothing_pending_is_immediate(self, emu: Emulator) -> None:
        """A quiet emulator is settled at once, even with no time to wait."""
        assert emu.settle(0) is True

    def test_settle_waits_for_a_request_in_flight(
        self, server: EmulatorServer, emu: Emulator
    ) -> None:
        """A slow request whose client already gave up is waited for too."""
        with httpx.Client(base_url=server.url, timeout=0.1, trust_env=False) as client:
            dataset_id = create(client)
            emu.set_faults(FaultPlan(script=["slow"], delay=LATE))
            with pytest.raises(httpx.ReadTimeout):
                add(client, dataset_id, [{"a": 1}])
        assert emu.settle(10)
        assert emu.rows(dataset_id) == [{"a": 1}]


class TestJournal:
    """Rows stored late or under an error survive a restart like any stored rows."""

    @pytest.mark.parametrize("kind", ["late", "error_after", "408_after"])
    def test_stored_rows_are_journalled(self, tmp_path: Path, kind: str) -> None:
        """The journal replays the rows of a late or lying answer."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal, faults=FaultPlan(script=[kind], delay=0.05, only="add"))
        with in_process(emu, timeout=5) as client:
            dataset_id = create(client)
            assert add(client, dataset_id, [{"a": 1}]).json()["status"] == "error"
        assert emu.settle(10)
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        assert entries[-1] == {
            "op": "add",
            "id": dataset_id,
            "rows": [{"a": 1}],
            "fields": [["a", "integer"]],
        }
        assert Emulator(data_file=journal).rows(dataset_id) == [{"a": 1}]


class TestPlans:
    """The new kinds are part of the plan language, the draw, the control endpoint and the CLI."""

    def test_kinds_are_listed(self) -> None:
        """late, error_after and 408_after are fault kinds, after the older ones."""
        assert FAULT_KINDS[-3:] == ("late", "error_after", "408_after")

    def test_script_fires_them_in_order_and_counts_them(self) -> None:
        """A scripted plan plays each kind once, in order, and fault_counts counts each."""
        script = ["ok", "late", "error_after", "408_after", "ok"]
        emu = Emulator(faults=FaultPlan(script=script, delay=0.05, only="add"))
        with in_process(emu, timeout=5) as client:
            dataset_id = create(client)
            answers = [add(client, dataset_id, [{"a": n}]) for n in range(5)]
        seen = [(r.status_code, r.json()["status"]) for r in answers]
        ok, error = "success", "error"
        assert seen == [(200, ok), (504, error), (200, error), (408, error), (200, ok)]
        assert emu.settle(10)
        assert sorted(row["a"] for row in emu.rows(dataset_id)) == [0, 1, 2, 3, 4]
        assert emu.fault_counts() == NO_FAULTS | {"late": 1, "error_after": 1, "408_after": 1}

    def test_parse_reads_them(self) -> None:
        """Command-line rates and scripts accept the new kinds."""
        plan = FaultPlan.parse(["late=0.1,error_after=0.2", "408_after=0.3"], "ok,late,408_after")
        assert plan.rates == {"late": 0.1, "error_after": 0.2, "408_after": 0.3}
        assert plan.script == ("ok", "late", "408_after")

    def test_rates_draw_them(self) -> None:
        """A rate of 1 fires the kind on every request (here reads: a 503 stand-in)."""
        emu = Emulator(faults=FaultPlan({"late": 1.0}, delay=0))
        assert [emu.handle("GET", LIST, {}, b"")[0] for _ in range(3)] == [503] * 3
        assert emu.fault_counts()["late"] == 3

    def test_control_endpoint_sets_and_counts_them(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """POST /_emulator/faults accepts them and GET counts them under fired."""
        dataset_id = create(any_client)
        script = ["late", "error_after", "408_after"]
        posted = any_client.post(FAULTS, json={"api_key": KEY, "script": script, "delay": 0})
        assert posted.json() == {"status": "success"}
        for n in range(3):
            add(any_client, dataset_id, [{"a": n}])
        assert emu.settle(10)
        shown = any_client.get(FAULTS, params={"api_key": KEY}).json()
        assert shown["fired"] == NO_FAULTS | {"late": 1, "error_after": 1, "408_after": 1}
        assert described_rows(any_client, dataset_id) == 3

    def test_cli_help_lists_them(self) -> None:
        """The emulator command names every kind and says what --slow-delay also delays."""
        result = CliRunner().invoke(cli, ["emulator", "--help"])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())  # whatever the help's line breaks
        assert "late, error_after, 408_after" in text
        assert "late" in text.split("--slow-delay", 1)[1]
