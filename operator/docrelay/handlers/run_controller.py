"""The runs machinery's controller (client-go's shape): watch-fed caches of the runs, their
Jobs and pods, the Integrations and IntegrationSecrets (docrelay.kube.cache); the index of
unfinished runs beside them (docrelay.kube.runindex); a work queue keyed by run
(docrelay.kube.workqueue) and its workers; the resync, retention, gauges and the
Integration's run fields (docrelay.handlers.run_counts). The caches' events only add keys;
the workers call the driver (docrelay.handlers.runs.drive), which reads the caches through
the functions here and calls the API only to act.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from docrelay import heap
from docrelay.builders.revision import INTEGRATION_LABEL
from docrelay.builders.run import (
    CONTAINER,
    RUN_LABEL,
)
from docrelay.handlers import runs_metrics
from docrelay.handlers.boundary import DomainError
from docrelay.handlers.keys import Sealing, sealing_from_memo
from docrelay.handlers.notify import Notifier
from docrelay.handlers.run_counts import COUNT_INTERVAL, apply_retention, flush_counts
from docrelay.kube import REVISIONS, SECRETS, Kube, KubeError
from docrelay.kube import runs as kube_runs
from docrelay.kube.cache import Store, resource_version
from docrelay.kube.runindex import RunIndex
from docrelay.kube.workqueue import WorkQueue, start_workers
from docrelay.models.integration import IntegrationSpec
from docrelay.models.run import IntegrationRunStatus, RunPhase, SecretVersion
from docrelay.reconcile.run import (
    ACTIVE_PHASES,
    JobView,
    RevisionView,
    busy_runs,
    run_finished,
    view_of,
    waiting_may_change,
)
from docrelay.reconcile.secrets import (
    UnusableSecret,
    active_by_key,
    open_sealed,
    pick_keys,
    received_secrets,
)

log = logging.getLogger("docrelay.runs")

RUNS_MEMO_KEY = "docrelay.runs"
RETENTION_INTERVAL = 60.0  # integrations with a newly finished run, at most this often
RETENTION_FULL_INTERVAL = 3600.0  # every integration (maxAgeDays), in memory
RESYNC_SECONDS = 300.0  # every unfinished run is driven again (client-go's resync)
TRIM_INTERVAL = 30.0  # the heap's free memory is given back to the system this often
METRICS_INTERVAL = 15.0  # the gauges, from the index (unfinished runs and counts by phase)
SYNC_WAIT_SECONDS = 2.0  # read-your-writes: how long a decision waits for the runs' watch
REVISION_MEMO_SECONDS = 30.0  # a revision found is not read again this soon (they are immutable)
COUNT_RETRY_SECONDS = 4.0  # after a failed write of an Integration's run fields
# Threads that drive runs, one run key at a time each (docrelay.kube.workqueue). A drive is
# mostly waiting for the API server (the GIL is free meanwhile), so more workers overlap those
# waits; they share a connection pool of their own, as large.
WORKERS = 32


@dataclass
class Runs:
    """The runs machinery of one operator process: watch-fed caches, the index beside them,
    the work queue and its workers, the counters and retention (docs/operator.md)."""

    kube: Kube
    memo: Any
    namespace: str | None
    pause_after_failures: int = 5
    broker_url: str | None = None
    egress_proxy_url: str | None = None
    run_images: dict[str, str] = field(default_factory=dict)
    notifier: Notifier | None = None  # spec.notify (docrelay.handlers.notify)
    metrics: bool = False
    stop_event: threading.Event = field(default_factory=threading.Event)
    cache: Store | None = None  # the runs, fed by a watch (docrelay.kube.cache)
    integrations: Store | None = None  # the Integrations
    jobs: Store | None = None  # the runs' Jobs (label docrelay.io/run)
    pods: Store | None = None  # their pods
    secrets: Store | None = None  # the IntegrationSecrets
    index: RunIndex = field(default_factory=RunIndex)
    queue: WorkQueue = field(default_factory=WorkQueue)  # (namespace, run) keys to drive
    gates: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    service_accounts: set[str] = field(default_factory=set)  # namespaces with docrelay-run
    revisions: dict[tuple[str, str], tuple[float, RevisionView, dict[str, Any]]] = field(
        default_factory=dict
    )
    driver: Callable[[Runs, str, str], float] | None = None  # handlers.runs.drive
    models: dict[tuple[str, str, str], Any] = field(default_factory=dict)  # Integrations, by rv

    def gate(self, namespace: str, integration: str) -> threading.Lock:
        """Held only while the concurrency gate decides from memory: never across a call."""
        with self.guard:
            return self.gates.setdefault((namespace, integration), threading.Lock())

    @property
    def sealing(self) -> Sealing | None:
        return sealing_from_memo(self.memo)

    def stores(self) -> list[Store]:
        return [s for s in (self.cache, self.integrations, self.jobs, self.pods, self.secrets) if s]

    # --- the controller ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the watches; once every cache has synced, the workers, the resync, the
        counters and retention (in the background: kopf's start-up is not held up)."""
        assert self.cache is not None and self.jobs is not None and self.pods is not None
        self.cache.on_synced.append(self.index.mark_synced)
        self.cache.add_listener(self.index.on_run)
        self.cache.add_listener(self._on_run)
        self.jobs.add_listener(self._on_job)
        self.pods.add_listener(self._on_pod)
        if self.integrations is not None:
            self.integrations.add_listener(self._on_integration)
        if self.secrets is not None:
            self.secrets.add_listener(self._on_secret)
        for store in self.stores():
            store.start()
        threading.Thread(target=self._run, name="docrelay-runs", daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()
        self.index.wake.set()
        self.queue.shut_down()
        for store in self.stores():
            store.stop()

    def _run(self) -> None:
        for store in self.stores():
            while not store.wait_synced(5.0):
                log.info("runs: waiting for the %s cache to list", store.plural)
        if self.stop_event.is_set():
            return
        log.info(
            "runs: caches synced; driving %d unfinished runs", len(self.index.unfinished_runs())
        )
        for key in self.index.unfinished_runs():
            self.enqueue(*key)
        self._mark_stale_active_runs()
        start_workers(self.queue, self._drive_key, WORKERS, "docrelay-run")
        threading.Thread(target=self._count_loop, name="docrelay-run-counts", daemon=True).start()
        next_resync = time.monotonic() + RESYNC_SECONDS
        next_retention, next_full = time.monotonic() + 5.0, time.monotonic() + 5.0
        next_metrics = 0.0
        next_trim = time.monotonic() + TRIM_INTERVAL
        while not self.stop_event.wait(1.0):
            now = time.monotonic()
            if now >= next_trim:  # what bursts of work freed goes back (docrelay.heap)
                next_trim = now + TRIM_INTERVAL
                heap.give_back()
            if now >= next_resync:
                next_resync = now + RESYNC_SECONDS
                for key in self.index.unfinished_runs():
                    self.enqueue(*key)
            if now >= next_retention:
                everything = now >= next_full
                if everything:
                    next_full = now + RETENTION_FULL_INTERVAL
                next_retention = now + RETENTION_INTERVAL
                apply_retention(self, self.index.take_retention_due(everything))
            if self.metrics and now >= next_metrics:
                next_metrics = now + METRICS_INTERVAL
                runs_metrics.observe_index(
                    self.index.phase_counts(), self.index.oldest_queued(), datetime.now(UTC)
                )
                if self.integrations is not None:
                    runs_metrics.observe_integrations(self.integrations.list_shallow())

    def enqueue(self, namespace: str, name: str) -> None:
        """Drive the run soon: repeated calls before a worker takes it count once, and no
        two workers ever drive the same run at once."""
        self.queue.add((namespace, name))

    def wake(self, namespace: str, integration: str, limit: int | None = 50) -> None:
        """A slot may be free (`limit` given) or what runs wait for changed (None: every
        waiting run is driven). A freed slot is a key of its own (SlotFreed): a worker counts
        the free slots from the caches and drives as many of the oldest due runs as may start,
        outside the caches' locks; slots freed before a worker takes it count once."""
        if limit is None:
            for name in self.index.waiting(namespace, integration):
                self.enqueue(namespace, name)
            return
        self.queue.add(SlotFreed(namespace, integration, limit))

    def slots_taken(self, namespace: str, integration: str) -> set[str]:
        """The runs holding one of the integration's slots, from the caches (as the gate
        counts them): active runs, runs owning an unfinished Job, runs admitted whose Job the
        cache lacks."""
        active = {
            r.name for r in self.index.refs(namespace, integration) if r.phase in ACTIVE_PHASES
        }
        if self.jobs is None or self.cache is None:
            return active | self.index.reservations(namespace, integration)
        jobs = [
            j
            for j in self.jobs.list_shallow(namespace)
            if (j["metadata"].get("labels") or {}).get(INTEGRATION_LABEL) == integration
        ]
        finished = {
            run
            for j in jobs
            if (run := (j["metadata"].get("labels") or {}).get(RUN_LABEL, ""))
            and run_finished(self.cache.get(namespace, run))
        }
        return active | busy_runs(jobs, finished) | self.index.reservations(namespace, integration)

    def _drive_freed(self, freed: SlotFreed) -> None:
        """Drive the oldest due waiting runs that the free slots admit, and one more (a count
        a moment stale must not strand them: that one is refused at worst)."""
        namespace, integration = freed.namespace, freed.integration
        raw = self.integrations.get(namespace, integration) if self.integrations else None
        limit = int(((raw or {}).get("spec") or {}).get("maxConcurrency") or DEFAULT_CONCURRENCY)
        free = max(0, limit - len(self.slots_taken(namespace, integration)))
        now = datetime.now(UTC)
        due = sorted(
            (
                r
                for r in self.index.refs(namespace, integration)
                if r.phase is None or r.phase is RunPhase.QUEUED
                if r.next_attempt_at is None or r.next_attempt_at <= now
            ),
            key=lambda r: (r.created, r.name),
        )
        for ref in due[: min(free + 1, freed.most)]:
            self.enqueue(namespace, ref.name)

    def _drive_key(self, key: Any) -> None:
        if isinstance(key, SlotFreed):
            self._drive_freed(key)
            return
        namespace, name = key
        after = self.drive_safely(namespace, name)
        if after is None:
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        if after > 0:
            self.queue.add_after(key, after)

    def drive_safely(self, namespace: str, name: str) -> float | None:
        """Drive one run; seconds until it wants another look (0: none), None on a failure
        (the queue backs off)."""
        try:
            assert self.driver is not None
            return self.driver(self, namespace, name)
        except (kopf.TemporaryError, kopf.PermanentError, DomainError, KubeError) as exc:
            log.warning("run %s/%s: %s", namespace, name, exc)
        except Exception:  # never let a worker die; details stay in our log
            log.exception("run %s/%s: unexpected error", namespace, name)
        return None

    # --- the caches' listeners (inside a cache's lock: only index and queue work) -------------

    def _on_run(self, key: Key, old: Raw | None, new: Raw | None, watched: bool) -> None:
        if holds_slot(old) and (new is None or new["metadata"].get("deletionTimestamp")):
            # An active run deleted: its slot is free once its Job is gone too, whichever of
            # the two the watches deliver last (a finished run's slot frees with its Job).
            self.wake(key[0], str((old or {}).get("spec", {}).get("integration", "")))
        if new is None or not watched or same_version(old, new):
            return
        if new["metadata"].get("deletionTimestamp") or run_finished(new):
            # A finished run is not driven again by its own events (nor at a restart, when
            # every run is listed): a Job it still owns has events of its own.
            return
        self.enqueue(*key)

    def _on_job(self, key: Key, old: Raw | None, new: Raw | None, watched: bool) -> None:
        job = new if new is not None else old
        assert job is not None
        labels = job["metadata"].get("labels") or {}
        run, integration = labels.get(RUN_LABEL), labels.get(INTEGRATION_LABEL)
        if new is None and integration:  # a slot is free: the oldest waiting runs go now
            self.wake(key[0], integration)
        if not run or not watched or same_version(old, new):
            return
        if new is None and self.cache is not None and run_finished(self.cache.get(key[0], run)):
            return  # the Job of a finished run is gone: nothing left to do
        self.enqueue(key[0], run)

    def _on_pod(self, key: Key, old: Raw | None, new: Raw | None, watched: bool) -> None:
        if new is None or not watched or same_version(old, new):
            return
        run = (new["metadata"].get("labels") or {}).get(RUN_LABEL)
        if run:  # its container started or ended: Running, or the outcome, without the Job
            self.enqueue(key[0], run)

    def _on_integration(self, key: Key, old: Raw | None, new: Raw | None, watched: bool) -> None:
        if new is not None and watched and waiting_may_change(old, new):
            self.wake(key[0], key[1], limit=None)

    def _on_secret(self, key: Key, old: Raw | None, new: Raw | None, watched: bool) -> None:
        obj = new if new is not None else old
        if obj is not None and watched:
            self.wake(key[0], str((obj.get("spec") or {}).get("integration", "")), limit=None)

    # --- counters ----------------------------------------------------------------------------

    def _mark_stale_active_runs(self) -> None:
        """At start: an Integration whose activeRuns the runs no longer bear out is written."""
        if self.integrations is None:
            return
        stale = [
            (o["metadata"]["namespace"], o["metadata"]["name"])
            for o in self.integrations.list_shallow()
            if (o.get("status") or {}).get("activeRuns", 0)
            != self.index.active(o["metadata"]["namespace"], o["metadata"]["name"])
        ]
        self.index.mark_dirty(stale)

    def _count_loop(self) -> None:
        """Write each Integration's run fields at most once a second, only when they changed
        (docrelay.handlers.run_counts): a change is written a second after the first change
        since the last write, and not sooner than a second after that write; a change of
        activeRuns alone waits 5 s for a count to join it (so a short run's start and end
        make one write). Idle when nothing finishes or starts."""
        last: dict[Key, float] = {}
        since: dict[Key, float] = {}  # the first change not written yet
        while not self.stop_event.is_set():
            self.index.wake.wait()
            if self.stop_event.is_set():
                return
            now = time.monotonic()
            later = []
            for integration in self.index.take_dirty():
                first = since.setdefault(integration, now)
                if (
                    now - first < COUNT_INTERVAL
                    or now - last.get(integration, 0.0) < COUNT_INTERVAL
                ):
                    later.append(integration)
                    continue
                written = flush_counts(self, *integration, waited=now - first)
                if written is None:  # only activeRuns changed, and only just
                    later.append(integration)
                    continue
                del since[integration]
                last[integration] = now
                if not written:
                    last[integration] = now + COUNT_RETRY_SECONDS  # failed: try again later
            if later:
                self.stop_event.wait(COUNT_INTERVAL / 4)
                self.index.mark_dirty(later)


Key = tuple[str, str]
Raw = dict[str, Any]
DEFAULT_CONCURRENCY = int(IntegrationSpec.model_fields["max_concurrency"].default)


@dataclass(frozen=True)
class SlotFreed:
    """A work-queue key beside the runs' (namespace, name): a slot of the integration may be
    free. `most` bounds how many waiting runs it drives."""

    namespace: str
    integration: str
    most: int = 50


ACTIVE_PHASE_NAMES = frozenset(p.value for p in ACTIVE_PHASES)


def holds_slot(raw: Raw | None) -> bool:
    """The run counts against its integration's maxConcurrency (Pending or Running)."""
    return raw is not None and (raw.get("status") or {}).get("phase") in ACTIVE_PHASE_NAMES


def same_version(old: Raw | None, new: Raw | None) -> bool:
    """The watch confirming a version this process wrote through: nothing new to drive."""
    return old is not None and new is not None and resource_version(old) == resource_version(new)


def runs_from_memo(memo: Any) -> Runs:
    runs = memo.get(RUNS_MEMO_KEY)
    assert isinstance(runs, Runs)
    return runs


# --- gather (from the caches) ----------------------------------------------------------------


def job_view(runs: Runs, namespace: str, job_name: str | None) -> JobView | None:
    """The attempt's Job and its pods from the caches. A Job the cache lacks is confirmed
    with the API before the attempt is taken for gone (another replica made it moments ago)."""
    if not job_name:
        return None
    job = runs.jobs.get(namespace, job_name) if runs.jobs is not None else None
    if job is None:
        job = kube_runs.get_job(runs.kube, namespace, job_name)
        if job is not None and runs.jobs is not None:
            runs.jobs.observe(job)
    pods = job_pods(runs, namespace, job_name) if job is not None else []
    return view_of(job, pods, CONTAINER)


def job_pods(runs: Runs, namespace: str, job_name: str) -> list[dict[str, Any]]:
    """The pods of a Job, newest first, from the pods cache."""
    if runs.pods is None:
        return kube_runs.job_pods(runs.kube, namespace, job_name)
    pods = [
        p
        for p in runs.pods.list_shallow(namespace)
        if (p["metadata"].get("labels") or {}).get(kube_runs.JOB_NAME_LABEL) == job_name
    ]
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)


