"""Tests for pacing: retry backoff and the per-key rate limiter, on injected clocks and sleeps."""

from __future__ import annotations

import gc
import hashlib
import itertools
import math
import random
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from akkiosync import pacing
from akkiosync.pacing import AKKIO_RATE, RateLimiter, RetryPolicy, limiter_for


class FakeClock:
    """A clock that moves only when told to, or when something sleeps on it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fixed(value: float) -> Callable[[], float]:
    """A jitter source that always draws ``value``."""
    return lambda: value


def new_key() -> str:
    """An API key no other test has used: the process-wide registry never leaks between tests."""
    return f"akk-{uuid.uuid4().hex}"


class TestRetryPolicy:
    """delay() is capped exponential backoff with full jitter, floored by Retry-After."""

    def test_defaults(self) -> None:
        """Eight tries, 0.5s base, 30s cap, at most 300s for a Retry-After."""
        policy = RetryPolicy()
        assert (policy.attempts, policy.base, policy.cap, policy.max_retry_after) == (
            8,
            0.5,
            30.0,
            300.0,
        )

    def test_growth_and_cap(self) -> None:
        """At full jitter the waits double from base until they reach the cap, then stay there."""
        policy = RetryPolicy()
        waits = [policy.delay(attempt, rand=fixed(1.0)) for attempt in range(1, 10)]
        assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]

    def test_custom_base_and_cap(self) -> None:
        """base and cap are honoured."""
        policy = RetryPolicy(base=0.1, cap=0.5)
        waits = [policy.delay(attempt, rand=fixed(1.0)) for attempt in range(1, 6)]
        assert waits == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])

    def test_full_jitter_scales_the_whole_wait(self) -> None:
        """The draw multiplies the whole backoff: 0 means no wait, 0.25 a quarter of it."""
        policy = RetryPolicy()
        assert policy.delay(4, rand=fixed(0.0)) == 0.0
        assert policy.delay(4, rand=fixed(0.25)) == 1.0
        assert policy.delay(20, rand=fixed(0.5)) == 15.0

    def test_jitter_bounds_with_real_random(self) -> None:
        """With a seeded random source every wait lies in [0, min(cap, base * 2**(n-1)))."""
        policy = RetryPolicy()
        draw = random.Random(42).random
        for attempt in range(1, 12):
            ceiling = min(policy.cap, policy.base * 2 ** (attempt - 1))
            waits = [policy.delay(attempt, rand=draw) for _ in range(200)]
            assert all(0.0 <= wait < ceiling for wait in waits)
            assert max(waits) > ceiling / 2  # the draws really spread over the range

    def test_default_rand_is_random(self) -> None:
        """Without an injected draw, waits still stay within the bounds."""
        wait = RetryPolicy().delay(3)
        assert 0.0 <= wait < 2.0

    def test_huge_attempt_does_not_overflow(self) -> None:
        """A very late attempt is just the cap."""
        assert RetryPolicy().delay(10_000, rand=fixed(1.0)) == 30.0

    def test_retry_after_is_a_floor(self) -> None:
        """A server's Retry-After is waited at least, even when the jittered backoff is shorter."""
        policy = RetryPolicy()
        assert policy.delay(1, retry_after=7.0, rand=fixed(0.0)) == 7.0
        assert policy.delay(1, retry_after=0.0, rand=fixed(1.0)) == 0.5

    def test_retry_after_shorter_than_backoff(self) -> None:
        """When the backoff is longer than Retry-After, the backoff wins."""
        assert RetryPolicy().delay(7, retry_after=2.0, rand=fixed(1.0)) == 30.0

    def test_retry_after_is_capped(self) -> None:
        """No Retry-After makes the client wait longer than max_retry_after."""
        assert RetryPolicy().delay(1, retry_after=3600.0, rand=fixed(0.0)) == 300.0
        policy = RetryPolicy(max_retry_after=10.0)
        assert policy.delay(1, retry_after=11.0, rand=fixed(1.0)) == 10.0

    def test_negative_retry_after_is_zero(self) -> None:
        """A Retry-After in the past adds no wait."""
        assert RetryPolicy().delay(1, retry_after=-5.0, rand=fixed(0.0)) == 0.0

    @pytest.mark.parametrize(
        "options",
        [
            {"attempts": 0},
            {"base": -1.0},
            {"cap": math.inf},
            {"max_retry_after": math.nan},
        ],
    )
    def test_invalid_policy(self, options: dict[str, float]) -> None:
        """A policy that cannot try at least once or has impossible waits is refused."""
        with pytest.raises(ValueError, match="must be"):
            RetryPolicy(**options)  # type: ignore[arg-type]

    def test_attempt_counts_from_one(self) -> None:
        """Attempt 0 is a programming error."""
        with pytest.raises(ValueError, match="counts from 1"):
            RetryPolicy().delay(0)

    def test_frozen(self) -> None:
        """A policy is a value: it cannot be changed after creation."""
        policy = RetryPolicy()
        with pytest.raises(AttributeError):
            policy.attempts = 3  # type: ignore[misc]


