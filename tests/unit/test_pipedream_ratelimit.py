"""The per-project token bucket, with a fake clock: pure arithmetic, no sleeping."""

from __future__ import annotations

import threading

import pytest

from docrelay.pipedream import Acquired, ProjectBuckets, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_defaults_match_the_published_proxy_limit() -> None:
    bucket = TokenBucket.for_limit(clock=FakeClock())
    assert bucket.capacity == 100
    assert bucket.rate == pytest.approx(900 / 300)  # burst + rate * 300 s = 1,000


def test_burst_then_refusal_with_the_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(capacity=3, refill_per_second=0.5, clock=clock)
    assert [bool(bucket.acquire()) for _ in range(3)] == [True, True, True]
    refused = bucket.acquire()
    assert not refused.allowed and refused.wait_seconds == pytest.approx(2.0)
    clock.now += 1.0
    assert bucket.acquire().wait_seconds == pytest.approx(1.0)  # half a token is there
    clock.now += 1.0
    assert bucket.acquire() == Acquired(True, 0.0)
    assert bucket.acquire(cost=2).wait_seconds == pytest.approx(4.0)


def test_refill_stops_at_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(capacity=5, refill_per_second=1, clock=clock)
    clock.now += 3600
    assert bucket.available == 5
    assert sum(bool(bucket.acquire()) for _ in range(10)) == 5


def test_a_clock_going_backwards_adds_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(capacity=2, refill_per_second=1, clock=clock)
    bucket.acquire()
    bucket.acquire()
    clock.now -= 100
    assert not bucket.acquire()


@pytest.mark.parametrize("step", [0.05, 0.3, 1.0, 7.0])
def test_no_five_minute_window_ever_exceeds_1000(step: float) -> None:
    """A greedy caller taking every token it can, for 30 minutes: count the admitted calls
    in every 300 s window, wherever it starts."""
    clock = FakeClock()
    bucket = TokenBucket.for_limit(clock=clock)
    admitted: list[float] = []
    while clock.now < 1800:
        while bucket.acquire():
            admitted.append(clock.now)
        clock.now = round(clock.now + step, 6)
    worst = 0
    start = 0
    for end, moment in enumerate(admitted):
        while admitted[start] <= moment - 300:
            start += 1
        worst = max(worst, end - start + 1)
    assert worst <= 1000
    # And the caller is not starved: close to the sustained 900 per 300 s plus the burst.
    assert len(admitted) >= 100 + 3 * 1800 - 3 * step - 1


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        TokenBucket.for_limit(limit=10, burst=10)
    with pytest.raises(ValueError):
        TokenBucket(capacity=0, refill_per_second=1)
    with pytest.raises(ValueError):
        TokenBucket(capacity=2, refill_per_second=1).acquire(cost=3)


def test_threads_never_take_more_than_there_is() -> None:
    bucket = TokenBucket(capacity=500, refill_per_second=1e-9, clock=FakeClock())
    granted: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [bool(bucket.acquire()) for _ in range(100)]
        with lock:
            granted.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 500


def test_one_bucket_per_project() -> None:
    buckets = ProjectBuckets(lambda: TokenBucket(capacity=1, refill_per_second=1,
                                                 clock=FakeClock()))
    assert buckets.get("proj_a") is buckets.get("proj_a")
    assert buckets.get("proj_a") is not buckets.get("proj_b")
    assert buckets.get("proj_a").acquire()
    assert not buckets.get("proj_a").acquire()
    assert buckets.get("proj_b").acquire()
