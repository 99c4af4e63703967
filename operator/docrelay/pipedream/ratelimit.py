"""A token bucket per Pipedream project, sized so no window exceeds the published limit.

Pipedream allows 1,000 proxy calls per 5 minutes per project (references.md §2). A bucket of
capacity ``burst`` refilled at ``(limit - burst) / window`` per second admits at most
``burst + rate * window = limit`` calls in *any* window of that length, wherever it starts,
so the broker never causes a 429 by itself. The price: the sustained rate is
``(limit - burst) / window`` (900 per 5 minutes with the defaults), not the full limit.
Pure apart from the clock, which is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

PROXY_LIMIT = 1000
PROXY_WINDOW_SECONDS = 300.0
DEFAULT_BURST = 100


@dataclass(frozen=True)
class Acquired:
    """The answer of :meth:`TokenBucket.acquire`: allowed, or how long to wait."""

    allowed: bool
    wait_seconds: float = 0.0

    def __bool__(self) -> bool:
        return self.allowed


class TokenBucket:
    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or refill_per_second <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and a positive refill rate")
        self.capacity = float(capacity)
        self.rate = float(refill_per_second)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    @classmethod
    def for_limit(
        cls,
        limit: int = PROXY_LIMIT,
        window_seconds: float = PROXY_WINDOW_SECONDS,
        burst: int = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> TokenBucket:
        """A bucket that never admits more than ``limit`` calls in any ``window_seconds``."""
        if not 1 <= burst < limit:
            raise ValueError("burst must be at least 1 and below the limit")
        return cls(burst, (limit - burst) / window_seconds, clock)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._stamp = now

    def acquire(self, cost: float = 1.0) -> Acquired:
        """Take ``cost`` tokens if they are there; otherwise take nothing and say how long
        until they will be (the caller decides whether to wait or refuse)."""
        if cost > self.capacity:
            raise ValueError("cost exceeds the bucket's capacity: it would never be allowed")
        with self._lock:
            self._refill()
            if self._tokens >= cost:
                self._tokens -= cost
                return Acquired(True, 0.0)
            return Acquired(False, (cost - self._tokens) / self.rate)

    @property
    def available(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens


class ProjectBuckets:
    """One bucket per Pipedream project, shared by every client of that project."""

    def __init__(self, factory: Callable[[], TokenBucket] = TokenBucket.for_limit) -> None:
        self._factory = factory
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, project_id: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(project_id)
            if bucket is None:
                bucket = self._buckets[project_id] = self._factory()
            return bucket