class TestRateLimiter:
    """Request starts are spaced at least 1/rate apart."""

    def test_first_acquire_is_free(self) -> None:
        """The first request goes at once."""
        clock = FakeClock()
        RateLimiter(5.0, clock=clock, sleep=clock.sleep).acquire()
        assert clock.sleeps == []

    def test_back_to_back_acquires_are_spaced(self) -> None:
        """Acquires at one instant wait one interval more each."""
        waits: list[float] = []
        limiter = RateLimiter(4.0, clock=lambda: 50.0, sleep=waits.append)
        for _ in range(5):
            limiter.acquire()
        assert waits == [0.25, 0.5, 0.75, 1.0]

    def test_sleeping_caller_keeps_the_pace(self) -> None:
        """A caller that sleeps as told starts exactly one interval after the previous one."""
        clock = FakeClock()
        limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
        starts = []
        for _ in range(4):
            limiter.acquire()
            starts.append(clock.now)
        assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([0.2, 0.2, 0.2])
        assert clock.sleeps == pytest.approx([0.2, 0.2, 0.2])

    def test_idle_time_is_not_banked(self) -> None:
        """After a long pause the next request goes at once, and only one: no burst is saved up."""
        clock = FakeClock()
        limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
        limiter.acquire()
        clock.now += 10.0
        limiter.acquire()
        limiter.acquire()
        assert clock.sleeps == pytest.approx([0.2])

    def test_partial_wait(self) -> None:
        """A request 0.15s after the previous one at 5/s waits the remaining 0.05s."""
        clock = FakeClock()
        limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
        limiter.acquire()
        clock.now += 0.15
        limiter.acquire()
        assert clock.sleeps == pytest.approx([0.05])

    def test_rate_property(self) -> None:
        """The limiter reports the rate it enforces."""
        assert RateLimiter(5.0).rate == pytest.approx(5.0)
        assert RateLimiter(math.inf).rate == math.inf

    def test_infinite_rate_never_waits(self) -> None:
        """An infinite rate spaces nothing."""
        waits: list[float] = []
        limiter = RateLimiter(math.inf, clock=lambda: 1.0, sleep=waits.append)
        for _ in range(10):
            limiter.acquire()
        assert waits == []

    @pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
    def test_invalid_rate(self, rate: float) -> None:
        """A rate that is not positive is refused."""
        with pytest.raises(ValueError, match="positive"):
            RateLimiter(rate)

    def test_threads_get_strictly_spaced_slots(self) -> None:
        """N threads x M acquires at one instant get N*M distinct slots, one interval apart."""
        threads_n, per_thread = 8, 50
        waits: list[float] = []
        waits_lock = threading.Lock()

        def record(seconds: float) -> None:
            with waits_lock:
                waits.append(seconds)

        limiter = RateLimiter(4.0, clock=lambda: 0.0, sleep=record)
        start = threading.Barrier(threads_n)

        def work() -> None:
            start.wait()
            for _ in range(per_thread):
                limiter.acquire()

        workers = [threading.Thread(target=work) for _ in range(threads_n)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert not any(worker.is_alive() for worker in workers)
        # The clock stands at 0, so each wait is its slot; the first slot (0) needs no wait.
        assert sorted(waits) == [k * 0.25 for k in range(1, threads_n * per_thread)]

    def test_real_clock_spacing(self) -> None:
        """With the real clock and sleep, three acquires at 50/s take at least two intervals."""
        limiter = RateLimiter(50.0)
        began = time.monotonic()
        for _ in range(3):
            limiter.acquire()
        assert time.monotonic() - began >= 0.04 - 1e-3


class TestLimiterFor:
    """One limiter per API key, shared process-wide, keyed by a hash of the key."""

    def test_same_key_same_limiter(self) -> None:
        """Asking twice for one key gives the same limiter."""
        key = new_key()
        assert limiter_for(key, 5.0) is limiter_for(key, 5.0)

    def test_default_rate_is_akkios(self) -> None:
        """Without a rate, the limiter enforces Akkio's published five requests per second."""
        assert AKKIO_RATE == 5.0
        assert limiter_for(new_key()).rate == pytest.approx(5.0)

    def test_different_keys_different_limiters(self) -> None:
        """Two keys never share a limiter."""
        assert limiter_for(new_key(), 5.0) is not limiter_for(new_key(), 5.0)

    def test_shared_across_threads(self) -> None:
        """Threads asking for one key at once all get the same limiter."""
        key = new_key()
        got: list[RateLimiter] = []
        start = threading.Barrier(8)

        def ask() -> None:
            start.wait()
            got.append(limiter_for(key, 5.0))

        workers = [threading.Thread(target=ask) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert len(got) == 8
        assert len({id(limiter) for limiter in got}) == 1

    def test_stricter_rate_wins(self) -> None:
        """Asked again with a lower rate, the shared limiter slows down; a higher one is ignored."""
        key = new_key()
        limiter = limiter_for(key, 5.0)
        assert limiter_for(key, 2.0).rate == pytest.approx(2.0)
        assert limiter_for(key, 10.0).rate == pytest.approx(2.0)
        assert limiter.rate == pytest.approx(2.0)

    def test_invalid_rate_on_reuse(self) -> None:
        """A nonsense rate is refused even when the limiter already exists."""
        key = new_key()
        limiter_for(key, 5.0)
        with pytest.raises(ValueError, match="positive"):
            limiter_for(key, 0.0)

    def test_never_stores_the_raw_key(self) -> None:
        """The registry holds the key's SHA-256; nothing reachable from it holds the key itself."""
        key = new_key()
        limiter = limiter_for(key, 5.0)
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert pacing._limiters[digest] is limiter
        assert key not in pacing._limiters
        assert not any(key in name for name in pacing._limiters)
        assert key not in repr(vars(pacing))
        reachable = gc.get_referents(limiter, *gc.get_referents(limiter))
        assert not any(isinstance(obj, str) and key in obj for obj in reachable)
