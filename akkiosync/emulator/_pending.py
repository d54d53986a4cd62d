"""Work the emulator still owes: requests in flight and changes that land after their answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_log = logging.getLogger(__name__)


class Pending:
    """Counts requests being handled and changes scheduled to land; ``settle`` waits for none.

    A late change runs on its own daemon timer thread, so it lands whether or not another
    request ever arrives, and never keeps the process alive.
    """

    def __init__(self) -> None:
        self._quiet = threading.Condition()
        self._count = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        """One request in flight, for as long as the block runs."""
        self._begin()
        try:
            yield
        finally:
            self._end()

    def later(self, delay: float, change: Callable[[], None]) -> None:
        """Run `change` `delay` seconds from now on a background thread."""
        self._begin()
        timer = threading.Timer(delay, self._land, (change,))
        timer.name, timer.daemon = "akkio-emulator-late", True
        try:
            timer.start()
        except BaseException:
            self._end()
            raise

    def settle(self, timeout: float | None) -> bool:
        """Wait until nothing is in flight or scheduled; False if `timeout` seconds pass first."""
        with self._quiet:
            return self._quiet.wait_for(lambda: self._count == 0, timeout)

    def _land(self, change: Callable[[], None]) -> None:
        try:
            change()
        except Exception:  # noqa: BLE001 - a thread's exception would be lost (or fail a test run)
            _log.exception("a late change failed in the emulator")
        finally:
            self._end()

    def _begin(self) -> None:
        with self._quiet:
            self._count += 1

    def _end(self) -> None:
        with self._quiet:
            self._count -= 1
            if self._count == 0:
                self._quiet.notify_all()
