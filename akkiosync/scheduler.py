"""APScheduler 3.x, confined to this module: when each job runs, at most one run at a time.

APScheduler is untyped; nothing else imports it. Its defaults need care: a misfired run is
coalesced into one and started late rather than dropped (``misfire_grace_time=None``), a job
never overlaps itself (``max_instances=1``), and cron day-of-week follows crontab(5) (0 and 7
are Sunday), which APScheduler numbers differently (0 is Monday): days are passed by name.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from akkiosync.schedule import Schedule

logger = logging.getLogger(__name__)
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class Scheduler:
    """Calls ``run(name)`` for each scheduled job when its schedule says, in a worker pool."""

    def __init__(self, run: Callable[[str], None], *, workers: int = 4) -> None:
        self._run = run
        self._aps = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=dt.UTC,
        )
        # A run still going when its next time comes is not an error worth a warning each time.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors").setLevel(logging.ERROR)

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def start(self) -> None:
        """Start calling jobs."""
        self._aps.start()

    def shutdown(self, *, wait: bool) -> None:
        """Stop starting runs; with ``wait``, return once the runs in flight have ended."""
        if self._aps.running:
            self._aps.shutdown(wait=wait)

    def put(self, name: str, schedule: Schedule, *, run_now: bool = False) -> None:
        """Schedule (or reschedule) a job; ``run_now`` also starts a run right away."""
        options: dict[str, Any] = {}
        if run_now:
            options["next_run_time"] = dt.datetime.now(dt.UTC)
        existing = self._aps.get_job(name)
        if existing is not None and not run_now:
            existing.reschedule(trigger_for(schedule))
            return
        self._aps.add_job(
            self._run, trigger_for(schedule), args=[name], id=name, name=name,
            replace_existing=True, **options,
        )  # fmt: skip

    def run_once(self, name: str) -> None:
        """Start one run of a job now, outside its schedule (jobs without one included)."""
        self._aps.add_job(
            self._run, args=[name], id=f"{name}#now", name=name, replace_existing=True
        )

    def remove(self, name: str) -> None:
        """Stop scheduling a job (a run in flight finishes)."""
        if self._aps.get_job(name) is not None:
            self._aps.remove_job(name)

    def next_runs(self) -> dict[str, dt.datetime | None]:
        """When each scheduled job runs next."""
        return {job.id: job.next_run_time for job in self._aps.get_jobs() if "#" not in job.id}


def trigger_for(schedule: Schedule) -> Any:
    """The APScheduler trigger of a schedule (untyped: APScheduler has no type hints)."""
    if schedule.kind == "interval":
        assert schedule.seconds is not None  # noqa: S101 - intervals always carry seconds
        return IntervalTrigger(seconds=schedule.seconds, timezone=dt.UTC)
    minute, hour, day, month, day_of_week = schedule.expression.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_days(day_of_week),
        timezone=dt.UTC,  # cron expressions are read in UTC, whatever the machine's zone
    )


def crontab_days(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday) as APScheduler day names."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.split(","):
        spec, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if spec == "*":
            low, high = 0, 6
        else:
            first, _, last = spec.partition("-")
            low = _day(first)
            high = _day(last) if last else (6 if step_text else low)
            if last and high == 0 and low > 0:
                high = 7  # "5-0" ends on Sunday, like "5-7"
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def _day(text: str) -> int:
    return _DAYS.index(text) if text in _DAYS else int(text)  # 7 stays 7 until "% 7"
