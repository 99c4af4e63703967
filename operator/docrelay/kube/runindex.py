"""What the runs machinery keeps in memory beside the runs cache, fed by its listener: the
unfinished runs of each integration (the concurrency gate, FIFO order, activeRuns and the
resync look at these only, never at the finished ones), the runs a worker has admitted but
whose Job the cache does not hold yet (reservations), and the finished runs not yet counted
in their Integration's status. No API calls; every method is quick (the listener runs inside
the cache's lock).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from docrelay.models.run import RunPhase
from docrelay.reconcile.run import ACTIVE_PHASES, FinishedRun, RunRef, parse_time

Key = tuple[str, str]  # (namespace, integration) or (namespace, run)


def _phase(raw: dict[str, Any]) -> RunPhase | None:
    phase = (raw.get("status") or {}).get("phase")
    try:
        return RunPhase(phase) if phase else None
    except ValueError:
        return None


def _label(phase: RunPhase | None) -> str:
    return (phase or RunPhase.QUEUED).value


class RunIndex:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.unfinished: dict[Key, dict[str, RunRef]] = {}  # by (namespace, integration)
        self.cancelled: set[Key] = set()  # (namespace, run): unfinished, spec.cancel set
        self.reserved: dict[Key, set[str]] = {}  # by (namespace, integration)
        self.uncounted: dict[Key, dict[str, bool]] = {}  # run name -> came from the first list
        self.finished_seen: set[Key] = set()  # (namespace, run) seen finished by the watch
        self.dirty: set[Key] = set()  # integrations whose counted fields may have changed
        self.wake = threading.Event()  # set when `dirty` gains one
        self.synced = False  # the cache's first list has been indexed
        # Finished runs by (namespace, integration), for retention; and runs by phase, for
        # the gauges (docrelay_runs): kept as the cache changes, never recounted.
        self.finished: dict[Key, dict[str, FinishedRun]] = {}
        self.phases: Counter[tuple[str, str, str]] = Counter()
        self.retention_due: set[Key] = set()

    # --- the runs cache's listener -----------------------------------------------------------

    def on_run(
        self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None, watched: bool
    ) -> None:
        namespace, name = key
        raw = new if new is not None else old
        if raw is None:
            return
        spec = raw.get("spec") or {}
        integration = (namespace, str(spec.get("integration", "")))
        with self.lock:
            refs = self.unfinished.setdefault(integration, {})
            before = refs.get(name)
            phase = _phase(new) if new is not None else None
            if old is not None:
                self.phases[(namespace, integration[1], _label(_phase(old)))] -= 1
            if new is not None:
                self.phases[(namespace, integration[1], _label(phase))] += 1
            done = self.finished.setdefault(integration, {})
            if new is not None and phase is not None and phase.finished:
                at = (new.get("status") or {}).get("completionTime")
                if name not in done:
                    self.retention_due.add(integration)
                done[name] = FinishedRun(
                    name, phase, parse_time(at or new["metadata"].get("creationTimestamp"))
                )
            else:
                done.pop(name, None)
            if not done:
                self.finished.pop(integration, None)
            if new is None or (phase is not None and phase.finished):
                refs.pop(name, None)
                self.cancelled.discard(key)
                if new is None:
                    self.finished_seen.discard(key)
                    self.uncounted.get(integration, {}).pop(name, None)
                elif watched and key not in self.finished_seen:
                    self.finished_seen.add(key)
                    if not spec.get("test"):
                        self.uncounted.setdefault(integration, {})[name] = not self.synced
                        self._mark(integration)
            else:
                status = new.get("status") or {}
                next_at = status.get("nextAttemptAt")
                refs[name] = RunRef(
                    name=name,
                    created=parse_time(new["metadata"].get("creationTimestamp")),
                    phase=phase,
                    next_attempt_at=parse_time(next_at) if next_at else None,
                )
                if spec.get("cancel"):
                    self.cancelled.add(key)
            after = refs.get(name)
            was_active = before is not None and before.phase in ACTIVE_PHASES
            is_active = after is not None and after.phase in ACTIVE_PHASES
            if was_active != is_active:
                self._mark(integration)
            if not refs:
                self.unfinished.pop(integration, None)

    def _mark(self, integration: Key) -> None:
        self.dirty.add(integration)
        self.wake.set()

    # --- readers -----------------------------------------------------------------------------

    def refs(self, namespace: str, integration: str, exclude: str = "") -> list[RunRef]:
        """The integration's unfinished runs (not cancelled), but `exclude`."""
        with self.lock:
            return [
                r
                for n, r in self.unfinished.get((namespace, integration), {}).items()
                if n != exclude and (namespace, n) not in self.cancelled
            ]

    def active(self, namespace: str, integration: str) -> int:
        with self.lock:
            refs = self.unfinished.get((namespace, integration), {}).values()
            return sum(1 for r in refs if r.phase in ACTIVE_PHASES)

    def unfinished_runs(self) -> list[Key]:
        """(namespace, run) of every unfinished run: the resync's work, never a finished one."""
        with self.lock:
            return [(ns, name) for (ns, _), refs in self.unfinished.items() for name in refs]

    def waiting(self, namespace: str, integration: str) -> list[str]:
        """The integration's runs that wait in Queued (or have no phase yet), oldest first."""
        with self.lock:
            refs = self.unfinished.get((namespace, integration), {}).values()
            return [
                r.name
                for r in sorted(refs, key=lambda r: (r.created, r.name))
                if r.phase is None or r.phase is RunPhase.QUEUED
            ]

    # --- reservations: admitted by the gate, Job not yet in the cache --------------------------

    def reserve(self, namespace: str, integration: str, run: str) -> None:
        with self.lock:
            self.reserved.setdefault((namespace, integration), set()).add(run)

    def release(self, namespace: str, integration: str, run: str) -> None:
        with self.lock:
            held = self.reserved.get((namespace, integration))
            if held is not None:
                held.discard(run)
                if not held:
                    del self.reserved[(namespace, integration)]

    def reservations(self, namespace: str, integration: str) -> set[str]:
        with self.lock:
            return set(self.reserved.get((namespace, integration), ()))

    # --- counting ------------------------------------------------------------------------------

    def take_dirty(self) -> list[Key]:
        with self.lock:
            taken = sorted(self.dirty)
            self.dirty.clear()
            self.wake.clear()
            return taken

    def mark_dirty(self, integrations: Iterable[Key]) -> None:
        with self.lock:
            for integration in integrations:
                self._mark(integration)

    def take_uncounted(self, integration: Key) -> dict[str, bool]:
        with self.lock:
            return self.uncounted.pop(integration, {})

    def put_back(self, integration: Key, runs: dict[str, bool]) -> None:
        """Runs taken to count whose write failed: counted at the next try."""
        with self.lock:
            self.uncounted.setdefault(integration, {}).update(runs)
            self._mark(integration)

    def finished_runs(self, integration: Key) -> list[FinishedRun]:
        with self.lock:
            return list(self.finished.get(integration, {}).values())

    def take_retention_due(self, everything: bool = False) -> list[Key]:
        with self.lock:
            taken = sorted(self.finished) if everything else sorted(self.retention_due)
            self.retention_due.clear()
            return taken

    def phase_counts(self) -> dict[tuple[str, str, str], int]:
        with self.lock:
            return {k: n for k, n in self.phases.items() if n > 0}

    def oldest_queued(self) -> dict[tuple[str, str], datetime]:
        with self.lock:
            oldest: dict[tuple[str, str], datetime] = {}
            for (ns, integration), refs in self.unfinished.items():
                for r in refs.values():
                    if r.phase is None or r.phase is RunPhase.QUEUED:
                        key = (ns, integration)
                        oldest[key] = min(oldest.get(key, r.created), r.created)
            return oldest

    def mark_synced(self) -> None:
        with self.lock:
            self.synced = True
            self.dirty.update(self.uncounted)
            self.wake.set()
