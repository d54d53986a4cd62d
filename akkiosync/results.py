"""What a run reports, and the clock runs read: values every other module may import.

A leaf module: it imports nothing from akkiosync, so that ``metrics``, ``alerts``, ``report``
and ``daemon`` need not import the runner for a type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Clock = Callable[[], dt.datetime]
ResultStatus = Literal["success", "failed", "skipped"]


def utc_now() -> dt.datetime:
    """The default clock."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run did (``skipped``: another process was running the job)."""

    job: str
    run_id: int | None
    status: ResultStatus
    rows_read: int = 0
    rows_sent: int = 0
    batches: int = 0
    dataset_id: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    seconds: float = 0.0
    error: str | None = None
    rows_skipped: int = 0  # rows with a NULL watermark, never read
    lag: float | None = None  # the cursor's distance to the newest watermark (measure_lag)

    @property
    def ok(self) -> bool:
        return self.status == "success"
