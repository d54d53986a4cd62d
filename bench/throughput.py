"""Rows per second and peak RSS: akkiosync against the official client and a hand-tuned stream.

    .venv/bin/python bench/throughput.py            # `make bench`: both databases, ~10 minutes
    .venv/bin/python bench/throughput.py --db postgres --rows 50000 --repeat 1 --no-rss4

For each database (PostgreSQL, MariaDB) it builds a table of N rows of 10 mixed columns, and
for each latency (none: loopback; 0.1 s per add-rows answer: a far API) it starts a sink, the
Akkio emulator in a process of its own, and runs three contenders in turns (A, B, C, A, B,
C, ...), each a fresh process, each into a fresh dataset that must then hold ids 1..N exactly
once (else: exit 1):

- the official client script (``official_script.py``),
- ``akkiosync sync`` (the real command, rate limit lifted),
- a hand-tuned stream (``hand_tuned.py``).

It prints, per scenario, the median rows/s of each (whole process, start-up included), the
ratios akkiosync/official and akkiosync/hand-tuned against their targets, and how fast the sink
ingests alone (it must not be what limits the contenders). Then the peak RSS of each process
at N and at 4N rows, and a list of every target with PASS or FAIL. See bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import pstats
import secrets
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import sqlalchemy as sa
import tp_report
from tp_contenders import CONTENDERS, JUDGED, Run, Target, run_contender, startup_seconds
from tp_sink import BenchError, Sink
from tp_source import LOOPBACK, Source, create_table, drop_table, first_rows

DEFAULT_URLS = {
    "postgres": (
        "AKKIOSYNC_TEST_POSTGRES_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ),
    "mariadb": ("AKKIOSYNC_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
LABELS = {"postgres": "PostgreSQL", "mariadb": "MariaDB"}
SINK_SECONDS = 1.5  # per stream count tried when measuring the sink alone


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every option has a default that makes the documented run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="N, rows in the table (200000)")
    parser.add_argument("--batch-size", type=int, default=5000, help="rows per request (5000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each (3)")
    parser.add_argument(
        "--db", choices=("postgres", "mariadb", "both"), default="both", help="(both)"
    )
    for name, (env, default) in DEFAULT_URLS.items():
        parser.add_argument(
            f"--{name}-url",
            default=os.environ.get(env, default),
            help=f"SQLAlchemy URL of a loopback database (${env}, else {default})",
        )
    parser.add_argument(
        "--latency",
        default="0,0.1",
        help="comma-separated seconds each add-rows answer is delayed by the sink; one scenario "
        "each (0,0.1)",
    )
    parser.add_argument(
        "--no-rss4", action="store_true", help="skip the one run per contender at 4N rows"
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        default=0,
        metavar="TOP",
        help="also run akkiosync once under cProfile (first database, no latency) and print "
        "its TOP entries by cumulative and by own time (25)",
    )
    args = parser.parse_args(argv)
    try:
        args.latencies = [float(text) for text in args.latency.split(",") if text.strip()]
    except ValueError:
        parser.error(f"--latency: {args.latency!r} is not a list of seconds")
    if not args.latencies or any(not 0 <= s <= 10 for s in args.latencies):
        parser.error("--latency: give one or more seconds from 0 to 10")
    if args.rows < 1000 or args.repeat < 1 or not 1 <= args.batch_size <= 100_000:
        parser.error("need --rows >= 1000, --repeat >= 1 and 1 <= --batch-size <= 100000")
    names = ("postgres", "mariadb") if args.db == "both" else (args.db,)
    args.sources = [Source(LABELS[name], getattr(args, f"{name}_url")) for name in names]
    for source in args.sources:
        if sa.make_url(source.url).host not in LOOPBACK:
            parser.error(f"{source.label}: the URL must point at 127.0.0.1 (loopback only)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 1 if any run failed its check (the figures are then void)."""
    args = parse_args(argv)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="akkiosync-throughput-") as tmp:
            verdicts = bench(args, Path(tmp))
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    verdicts.print()
    print(f"\n(whole benchmark: {(time.monotonic() - started) / 60:.1f} minutes)")
    return 0


def header(args: argparse.Namespace) -> dict[str, float]:
    """What ran, where, and how to read it; returns each contender's start-up seconds."""
    print(
        f"akkiosync throughput benchmark: N={args.rows:,} rows of 10 columns, batch "
        f"{args.batch_size:,}, {args.repeat} interleaved run(s) per contender (median)"
    )
    print(
        f"  python {platform.python_version()}, akkiosync {version('akkiosync')}, akkio "
        f"{version('akkio')}, SQLAlchemy {sa.__version__}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs (shared by the database, the sink and "
        "the contender)"
    )
    print(
        "  sink: `python -m akkiosync emulator --keep-only id --latency S` in its own process; "
        "akkiosync's rate limit is lifted (AKKIO_RATE_LIMIT=1000000)"
    )
    print(
        "  rows/s = N / the median wall time of the whole process (start-up included); CPU s: "
        "the contender's own; sink CPU: the sink's busy share of that wall time"
    )
    startup = {c.key: startup_seconds(c.key) for c in CONTENDERS}
    starts = ", ".join(f"{key} {seconds:.2f}s" for key, seconds in startup.items())
    print(
        f"  start-up alone (python + imports, best of 3; in the wall times, and taken off them "
        f"in the '-start-up' column): {starts}"
    )
    return startup


