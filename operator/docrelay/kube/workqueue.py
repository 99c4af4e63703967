"""A work queue keyed by object, client-go's workqueue shape: a key waits in the queue at most
once (repeated events before a worker takes it coalesce), no two workers ever hold the same
key, and a key added while a worker holds it is queued again when that worker is done (so the
change is never lost and never processed concurrently). No API calls: the controller
machinery beside the watch-fed cache (docrelay.kube.cache)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

log = logging.getLogger("docrelay.workqueue")


BASE_DELAY = 0.5  # the first requeue after a failure
MAX_DELAY = 60.0  # failures back off up to this


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        # Delayed adds (client-go's delaying queue): (when, tie-breaker, key), the earliest
        # time per key only; one timer thread adds them when due.
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._tie = itertools.count()
        self._timer: threading.Thread | None = None
        self._failures: dict[Hashable, int] = {}
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # waiting to be processed (queued or re-queued)
        self._processing: set[Hashable] = set()
        self._shutting_down = False
        self.added = 0  # add() calls
        self.processed = 0  # keys handed to a worker

    def add(self, key: Hashable) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: Hashable) -> None:
        self.added += 1
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._cond.notify_all()

    def get(self) -> Hashable | None:
        """The next key (blocks); None once shut down."""
        with self._cond:
            while not self._queue and not self._shutting_down:
                self._cond.wait()
            if self._shutting_down:
                return None
            key = self._queue.popleft()
            self._processing.add(key)
            self._dirty.discard(key)
            self.processed += 1
            return key

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify_all()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Add `key` once `seconds` have passed; an earlier pending time for it wins."""
        if seconds <= 0:
            self.add(key)
            return
        when = time.monotonic() + seconds
        with self._cond:
            if self._shutting_down or self._due.get(key, float("inf")) <= when:
                return
            self._due[key] = when
            heapq.heappush(self._delayed, (when, next(self._tie), key))
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._tick, name="docrelay-workqueue-timer", daemon=True
                )
                self._timer.start()
            self._cond.notify_all()

    def add_rate_limited(self, key: Hashable) -> float:
        """Add `key` again after a failure: 0.5 s, doubling per failure in a row up to 60 s
        (client-go's per-item exponential limiter). Returns the delay."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(MAX_DELAY, BASE_DELAY * 2.0**failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        """The key was processed without failure: its next failure backs off from the start."""
        with self._cond:
            self._failures.pop(key, None)

    def _tick(self) -> None:
        with self._cond:
            while not self._shutting_down:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    when, _, key = heapq.heappop(self._delayed)
                    if self._due.get(key) != when:
                        continue  # superseded by an earlier time
                    del self._due[key]
                    self._add_locked(key)
                timeout = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(timeout)

    def delayed(self) -> int:
        with self._cond:
            return len(self._due)

    def shut_down(self) -> None:
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)


def start_workers(
    queue: WorkQueue, handle: Callable[[Hashable], None], count: int, name: str
) -> list[threading.Thread]:
    """`count` threads that take keys and call `handle` (which must not raise)."""

    def work() -> None:
        while (key := queue.get()) is not None:
            try:
                handle(key)
            except Exception:  # never let a worker die; details stay in our log
                log.exception("%s: unexpected error", name)
            finally:
                queue.done(key)

    threads = [threading.Thread(target=work, name=f"{name}-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads
