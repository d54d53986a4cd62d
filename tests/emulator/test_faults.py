"""Fault injection in the emulator: plans, each kind in-process and over a socket, control calls."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import httpx
import pytest

from akkiosync.emulator import (
    DEFAULT_API_KEY,
    FAULT_KINDS,
    Emulator,
    EmulatorServer,
    FaultPlan,
)
from tests.emulator.helpers import add, create

KEY = DEFAULT_API_KEY
# The extra endpoints live beside /v1, so relative to a client's /v1 base URL:
FAULTS, HEALTH, ROWS = "/../_emulator/faults", "/../_emulator/health", "/../_emulator/rows"
# What a client may see when a server hangs up without answering.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)
FAST = 0.01  # the delay of slow faults here: tests never wait for long
LIST = f"/v1/datasets?api_key={KEY}"
NO_FAULTS = dict.fromkeys(FAULT_KINDS, 0)


def listing(client: httpx.Client) -> httpx.Response:
    return client.get("/datasets", params={"api_key": KEY})


def outcomes(emu: Emulator, count: int) -> list[str]:
    """What `count` list requests get, straight through handle(): a status, or "dropped"."""
    seen = []
    for _ in range(count):
        try:
            seen.append(str(emu.handle("GET", LIST, {}, b"")[0]))
        except httpx.RemoteProtocolError:
            seen.append("dropped")
    return seen


def address(server: EmulatorServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").removesuffix("/v1").split(":")
    return host, int(port)


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer from a raw socket (head and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed mid-answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"Content-Length: (\d+)", head)
    assert length, head
    while len(body) < int(length.group(1)):
        body += sock.recv(4096)
    return data


class TestFaultPlan:
    """A plan validates its settings and is read from command-line text or JSON."""

    def test_fault_kinds_are_the_contract(self) -> None:
        """The kinds are named as users and the CLI spell them."""
        assert FAULT_KINDS == (
            "429",
            "500",
            "503",
            "slow",
            "drop_before",
            "drop_after",
            "late",
            "error_after",
            "408_after",
        )

    def test_defaults_inject_nothing(self, local: httpx.Client, emu: Emulator) -> None:
        """An empty plan has no rates and no script, and requests answer normally."""
        plan = FaultPlan()
        assert (plan.rates, plan.script, plan.seed, plan.only) == ({}, (), None, "all")
        assert (plan.retry_after, plan.delay) == (1.0, 2.0)
        emu.set_faults(plan)
        assert [listing(local).status_code for _ in range(5)] == [200] * 5
        assert emu.fault_counts() == NO_FAULTS

    def test_parse_reads_rates_and_script(self) -> None:
        """parse turns KIND=RATE items and a comma-separated script into a plan."""
        plan = FaultPlan.parse(
            ["429=0.1", " drop_after = 0.05"],
            "ok, drop_after,503",
            seed=7,
            only="add",
            retry_after=0,
            delay=0.5,
        )
        assert plan == FaultPlan(
            {"429": 0.1, "drop_after": 0.05}, ("ok", "drop_after", "503"), 7, "add", 0.0, 0.5
        )

    def test_parse_accepts_rates_joined_by_commas(self) -> None:
        """One item may carry several rates, as an environment variable would."""
        assert FaultPlan.parse(["429=0.1,503=0.2"]).rates == {"429": 0.1, "503": 0.2}
        assert FaultPlan.parse("slow=1").rates == {"slow": 1.0}

    def test_rates_may_add_up_to_exactly_one(self) -> None:
        """Rates whose floating-point sum rounds just above 1 are accepted, and always fire."""
        plan = FaultPlan.parse(["429=0.34", "500=0.56", "503=0.1"], seed=5)
        assert sum(plan.rates.values()) > 1  # 1.0000000000000002
        assert "200" not in outcomes(Emulator(faults=plan), 100)

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            pytest.param({"rates": ["404=0.1"]}, "unknown fault kind '404'", id="unknown-kind"),
            pytest.param({"rates": ["429=1.5"]}, "from 0 to 1", id="above-one"),
            pytest.param({"rates": ["429=-0.1"]}, "from 0 to 1", id="negative"),
            pytest.param({"rates": ["429=nan"]}, "from 0 to 1", id="nan"),
            pytest.param({"rates": ["429=0.6", "503=0.5"]}, "add up to 1.1", id="total"),
            pytest.param({"rates": ["429"]}, "KIND=PROBABILITY", id="no-equals"),
            pytest.param({"rates": ["=0.1"]}, "KIND=PROBABILITY", id="no-kind"),
            pytest.param({"rates": ["429=often"]}, "'often' is not a number", id="not-a-number"),
            pytest.param({"rates": ["429=0.1", "429=0.2"]}, "given twice", id="twice"),
            pytest.param({"script": "ok,boom"}, "unknown script step 'boom'", id="script-step"),
            pytest.param({"only": "reads"}, "only must be one of all, add", id="only"),
            pytest.param({"retry_after": -1}, "retry_after must be", id="retry-after"),
            pytest.param({"delay": float("inf")}, "delay must be", id="delay"),
        ],
    )
    def test_parse_errors_name_the_problem(self, arguments: dict[str, Any], message: str) -> None:
        """Bad input is a ValueError whose message says what is wrong."""
        with pytest.raises(ValueError, match=re.escape(message)):
            FaultPlan.parse(**arguments)

    @pytest.mark.parametrize(
        "arguments",
        [
            pytest.param({"script": "503"}, id="script-as-text"),
            pytest.param({"rates": {"429": True}}, id="boolean-rate"),
            pytest.param({"rates": {"429": "0.1"}}, id="text-rate"),
            pytest.param({"seed": 1.5}, id="float-seed"),
            pytest.param({"only": "none"}, id="only"),
        ],
    )
    def test_constructor_validates_too(self, arguments: dict[str, Any]) -> None:
        """A plan built directly is checked as strictly as a parsed one."""
        with pytest.raises(ValueError, match=r"\S"):
            FaultPlan(**arguments)

    def test_plan_is_frozen_and_keeps_its_own_copies(self) -> None:
        """Changing what a plan was built from, or the plan itself, is impossible."""
        rates, script = {"429": 0.5}, ["503"]
        plan = FaultPlan(rates, script)
        rates["503"] = 0.5
        script.append("ok")
        assert plan.rates == {"429": 0.5}
        assert plan.script == ("503",)
        with pytest.raises(FrozenInstanceError):
            plan.seed = 1  # type: ignore[misc]
        with pytest.raises(TypeError):
            plan.rates["500"] = 0.1  # type: ignore[index]

    def test_json_round_trip(self) -> None:
        """to_json and from_json carry every setting, through real JSON."""
        plan = FaultPlan({"503": 0.25}, ("ok", "slow"), 3, "add", 0.5, 0.1)
        assert FaultPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan

    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            pytest.param({"rate": {"429": 0.1}}, "unknown fault plan settings ['rate']", id="key"),
            pytest.param({"rates": [0.1]}, "rates must be an object", id="rates-array"),
            pytest.param({"script": "ok,503"}, "script must be an array", id="script-text"),
            pytest.param({"script": [503]}, "unknown script step 503", id="script-number"),
        ],
    )
    def test_from_json_errors(self, settings: dict[str, Any], message: str) -> None:
        """JSON settings of the wrong shape are a ValueError too."""
        with pytest.raises(ValueError, match=re.escape(message)):
            FaultPlan.from_json(settings)


class TestStatusFaults:
    """429, 500 and 503 answer an error and store nothing, in-process and over a socket."""

    def test_429_carries_retry_after(self, any_client: httpx.Client, emu: Emulator) -> None:
        """A 429 has the default Retry-After of 1 second and Akkio's error body."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan(script=["429"]))
        response = add(any_client, dataset_id, [{"a": 1}])
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {"status": "error", "message": "rate limited"}
        assert emu.rows(dataset_id) == []
        assert add(any_client, dataset_id, [{"a": 2}]).status_code == 200
        assert emu.rows(dataset_id) == [{"a": 2}]

    @pytest.mark.parametrize(("seconds", "header"), [(0, "0"), (2.5, "2.5"), (30, "30")])
    def test_retry_after_is_configurable(
        self, local: httpx.Client, emu: Emulator, seconds: float, header: str
    ) -> None:
        """retry_after sets the header, zero included; whole seconds have no decimals."""
        emu.set_faults(FaultPlan(script=["429"], retry_after=seconds))
        assert listing(local).headers["Retry-After"] == header

    @pytest.mark.parametrize("kind", ["500", "503"])
    def test_server_errors_store_nothing(
        self, any_client: httpx.Client, emu: Emulator, kind: str
    ) -> None:
        """500 and 503 answer that status with an error body, and the rows are not stored."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan(script=[kind]))
        response = add(any_client, dataset_id, [{"a": 1}])
        assert response.status_code == int(kind)
        assert response.json()["status"] == "error"
        assert response.json()["message"]
        assert "Retry-After" not in response.headers
        assert emu.rows(dataset_id) == []
        assert emu.fault_counts() == NO_FAULTS | {kind: 1}

    def test_fault_on_create_creates_nothing(self, any_client: httpx.Client, emu: Emulator) -> None:
        """A create answered 503 leaves no dataset behind."""
        emu.set_faults(FaultPlan(script=["503"]))
        response = any_client.post("/datasets", json={"api_key": KEY, "name": "n"})
        assert response.status_code == 503
        assert emu.dataset_ids() == []


class TestDrops:
    """drop_before loses the request, drop_after only its answer; the client sees a hang-up."""

    def test_drop_before_stores_nothing(self, any_client: httpx.Client, emu: Emulator) -> None:
        """The client gets no answer and the rows never land."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan(script=["drop_before"]))
        with pytest.raises(DROPPED):
            add(any_client, dataset_id, [{"a": 1}])
        assert emu.rows(dataset_id) == []
        assert emu.fault_counts() == NO_FAULTS | {"drop_before": 1}

    def test_drop_after_stores_the_rows(self, any_client: httpx.Client, emu: Emulator) -> None:
        """The client gets no answer, yet the rows landed and are counted."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan(script=["drop_after"]))
        with pytest.raises(DROPPED):
            add(any_client, dataset_id, [{"a": 1}, {"a": 2}])
        assert emu.rows(dataset_id) == [{"a": 1}, {"a": 2}]
        assert listing(any_client).status_code == 200
        described = any_client.get("/datasets", params={"api_key": KEY, "id": dataset_id})
        assert described.json()["rows"] == 2

    def test_drop_after_on_a_read_is_a_plain_drop(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """A GET dropped after handling changes nothing; the client sees the same hang-up."""
        emu.set_faults(FaultPlan(script=["drop_after"]))
        with pytest.raises(DROPPED):
            listing(any_client)
        assert emu.dataset_ids() == []
        assert emu.fault_counts()["drop_after"] == 1

    def test_in_process_drop_is_a_remote_protocol_error(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """In-process, a drop raises what httpx raises when a server hangs up."""
        emu.set_faults(FaultPlan(script=["drop_before"]))
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response") as info:
            listing(local)
        assert info.value.request.url.path == "/v1/datasets"

    def test_drop_after_is_journalled(self, tmp_path: Path) -> None:
        """Rows whose answer was lost survive a restart, like any stored rows."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal, faults=FaultPlan(script=["ok", "drop_after"]))
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            dataset_id = create(c)
            with pytest.raises(httpx.RemoteProtocolError):
                add(c, dataset_id, [{"a": 1}])
        assert Emulator(data_file=journal).rows(dataset_id) == [{"a": 1}]

    def test_socket_gets_no_bytes_and_is_closed(
        self, server: EmulatorServer, emu: Emulator
    ) -> None:
        """Over a raw keep-alive connection, the dropped request reads end-of-file, no bytes."""
        emu.set_faults(FaultPlan(script=["ok", "drop_before"]))
        request = f"GET {LIST} HTTP/1.1\r\nHost: emulator\r\n\r\n".encode()
        with socket.create_connection(address(server), timeout=10) as sock:
            sock.sendall(request)
            assert read_answer(sock).startswith(b"HTTP/1.1 200")
            sock.sendall(request)  # the same connection, kept alive
            assert sock.recv(4096) == b""

    def test_client_recovers_after_a_drop(self, http: httpx.Client, emu: Emulator) -> None:
        """A pooled client's next request after a drop succeeds on a fresh connection."""
        emu.set_faults(FaultPlan(script=["ok", "drop_after", "ok"]))
        assert listing(http).status_code == 200
        with pytest.raises(DROPPED):
            listing(http)
        assert listing(http).status_code == 200

    def test_drops_log_no_errors_and_print_nothing(
        self,
        http: httpx.Client,
        emu: Emulator,
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """A deliberate hang-up is not a server failure: no traceback, no error log."""
        caplog.set_level(logging.DEBUG, logger="akkiosync.emulator")
        emu.set_faults(FaultPlan(script=["drop_before", "drop_after"]))
        for _ in range(2):
            with pytest.raises(DROPPED):
                listing(http)
        assert listing(http).status_code == 200
        assert "dropped without an answer" in caplog.text
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert capfd.readouterr().err == ""


class TestSlow:
    """slow delays the answer by the plan's delay, then answers normally, without the lock."""

    def test_slow_answers_normally(self, any_client: httpx.Client, emu: Emulator) -> None:
        """A slow add still stores its rows and answers success."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan(script=["slow"], delay=FAST))
        assert add(any_client, dataset_id, [{"a": 1}]).json() == {"status": "success"}
        assert emu.rows(dataset_id) == [{"a": 1}]
        assert emu.fault_counts() == NO_FAULTS | {"slow": 1}

    def test_slow_waits_the_plans_delay(self) -> None:
        """The injected sleep is asked for exactly the plan's delay, once per slow request."""
        waits: list[float] = []
        emu = Emulator(
            faults=FaultPlan(script=["slow", "ok", "slow"], delay=3.5), sleep=waits.append
        )
        assert outcomes(emu, 3) == ["200"] * 3
        assert waits == [3.5, 3.5]

    def test_other_requests_go_on_while_one_is_slow(self) -> None:
        """While a slow request waits, another one is handled: the wait holds no lock."""
        waiting, release = threading.Event(), threading.Event()

        def sleep(seconds: float) -> None:
            waiting.set()
            release.wait(10)

        emu = Emulator(faults=FaultPlan(script=["slow"]), sleep=sleep)
        create_body = json.dumps({"api_key": KEY, "name": "n"}).encode()
        with ThreadPoolExecutor(max_workers=2) as pool:
            try:
                slow = pool.submit(emu.handle, "GET", LIST, {}, b"")
                assert waiting.wait(10)
                other = pool.submit(emu.handle, "POST", "/v1/datasets", {}, create_body)
                assert other.result(timeout=10)[0] == 200
                assert not slow.done()
            finally:
                release.set()
            assert slow.result(timeout=10)[0] == 200
        assert len(emu.dataset_ids()) == 1


class TestScriptAndRates:
    """A script plays first, in order; then seeded rates draw at most one fault per request."""

    def test_script_plays_in_order_then_requests_are_normal(self) -> None:
        """Each step is used by one request, in order; after the last, nothing is injected."""
        emu = Emulator(faults=FaultPlan(script=["ok", "503", "429", "drop_before", "ok"]))
        assert outcomes(emu, 6) == ["200", "503", "429", "dropped", "200", "200"]

    def test_rates_apply_once_the_script_runs_out(self) -> None:
        """The rates take over from the request after the script's last step."""
        emu = Emulator(faults=FaultPlan({"500": 1.0}, ["503", "ok"]))
        assert outcomes(emu, 4) == ["503", "200", "500", "500"]

    def test_rate_one_always_fires_and_zero_never(self) -> None:
        """A rate of 1 fires on every request; a rate of 0 on none."""
        emu = Emulator(faults=FaultPlan({"429": 0.0, "503": 1.0}))
        assert outcomes(emu, 20) == ["503"] * 20

    def test_same_seed_same_outcomes(self) -> None:
        """Two emulators with the same seeded plan fail the same 50 requests the same way."""
        rates = {"429": 0.2, "503": 0.1, "drop_before": 0.1, "drop_after": 0.1}
        plan = FaultPlan(rates, seed=42)
        first = outcomes(Emulator(faults=plan), 50)
        assert outcomes(Emulator(faults=plan), 50) == first
        assert {"200", "429", "503", "dropped"} <= set(first)
        assert outcomes(Emulator(faults=FaultPlan(rates, seed=43)), 50) != first

    def test_setting_a_plan_again_restarts_it(self) -> None:
        """set_faults replays the script and the seeded stream from their start."""
        plan = FaultPlan({"503": 0.5}, ["429"], seed=9)
        emu = Emulator(faults=plan)
        first = outcomes(emu, 20)
        emu.set_faults(plan)
        assert outcomes(emu, 20) == first

    def test_rates_are_roughly_proportional(self) -> None:
        """Over 2000 requests each kind fires close to its rate, and fault_counts agrees."""
        emu = Emulator(faults=FaultPlan({"429": 0.2, "503": 0.1}, seed=1))
        tally = Counter(outcomes(emu, 2000))
        assert 320 < tally["429"] < 480  # 400 expected, about 18 standard deviation
        assert 140 < tally["503"] < 260  # 200 expected, about 13
        assert tally["200"] == 2000 - tally["429"] - tally["503"]
        assert emu.fault_counts() == NO_FAULTS | {"429": tally["429"], "503": tally["503"]}

    def test_concurrent_requests_use_each_step_once(
        self, http: httpx.Client, emu: Emulator
    ) -> None:
        """80 requests from 8 threads meet the 20 scripted faults exactly once each."""
        emu.set_faults(FaultPlan(script=["503"] * 20))
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda _: listing(http).status_code, range(80)))
        assert Counter(statuses) == {503: 20, 200: 60}
        assert emu.fault_counts()["503"] == 20


