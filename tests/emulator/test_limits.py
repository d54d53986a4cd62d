"""The emulator keeps what is not its own and bounds what it takes: a ``--data`` file that is
no journal is refused untouched, a body over the limit is refused unread, and the API key can
come from the environment rather than the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from akkiosync.cli import cli
from akkiosync.emulator import DEFAULT_API_KEY, Emulator, EmulatorServer, serve
from tests.conftest import DEADLINE, until
from tests.emulator.helpers import add, create

ENTRY = b'{"op":"create","id":"abc","name":"n"}\n'


class TestJournalRefusal:
    """A data file is used only when its first line is a journal entry, or it is empty."""

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param(b"id,name\n1,Ann\n", id="csv"),
            pytest.param(b"one line, no newline", id="single-line"),
            pytest.param(b'{"rows": [1, 2]}\n' + ENTRY, id="other-json"),
            pytest.param(b"[1, 2, 3]\n", id="json-array"),
        ],
    )
    def test_not_a_journal_is_refused_untouched(self, tmp_path: Path, content: bytes) -> None:
        """Another file is refused with a message naming it, and keeps every byte."""
        data = tmp_path / "notes.txt"
        data.write_bytes(content)
        with pytest.raises(ValueError, match="is not an emulator journal"):
            Emulator(data_file=data)
        assert data.read_bytes() == content

    def test_empty_file_is_used(self, tmp_path: Path) -> None:
        """An empty file is a journal with nothing in it yet: changes are appended to it."""
        data = tmp_path / "empty.jsonl"
        data.touch()
        emu = Emulator(data_file=data)
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            create(c)
        assert len(data.read_bytes().splitlines()) == 1

    def test_first_write_cut_short_is_a_journal(self, tmp_path: Path) -> None:
        """A journal whose only line was torn by a crash is still the emulator's: emptied."""
        data = tmp_path / "emulator.jsonl"
        data.write_bytes(ENTRY[:12])
        assert Emulator(data_file=data).dataset_ids() == []
        assert data.read_bytes() == b""

    def test_command_refuses_it(self, tmp_path: Path) -> None:
        """``akkiosync emulator --data FILE`` on another file: exit 2 naming it, file kept."""
        data = tmp_path / "orders.csv"
        data.write_bytes(b"id,name\n1,Ann\n")
        result = CliRunner().invoke(cli, ["emulator", "--port", "0", "--data", str(data)])
        assert result.exit_code == 2, result.output
        assert f"{data} is not an emulator journal" in result.stderr
        assert "Traceback" not in result.output
        assert data.read_bytes() == b"id,name\n1,Ann\n"


@pytest.fixture
def small() -> Iterator[EmulatorServer]:
    """An emulator on a loopback port that takes bodies of at most 1000 bytes."""
    with serve(Emulator(), max_body=1000) as running:
        yield running


def raw_request(server: EmulatorServer, head: bytes) -> bytes:
    """Send ``head`` (request line and headers, no body) and read the answer to its end."""
    host, port = httpx.URL(server.url).host, httpx.URL(server.url).port
    assert port is not None
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after a 413
            answer += chunk
    return answer


class TestBodyLimit:
    """A request whose Content-Length is over the limit is answered 413 before its body."""

    def test_announced_body_over_the_limit_is_refused_unread(self, small: EmulatorServer) -> None:
        """A gigabyte announced and never sent: 413 at once (reading it would hang), with a
        JSON error naming the limit, and the connection closed."""
        head = (
            b"POST /v1/datasets HTTP/1.1\r\nHost: emulator\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = raw_request(small, head)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"Connection: close" in answer
        assert b"over the emulator's limit of 1000" in answer

    def test_body_at_the_limit_is_served(self, small: EmulatorServer) -> None:
        """A body up to the limit is read and answered as usual."""
        with httpx.Client(base_url=small.url, timeout=DEADLINE, trust_env=False) as c:
            dataset_id = create(c)
            assert add(c, dataset_id, [{"a": 1}]).status_code == 200
            big = c.post("/datasets", json={"api_key": DEFAULT_API_KEY, "name": "x" * 2000})
            assert big.status_code == 413
            assert "limit of 1000" in big.json()["message"]


class TestApiKeyFromEnvironment:
    """``AKKIO_EMULATOR_API_KEY`` sets the key when ``--api-key`` is not given."""

    def test_help_says_why(self) -> None:
        """``--help`` names the variable and warns that a command line is visible."""
        result = CliRunner().invoke(cli, ["emulator", "--help"])
        assert result.exit_code == 0
        assert "AKKIO_EMULATOR_API_KEY" in result.output
        assert "visible to every local user" in " ".join(result.output.split())

    def test_process_takes_the_key_from_the_environment(self, tmp_path: Path) -> None:
        """An emulator process given the key only in its environment accepts that key and
        refuses the default one."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        key = "env-key-3141"
        env = {**os.environ, "AKKIO_EMULATOR_API_KEY": key}
        process = subprocess.Popen(
            [sys.executable, "-m", "akkiosync", "emulator", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=5, trust_env=False) as c:

                def answers() -> bool:
                    assert process.poll() is None, "the emulator exited"
                    try:
                        return c.get("/_emulator/health").status_code == 200
                    except httpx.TransportError:
                        return False

                until("the emulator to answer", answers)
                mine = c.get("/v1/datasets", params={"api_key": key})
                default = c.get("/v1/datasets", params={"api_key": DEFAULT_API_KEY})
            assert mine.status_code == 200
            assert default.status_code == 401
        finally:
            process.terminate()
            process.wait(timeout=30)
