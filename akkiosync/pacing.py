"""When the next request to Akkio may go: backoff after a failure, and a per-key rate limit.

``RetryPolicy`` says how long to wait before trying a call again; ``RateLimiter`` spaces request
starts so that everything sharing an API key stays under Akkio's published limit (five requests
per second per key). Neither knows HTTP: ``akkio`` decides what may be retried.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

AKKIO_RATE = 5.0  # requests per second per API key, as Akkio's FAQ states it

# 2**62 seconds is far beyond any cap; a larger exponent would only overflow a float.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often one call is tried, and how long to wait between tries."""

    attempts: int = 8  # total tries of one call, >= 1
    base: float = 0.5  # seconds
    cap: float = 30.0  # max backoff seconds
    max_retry_after: float = 300.0  # never wait longer than this for a server's Retry-After

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        for name in ("base", "cap", "max_retry_after"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value}")

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1).

        Capped exponential backoff with full jitter, ``min(cap, base * 2**(attempt-1)) * rand()``;
        when the server sent ``Retry-After``, at least that long (but at most ``max_retry_after``).
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, not {attempt}")
        backoff = min(self.cap, self.base * 2.0 ** min(attempt - 1, _MAX_EXPONENT)) * rand()
        if retry_after is None:
            return backoff
        return max(backoff, min(max(retry_after, 0.0), self.max_retry_after))


class RateLimiter:
    """At most ``rate`` requests per second, shared by every thread that holds it.

    Request starts are spaced at least ``1/rate`` apart. Each caller reserves the next free slot
    under a lock and sleeps outside it, so waiting threads never block each other's bookkeeping.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:  # also refuses NaN
            raise ValueError(f"rate must be a positive number of requests per second, not {rate}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = -math.inf  # the earliest start of the next request

    @property
    def rate(self) -> float:
        """Requests per second allowed."""
        return math.inf if self._interval == 0 else 1.0 / self._interval

    def acquire(self) -> None:
        """Block until this caller may start a request."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            self._sleep(slot - now)

    def _tighten(self, rate: float) -> None:
        """Lower the rate to ``rate`` if that is stricter; never loosen it."""
        if not rate > 0:
            raise ValueError(f"rate must be a positive number of requests per second, not {rate}")
        with self._lock:
            self._interval = max(self._interval, 1.0 / rate)


_registry_lock = threading.Lock()
_limiters: dict[str, RateLimiter] = {}


def limiter_for(api_key: str, rate: float = AKKIO_RATE) -> RateLimiter:
    """The process-wide limiter for this API key, created on first use.

    Akkio's limit is per key, so every client and job in the process using the key shares it.
    Asked again with another rate, it keeps the stricter one: both callers' limits then hold.
    The registry is keyed by a hash of the key, never the key itself.
    """
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    with _registry_lock:
        limiter = _limiters.get(digest)
        if limiter is None:
            limiter = _limiters[digest] = RateLimiter(rate)
            return limiter
    limiter._tighten(rate)
    return limiter
