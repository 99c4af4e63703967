"""IntegrationRuns: gather, decide (reconcile.run), act, write the run's status once.

Every run is driven by one idempotent function, `drive`, which worker threads call for the
keys of a work queue (docrelay.kube.workqueue: events coalesce, one run is never driven twice
at once). Keys are added by the run's own watch events, its Job's watch events, and a poller
that looks at every unfinished run in the watch-fed cache (docrelay.kube.cache) every few
seconds (the safety net after a restart, and the clock for queued runs and retry backoff).
Decisions about one integration's runs are serialized by a lock, so the concurrency gate
always sees the statuses the previous decision wrote.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from docrelay.builders.revision import INTEGRATION_LABEL
from docrelay.builders.run import (
    CONTAINER,
    RUN_LABEL,
    RunAttempt,
    build_log_config_map,
    build_run_event,
    build_run_job,
    build_run_secret,
    build_run_service_account,
    cap_log,
    compress_log,
    egress_record_name,
    resource_quantities,
    run_secret_name,
)
from docrelay.handlers import runs_metrics
from docrelay.handlers.boundary import DomainError, boundary, post_event
from docrelay.handlers.context import from_memo
from docrelay.handlers.keys import Sealing, sealing_from_memo
from docrelay.handlers.notify import Notifier, dead_letter_notice, paused_notice
from docrelay.kube import INTEGRATIONS, REVISIONS, SECRETS, Kube, KubeError, ObjectRef
from docrelay.kube import runs as kube_runs
from docrelay.kube.cache import Store, integration_or_get, resource_version, runs_or_list
from docrelay.kube.workqueue import WorkQueue, start_workers
from docrelay.masking import Masker
from docrelay.models import API_VERSION
from docrelay.models.common import GROUP, VERSION
from docrelay.models.conditions import ConditionStatus, find_condition
from docrelay.models.integration import (
    DEFAULT_QUEUE_TIMEOUT,
    Integration,
    IntegrationConditionType,
    IntegrationStatus,
    RetryPolicy,
)
from docrelay.models.run import IntegrationRun, IntegrationRunStatus, RunPhase, SecretVersion
from docrelay.reconcile.egress import egress_summary
from docrelay.reconcile.run import (
    ACTIVE_PHASES,
    JobView,
    RevisionView,
    RunDecision,
    RunObserved,
    RunRef,
    busy_runs,
    container_ended,
    count_finished,
    decide,
    finished_by_integration,
    integration_run_patch,
    may_start,
    parse_time,
    pause_if_due,
    run_finished,
    run_refs,
    runs_to_delete,
    view_of,
    wanted_revision,
)
from docrelay.reconcile.secrets import (
    UnusableSecret,
    active_by_key,
    open_sealed,
    pick_keys,
    received_secrets,
)
from docrelay.runner.envcrypt import encrypt_value

log = logging.getLogger("docrelay.runs")

RUNS_MEMO_KEY = "docrelay.runs"
POLL_INTERVAL = 2.0
READ_LOG_BYTES = 8 * 1024 * 1024
RETENTION_INTERVAL = 60.0
INTEGRATION_METRICS_INTERVAL = 15.0  # paused and agent gauges (docs/chart.md, alert rules)
LOG_TAIL_CHARS = 500
WORKERS = 4  # threads that drive runs, one run key at a time each (docrelay.kube.workqueue)


@dataclass
class Runs:
    """The runs machinery of one operator process: locks and the poller."""

    kube: Kube
    memo: Any
    namespace: str | None
    pause_after_failures: int = 5
    broker_url: str | None = None
    egress_proxy_url: str | None = None
    run_images: dict[str, str] = field(default_factory=dict)
    notifier: Notifier | None = None  # spec.notify (docrelay.handlers.notify)
    next_retention: float = 0.0
    next_integration_metrics: float = 0.0
    locks: dict[tuple[str, str], threading.RLock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)
    cache: Store | None = None  # the runs, fed by a watch (docrelay.kube.cache)
    integrations: Store | None = None  # the Integrations, the same way
    queue: WorkQueue = field(default_factory=WorkQueue)  # (namespace, run) keys to drive

    def lock(self, namespace: str, integration: str) -> threading.RLock:
        with self.guard:
            return self.locks.setdefault((namespace, integration), threading.RLock())

    @property
    def sealing(self) -> Sealing | None:
        return sealing_from_memo(self.memo)

    # --- the poller -------------------------------------------------------------------------

    def start(self) -> None:
        start_workers(self.queue, self._drive_key, WORKERS, "docrelay-run")
        threading.Thread(target=self._poll, name="docrelay-runs", daemon=True).start()

    def enqueue(self, namespace: str, name: str) -> None:
        """Drive the run soon: repeated calls before a worker takes it count once, and no
        two workers ever drive the same run at once."""
        self.queue.add((namespace, name))

    def _drive_key(self, key: Any) -> None:
        namespace, name = key
        self.drive_safely(namespace, name)

    def _poll(self) -> None:
        while not self.stop_event.wait(POLL_INTERVAL):
            try:
                runs = (
                    self.cache.list_shallow()
                    if self.cache is not None and self.cache.synced
                    else self.kube.list_objects(kube_runs.RUNS, self.namespace or None)
                )
            except KubeError as exc:
                log.warning("runs: listing runs failed: %s; will retry", exc)
                continue
            runs_metrics.observe_listing(runs, datetime.now(UTC))
            if time.monotonic() >= self.next_integration_metrics:
                self.next_integration_metrics = time.monotonic() + INTEGRATION_METRICS_INTERVAL
                try:
                    integrations = (
                        self.integrations.list_shallow()
                        if self.integrations is not None and self.integrations.synced
                        else self.kube.list_objects(INTEGRATIONS, self.namespace or None)
                    )
                    runs_metrics.observe_integrations(integrations)
                except KubeError as exc:
                    log.warning("runs: listing integrations for metrics failed: %s", exc)
            for run in sorted(runs, key=lambda r: r["metadata"].get("creationTimestamp", "")):
                phase = (run.get("status") or {}).get("phase")
                if phase and RunPhase(phase).finished:
                    continue
                self.enqueue(run["metadata"]["namespace"], run["metadata"]["name"])
            if time.monotonic() >= self.next_retention:
                self.next_retention = time.monotonic() + RETENTION_INTERVAL
                try:
                    apply_retention(self.kube, runs)
                except KubeError as exc:
                    log.warning("runs: retention failed: %s; will retry", exc)

    def drive_safely(self, namespace: str, name: str) -> None:
        try:
            drive(self, namespace, name)
        except (kopf.TemporaryError, kopf.PermanentError, DomainError, KubeError) as exc:
            log.warning("run %s/%s: %s", namespace, name, exc)
        except Exception:  # never let the poller die; details stay in our log
            log.exception("run %s/%s: unexpected error", namespace, name)


def runs_of(runs: Runs, namespace: str, version: int | None = None) -> list[dict[str, Any]]:
    return runs_or_list(runs.cache, runs.kube, namespace, version)


def integration_of(runs: Runs, namespace: str, name: str) -> dict[str, Any] | None:
    return integration_or_get(runs.integrations, runs.kube, namespace, name)


def runs_from_memo(memo: Any) -> Runs:
    runs = memo.get(RUNS_MEMO_KEY)
    assert isinstance(runs, Runs)
    return runs


# --- gather ---------------------------------------------------------------------------------


def job_view(kube: Kube, namespace: str, job_name: str | None) -> JobView | None:
    if not job_name:
        return None
    job = kube_runs.get_job(kube, namespace, job_name)
    pods = kube_runs.job_pods(kube, namespace, job_name) if job is not None else []
    return view_of(job, pods, CONTAINER)


def active_secrets(kube: Kube, namespace: str, integration: str) -> dict[str, dict[str, Any]]:
    """The Active, Ready IntegrationSecret of each key of the integration, by key."""
    return active_by_key(kube.list_objects(SECRETS, namespace), integration)


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
        objects = runs.kube.list_objects(SECRETS, namespace)
        received = received_secrets(
            objects, status.secret_versions, active_by_key(objects, integration)
        )
        opened = open_secrets(runs.sealing, received)
    except (DomainError, KubeError, ValueError, UnusableSecret) as exc:
        log.warning("run: the secrets to mask could not be opened: %s", type(exc).__name__)
        return None
    return [plaintext.decode("utf-8", errors="replace") for plaintext, _ in opened.values()]


WITHHELD = (
    "[docrelay: withheld: the secret values this run received could not be loaded to mask "
    "its output]"
)


# --- drive ----------------------------------------------------------------------------------


def drive(runs: Runs, namespace: str, name: str) -> None:
    kube = runs.kube
    # Only to find the run's integration (fixed at creation): the cache's copy will do.
    raw = runs.cache.get(namespace, name) if runs.cache is not None else None
    if raw is None:
        raw = kube.get(kube_runs.RUNS, namespace, name)
    if raw is None:
        return
    integration_name = str((raw.get("spec") or {}).get("integration", ""))
    with runs.lock(namespace, integration_name):
        raw = kube.get(kube_runs.RUNS, namespace, name)  # fresh, inside the lock
        if raw is None:
            return
        about = ObjectRef(API_VERSION, "IntegrationRun", namespace, name, raw["metadata"]["uid"])
        with boundary(kube, about, "driving the run"):
            _drive_locked(runs, raw, about)


def _parse_run(raw: dict[str, Any]) -> IntegrationRun:
    try:
        return IntegrationRun.model_validate(raw)
    except ValidationError:
        raise DomainError(
            "the IntegrationRun does not match the API this operator knows",
            permanent=True,
            reason="UnsupportedSpec",
        ) from None


def _drive_locked(runs: Runs, raw: dict[str, Any], about: ObjectRef) -> None:
    kube = runs.kube
    run = _parse_run(raw)
    namespace, name = about.namespace, about.name
    status = run.status or IntegrationRunStatus()
    integration_raw = integration_of(runs, namespace, run.spec.integration)
    integration = Integration.model_validate(integration_raw) if integration_raw else None
    istatus = (integration.status if integration else None) or IntegrationStatus()
    paused = find_condition(istatus.conditions, IntegrationConditionType.PAUSED)

    observed = RunObserved(
        name=name,
        created=parse_time(raw["metadata"].get("creationTimestamp")),
        generation=raw["metadata"].get("generation"),
        spec=run.spec,
        status=status,
        now=datetime.now(UTC),
        integration_found=integration is not None,
        suspended=bool(integration and integration.spec.suspend),
        paused=paused is not None and paused.status is ConditionStatus.TRUE,
        deployed_revision=istatus.deployed_revision,
        max_attempts=integration.spec.retry.max_attempts if integration else 1,
        retry=integration.spec.retry if integration else RetryPolicy(),
        jitter=random.random(),
        queue_timeout_seconds=integration.spec.queue_timeout_seconds
        if integration
        else DEFAULT_QUEUE_TIMEOUT,
    )
    waiting = status.phase is None or status.phase is RunPhase.QUEUED
    if waiting and integration is not None and not run.spec.cancel:
        version = resource_version(raw)
        observed = _gather_for_start(runs, observed, namespace, name, integration, version)
    elif status.phase is not None and (status.phase in ACTIVE_PHASES or status.phase.finished):
        observed = replace(observed, job=job_view(kube, namespace, status.job_name))

    decision = decide(observed)
    opened: dict[str, tuple[bytes, SecretVersion]] = {}
    if decision.start_attempt is not None and integration is not None:
        wanted, hint = integration.spec.secrets, " (see SecretsReady)"
        try:
            active = active_secrets(kube, namespace, run.spec.integration) if wanted else {}
            opened = open_secrets(runs.sealing, pick_keys(active, wanted, hint))
        except UnusableSecret as missing:
            decision = decide(replace(observed, config_problem=str(missing)))
    new_status = decision.status
    if decision.start_attempt is not None and integration is not None:
        new_status = new_status.model_copy(
            update={"secret_versions": tuple(v for _, v in opened.values())}
        )
        _start_attempt(runs, run, raw, integration, new_status, decision.start_attempt, opened)
    if decision.collect:
        new_status = _collect(runs, run, raw, new_status)
    written = _write_status(kube, namespace, name, raw.get("status"), new_status)
    if runs.cache is not None:
        runs.cache.observe(written)
    version = resource_version(written) or resource_version(raw)
    for event_type, reason, message in decision.events:
        post_event(kube, about, event_type, reason, message)
    if decision.finished is RunPhase.SUCCEEDED and run.spec.replay_of:
        kube_runs.mark_replayed(kube, namespace, name, run.spec.replay_of)
    if (
        decision.finished is RunPhase.DEAD_LETTERED
        and not run.spec.test
        and integration is not None
        and runs.notifier is not None
    ):
        error_class = decision.status.error_class
        runs.notifier.notify(
            integration,
            dead_letter_notice(
                namespace, run.spec.integration, name, error_class.value if error_class else "-"
            ),
        )
    runs_metrics.observe_decision(namespace, run.spec.integration, decision)
    if decision.start_attempt == 1:  # event -> Job: from the run's creation to its first Job
        waited = datetime.now(UTC) - parse_time(raw["metadata"].get("creationTimestamp"))
        runs_metrics.START_DELAY.labels(namespace, run.spec.integration).observe(
            max(0.0, waited.total_seconds())
        )
    counted = integration is not None and (
        decision.finished is not None or decision.start_attempt is not None or decision.collect
    )
    if counted:  # right after the run's status: the smallest window to lose a count in
        _update_integration(runs, namespace, run, decision, version)
    if decision.delete_job:
        kube_runs.delete_job(kube, namespace, decision.delete_job)
        kube_runs.delete_secret(kube, namespace, run_secret_name(name, status.attempt))
    if counted and (decision.finished is not None or decision.collect):
        _wake_queue(runs, namespace, run.spec.integration, name, version)


def _open_keys(
    runs: Runs, namespace: str, integration: str, keys: tuple[str, ...]
) -> dict[str, bytes]:
    """The opened values of some of an integration's secrets (spec.notify's URL and key)."""
    active = active_secrets(runs.kube, namespace, integration)
    opened = open_secrets(runs.sealing, pick_keys(active, keys))
    return {key: value for key, (value, _) in opened.items()}


def _gather_for_start(
    runs: Runs,
    observed: RunObserved,
    namespace: str,
    name: str,
    integration: Integration,
    version: int | None,
) -> RunObserved:
    kube = runs.kube
    revision_name = wanted_revision(observed)
    revision = None
    if revision_name:
        obj = kube.get(REVISIONS, namespace, revision_name)
        if obj is not None and obj.get("spec", {}).get("integration") == integration.metadata.name:
            ref = obj["spec"].get("codeConfigMap") or {}
            revision = RevisionView(
                revision_name, str(ref.get("name", "")), str(ref.get("key", "handler.py"))
            )
    integration_name = integration.metadata.name or ""
    refs = run_refs(runs_of(runs, namespace, version), integration_name, name)
    refs.append(  # this run as just read, whatever the cache holds of it
        RunRef(name, observed.created, observed.status.phase, observed.status.next_attempt_at)
    )
    jobs = kube_runs.list_jobs(kube, namespace, f"{INTEGRATION_LABEL}={integration_name}")
    busy = busy_runs(jobs, {r.name for r in refs if r.phase is not None and r.phase.finished})
    # This run's own Job of the next attempt already exists: it was admitted before a crash.
    own_next = f"{name}-{observed.status.attempt + 1}"
    admitted = (
        any(j == name for j in busy) and kube_runs.get_job(kube, namespace, own_next) is not None
    )
    allowed = admitted or may_start(
        name, refs, integration.spec.max_concurrency, observed.now, busy - {name}
    )
    return replace(observed, revision=revision, may_start=allowed)


def _start_attempt(
    runs: Runs,
    run: IntegrationRun,
    raw: dict[str, Any],
    integration: Integration,
    status: IntegrationRunStatus,
    attempt: int,
    opened: Mapping[str, tuple[bytes, SecretVersion]],
) -> None:
    """Create the ServiceAccount (once per namespace), the per-run Secret and the Job.
    Each creation is idempotent (409 = already there), so a retry never makes a second Job."""
    kube = runs.kube
    namespace = raw["metadata"]["namespace"]
    run_uid = raw["metadata"]["uid"]
    spec = integration.spec
    revision = kube.get(REVISIONS, namespace, status.revision or "") or {}
    ref = (revision.get("spec") or {}).get("codeConfigMap") or {}
    resources = spec.resources
    event = build_run_event(run, spec, attempt)
    spec_attempt = RunAttempt(
        namespace=namespace,
        run=run.metadata.name or "",
        run_uid=run_uid,
        attempt=attempt,
        integration=run.spec.integration,
        revision=status.revision or "",
        code_config_map=str(ref.get("name", "")),
        code_key=str(ref.get("key", "handler.py")),
        code_hash=str((revision.get("spec") or {}).get("codeHash", "")),
        event=event,
        idempotency_key=run.spec.idempotency_key,
        timeout_seconds=spec.timeout_seconds,
        python=str(spec.runtime.python or ""),
        nodejs=str(spec.runtime.nodejs) if spec.runtime.nodejs else None,
        image=spec.runtime.image,
        images=runs.run_images,
        runtime_class_name=spec.runtime.runtime_class_name,
        requests=resource_quantities(resources.requests if resources else None),
        limits=resource_quantities(resources.limits if resources else None),
        broker_url=runs.broker_url,
        egress_proxy_url=runs.egress_proxy_url,
    )
    kube_runs.ensure_service_account(kube, namespace, build_run_service_account(namespace))
    if opened:
        key = (
            runs.sealing.ring.run_key(run_uid, attempt)
            if runs.sealing and runs.sealing.ring
            else None
        )
        if key is None:
            raise DomainError("waiting for the sealing keys to load before starting runs")
        sealed = {
            name: encrypt_value(key, run_uid, attempt, name, plaintext)
            for name, (plaintext, _) in opened.items()
        }
        del key
        kube_runs.create_secret(kube, namespace, build_run_secret(spec_attempt, sealed))
    created = kube_runs.create_job(
        kube, namespace, build_run_job(spec_attempt, tuple(sorted(opened)))
    )
    log.info(
        "run %s/%s: attempt %d %s (Job %s)",
        namespace,
        run.metadata.name,
        attempt,
        "started" if created else "already started",
        spec_attempt.job_name,
    )


def _collect(
    runs: Runs, run: IntegrationRun, raw: dict[str, Any], status: IntegrationRunStatus
) -> IntegrationRunStatus:
    """Read the attempt's log from its pod, mask every secret value the run received, store it
    (owned by the run), and mask what the status shows."""
    kube = runs.kube
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    attempt = (run.status or IntegrationRunStatus()).attempt
    pods = kube_runs.job_pods(kube, namespace, f"{name}-{attempt}")
    text = None
    if pods:
        text = kube_runs.pod_log(
            kube, namespace, pods[0]["metadata"]["name"], CONTAINER, READ_LOG_BYTES
        )
    if text is None:
        text = "[docrelay: the pod was gone before its log could be read]\n"
    elif len(text.encode()) >= READ_LOG_BYTES:
        # Cut at the read limit: drop the partial last line, which could end in part of a value.
        text = text[: text.rfind("\n") + 1] + "[docrelay: the rest of this log was not read]\n"
    values = secret_values(runs, namespace, status, run.spec.integration)
    if values is None:  # fail closed: nothing unmasked is stored
        status = status.model_copy(
            update={
                "error_message": WITHHELD if status.error_message else None,
                "result_summary": None,
            }
        )
        text, values = WITHHELD + "\n", []
    masker = Masker(values)
    masked = cap_log(masker.mask(text))
    kube_runs.put_config_map(
        kube,
        namespace,
        build_log_config_map(
            namespace,
            name,
            raw["metadata"]["uid"],
            attempt,
            run.spec.integration,
            compress_log(masked),
        ),
    )
    record = kube_runs.read_config_map_data(kube, namespace, egress_record_name(name, attempt))
    return status.model_copy(
        update={
            "egress": egress_summary(record),
            "log_tail": masked[-LOG_TAIL_CHARS:] or None,
            "error_message": masker.mask(status.error_message) if status.error_message else None,
            "result_summary": masker.mask(status.result_summary)[:1024]
            if status.result_summary
            else None,
        }
    )


def _write_status(
    kube: Kube, namespace: str, name: str, old: Mapping[str, Any] | None, new: IntegrationRunStatus
) -> dict[str, Any] | None:
    """Patch what changed; the run as stored, if anything was written."""
    wanted = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    current = dict(old or {})
    patch: dict[str, Any] = {k: v for k, v in wanted.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in wanted})
    if patch:
        return kube.patch_status(kube_runs.RUNS, namespace, name, patch)
    return None


def _update_integration(
    runs: Runs, namespace: str, run: IntegrationRun, decision: RunDecision, version: int | None
) -> None:
    """lastRun, counters, consecutive failures (non-test runs only) and active runs."""
    kube = runs.kube
    for _ in range(5):
        obj = kube.get(INTEGRATIONS, namespace, run.spec.integration)
        if obj is None:
            return
        status = IntegrationStatus.model_validate(obj.get("status") or {})
        paused_now = False
        if decision.finished is not None and not run.spec.test:
            status = count_finished(
                status, run.metadata.name or "", decision.finished, decision.status.completion_time
            )
            status, paused_now = pause_if_due(
                status,
                runs.pause_after_failures,
                datetime.now(UTC).replace(microsecond=0),
                obj["metadata"].get("generation"),
            )
        active = sum(
            1
            for r in runs_of(runs, namespace, version)
            if (r.get("spec") or {}).get("integration") == run.spec.integration
            and (r.get("status") or {}).get("phase") in ("Pending", "Running")
        )
        patch = integration_run_patch(status, active, with_conditions=paused_now)
        if kube_runs.patch_integration_status(
            kube,
            namespace,
            run.spec.integration,
            patch,
            obj["metadata"]["resourceVersion"],
            runs.integrations.observe if runs.integrations is not None else None,
        ):
            if paused_now:
                about = ObjectRef(
                    API_VERSION,
                    "Integration",
                    namespace,
                    run.spec.integration,
                    obj["metadata"].get("uid"),
                )
                post_event(
                    kube,
                    about,
                    "Warning",
                    "Paused",
                    f"paused after {status.consecutive_failures} consecutive failed runs; "
                    "new runs wait until `docrelay resume`",
                )
                paused = find_condition(status.conditions, IntegrationConditionType.PAUSED)
                if runs.notifier is not None and paused is not None:
                    runs.notifier.notify(
                        Integration.model_validate(obj),
                        paused_notice(
                            namespace,
                            run.spec.integration,
                            status.consecutive_failures,
                            paused.last_transition_time.isoformat(),
                        ),
                    )
            return


def _wake_queue(
    runs: Runs, namespace: str, integration: str, done: str, version: int | None
) -> None:
    """A slot may be free: look at the oldest waiting runs now rather than at the next poll."""
    waiting = sorted(
        (
            r
            for r in runs_of(runs, namespace, version)
            if (r.get("spec") or {}).get("integration") == integration
            and (r.get("status") or {}).get("phase") in (None, "Queued")
            and r["metadata"]["name"] != done
        ),
        key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]),
    )
    for r in waiting[:3]:
        runs.enqueue(namespace, r["metadata"]["name"])


def apply_retention(kube: Kube, all_runs: list[dict[str, Any]]) -> None:
    """Delete the finished runs each Integration's runRetention no longer keeps."""
    now = datetime.now(UTC)
    for (namespace, name), finished_runs in finished_by_integration(all_runs).items():
        obj = kube.get(INTEGRATIONS, namespace, name)
        if obj is None:
            continue  # runs of a deleted integration are kept until someone deletes them
        retention = Integration.model_validate(obj).spec.run_retention
        for doomed in runs_to_delete(finished_runs, retention, now):
            kube.delete(kube_runs.RUNS, namespace, doomed)
            log.info("run %s/%s deleted by the retention policy", namespace, doomed)


