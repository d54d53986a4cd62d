"""The three contenders of the throughput benchmark, each run as a fresh process and checked.

- ``official``: ``official_script.py``, the script a user writes with the official client;
- ``akkiosync``: the real command, ``python -m akkiosync --config DIR sync JOB``, with its
  own fresh checkpoint store and a fresh dataset each run;
- ``hand-tuned``: ``hand_tuned.py``, a single tuned stream;
- ``akkiosync-defaults``: akkiosync again, with its own default ``batch_size`` (10,000) and
  ``batch_bytes`` instead of the batch every other contender sends: for information, not
  judged against the targets (the others are held to the same batch).

Each runs under ``peak_rss.py``, which reports the process's own peak RSS and CPU time. A run
counts only once the sink holds its N rows, ids 1..N each exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tp_sink import BenchError, Sink

BENCH = Path(__file__).resolve().parent
PEAK_RSS = BENCH / "peak_rss.py"
RATE_LIFTED = "1000000"  # requests per second: Akkio's 5/s would hide everything else
JOB = """\
name: bench
source:
  url: ${{BENCH_DB_URL}}
  table: {table}
  watermark: updated_at
  key: id
target:
  dataset: {dataset}
{batch_line}"""
# Roughly what each contender imports before its first row: timed apart, for reference.
STARTUP = {
    "official": ["-c", "import akkio, sqlalchemy, psycopg, pymysql"],
    "akkiosync": ["-m", "akkiosync", "--help"],
    "akkiosync-defaults": ["-m", "akkiosync", "--help"],
    "hand-tuned": ["-c", "import httpx, orjson, sqlalchemy, psycopg, pymysql"],
}


@dataclass(frozen=True, slots=True)
class Contender:
    """One way to get a table into a dataset."""

    key: str
    label: str


CONTENDERS = (
    Contender("official", "official client script"),
    Contender("akkiosync", "akkiosync sync"),
    Contender("hand-tuned", "hand-tuned stream"),
    Contender("akkiosync-defaults", "akkiosync, its defaults"),
)
JUDGED = tuple(c for c in CONTENDERS if c.key != "akkiosync-defaults")  # same batch for all


@dataclass(frozen=True, slots=True)
class Target:
    """Where contenders read from and what each run must deliver."""

    db_url: str
    table: str
    n: int
    batch_size: int
    workdir: Path


@dataclass(frozen=True, slots=True)
class Run:
    """One checked run of one contender."""

    seconds: float  # wall time of the whole process, start-up included
    rss_kib: int | None  # the process's peak RSS (VmHWM); None under the profiler
    cpu_s: float | None  # the contender's CPU seconds, all threads
    sink_cpu_s: float  # the sink's CPU seconds meanwhile


def _environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without proxies or akkiosync's own settings, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AKKIO_", "AKKIOSYNC_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    return env | {"NO_PROXY": "127.0.0.1,localhost"} | extra


def run_contender(
    key: str, target: Target, sink: Sink, name: str, profile: Path | None = None
) -> Run:
    """Run `key` once into a new dataset called `name`, check it, delete it.

    With `profile`, akkiosync runs under ``cProfile`` writing to that file, and without the
    peak-RSS wrapper. Raises BenchError (with the end of its stderr) if the run fails.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=target.workdir))
    figures = work / "figures.json"
    env = _environment(
        {
            "BENCH_DB_URL": target.db_url,
            "BENCH_TABLE": target.table,
            "BENCH_BATCH_SIZE": str(target.batch_size),
            "BENCH_API_KEY": sink.api_key,
            "BENCH_PORT": str(sink.port),
            "BENCH_DATASET": name,
        }
    )
    wrapper = [sys.executable, str(PEAK_RSS), str(figures)]
    if key == "official":
        command = [*wrapper, str(BENCH / "official_script.py")]
    elif key == "hand-tuned":
        command = [*wrapper, str(BENCH / "hand_tuned.py")]
    elif key in ("akkiosync", "akkiosync-defaults"):
        jobs = work / "config" / "jobs"
        jobs.mkdir(parents=True)
        batch_line = "" if key == "akkiosync-defaults" else f"batch_size: {target.batch_size}\n"
        job = JOB.format(table=target.table, dataset=json.dumps(name), batch_line=batch_line)
        (jobs / "bench.yaml").write_text(job, encoding="utf-8")
        env |= {
            "AKKIO_API_KEY": sink.api_key,
            "AKKIO_BASE_URL": sink.url,
            "AKKIO_RATE_LIMIT": RATE_LIFTED,
            "AKKIOSYNC_STATE": str(work / "state" / "akkiosync.db"),
        }
        sync = ["-m", "akkiosync", "--config", str(work / "config"), "sync", "bench"]
        if profile is None:
            command = [*wrapper, *sync]
        else:
            command = [sys.executable, "-m", "cProfile", "-o", str(profile), *sync]
    else:
        raise ValueError(f"unknown contender {key!r}")

    stderr = work / "stderr.txt"
    sink_before = sink.cpu_seconds()
    start = time.perf_counter()
    with stderr.open("wb") as err:
        # cwd=work: no ./.env or ./config of the caller's is picked up
        done = subprocess.run(command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=err)
    seconds = time.perf_counter() - start
    sink_cpu = sink.cpu_seconds() - sink_before
    if done.returncode != 0:
        tail = "\n".join(stderr.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{key} ({name}) exited with status {done.returncode}:\n{tail}")

    # the scripts print their dataset's id; akkiosync's is found by its name
    scripted = not key.startswith("akkiosync")
    dataset_id = done.stdout.decode().split()[-1] if scripted else sink.find(name)
    sink.verify(dataset_id, target.n, f"{key} ({name})")
    sink.delete(dataset_id)
    rss_kib = cpu_s = None
    if profile is None:
        measured = json.loads(figures.read_text(encoding="ascii"))
        rss_kib, cpu_s = measured["vmhwm_kib"], measured["cpu_s"]
    shutil.rmtree(work)
    return Run(seconds, rss_kib, cpu_s, sink_cpu)


def startup_seconds(key: str, tries: int = 3) -> float:
    """The best of `tries` times to start Python and import roughly what `key` imports."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        subprocess.run(  # a failure shows in the real runs
            [sys.executable, *STARTUP[key]], env=_environment({}), stdout=subprocess.DEVNULL
        )
        best = min(best, time.perf_counter() - start)
    return best
