"""Whether the gateway can take events now: what `/readyz` answers.

A delivery needs the API server (runs are created there) and a current Integration index
(the watch). `ApiHealth` is told the outcome of every API call the process makes anyway
(the watch's lists, creates, reads) and answers readiness from that memory: a probe costs
no API call. Watch events do not count as successes: the API server streams them (and
bookmarks) from its cache even while it cannot read or write its storage. When nothing else
has talked to the API server for `HEARTBEAT_SECONDS`, the app makes one small call (a
one-item list of Integrations), so the answer is never older than that plus the API timeout;
`STALE_SECONDS` bounds it even if that call hangs.

Not ready when: the index was never loaded; the watch is broken (relisting); the latest API
call failed (unreachable, timed out, 5xx, 429, 401); or no call has succeeded for
`STALE_SECONDS`. Ready again as soon as a call succeeds and the watch has relisted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 30.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # why not ready; "" when ready
    since_success: float | None  # seconds since the last successful API call (None: never)


class ApiHealth:
    """Thread-safe: the watch thread and request handlers report, `/readyz` reads."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = STALE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._clock = clock
        self.stale_seconds = stale_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._last_success: float | None = None  # clock time of the latest success
        # Which came last, a success or a failure: report order, not clock time (ties).
        self._reports = 0
        self._success_report = 0
        self._failure_report = 0
        self._failure = ""
        self._watch_live = False
        self._watch_problem = "integration watch not started"

    # --- reports -----------------------------------------------------------------------------

    def succeeded(self) -> None:
        """The API server answered a call usefully."""
        with self._lock:
            self._success()

    def failed(self, reason: str) -> None:
        """A call found the API server unreachable, slow or refusing (`reason`: no secrets)."""
        with self._lock:
            self._failed(reason)

    def watch_live(self) -> None:
        """The watch listed the Integrations and is streaming from there."""
        with self._lock:
            self._watch_live = True
            self._success()

    def watch_broken(self, reason: str) -> None:
        with self._lock:
            self._watch_live = False
            self._watch_problem = reason
            self._failed(reason)

    def _success(self) -> None:
        self._reports += 1
        self._success_report = self._reports
        self._last_success = self._clock()

    def _failed(self, reason: str) -> None:
        self._reports += 1
        self._failure_report = self._reports
        self._failure = reason

    def _failed_last(self) -> bool:
        return self._failure_report > self._success_report

    # --- answers -----------------------------------------------------------------------------

    def needs_heartbeat(self) -> bool:
        """True when no call has succeeded for `heartbeat_seconds` (or the latest failed)."""
        with self._lock:
            now = self._clock()
            if self._last_success is None or self._failed_last():
                return True
            return now - self._last_success >= self.heartbeat_seconds

    def readiness(self, index_synced: bool) -> Readiness:
        with self._lock:
            now = self._clock()
            since = None if self._last_success is None else now - self._last_success
            if not index_synced:
                return Readiness(False, "integration index not loaded yet", since)
            if not self._watch_live:
                return Readiness(False, f"{self._watch_problem}; relisting", since)
            if self._failed_last():
                return Readiness(False, self._failure, since)
            if since is None or since > self.stale_seconds:
                return Readiness(
                    False, f"no successful API server call for over {self.stale_seconds:g} s", since
                )
            return Readiness(True, "", since)
