"""When jobs run: crontab semantics, triggers, one run per job at a time. No real minutes pass:
triggers are asked for their next fire time from a fixed instant, and the worker tests use
one-second intervals with deadlines."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from akkiosync.schedule import parse_schedule
from akkiosync.scheduler import Scheduler, crontab_days, trigger_for

NOW = dt.datetime(2026, 11, 28, 12, 0, 30, tzinfo=dt.UTC)  # a Saturday


class TestCrontabDays:
    """Day-of-week follows crontab(5), where 0 and 7 are Sunday (APScheduler's 0 is Monday)."""

    @pytest.mark.parametrize(
        ("field", "names"),
        [
            ("*", "*"),
            ("0", "sun"),
            ("7", "sun"),
            ("1-5", "mon,tue,wed,thu,fri"),
            ("5-7", "sun,fri,sat"),
            ("5-0", "sun,fri,sat"),
            ("0-2", "sun,mon,tue"),
            ("*/2", "sun,tue,thu,sat"),
            ("mon-fri", "mon,tue,wed,thu,fri"),
            ("1,3,5", "mon,wed,fri"),
            ("1-5/2", "mon,wed,fri"),
        ],
    )
    def test_names(self, field: str, names: str) -> None:
        """Each crontab field becomes the same days, by name."""
        assert crontab_days(field) == names


class TestTriggers:
    """Triggers fire when crontab or the interval says, from a fixed instant."""

    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("*/5 * * * *", dt.datetime(2026, 11, 28, 12, 5, tzinfo=dt.UTC)),
            ("0 9 * * 1-5", dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)),  # Monday
            ("0 9 * * 0", dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)),  # Sunday
            ("30 12 * * 6", dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.UTC)),  # later today
            ("0 12 * * 6", dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)),  # next Saturday
            ("@daily", dt.datetime(2026, 11, 29, 0, 0, tzinfo=dt.UTC)),
        ],
    )
    def test_cron(self, expression: str, expected: dt.datetime) -> None:
        """A cron schedule's next fire time, in UTC."""
        trigger = trigger_for(parse_schedule(expression))
        assert trigger.get_next_fire_time(None, NOW) == expected

    def test_interval(self) -> None:
        """An interval fires every N seconds from its start."""
        trigger = trigger_for(parse_schedule("90s"))
        first = trigger.get_next_fire_time(None, NOW)
        assert trigger.get_next_fire_time(first, first) - first == dt.timedelta(seconds=90)


class TestScheduler:
    """Jobs run in the pool, never two runs of one job at once, and can be rescheduled."""

    def test_runs_and_never_overlaps(self) -> None:
        """A run that outlasts its interval is not started twice; missed runs coalesce."""
        started: list[str] = []
        running = threading.Event()
        release = threading.Event()
        overlapped = []

        def run(name: str) -> None:
            if running.is_set():
                overlapped.append(name)
            running.set()
            started.append(name)
            release.wait(10)
            running.clear()

        scheduler = Scheduler(run, workers=4)
        scheduler.start()
        try:
            scheduler.put("orders", parse_schedule("1s"), run_now=True)
            deadline = time.monotonic() + 10
            while not started:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # While the first run is blocked, more than one interval goes by.
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                time.sleep(0.05)
            assert started == ["orders"]
            release.set()
            deadline = time.monotonic() + 10
            while len(started) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            release.set()
            scheduler.shutdown(wait=True)
        assert overlapped == []

    def test_reschedule_and_remove(self) -> None:
        """put replaces a job's schedule; remove stops it; next_runs lists scheduled jobs."""
        scheduler = Scheduler(lambda name: None)
        scheduler.start()
        try:
            scheduler.put("a", parse_schedule("1h"))
            scheduler.put("b", parse_schedule("0 3 * * *"))
            first = scheduler.next_runs()
            scheduler.put("a", parse_schedule("2h"))
            second = scheduler.next_runs()
            scheduler.remove("b")
            assert set(first) == {"a", "b"}
            assert second["a"] is not None
            assert first["a"] is not None
            assert second["a"] > first["a"]
            assert set(scheduler.next_runs()) == {"a"}
        finally:
            scheduler.shutdown(wait=True)