class TestScope:
    """Faults hit /v1 requests only, and with only="add" add-rows POSTs only."""

    def test_emulator_endpoints_never_fail(self, any_client: httpx.Client, emu: Emulator) -> None:
        """/_emulator/... answers even when every /v1 request is dropped."""
        dataset_id = create(any_client)
        emu.set_faults(FaultPlan({"drop_before": 1.0}))
        assert any_client.get(HEALTH).status_code == 200
        assert any_client.get(ROWS, params={"api_key": KEY, "id": dataset_id}).status_code == 200
        assert any_client.get(FAULTS, params={"api_key": KEY}).status_code == 200
        with pytest.raises(DROPPED):
            listing(any_client)
        assert emu.fault_counts() == NO_FAULTS | {"drop_before": 1}

    def test_faulted_requests_are_counted(self, emu: Emulator) -> None:
        """request_count includes the /v1 requests that a fault answered or dropped."""
        emu.set_faults(FaultPlan(script=["429", "drop_before", "ok"]))
        outcomes(emu, 3)
        assert emu.request_count() == 3

    def test_only_add_leaves_other_requests_alone(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """With only="add", creates, reads, parse_fields and deletes answer normally."""
        emu.set_faults(FaultPlan({"503": 1.0}, only="add"))
        dataset_id = create(any_client)
        assert listing(any_client).status_code == 200
        params = {"api_key": KEY, "id": dataset_id}
        assert any_client.get("/datasets", params=params).status_code == 200
        assert add(any_client, dataset_id, [{"a": 1}]).status_code == 503
        parse = any_client.post("/datasets", json={**params, "parse_fields": True})
        assert parse.status_code == 200
        assert any_client.request("DELETE", "/datasets", json=params).status_code == 200
        assert emu.fault_counts()["503"] == 1

    def test_only_add_script_waits_for_an_add(self, local: httpx.Client, emu: Emulator) -> None:
        """Script steps are spent on add-rows POSTs only, however many other requests come."""
        emu.set_faults(FaultPlan(script=["drop_after", "429"], only="add"))
        dataset_id = create(local)
        for _ in range(3):
            assert listing(local).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            add(local, dataset_id, [{"a": 1}])
        assert add(local, dataset_id, [{"a": 2}]).status_code == 429
        assert add(local, dataset_id, [{"a": 3}]).status_code == 200
        assert emu.rows(dataset_id) == [{"a": 1}, {"a": 3}]

    def test_an_add_is_faulted_before_it_is_checked(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """An add-rows POST counts as an add even when its key or rows are wrong."""
        emu.set_faults(FaultPlan(script=["503", "503"], only="add"))
        bad_key = {"api_key": "wrong", "id": "x", "rows": [{"a": 1}]}
        assert local.post("/datasets", json=bad_key).status_code == 503
        assert add(local, "unknown", "[{not json").status_code == 503


class TestControlEndpoints:
    """/_emulator/faults sets, clears and shows the plan and the counts over HTTP."""

    def test_post_sets_the_plan_and_get_shows_it(self, any_client: httpx.Client) -> None:
        """A posted plan is in force at once and read back as posted."""
        plan = {
            "rates": {"429": 0.5},
            "script": ["503"],
            "seed": 1,
            "only": "all",
            "retry_after": 0.0,
            "delay": 0.1,
        }
        response = any_client.post(FAULTS, json={"api_key": KEY, **plan})
        assert response.json() == {"status": "success"}
        assert listing(any_client).status_code == 503
        shown = any_client.get(FAULTS, params={"api_key": KEY}).json()
        assert shown == {"status": "success", "fired": NO_FAULTS | {"503": 1}, "plan": plan}

    def test_get_counts_every_kind_fired(self, any_client: httpx.Client) -> None:
        """fired lists every kind, with how often it fired."""
        script = ["429", "503", "slow", "429"]
        any_client.post(FAULTS, json={"api_key": KEY, "script": script, "delay": FAST})
        for _ in script:
            listing(any_client)
        fired = any_client.get(FAULTS, params={"api_key": KEY}).json()["fired"]
        assert fired == NO_FAULTS | {"429": 2, "503": 1, "slow": 1}

    def test_empty_object_clears_the_plan(self, any_client: httpx.Client, emu: Emulator) -> None:
        """Posting {} stops all faults; the counts so far remain."""
        emu.set_faults(FaultPlan({"503": 1.0}))
        assert listing(any_client).status_code == 503
        assert any_client.post(FAULTS, json={"api_key": KEY}).status_code == 200
        assert listing(any_client).status_code == 200
        shown = any_client.get(FAULTS, params={"api_key": KEY}).json()
        assert shown["plan"] is None
        assert shown["fired"]["503"] == 1

    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            pytest.param({"rates": {"429": 2}}, "the rate of 429", id="rate"),
            pytest.param({"rates": {"nope": 0.1}}, "unknown fault kind 'nope'", id="kind"),
            pytest.param({"rates": [0.1]}, "rates must be an object", id="rates-array"),
            pytest.param({"script": "503"}, "script must be an array", id="script-text"),
            pytest.param({"only": "reads"}, "only must be one of", id="only"),
            pytest.param({"seed": "x"}, "seed must be an integer", id="seed"),
            pytest.param({"delay": -1}, "delay must be", id="delay"),
            pytest.param({"retry_after": None}, "retry_after must be", id="retry-after"),
            pytest.param({"bogus": 1}, "unknown fault plan settings ['bogus']", id="setting"),
        ],
    )
    def test_bad_plan_is_400_and_keeps_the_old_one(
        self, any_client: httpx.Client, emu: Emulator, settings: dict[str, Any], message: str
    ) -> None:
        """An invalid plan is refused with the reason, and the plan in force stays."""
        emu.set_faults(FaultPlan(script=["429"]))
        response = any_client.post(FAULTS, json={"api_key": KEY, **settings})
        assert response.status_code == 400
        assert response.json()["status"] == "error"
        assert message in response.json()["message"]
        assert listing(any_client).status_code == 429

    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_control_needs_the_key(
        self, any_client: httpx.Client, emu: Emulator, method: str
    ) -> None:
        """Without the key, the plan can be neither read nor changed."""
        emu.set_faults(FaultPlan(script=["429"]))
        response = any_client.request(method, FAULTS, json={"script": []})
        assert response.status_code == 401
        assert listing(any_client).status_code == 429

    def test_other_methods_are_405(self, local: httpx.Client) -> None:
        """Only GET and POST exist on /_emulator/faults."""
        response = local.request("DELETE", FAULTS, params={"api_key": KEY})
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, POST"

    def test_constructor_and_set_faults(self) -> None:
        """A plan given at construction applies; set_faults(None) stops it; counts carry on."""
        emu = Emulator(faults=FaultPlan({"500": 1.0}))
        assert outcomes(emu, 2) == ["500", "500"]
        emu.set_faults(None)
        assert outcomes(emu, 2) == ["200", "200"]
        emu.set_faults(FaultPlan(script=["500"]))
        assert outcomes(emu, 1) == ["500"]
        assert emu.fault_counts() == NO_FAULTS | {"500": 3}
