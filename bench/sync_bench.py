"""akkiosync against the script a user would otherwise write, measured as ratios in one run.

The machine is shared and noisy, so the contenders run interleaved (A, A2, B, A, A2, B, ...)
in one process against one source table and one emulator, and the figures that matter are the
ratios of their median wall times. Everything talks to 127.0.0.1 only; nothing sleeps.

- **A, hand-written**: what the official client (akkio 1.0.5) amounts to: ``SELECT *`` with
  SQLAlchemy, rows made JSON-safe naively (``str()`` for dates and decimals), one
  ``httpx.post`` of every row, no timeout, retry, status check or checkpoint.
- **A2, hand-written, batched**: the same, posting ``--batch-size`` rows per request over one
  keep-alive ``httpx.Client``; still no checkpoint and no exactly-once.
- **B, akkiosync**: a job file run once by ``Runner``, built as ``akkiosync/app.py`` builds it
  (checkpoint store, exactly-once protocol, retries), except for the rate limit (see below).

The emulator (``serve(Emulator(...))``) runs on a loopback port in this process, so every
contender pays real HTTP; the time it spends answering is shown as "server s". Every dataset
is checked afterwards (A and A2: N rows; B: each id exactly once) and deleted.

Run: ``.venv/bin/python bench/sync_bench.py [--rows N] [--db-url URL] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as dt
import gc
import io
import multiprocessing
import platform
import pstats
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import httpx
import sqlalchemy as sa

from akkiosync.akkio import AkkioClient, DatasetInfo
from akkiosync.config import load_job_file
from akkiosync.delivery import ReconcilePolicy
from akkiosync.emulator import Emulator, serve
from akkiosync.lock import locks_dir
from akkiosync.pacing import AKKIO_RATE, RetryPolicy, limiter_for
from akkiosync.results import RunResult
from akkiosync.runner import Runner
from akkiosync.state import Store

BENCH_RATE = 1e9  # requests per second: Akkio's 5/s would dominate every figure
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
START = dt.datetime(2026, 1, 1, 9, 0, 0)  # noqa: DTZ001 - a naive DATETIME column on purpose
TIE = 7  # rows per updated_at value: batch boundaries fall inside ties
STATUSES = ("placed", "paid", "shipped", "delivered", "returned", "refunded")
WORDS = (
    "please", "leave", "at", "the", "front", "door", "gift", "wrap", "call", "on", "arrival",
    "fragile", "handle", "with", "care", "no", "invoice", "in", "box", "back", "entrance",
)  # fmt: skip
JOB_FILE = """\
name: {name}
source:
  url: ${{BENCH_DB_URL}}
  table: {table}
  watermark: updated_at
  key: id
target:
  dataset: {dataset}
batch_size: {batch_size}
"""
Reply = tuple[int, dict[str, str], bytes]


class BenchError(Exception):
    """A contender did not deliver what it should have: the figures are void."""


# ---------------------------------------------------------------------------------------------
# The source table


def make_table(name: str) -> sa.Table:
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("note", sa.String(80)),
    )
    sa.Index(f"{name}_cursor", table.c.updated_at, table.c.id)  # as the README advises
    return table


def source_rows(rng: random.Random, ids: range, start: dt.datetime) -> list[dict[str, object]]:
    first = ids.start
    return [
        {
            "id": i,
            "updated_at": start + dt.timedelta(seconds=(i - first) // TIE),
            "amount": Decimal(rng.randint(100, 9_999_999)) / 100,
            "status": rng.choice(STATUSES),
            "note": " ".join(rng.choices(WORDS, k=12))[:40],
        }
        for i in ids
    ]


def insert_rows(engine: sa.Engine, table: sa.Table, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(table.insert(), rows[start : start + 10_000])


# ---------------------------------------------------------------------------------------------
# The contenders: each makes a fresh dataset named ``name`` and returns its id


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a contender needs; picklable, so that a child process can run one too."""

    db_url: str
    table: str
    batch_size: int
    api_url: str  # the emulator's .../v1
    api_key: str
    workdir: Path  # job files and the checkpoint store go here

    @property
    def datasets_url(self) -> str:
        return f"{self.api_url}/datasets"


