"""Runs a person asks for (a test run on one document, a replay of a failed run) and what
they read of a run (its stored log, its live pod, its records of connections and actions)."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable
from typing import Any

from docrelay.builders.run import (
    LOG_KEY,
    broker_record_name,
    egress_record_name,
    log_config_map_name,
    new_run,
)
from docrelay.gateway.dryrun import merge_actions
from docrelay.gateway.egress import merge_records
from docrelay.kube import Kube
from docrelay.kube import egress as kube_egress
from docrelay.kube import runs as kube_runs
from docrelay.models.common import API_VERSION
from docrelay.naming import job_name, run_name

REPLAYABLE = ("Failed", "DeadLettered", "TimedOut")
FINISHED = {"Succeeded", "Failed", "TimedOut", "DeadLettered", "Cancelled"}


def new_test_run(
    namespace: str, integration: str, document: str, trigger: str, revision: str | None = None
) -> dict[str, Any]:
    """A test run: never retried, not counted in the integration's status; it may run a
    revision that is not deployed."""
    event_id = f"test-{uuid.uuid4().hex}"
    extra = {"test": True, **({"revision": revision} if revision else {})}
    return new_run(namespace, integration, event_id, document, trigger, spec=extra)


def replay_manifest(original: dict[str, Any], revision: str) -> dict[str, Any]:
    """A new run of the original's document, trigger and idempotency key, naming it in
    `replayOf`: the deployed revision (`current`) or the one it ran (`pinned`)."""
    spec, status = original["spec"], original.get("status") or {}
    event_id = f"replay-{uuid.uuid4().hex}"
    name = run_name(spec["integration"], event_id, spec["documentIdentifier"], spec["trigger"])
    new_spec = {
        "integration": spec["integration"],
        "documentIdentifier": spec["documentIdentifier"],
        "trigger": spec["trigger"],
        "eventId": event_id,
        "idempotencyKey": spec["idempotencyKey"],
        "replayOf": original["metadata"]["name"],
    }
    pinned = status.get("revision") or spec.get("revision")
    if revision == "pinned" and pinned:
        new_spec["revision"] = pinned
    return {
        "apiVersion": API_VERSION,
        "kind": "IntegrationRun",
        "metadata": {"name": name},
        "spec": new_spec,
    }


def _record(
    kube: Kube, namespace: str, name: str, merge: Callable[[list[dict[str, Any]]], dict]
) -> dict[str, Any] | None:
    """A run attempt's record ConfigMap merged from every gateway process's part: as the
    operator collected it (masked with the run's values), or, not collected, with its free
    text (hosts, paths, reasons, account names, file names, action keys, prop names) left
    out. None when there is none."""
    parts = kube_egress.read_record_parts(kube, namespace, name)
    return None if parts is None else merge(parts)


def egress_record(kube: Kube, namespace: str, run: str, attempt: int) -> dict[str, Any] | None:
    """The attempt's connections through the egress proxy (`<job>-egress`)."""
    return _record(kube, namespace, egress_record_name(run, attempt), merge_records)


def broker_record(kube: Kube, namespace: str, run: str, attempt: int) -> dict[str, Any] | None:
    """The attempt's account actions through the broker (`<job>-broker`)."""
    return _record(kube, namespace, broker_record_name(run, attempt), merge_actions)


def broker_target(entry: dict[str, Any]) -> str:
    """What a broker action named: a request's method, host and path; an action's key and
    props; an upload's file name (the names a record not collected yet leaves out)."""
    if entry.get("method"):
        return f"{entry['method']} {entry.get('host') or ''}{entry.get('path') or ''}"
    props = ", ".join(str(p) for p in entry.get("props") or [])
    return str(entry.get("tool") or entry.get("fileName") or "") + (f" ({props})" if props else "")


def stored_log(kube: Kube, namespace: str, run: str, attempt: int) -> str | None:
    """The attempt's log as the operator stored it (masked)."""
    data = kube_runs.read_config_map_binary(
        kube, namespace, log_config_map_name(run, attempt), LOG_KEY
    )
    return gzip.decompress(data).decode("utf-8", errors="replace") if data else None


def live_pod(kube: Kube, namespace: str, run: str, attempt: int) -> str | None:
    """The attempt's pod whose container runs now, if any."""
    pods = kube_runs.job_pods(kube, namespace, job_name(run, attempt))
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if any("running" in (s.get("state") or {}) for s in statuses):
            return str(pod["metadata"]["name"])
    return None