def integration_secrets(runs: Any, kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """The namespace's IntegrationSecrets: from the runs machinery's cache once it has
    listed, else from the API."""
    store = getattr(runs, "secrets", None)
    if store is not None and store.synced:
        return store.list_shallow(namespace)
    return kube.list_objects(SECRETS, namespace)


def active_secrets(
    kube: Kube, namespace: str, integration: str, runs: Any = None
) -> dict[str, dict[str, Any]]:
    """The Active, Ready IntegrationSecret of each key of the integration, by key."""
    return active_by_key(integration_secrets(runs, kube, namespace), integration)


def open_secrets(
    sealing: Sealing | None, objects: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[bytes, SecretVersion]]:
    """Each secret's plaintext (in memory only) and the version the run records."""
    if not objects:
        return {}
    if sealing is None or sealing.ring is None:
        raise DomainError("waiting for the sealing keys to load before starting runs")
    return open_sealed(sealing.ring, objects)


def secret_values(
    runs: Runs, namespace: str, status: IntegrationRunStatus, integration: str
) -> list[str] | None:
    """The values the run received, to mask: the secrets its status names (or, if one was
    deleted since, the key's active one). None if any cannot be opened: callers then withhold
    text rather than store it unmasked."""
    try:
        objects = integration_secrets(runs, runs.kube, namespace)
        received = received_secrets(
            objects, status.secret_versions, active_by_key(objects, integration)
        )
        opened = open_secrets(runs.sealing, received)
    except (DomainError, KubeError, ValueError, UnusableSecret) as exc:
        log.warning("run: the secrets to mask could not be opened: %s", type(exc).__name__)
        return None
    return [plaintext.decode("utf-8", errors="replace") for plaintext, _ in opened.values()]


def revision_of(
    runs: Runs, namespace: str, name: str, integration: str
) -> tuple[RevisionView, dict[str, Any]] | None:
    """The revision (a view and the object) if it exists and is the integration's. A revision
    found is remembered briefly: a revision never changes, and a run waiting for a slot is
    looked at on every slot that frees."""
    memo = runs.revisions.get((namespace, name))
    if memo is not None and time.monotonic() - memo[0] < REVISION_MEMO_SECONDS:
        return memo[1], memo[2]
    obj = runs.kube.get(REVISIONS, namespace, name)
    if obj is None or (obj.get("spec") or {}).get("integration") != integration:
        return None
    ref = obj["spec"].get("codeConfigMap") or {}
    view = RevisionView(name, str(ref.get("name", "")), str(ref.get("key", "handler.py")))
    if len(runs.revisions) > 1000:
        runs.revisions.clear()
    runs.revisions[(namespace, name)] = (time.monotonic(), view, obj)
    return view, obj


def _open_keys(
    runs: Runs, namespace: str, integration: str, keys: tuple[str, ...]
) -> dict[str, bytes]:
    """The opened values of some of an integration's secrets (spec.notify's URL and key)."""
    active = active_secrets(runs.kube, namespace, integration, runs)
    opened = open_secrets(runs.sealing, pick_keys(active, keys))
    return {key: value for key, (value, _) in opened.items()}
