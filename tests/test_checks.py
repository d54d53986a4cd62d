"""``validate --connect`` checks the Akkio side: the key, the base URL, the datasets named."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from akkiosync.akkio import AkkioClient
from akkiosync.cli import cli
from akkiosync.emulator import Emulator, EmulatorServer, serve
from tests.conftest import API_KEY

JOB = """\
source:
  url: {url}
  table: orders
  watermark: updated_at
  key: id
target:
  {target}
"""


@pytest.fixture
def server(emulator: Emulator) -> Iterator[EmulatorServer]:
    """The emulator on a loopback port."""
    with serve(emulator) as running:
        yield running


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: EmulatorServer) -> Path:
    """A job reading a SQLite ``orders`` table into a new dataset; the key and URL set."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, updated_at DATETIME)"))
    engine.dispose()
    jobs = tmp_path / "config" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "orders.yaml").write_text(JOB.format(url=url, target="dataset: Orders"))
    monkeypatch.setenv("AKKIO_API_KEY", API_KEY)
    monkeypatch.setenv("AKKIO_BASE_URL", server.url)
    monkeypatch.setenv("AKKIOSYNC_STATE", str(tmp_path / "state" / "akkiosync.db"))
    return tmp_path / "config"


def validate(config: Path) -> Result:
    """``akkiosync --config CONFIG validate --connect``."""
    return CliRunner().invoke(cli, ["--config", str(config), "validate", "--connect"])


def error_lines(result: Result) -> list[str]:
    """The ``error:`` lines on stderr (after checking there is no traceback)."""
    assert "Traceback" not in result.output
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


class _Html(BaseHTTPRequestHandler):
    """Answers every GET with a 200 HTML page, as a web server that is not an API does."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # quiet: pytest treats stray output as noise
        pass


@pytest.fixture
def html_site() -> Iterator[str]:
    """The base URL of a loopback web site that is not Akkio."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class TestValidateAkkio:
    """With an API key, ``validate --connect`` asks Akkio once and says what is wrong."""

    def test_key_accepted(self, config: Path) -> None:
        """A key the API accepts: an ``akkio: ok`` line, exit 0."""
        result = validate(config)
        assert result.exit_code == 0, result.output
        assert "akkio: ok, the API key sees 0 dataset(s)" in result.stdout

    def test_key_refused(self, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A refused key: one line naming AKKIO_API_KEY, exit 2; the key is not echoed."""
        monkeypatch.setenv("AKKIO_API_KEY", "wrong-key-Zx7Qv93KpLm2")
        result = validate(config)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result)
        assert "AKKIO_API_KEY was refused" in line
        assert "wrong-key-Zx7Qv93KpLm2" not in result.output

    def test_base_url_404(
        self, config: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A base URL whose datasets path is a 404: it does not look like Akkio's API."""
        monkeypatch.setenv("AKKIO_BASE_URL", f"{server.url}/wrong")
        result = validate(config)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result)
        assert "AKKIO_BASE_URL does not look like Akkio's API" in line

    def test_base_url_html(
        self, config: Path, html_site: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A base URL answering HTML (not JSON): does not look like Akkio's API, at once."""
        monkeypatch.setenv("AKKIO_BASE_URL", html_site)
        result = validate(config)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result)
        assert "AKKIO_BASE_URL does not look like Akkio's API" in line

    def test_dataset_id_missing(self, config: Path, tmp_path: Path) -> None:
        """A ``dataset_id`` the key does not see: exit 2 naming the file and the id."""
        path = config / "jobs" / "orders.yaml"
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        path.write_text(JOB.format(url=url, target="dataset_id: ds-nope"))
        result = validate(config)
        assert result.exit_code == 2, result.output
        lines = error_lines(result)
        assert len(lines) == 1, lines
        assert str(path) in lines[0]
        assert "target.dataset_id: no dataset ds-nope" in lines[0]

    def test_dataset_id_present(self, config: Path, tmp_path: Path, client: AkkioClient) -> None:
        """A ``dataset_id`` that exists: its mapping is shown, exit 0."""
        dataset_id = client.create_dataset("Orders").id
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        (config / "jobs" / "orders.yaml").write_text(
            JOB.format(url=url, target=f"dataset_id: {dataset_id}")
        )
        result = validate(config)
        assert result.exit_code == 0, result.output
        assert "akkio: ok, the API key sees 1 dataset(s)" in result.stdout

    def test_without_key(self, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without AKKIO_API_KEY the Akkio checks are said to be skipped; exit 0."""
        monkeypatch.delenv("AKKIO_API_KEY")
        result = validate(config)
        assert result.exit_code == 0, result.output
        assert "akkio: skipped (no AKKIO_API_KEY)" in result.stdout