def bench(args: argparse.Namespace, tmp: Path) -> tp_report.Verdicts:
    """Every database, every scenario; the targets checked on the way."""
    startup = header(args)
    verdicts = tp_report.Verdicts()
    api_key = f"bench-{secrets.token_hex(8)}"
    n = args.rows
    for db_index, source in enumerate(args.sources):
        tag = secrets.token_hex(3)
        table, big = f"bench_tp_{tag}_n", f"bench_tp_{tag}_4n"
        shown = sa.make_url(source.url).render_as_string(hide_password=True)
        print(f"\n#### {source.label}: {source.describe()}, {shown}")
        try:
            start = time.monotonic()
            create_table(source.url, table, n)
            if not args.no_rss4:
                create_table(source.url, big, 4 * n)
            print(f"  tables {table} (and {big}) built in {time.monotonic() - start:.1f}s")
            sample = first_rows(source.url, table, args.batch_size)
            target = Target(source.url, table, n, args.batch_size, tmp)
            rss_at_n: dict[str, int] = {}
            for latency in args.latencies:
                where = "loopback" if latency == 0 else f"{latency * 1000:g} ms per add-rows answer"
                title = f"{source.label}, {where}"
                with Sink(api_key, latency, tmp / "sink.log") as sink:
                    runs = timed_runs(target, sink, args.repeat, f"{source.label} {latency}")
                    alone = sink_alone(sink, sample, latency)
                    tp_report.scenario(title, n, runs, startup, alone, verdicts)
                    if latency == 0:
                        rss_at_n = {k: max(r.rss_kib or 0 for r in v) for k, v in runs.items()}
                    if args.profile and db_index == 0 and latency == args.latencies[0]:
                        profiled(target, sink, tmp, args.profile)
            if not args.no_rss4:
                big_target = Target(source.url, big, 4 * n, args.batch_size, tmp)
                with Sink(api_key, 0.0, tmp / "sink.log") as sink:
                    rss_at_4n = {
                        c.key: run_contender(c.key, big_target, sink, f"{c.key} 4N").rss_kib or 0
                        for c in JUDGED
                    }
                if not rss_at_n:  # no loopback scenario: one run at N for the comparison
                    with Sink(api_key, 0.0, tmp / "sink.log") as sink:
                        rss_at_n = {
                            c.key: run_contender(c.key, target, sink, f"{c.key} N").rss_kib or 0
                            for c in JUDGED
                        }
                tp_report.memory(source.label, n, rss_at_n, rss_at_4n, verdicts)
        finally:
            drop_table(source.url, table)
            drop_table(source.url, big)
    return verdicts


def timed_runs(target: Target, sink: Sink, repeat: int, tag: str) -> dict[str, list[Run]]:
    """`repeat` rounds of every contender in turn; each run checked."""
    runs: dict[str, list[Run]] = {c.key: [] for c in CONTENDERS}
    for rep in range(1, repeat + 1):
        for contender in CONTENDERS:
            name = f"{contender.key} {tag} run {rep}"
            runs[contender.key].append(run_contender(contender.key, target, sink, name))
    return runs


def sink_alone(sink: Sink, sample: list[dict[str, object]], latency: float) -> tuple[float, int]:
    """The best ingest rate over a few numbers of parallel keep-alive streams: few on
    loopback, enough to cover the latency otherwise. (rows/s, streams)"""
    choices = (1, 2, 4) if latency == 0 else (8, 16, 32)
    return max((sink.ingest_rate(sample, streams, SINK_SECONDS), streams) for streams in choices)


def profiled(target: Target, sink: Sink, tmp: Path, top: int) -> None:
    """One more akkiosync run under cProfile; its top entries by cumulative and own time."""
    stats_file = tmp / "akkiosync.prof"
    run = run_contender("akkiosync", target, sink, "akkiosync profiled", profile=stats_file)
    out = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(
        f"\n== cProfile of one `akkiosync sync` ({run.seconds:.2f}s under the profiler) ==\n"
        "Only the main thread is profiled: work akkiosync does on other threads (a reader "
        "thread, if it has one) shows up only as the main thread waiting for it."
    )
    print(out.getvalue().rstrip())


if __name__ == "__main__":
    sys.exit(main())
