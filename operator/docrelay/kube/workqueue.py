"""A work queue keyed by object, client-go's workqueue shape: a key waits in the queue at most
once (repeated events before a worker takes it coalesce), no two workers ever hold the same
key, and a key added while a worker holds it is queued again when that worker is done (so the
change is never lost and never processed concurrently). No API calls: the controller
machinery beside the watch-fed cache (docrelay.kube.cache)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable

log = logging.getLogger("docrelay.workqueue")


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # waiting to be processed (queued or re-queued)
        self._processing: set[Hashable] = set()
        self._shutting_down = False
        self.added = 0  # add() calls
        self.processed = 0  # keys handed to a worker

    def add(self, key: Hashable) -> None:
        with self._cond:
            self.added += 1
            if self._shutting_down or key in self._dirty:
                return
            self._dirty.add(key)
            if key in self._processing:
                return  # queued again by done()
            self._queue.append(key)
            self._cond.notify()

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
                self._cond.notify()

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
