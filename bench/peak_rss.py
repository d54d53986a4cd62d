"""Run a Python module or script in this process, then write this process's peak RSS and CPU.

    python bench/peak_rss.py OUT.json -m MODULE [ARGS...]
    python bench/peak_rss.py OUT.json SCRIPT.py [ARGS...]

At exit (after the program's other threads ended, whatever its exit status) it writes
``{"vmhwm_kib": ..., "cpu_s": ...}`` to OUT.json: ``VmHWM`` from ``/proc/self/status`` and the
user+system CPU seconds of all its threads. VmHWM belongs to the process's address space and
starts afresh at exec, so it is this program's own peak, interpreter and imports included.
``getrusage``'s ``ru_maxrss`` would not do: Linux carries it over from the parent across fork
and exec, so a child of a big benchmark process would report at least the parent's size.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
from pathlib import Path


def vmhwm_kib() -> int:
    """This process's peak resident set size so far, in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")


def main() -> None:
    """Arrange the report at exit, then run the program as ``python -m``/``python`` would."""
    if len(sys.argv) < 3 or (sys.argv[2] == "-m" and len(sys.argv) < 4):
        sys.exit(__doc__)
    out = Path(sys.argv[1])

    def report() -> None:
        times = os.times()
        figures = {"vmhwm_kib": vmhwm_kib(), "cpu_s": times.user + times.system}
        out.write_text(json.dumps(figures), encoding="ascii")

    # atexit handlers run after the interpreter joined the program's non-daemon threads.
    atexit.register(report)
    if sys.argv[2] == "-m":
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        sys.path[0] = str(Path(sys.argv[0]).resolve().parent)  # as `python SCRIPT` sets it
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