def _naive(value: object) -> object:
    """What a quick script does to get past ``TypeError: not JSON serializable``."""
    return str(value) if isinstance(value, dt.date | Decimal) else value


def _select_all_naive(ctx: Ctx) -> list[dict[str, object]]:
    engine = sa.create_engine(ctx.db_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT * FROM {ctx.table}"))  # noqa: S608 - ours
            return [{k: _naive(v) for k, v in row.items()} for row in result.mappings()]
    finally:
        engine.dispose()


def hand_written(ctx: Ctx, name: str) -> str:
    """A: akkio 1.0.5's shape, one module-level POST per call, all rows in one request."""
    rows = _select_all_naive(ctx)
    url, key = ctx.datasets_url, ctx.api_key
    # akkio 1.0.5 sets no timeout either (and checks no status: the bench checks afterwards)
    created = httpx.post(url, json={"api_key": key, "name": name}, timeout=None)  # noqa: S113
    dataset_id = str(created.json()["dataset_id"])
    httpx.post(url, json={"api_key": key, "id": dataset_id, "rows": rows}, timeout=None)  # noqa: S113
    return dataset_id


def hand_written_batched(ctx: Ctx, name: str) -> str:
    """A2: the same rows, ``batch_size`` per request over one keep-alive client."""
    rows = _select_all_naive(ctx)
    with httpx.Client(timeout=None) as http:  # noqa: S113 - as akkio 1.0.5
        created = http.post(ctx.datasets_url, json={"api_key": ctx.api_key, "name": name})
        dataset_id = str(created.json()["dataset_id"])
        for start in range(0, len(rows), ctx.batch_size):
            chunk = rows[start : start + ctx.batch_size]
            http.post(
                ctx.datasets_url, json={"api_key": ctx.api_key, "id": dataset_id, "rows": chunk}
            )
    return dataset_id


def write_job(ctx: Ctx, name: str) -> Path:
    jobs = ctx.workdir / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    path = jobs / f"{name}.yaml"
    text = JOB_FILE.format(
        name=name, table=ctx.table, dataset=f"{name} dataset", batch_size=ctx.batch_size
    )
    path.write_text(text, encoding="utf-8")
    return path


def akkiosync_sync(ctx: Ctx, job_path: Path) -> RunResult:
    """One ``akkiosync sync JOB``, minus process start-up: parts built as ``app.App`` does."""
    job = load_job_file(job_path, {"BENCH_DB_URL": ctx.db_url})
    state = ctx.workdir / "state" / "akkiosync.db"
    retry = RetryPolicy()  # AKKIO_MAX_ATTEMPTS's default
    store = Store.open(state)
    try:
        with AkkioClient(
            ctx.api_key,
            ctx.api_url,
            timeout=httpx.Timeout(60.0, connect=10.0),
            retry=retry,
            limiter=limiter_for(ctx.api_key, BENCH_RATE),
        ) as client:
            runner = Runner(
                store,
                client,
                locks=locks_dir(state),
                retry=retry,
                reconcile=ReconcilePolicy(),
            )
            result = runner.run(job)
    finally:
        store.close()
    if not result.ok or result.dataset_id is None:
        raise BenchError(f"akkiosync: job {job.name} {result.status}: {result.error}")
    return result


def with_akkiosync(ctx: Ctx, name: str) -> str:
    """B: a new job (so a new dataset and an empty checkpoint), synced once."""
    dataset_id = akkiosync_sync(ctx, write_job(ctx, name)).dataset_id
    assert dataset_id is not None  # noqa: S101 - akkiosync_sync checked it
    return dataset_id


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    run: Callable[[Ctx, str], str]


CONTENDERS = (
    Contender("A", "hand-written, 1 POST", hand_written),
    Contender("A2", "hand-written, batched", hand_written_batched),
    Contender("B", "akkiosync, exactly-once", with_akkiosync),
)
BY_KEY = {c.key: c for c in CONTENDERS}


def memory_child(key: str, ctx: Ctx, name: str) -> tuple[int | None, str]:
    """In a fresh process: how far one run of a contender lifts the peak RSS (KiB).

    ``getrusage``'s ``ru_maxrss`` is no use here: Linux carries it over from the parent across
    fork and exec, so a child starts with its parent's peak. ``/proc/self/status``'s VmHWM
    belongs to the child's own address space, and ``clear_refs`` resets it to the current RSS.
    """
    sa.create_engine(ctx.db_url).dispose()  # import the dialect and its driver beforehand
    gc.collect()
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = _status_kib("VmHWM")
    dataset_id = BY_KEY[key].run(ctx, name)
    after = _status_kib("VmHWM")
    return (None if before is None or after is None else after - before), dataset_id


def _status_kib(name: str) -> int | None:
    try:
        lines = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    except OSError:
        return None  # not Linux: no figure rather than a wrong one
    return next((int(line.split()[1]) for line in lines if line.startswith(f"{name}:")), None)


# ---------------------------------------------------------------------------------------------
# The emulator, timed


class TimedEmulator(Emulator):
    """The emulator, counting its requests and the seconds it spends answering them."""

    def __init__(self, api_key: str) -> None:
        super().__init__(api_key=api_key)
        self._meter = threading.Lock()
        self.busy = 0.0
        self.requests = 0

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        start = time.perf_counter()
        try:
            return super().handle(method, target, headers, body)
        finally:
            with self._meter:
                self.busy += time.perf_counter() - start
                self.requests += 1

    def reading(self) -> tuple[float, int]:
        with self._meter:
            return self.busy, self.requests


def check_ids(emulator: Emulator, dataset_id: str, ids: range, what: str) -> None:
    """The dataset holds exactly ``ids``, each once; else ``BenchError``."""
    rows = emulator.rows(dataset_id)
    counts = Counter(row.get("id") for row in rows)
    twice = sum(1 for n in counts.values() if n > 1)
    if len(rows) != len(ids) or twice or set(counts) != set(ids):
        raise BenchError(
            f"{what}: dataset {dataset_id} holds {len(rows)} rows ({len(counts)} distinct ids, "
            f"{twice} ids more than once); expected ids {ids.start}..{ids.stop - 1}, each once"
        )


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    rss_kib: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@contextmanager
def measured(emulator: TimedEmulator, runs: Runs) -> Iterator[None]:
    gc.collect()  # leftovers of the previous contender are not this one's to pay
    busy, requests = emulator.reading()
    start = time.perf_counter()
    yield
    runs.seconds.append(time.perf_counter() - start)
    busy_after, requests_after = emulator.reading()
    runs.server.append(busy_after - busy)
    runs.requests.append(requests_after - requests)


def ratio(b: float, a: float) -> str:
    r = b / a
    if r >= 1:
        return f"{r:5.2f}  (akkiosync {r:.2f}x slower)"
    return f"{r:5.2f}  (akkiosync {1 / r:.2f}x faster)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time akkiosync against a hand-written sync script on the same table and "
        "emulator, interleaved in one run; print medians and ratios."
    )
    parser.add_argument("--rows", type=int, default=50_000, help="source rows (default 50000)")
    parser.add_argument(
        "--db-url",
        help="SQLAlchemy URL of a loopback database to build the table in (a uniquely named "
        "table, dropped at the end); default: SQLite in a temporary directory",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per request (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (3)")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=10,
        default=0,
        metavar="N",
        help="also run B once under cProfile and print its top N entries (default 10)",
    )
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak-RSS pass (one run per contender, each in a fresh process)",
    )
    args = parser.parse_args(argv)
    if args.rows < 100 or args.repeat < 1 or not 1 <= args.batch_size <= 100_000:
        parser.error("need --rows >= 100, --repeat >= 1 and 1 <= --batch-size <= 100000")
    if args.db_url and sa.make_url(args.db_url).host not in LOOPBACK:
        parser.error("--db-url must point at 127.0.0.1 (benchmarks talk to loopback only)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="akkiosync-bench-") as tmp:
            bench(args, Path(tmp))
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def bench(args: argparse.Namespace, tmp: Path) -> None:
    n, batch_size, repeat = args.rows, args.batch_size, args.repeat
    db_url = args.db_url or f"sqlite:///{tmp / 'source.db'}"
    table_name = f"akkiosync_bench_{secrets.token_hex(4)}"
    table = make_table(table_name)
    engine = sa.create_engine(db_url)
    rng = random.Random(20260101)
    setup = time.perf_counter()
    table.metadata.create_all(engine)
    try:
        insert_rows(engine, table, source_rows(rng, range(1, n + 1), START))
        setup = time.perf_counter() - setup
        info = engine.dialect.server_version_info or ()
        database = f"{engine.dialect.name} {'.'.join(map(str, info))} ({engine.dialect.driver})"
        api_key = f"bench-{secrets.token_hex(8)}"
        emulator = TimedEmulator(api_key)
        with serve(emulator) as server, AkkioClient(api_key, server.url) as control:
            ctx = Ctx(db_url, table_name, batch_size, server.url, api_key, tmp / "work")
            report = Report(n=n, batch_size=batch_size, repeat=repeat)
            where = db_url if args.db_url else "SQLite file in a temp dir"
            report.header(database, where, table_name, setup, server.url)

            # The timed runs, interleaved; each on a fresh dataset, checked, then deleted.
            runs = {c.key: Runs() for c in CONTENDERS}
            last_b: tuple[str, str] = ("", "")
            for rep in range(1, repeat + 1):
                for contender in CONTENDERS:
                    name = f"bench-{contender.key.lower()}-{rep}"
                    with measured(emulator, runs[contender.key]):
                        dataset_id = contender.run(ctx, name)
                    check_ids(emulator, dataset_id, range(1, n + 1), f"{contender.key} run {rep}")
                    if rep == 1:
                        report.schema(contender.key, control.get_dataset(dataset_id))
                    if contender.key == "B" and rep == repeat:
                        last_b = (name, dataset_id)  # kept for the incremental runs
                    else:
                        control.delete_dataset(dataset_id)

            profile = None
            if args.profile:
                profile = profiled(ctx, emulator, control, n, args.profile)

            if not args.no_memory:
                spawn = multiprocessing.get_context("spawn")
                memory_ctx = dataclasses.replace(ctx, workdir=tmp / "memory")
                for contender in CONTENDERS:
                    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                        name = f"bench-{contender.key.lower()}-memory"
                        future = pool.submit(memory_child, contender.key, memory_ctx, name)
                        grown, dataset_id = future.result()
                    check_ids(emulator, dataset_id, range(1, n + 1), f"{contender.key} (memory)")
                    control.delete_dataset(dataset_id)
                    runs[contender.key].rss_kib = grown

            report.table(runs)

            # Incremental: the last B job again, with nothing new, then after 1% new rows.
            job_name, dataset_id = last_b
            job_path = ctx.workdir / "config" / "jobs" / f"{job_name}.yaml"
            nothing, some = Runs(), Runs()
            step = max(n // 100, 1)
            top = n
            for i in range(repeat):
                with measured(emulator, nothing):
                    result = akkiosync_sync(ctx, job_path)
                nothing.rows.append(result.rows_sent)
                later = START + dt.timedelta(days=1 + i)
                insert_rows(engine, table, source_rows(rng, range(top + 1, top + step + 1), later))
                top += step
                with measured(emulator, some):
                    result = akkiosync_sync(ctx, job_path)
                some.rows.append(result.rows_sent)
            if set(nothing.rows) != {0} or set(some.rows) != {step}:
                raise BenchError(
                    f"incremental runs sent {nothing.rows} rows (expected 0 each) and "
                    f"{some.rows} rows (expected {step} each)"
                )
            check_ids(emulator, dataset_id, range(1, top + 1), "B after the incremental runs")
            report.incremental(nothing, some, step, runs["A"].median, top)
            if profile is not None:
                report.profile(*profile)
    finally:
        table.drop(engine, checkfirst=True)
        engine.dispose()


def profiled(
    ctx: Ctx, emulator: Emulator, control: AkkioClient, n: int, top: int
) -> tuple[float, str]:
    """One more B run under cProfile (this thread only: the emulator's thread is not in it)."""
    profiler = cProfile.Profile()
    gc.collect()
    start = time.perf_counter()
    profiler.enable()
    dataset_id = with_akkiosync(ctx, "bench-b-profile")
    profiler.disable()
    seconds = time.perf_counter() - start
    check_ids(emulator, dataset_id, range(1, n + 1), "B (profiled)")
    control.delete_dataset(dataset_id)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return seconds, out.getvalue()


# ---------------------------------------------------------------------------------------------
# Printing


@dataclass
class Report:
    n: int
    batch_size: int
    repeat: int

    def header(self, database: str, where: str, table: str, setup: float, api_url: str) -> None:
        print(
            f"akkiosync sync benchmark: N={self.n:,} rows, batch_size={self.batch_size}, "
            f"{self.repeat} interleaved runs per contender (median)"
        )
        print(
            f"  python {platform.python_version()}, SQLAlchemy {sa.__version__}, "
            f"httpx {httpx.__version__}, akkiosync {version('akkiosync')}, "
            f"{platform.system()} {platform.machine()}, {multiprocessing.cpu_count()} CPUs"
        )
        print(f"  database: {database}: {where}, table {table} (filled in {setup:.1f}s)")
        print(
            f"  Akkio: emulator in this process on {api_url} (real HTTP over loopback; it shares "
            "the GIL with the contenders; 'server s' is its time answering)"
        )
        print(
            f"  rate limit: akkiosync's is raised from Akkio's {AKKIO_RATE:g} req/s to unlimited "
            "here, so that it does not dominate (the hand-written scripts do not pace at all)"
        )

    @staticmethod
    def schema(key: str, info: DatasetInfo) -> None:
        text = ", ".join(f"{f.name}:{f.type}" for f in info.fields)
        print(f"  {key:<2} dataset fields as Akkio infers them: {text}")

    def table(self, runs: dict[str, Runs]) -> None:
        print(
            f"\n{'contender':<30} {'rows':>7} {'median s':>9} {'rows/s':>9} {'server s':>9} "
            f"{'requests':>8} {'peak RSS':>9}   runs (s)"
        )
        for contender in CONTENDERS:
            r = runs[contender.key]
            rss = "-" if r.rss_kib is None else f"+{r.rss_kib / 1024:.0f} MiB"
            each = " ".join(f"{s:.2f}" for s in r.seconds)
            label = f"{contender.key:<3}{contender.label}"
            print(
                f"{label:<30} {self.n:>7} {r.median:>9.3f} {self.n / r.median:>9,.0f} "
                f"{statistics.median(r.server):>9.3f} {statistics.median(r.requests):>8.0f} "
                f"{rss:>9}   {each}"
            )
        b = runs["B"].median
        print(f"\nB/A  = {ratio(b, runs['A'].median)}")
        print(f"B/A2 = {ratio(b, runs['A2'].median)}")
        print("correctness: A ok, A2 ok (N rows each run); B ok (each id exactly once, each run)")
        paced_b = statistics.median(runs["B"].requests) / AKKIO_RATE
        paced_a2 = statistics.median(runs["A2"].requests) / AKKIO_RATE
        print(
            f"at Akkio's {AKKIO_RATE:g} req/s, B's requests alone would take >= {paced_b:.1f}s "
            f"(A2's >= {paced_a2:.1f}s)"
        )
        if runs["B"].rss_kib is not None:
            print(
                "peak RSS: how far one run lifts the client process's peak RSS (VmHWM), each "
                "contender in a fresh process (the emulator's memory excluded)"
            )

    def incremental(self, nothing: Runs, some: Runs, step: int, a_full: float, top: int) -> None:
        print(
            f"\nincremental runs of B's last job (median of {len(nothing.seconds)}; the "
            "hand-written scripts have no checkpoint):"
        )
        for what, r in (("nothing new", nothing), (f"{step} new rows (1%)", some)):
            each = " ".join(f"{s:.3f}" for s in r.seconds)
            print(
                f"  {what:<20} sent {r.rows[-1]:>6} rows  {r.median:7.3f}s  "
                f"server {statistics.median(r.server):.3f}s  "
                f"{statistics.median(r.requests):.0f} requests   runs: {each}"
            )
        print(
            f"  B with 1% new / A re-sending everything = {some.median / a_full:.3f}  (A's only "
            f"alternatives: duplicate all {self.n:,} rows, or rebuild the dataset)"
        )
        print(f"correctness: incremental ok ({top:,} rows, each id exactly once)")

    @staticmethod
    def profile(seconds: float, text: str) -> None:
        print(
            f"\ncProfile of one more B run ({seconds:.2f}s under the profiler; main thread only, "
            "so the emulator's work shows as waiting for the answer):"
        )
        print(text.rstrip())


if __name__ == "__main__":
    sys.exit(main())
