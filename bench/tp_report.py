"""What the throughput benchmark prints: per scenario a table and its ratios, then peak RSS,
then every target with PASS or FAIL."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from tp_contenders import CONTENDERS, Run

# The targets (issue 11): measured here, never in the timed tests.
VS_OFFICIAL = 1.8  # akkiosync rows/s at least this many times the official script's
VS_HAND_TUNED = 0.85  # ... and at least this share of the hand-tuned stream's
SINK_HEADROOM = 2.0  # the sink alone ingests at least this many times the fastest contender
RSS_LIMIT_MB = 150.0  # akkiosync's peak RSS at N and at 4N rows
RSS_GROWTH_MB = 20.0  # akkiosync's peak RSS at 4N minus at N, at most

LABELS = {c.key: c.label for c in CONTENDERS}


def mb(kib: int | None) -> float:
    """KiB (as /proc reports them) in MB of 10^6 bytes, the unit of the targets."""
    return (kib or 0) * 1024 / 1e6


def mark(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


@dataclass
class Verdicts:
    """Every target checked in this run, in order: (what, figure, target, ok)."""

    rows: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def add(self, what: str, figure: str, target: str, *, ok: bool) -> None:
        """Record one target's outcome."""
        self.rows.append((what, figure, target, ok))

    def print(self) -> None:
        """The targets, one line each, and how many passed."""
        print("\n== targets (issue 11) ==")
        width = max((len(what) for what, *_ in self.rows), default=0)
        for what, figure, target, ok in self.rows:
            print(f"  {mark(ok)}  {what:<{width}}  {figure:>12}  (target {target})")
        passed = sum(1 for *_, ok in self.rows if ok)
        print(f"  {passed} of {len(self.rows)} targets met")


def rate(n: int, runs: list[Run], startup: float = 0.0) -> float:
    """Rows per second over the median wall time, less `startup` seconds (if that leaves
    anything to speak of: a tiny N is mostly start-up)."""
    return n / max(statistics.median(r.seconds for r in runs) - startup, 0.01)


def scenario(
    title: str,
    n: int,
    runs: dict[str, list[Run]],
    startup: dict[str, float],
    alone: tuple[float, int],
    verdicts: Verdicts,
) -> None:
    """One scenario's table (median of the interleaved runs), the sink's headroom, the ratios.

    The targets are judged on whole processes, as a user times ``akkiosync sync``; the rates
    less start-up are shown beside them (a daemon starts once), and the sink's headroom is
    taken over the fastest of those, the rate at which rows actually go out.
    """
    print(f"\n== {title} ==")
    print(
        f"{'contender':<24} {'rows/s':>8} {'-start-up':>9} {'median s':>9} {'CPU s':>6} "
        f"{'sink CPU':>9} {'peak RSS':>9}   runs (s)"
    )
    for key, label in LABELS.items():
        mine = runs[key]
        cpu = statistics.median(r.cpu_s or 0.0 for r in mine)
        sink_cpu = statistics.median(r.sink_cpu_s / r.seconds for r in mine)
        rss = max(mb(r.rss_kib) for r in mine)
        each = " ".join(f"{r.seconds:.2f}" for r in mine)
        median = statistics.median(r.seconds for r in mine)
        print(
            f"{label:<24} {rate(n, mine):>8,.0f} {rate(n, mine, startup[key]):>9,.0f} "
            f"{median:>9.2f} {cpu:>6.2f} {sink_cpu:>9.0%} {rss:>6.0f} MB   {each}"
        )
    sending = {key: rate(n, runs[key], startup[key]) for key in LABELS}
    fastest = max(sending, key=sending.__getitem__)
    sink_rate, streams = alone
    headroom = sink_rate / sending[fastest]
    print(
        f"sink alone: {sink_rate:,.0f} rows/s ({streams} client stream{'s' * (streams > 1)}), "
        f"{headroom:.1f}x the fastest contender less start-up ({LABELS[fastest]})  "
        f"[target >= {SINK_HEADROOM:g}x: {mark(headroom >= SINK_HEADROOM)}]"
    )
    verdicts.add(
        f"{title}: sink headroom",
        f"{headroom:.1f}x",
        f">= {SINK_HEADROOM:g}x",
        ok=headroom >= SINK_HEADROOM,
    )
    for other, target in (("official", VS_OFFICIAL), ("hand-tuned", VS_HAND_TUNED)):
        ratio = rate(n, runs["akkiosync"]) / rate(n, runs[other])
        less = sending["akkiosync"] / sending[other]
        ok = ratio >= target
        print(
            f"akkiosync / {other:<10} = {ratio:5.2f}   [target >= {target:g}: {mark(ok)}]"
            f"   (less start-up: {less:.2f})"
        )
        verdicts.add(f"{title}: akkiosync / {other}", f"{ratio:.2f}", f">= {target:g}", ok=ok)
    if "akkiosync-defaults" in runs:  # information only: it sends larger batches than the rest
        own = rate(n, runs["akkiosync-defaults"])
        official, tuned = own / rate(n, runs["official"]), own / rate(n, runs["hand-tuned"])
        print(
            f"akkiosync with its defaults (batch_size 10,000): {official:.2f} x official, "
            f"{tuned:.2f} x hand-tuned (not a target: the others send the same batch)"
        )


def memory(
    title: str, n: int, at_n: dict[str, int], at_4n: dict[str, int], verdicts: Verdicts
) -> None:
    """Peak RSS of each contender at N rows and at 4N rows, and akkiosync's RSS targets."""
    print(f"\n== {title}: peak RSS of the whole process (VmHWM) ==")
    print(f"{'contender':<24} {f'N={n:,}':>12} {f'4N={4 * n:,}':>12} {'4N - N':>9}")
    for key, label in LABELS.items():
        if key not in at_4n:
            continue  # akkiosync-defaults: measured in the scenarios only
        low, high = mb(at_n[key]), mb(at_4n[key])
        print(f"{label:<24} {low:>9.0f} MB {high:>9.0f} MB {high - low:>+6.0f} MB")
    low, high = mb(at_n["akkiosync"]), mb(at_4n["akkiosync"])
    for what, figure, ok in (
        ("at N", low, low < RSS_LIMIT_MB),
        ("at 4N", high, high < RSS_LIMIT_MB),
    ):
        verdicts.add(
            f"{title}: akkiosync peak RSS {what}",
            f"{figure:.0f} MB",
            f"< {RSS_LIMIT_MB:g} MB",
            ok=ok,
        )
    growth = high - low
    ok = abs(growth) <= RSS_GROWTH_MB
    verdicts.add(
        f"{title}: akkiosync RSS 4N - N", f"{growth:+.0f} MB", f"<= {RSS_GROWTH_MB:g} MB", ok=ok
    )
    print(
        f"akkiosync: {low:.0f} MB at N, {high:.0f} MB at 4N (target < {RSS_LIMIT_MB:g} MB: "
        f"{mark(max(low, high) < RSS_LIMIT_MB)}); 4N - N = {growth:+.0f} MB "
        f"(target <= {RSS_GROWTH_MB:g} MB: {mark(ok)})"
    )