# --- registration ---------------------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, watched_namespace: Any) -> None:
    def start(memo: kopf.Memo, **_: Any) -> None:
        context = from_memo(memo)
        runs = Runs(
            kube=context.kube,
            memo=memo,
            namespace=watched_namespace(),
            pause_after_failures=context.settings.pause_after_failures,
            broker_url=context.settings.broker_url,
            egress_proxy_url=context.settings.egress_proxy_url,
            run_images=dict(context.settings.run_images),
        )
        runs.notifier = Notifier(lambda ns, name, keys: _open_keys(runs, ns, name, keys))
        runs.notifier.start()
        if context.settings.metrics_port:
            runs_metrics.serve(context.settings.metrics_host, context.settings.metrics_port)
        runs.cache = Store(context.kube, kube_runs.RUNS, runs.namespace or None)
        runs.cache.start()
        runs.integrations = Store(context.kube, INTEGRATIONS, runs.namespace or None)
        runs.integrations.start()
        memo[RUNS_MEMO_KEY] = runs
        runs.start()

    def stop(memo: kopf.Memo, **_: Any) -> None:
        runs = memo.get(RUNS_MEMO_KEY)
        if isinstance(runs, Runs):
            runs.stop_event.set()
            runs.queue.shut_down()
            for store in (runs.cache, runs.integrations):
                if store is not None:
                    store.stop()
            if runs.notifier is not None:
                runs.notifier.stop()

    def run_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # A finished run is not driven again by its own events (nor at a restart, when
        # every run is listed): a Job it still owns has events of its own.
        if body.metadata.get("deletionTimestamp") or run_finished(body):
            return
        runs_from_memo(memo).enqueue(body.metadata.namespace or "", body.metadata.name or "")

    def job_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        run = (body.metadata.labels or {}).get(RUN_LABEL)
        if not run:
            return
        runs = runs_from_memo(memo)
        namespace = body.metadata.namespace or ""
        if (
            kwargs.get("type") == "DELETED"
            and runs.cache is not None
            and run_finished(runs.cache.get(namespace, run))
        ):
            return  # the Job of a finished run is gone: nothing left to do
        runs.enqueue(namespace, run)

    def pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        run = (body.metadata.labels or {}).get(RUN_LABEL)
        if run and container_ended(body, CONTAINER):
            runs_from_memo(memo).enqueue(body.metadata.namespace or "", run)

    kopf.on.startup(registry=registry, id="runs")(start)
    kopf.on.cleanup(registry=registry, id="runs")(stop)
    kopf.on.event(GROUP, VERSION, "integrationruns", registry=registry, id="drive-run")(run_event)
    kopf.on.event(
        "batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT}, registry=registry, id="run-job"
    )(job_event)
    kopf.on.event(
        "", "v1", "pods", labels={RUN_LABEL: kopf.PRESENT}, registry=registry, id="run-pod"
    )(pod_event)
