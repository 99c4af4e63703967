"""IntegrationRuns: gather (from the caches of docrelay.handlers.run_controller), decide
(reconcile.run), act, write the run's status once. `drive` is the controller's driver: a
worker calls it for one run key at a time (never two workers for one run).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from pydantic import ValidationError

from docrelay.builders.revision import INTEGRATION_LABEL
from docrelay.builders.run import (
    CONTAINER,
    RUN_LABEL,
    RunAttempt,
    broker_record_name,
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
from docrelay.handlers.notify import Notifier, dead_letter_notice
from docrelay.handlers.resume import resume_integrations
from docrelay.handlers.run_controller import (
    RUNS_MEMO_KEY,
    SYNC_WAIT_SECONDS,
    WORKERS,
    Runs,
    _open_keys,
    active_secrets,
    job_pods,
    job_view,
    open_secrets,
    revision_of,
    runs_from_memo,
    secret_values,
)
from docrelay.kube import INTEGRATIONS, REVISIONS, SECRETS, Kube, ObjectRef
from docrelay.kube import egress as kube_egress
from docrelay.kube import runs as kube_runs
from docrelay.kube.cache import JOBS, PODS, Store, integration_or_get, resource_version
from docrelay.masking import Masker
from docrelay.models import API_VERSION
from docrelay.models.integration import (
    Integration,
)
from docrelay.models.run import IntegrationRun, IntegrationRunStatus, RunPhase, SecretVersion
from docrelay.naming import job_name
from docrelay.reconcile.egress import egress_summary
from docrelay.reconcile.run import (
    ACTIVE_PHASES,
    RunObserved,
    RunRef,
    busy_runs,
    decide,
    may_start,
    observe_run,
    parse_time,
    run_finished,
    status_patch,
    wanted_revision,
)
from docrelay.reconcile.secrets import (
    UnusableSecret,
    pick_keys,
)
from docrelay.runner.envcrypt import encrypt_value

__all__ = ["RUNS_MEMO_KEY", "Runs", "active_secrets", "drive", "open_secrets", "runs_from_memo"]

log = logging.getLogger("docrelay.runs")

READ_LOG_BYTES = 8 * 1024 * 1024
LOG_TAIL_CHARS = 500


WITHHELD = (
    "[docrelay: withheld: the secret values this run received could not be loaded to mask "
    "its output]"
)


# --- drive ----------------------------------------------------------------------------------


def drive(runs: Runs, namespace: str, name: str) -> float:
    """One look at one run, from the caches: decide, act, write its status once. Returns
    the seconds until it wants another look without an event (0: none)."""
    raw = runs.cache.get(namespace, name) if runs.cache is not None else None
    if raw is None and (runs.cache is None or not runs.cache.synced):
        raw = runs.kube.get(kube_runs.RUNS, namespace, name)
    # Keys come from the run's own events, its Job's and pod's (made after the run was seen)
    # and the index: a run the synced cache lacks has been deleted.
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        return 0.0
    about = ObjectRef(API_VERSION, "IntegrationRun", namespace, name, raw["metadata"]["uid"])
    with boundary(runs.kube, about, "driving the run"):
        return _drive(runs, raw, about)


def integration_of(runs: Runs, namespace: str, name: str) -> Integration | None:
    """The Integration as a model, parsed once per resourceVersion (a run is driven several
    times, and many runs share an Integration)."""
    cached = runs.integrations.get(namespace, name) if runs.integrations is not None else None
    if cached is not None and runs.integrations is not None and runs.integrations.synced:
        key = (namespace, name, str(cached["metadata"].get("resourceVersion")))
        model = runs.models.get(key)
        if model is None:
            if len(runs.models) > 4096:
                runs.models.clear()
            model = runs.models[key] = Integration.model_validate(cached)
        return model
    raw = integration_or_get(runs.integrations, runs.kube, namespace, name)
    return Integration.model_validate(raw) if raw else None


def _parse_run(raw: dict[str, Any]) -> IntegrationRun:
    try:
        return IntegrationRun.model_validate(raw)
    except ValidationError:
        raise DomainError(
            "the IntegrationRun does not match the API this operator knows",
            permanent=True,
            reason="UnsupportedSpec",
        ) from None


def _drive(runs: Runs, raw: dict[str, Any], about: ObjectRef) -> float:
    namespace, name = about.namespace, about.name
    if run_finished(raw):
        # Only a Job left behind (a crash between the final status and the cleanup) is work.
        job = (raw.get("status") or {}).get("jobName")
        if not job or runs.jobs is None or runs.jobs.get(namespace, job) is None:
            return 0.0
    run = _parse_run(raw)
    status = run.status or IntegrationRunStatus()
    integration = integration_of(runs, namespace, run.spec.integration)
    observed = observe_run(raw, run, integration, datetime.now(UTC), random.random())
    waiting = status.phase is None or status.phase is RunPhase.QUEUED
    admitted, revision_obj = False, None
    if waiting and integration is not None and not run.spec.cancel:
        gathered, admitted, revision_obj = _gather_for_start(runs, observed, raw, integration)
        if gathered is None:
            return 1.0  # the runs' cache has not caught up with this run yet
        observed = gathered
    elif status.phase is not None and (status.phase in ACTIVE_PHASES or status.phase.finished):
        observed = replace(observed, job=job_view(runs, namespace, status.job_name))
    try:
        return _act(
            runs, raw, run, integration, observed, about, revision_obj if admitted else None
        )
    finally:
        if admitted:
            runs.index.release(namespace, run.spec.integration, name)


def _act(
    runs: Runs,
    raw: dict[str, Any],
    run: IntegrationRun,
    integration: Integration | None,
    observed: RunObserved,
    about: ObjectRef,
    revision_obj: dict[str, Any] | None,
) -> float:
    kube = runs.kube
    namespace, name = about.namespace, about.name
    status = observed.status
    decision = decide(observed)
    opened: dict[str, tuple[bytes, SecretVersion]] = {}
    if decision.start_attempt is not None and integration is not None:
        wanted, hint = integration.spec.secrets, " (see SecretsReady)"
        try:
            active = active_secrets(kube, namespace, run.spec.integration, runs) if wanted else {}
            opened = open_secrets(runs.sealing, pick_keys(active, wanted, hint))
        except UnusableSecret as missing:
            decision = decide(replace(observed, config_problem=str(missing)))
    new_status = decision.status
    if decision.start_attempt is not None and integration is not None:
        fresh = kube.get(kube_runs.RUNS, namespace, name)  # the one read before acting
        if fresh is None or resource_version(fresh) != resource_version(raw):
            if fresh is not None and runs.cache is not None:
                runs.cache.observe(fresh)
            return 0.5  # changed since the cache's copy: decide again on the new one
        new_status = new_status.model_copy(
            update={"secret_versions": tuple(v for _, v in opened.values())}
        )
        _start_attempt(
            runs, run, raw, integration, new_status, decision.start_attempt, opened, revision_obj
        )
    if decision.collect:
        new_status = _collect(runs, run, raw, new_status)
    written = _write_status(kube, raw, new_status)
    if runs.cache is not None:
        runs.cache.observe(written)
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
    if decision.delete_job:
        kube_runs.delete_job(kube, namespace, decision.delete_job)
        if runs.jobs is not None:
            runs.jobs.forget(namespace, decision.delete_job)  # frees the slot: wakes the queue
        if status.secret_versions or new_status.secret_versions:
            kube_runs.delete_secret(kube, namespace, run_secret_name(name, status.attempt))
    return decision.requeue_after or 0.0


def _gather_for_start(
    runs: Runs, observed: RunObserved, raw: dict[str, Any], integration: Integration
) -> tuple[RunObserved | None, bool, dict[str, Any] | None]:
    """The revision and the concurrency gate's answer; with a yes, the run holds a
    reservation (released once its Job is in the cache or the start failed). None while the
    runs' cache has not delivered this run's version (so it may lack older runs)."""
    namespace, name = raw["metadata"]["namespace"], observed.name
    integration_name = integration.metadata.name or ""
    revision_name = wanted_revision(observed)
    found = revision_of(runs, namespace, revision_name, integration_name) if revision_name else None
    revision, revision_obj = found if found is not None else (None, None)
    if revision is None or runs.cache is None or runs.jobs is None:
        return replace(observed, revision=revision), False, None
    if not runs.cache.wait_for(resource_version(raw), SYNC_WAIT_SECONDS):
        return None, False, None
    own = RunRef(name, observed.created, observed.status.phase, observed.status.next_attempt_at)
    own_next = job_name(name, observed.status.attempt + 1)
    with runs.gate(namespace, integration_name):  # memory only: no call while held
        refs = [*runs.index.refs(namespace, integration_name, exclude=name), own]
        jobs = [
            j
            for j in runs.jobs.list_shallow(namespace)
            if (j["metadata"].get("labels") or {}).get(INTEGRATION_LABEL) == integration_name
        ]
        finished = {
            j_run
            for j in jobs
            if (j_run := (j["metadata"].get("labels") or {}).get(RUN_LABEL, ""))
            and run_finished(runs.cache.get(namespace, j_run))
        }
        busy = busy_runs(jobs, finished) | runs.index.reservations(namespace, integration_name)
        # This run's own Job of the next attempt already exists: it was admitted before a crash.
        admitted = name in busy and runs.jobs.get(namespace, own_next) is not None
        allowed = admitted or may_start(
            name, refs, integration.spec.max_concurrency, observed.now, busy - {name}
        )
        if allowed:
            runs.index.reserve(namespace, integration_name, name)
    return replace(observed, revision=revision, may_start=allowed), allowed, revision_obj


def _start_attempt(
    runs: Runs,
    run: IntegrationRun,
    raw: dict[str, Any],
    integration: Integration,
    status: IntegrationRunStatus,
    attempt: int,
    opened: Mapping[str, tuple[bytes, SecretVersion]],
    revision: dict[str, Any] | None,
) -> None:
    """Create the ServiceAccount (once per namespace and process), the per-run Secret and the
    Job. Each creation is idempotent (409 = already there), so a retry never makes a second
    Job; the Job goes through to the cache, where the gate counts it."""
    kube = runs.kube
    namespace = raw["metadata"]["namespace"]
    run_uid = raw["metadata"]["uid"]
    spec = integration.spec
    if revision is None or revision["metadata"].get("name") != status.revision:
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
    if namespace not in runs.service_accounts:
        kube_runs.ensure_service_account(kube, namespace, build_run_service_account(namespace))
        runs.service_accounts.add(namespace)
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
    body = build_run_job(spec_attempt, tuple(sorted(opened)))
    created = kube_runs.create_job(kube, namespace, body)
    if runs.jobs is not None:
        existing = created or runs.jobs.get(namespace, spec_attempt.job_name)
        runs.jobs.observe(existing or kube_runs.get_job(kube, namespace, spec_attempt.job_name))
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
    pods = job_pods(runs, namespace, job_name(name, attempt))
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
    opened = values is not None
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
    # The egress proxy writes the record; runs get no proxy without one, so there is none.
    # Its plain-HTTP paths masked with the same values (dropped when they could not be opened).
    record = (
        kube_egress.collect_record(
            kube, namespace, egress_record_name(name, attempt), masker.mask if opened else None
        )
        if runs.egress_proxy_url
        else None
    )
    if runs.broker_url:  # the broker's record of account actions, masked the same way
        kube_egress.collect_record(
            kube, namespace, broker_record_name(name, attempt), masker.mask if opened else None
        )
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
    kube: Kube, raw: Mapping[str, Any], new: IntegrationRunStatus
) -> dict[str, Any] | None:
    """Patch what changed, if the run is as read (its resourceVersion: a stale copy gets a
    409 and is decided again); the run as stored, if anything was written."""
    patch = status_patch(raw.get("status"), new)
    if not patch:
        return None
    meta = raw["metadata"]
    return kube_runs.patch_run_status(
        kube, meta["namespace"], meta["name"], patch, str(meta.get("resourceVersion") or "")
    )


# --- registration ---------------------------------------------------------------------------


def own_pool(kube: Kube, size: int) -> Kube:
    """A client with the same credentials and a connection pool of `size` (the default holds
    fewer connections than the workers, and a connection it cannot keep is a TLS handshake
    each time)."""
    configuration = copy.copy(kube.api_client.configuration)
    configuration.connection_pool_maxsize = size
    return Kube(client.ApiClient(configuration))


def register(registry: kopf.OperatorRegistry, watched_namespace: Any) -> None:
    def start(memo: kopf.Memo, **_: Any) -> None:
        context = from_memo(memo)
        namespace = watched_namespace() or None
        runs = Runs(
            driver=drive,
            kube=own_pool(context.kube, WORKERS + 4),
            memo=memo,
            namespace=namespace,
            pause_after_failures=context.settings.pause_after_failures,
            broker_url=context.settings.broker_url,
            egress_proxy_url=context.settings.egress_proxy_url,
            run_images=dict(context.settings.run_images),
            metrics=bool(context.settings.metrics_port),
        )
        runs.notifier = Notifier(
            lambda ns, name, keys: _open_keys(runs, ns, name, keys),
            allow_private=context.settings.notify_allow_private_targets,
        )
        runs.notifier.start()
        if context.settings.metrics_port:
            runs_metrics.serve(context.settings.metrics_host, context.settings.metrics_port)
        runs.cache = Store(context.kube, kube_runs.RUNS, namespace)
        runs.integrations = Store(context.kube, INTEGRATIONS, namespace)
        runs.jobs = Store(context.kube, JOBS, namespace, RUN_LABEL)
        runs.pods = Store(context.kube, PODS, namespace, RUN_LABEL)
        runs.secrets = Store(context.kube, SECRETS, namespace)
        memo[RUNS_MEMO_KEY] = runs
        runs.start()
        # Every Integration resumed from these caches once they have listed (handlers.resume).
        threading.Thread(
            target=resume_integrations, args=(context, runs), name="docrelay-resume", daemon=True
        ).start()

    def stop(memo: kopf.Memo, **_: Any) -> None:
        runs = memo.get(RUNS_MEMO_KEY)
        if isinstance(runs, Runs):
            runs.stop()
            if runs.notifier is not None:
                runs.notifier.stop()

    # The runs, their Jobs and pods are watched by the caches above, not by kopf: one watch
    # per kind, and their events only add keys to the work queue.
    kopf.on.startup(registry=registry, id="runs")(start)
    kopf.on.cleanup(registry=registry, id="runs")(stop)
