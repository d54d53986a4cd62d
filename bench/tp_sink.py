"""The sink: akkiosync's Akkio emulator in a process of its own, and what the benchmark asks it.

It runs as ``python -m akkiosync emulator --keep-only id [--latency S]``: out of the
contenders' processes (so it shares no GIL with them), keeping only each row's id (so 800,000
rows cost it little memory), with exact row counts. ``ingest_rate`` measures it alone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

READY_WITHIN = 30.0  # seconds for the emulator process to answer its health check


class BenchError(Exception):
    """A contender or the sink did not do what it should have: the figures are void."""


def _decimal(value: object) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Sink:
    """A running emulator process on a loopback port; close it, or use it with ``with``."""

    def __init__(self, api_key: str, latency: float, log: Path) -> None:
        self.api_key, self.latency = api_key, latency
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [sys.executable, "-m", "akkiosync", "emulator", "--port", str(self.port)]
        command += ["--keep-only", "id", "--latency", repr(latency)]
        env = {**os.environ, "AKKIO_EMULATOR_API_KEY": api_key, "AKKIOSYNC_LOG_LEVEL": "WARNING"}
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=self._log, cwd=log.parent
        )
        self.http = httpx.Client(base_url=self.url, timeout=300, trust_env=False)
        self._wait_ready(log)

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self.http.get("/../_emulator/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)  # polling a starting process: nothing to wait on instead
        self.close()
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise BenchError(f"the sink did not start on port {self.port}:\n{tail}")

    def close(self) -> None:
        """Stop the emulator process."""
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._log.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the sink process used so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        answer = self.http.get(path, params={"api_key": self.api_key, **params})
        if answer.status_code != 200:
            raise BenchError(f"the sink answered {answer.status_code} to GET {path}")
        body: dict[str, Any] = orjson.loads(answer.content)
        return body

    def create(self, name: str) -> str:
        """A new dataset's id."""
        answer = self.http.post("/datasets", json={"api_key": self.api_key, "name": name})
        answer.raise_for_status()
        dataset_id: str = answer.json()["dataset_id"]
        return dataset_id

    def find(self, name: str) -> str:
        """The id of the one dataset called `name`."""
        found = [d["id"] for d in self._get("/datasets")["datasets"] if d["name"] == name]
        if len(found) != 1:
            raise BenchError(f"{len(found)} datasets are called {name!r}, not 1")
        dataset_id: str = found[0]
        return dataset_id

    def count(self, dataset_id: str) -> int:
        """The dataset's row count, as a client reads it (``GET ?id=``)."""
        rows: int = self._get("/datasets", id=dataset_id)["rows"]
        return rows

    def delete(self, dataset_id: str) -> None:
        """Delete a dataset (its rows free the sink's memory)."""
        answer = self.http.request(
            "DELETE", "/datasets", json={"api_key": self.api_key, "id": dataset_id}
        )
        answer.raise_for_status()

    def verify(self, dataset_id: str, n: int, what: str) -> None:
        """The dataset holds `n` rows, ids 1..`n` each exactly once; else BenchError."""
        count = self.count(dataset_id)
        ids = Counter(
            row.get("id") for row in self._get("/../_emulator/rows", id=dataset_id)["rows"]
        )
        twice = sum(1 for times in ids.values() if times > 1)
        if count != n or twice or len(ids) != n or set(ids) != set(range(1, n + 1)):
            raise BenchError(
                f"{what}: dataset {dataset_id} holds {count} rows ({len(ids)} distinct ids, "
                f"{twice} more than once); expected ids 1..{n}, each exactly once"
            )

    def ingest_rate(self, body_rows: list[dict[str, Any]], streams: int, seconds: float) -> float:
        """Rows per second the sink takes in from `streams` keep-alive clients posting one
        pre-encoded body of `body_rows` over and over for about `seconds` (checked)."""
        dataset_id = self.create(f"sink alone x{streams}")
        payload = {"api_key": self.api_key, "id": dataset_id, "rows": body_rows}
        body = orjson.dumps(payload, default=_decimal)  # as hand_tuned.py encodes
        headers = {"Content-Type": "application/json"}
        sent = [0] * streams
        start = threading.Barrier(streams + 1)
        stop = 0.0

        def post(index: int) -> None:
            with httpx.Client(base_url=self.url, timeout=300, trust_env=False) as client:
                client.get("/../_emulator/health")  # connect before the clock starts
                start.wait()
                while time.perf_counter() < stop:
                    answer = client.post("/datasets", content=body, headers=headers)
                    if answer.status_code != 200:
                        return  # seen below: the count will not match
                    sent[index] += len(body_rows)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        stop = began + seconds
        start.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        stored = self.count(dataset_id)
        self.delete(dataset_id)
        if stored != sum(sent) or not stored:
            raise BenchError(f"sink alone: {sum(sent)} rows answered 200, {stored} stored")
        return stored / elapsed
