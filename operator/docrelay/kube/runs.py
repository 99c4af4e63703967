"""API calls of runs: Jobs, their pods and logs, per-run Secrets, log ConfigMaps, the run
ServiceAccount. Beside the client in kube/__init__.py (same 404/409 policy and error messages)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from docrelay.kube import INTEGRATIONS, Kube, KubeError, _api_error
from docrelay.models.common import GROUP, VERSION

RUNS = "integrationruns"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _batch(kube: Kube) -> client.BatchV1Api:
    return client.BatchV1Api(kube.api_client)


def _create(call: Any, namespace: str, body: dict[str, Any], what: str) -> bool:
    """Create; False if it already exists (409): every creation here is idempotent."""
    try:
        call(namespace, body)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise _api_error(exc, f"creating {what} {namespace}/{body['metadata']['name']}") from None
    return True


def create_job(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """Create the Job; the Job as stored, or None if it already existed (409)."""
    try:
        answer = _batch(kube).create_namespaced_job(namespace, body, _preload_content=False)
    except ApiException as exc:
        if exc.status == 409:
            return None
        raise _api_error(exc, f"creating Job {namespace}/{body['metadata']['name']}") from None
    return _json(answer)


class Conflict(KubeError):
    """The object changed since it was read (409): read it again and decide again."""


def patch_run_status(
    kube: Kube, namespace: str, name: str, status: dict[str, Any], resource_version: str
) -> dict[str, Any]:
    """Merge-patch the run's status if the run is unchanged since it was read (an empty
    resource_version: whatever it is now); the run as stored."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        return dict(
            kube.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, RUNS, name, body
            )
        )
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(
                f"integrationruns {namespace}/{name} changed since it was read; deciding again",
                409,
            ) from None
        raise _api_error(exc, f"writing the status of {RUNS} {namespace}/{name}") from None


def create_secret(kube: Kube, namespace: str, body: dict[str, Any]) -> bool:
    return _create(kube.core.create_namespaced_secret, namespace, body, "Secret")


def ensure_service_account(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    try:
        kube.core.read_namespaced_service_account(name, namespace)
        return
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, f"reading ServiceAccount {namespace}/{name}") from None
    _create(kube.core.create_namespaced_service_account, namespace, body, "ServiceAccount")


def put_config_map(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    """Create, or replace one left by an earlier try of the same step."""
    name = body["metadata"]["name"]
    if _create(kube.core.create_namespaced_config_map, namespace, body, "ConfigMap"):
        return
    try:
        kube.core.replace_namespaced_config_map(name, namespace, body)
    except ApiException as exc:
        raise _api_error(exc, f"replacing ConfigMap {namespace}/{name}") from None


def read_config_map_binary(kube: Kube, namespace: str, name: str, key: str) -> bytes | None:
    try:
        config_map = kube.core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading ConfigMap {namespace}/{name}") from None
    value = (config_map.binary_data or {}).get(key)
    return base64.b64decode(value) if value else None


def read_config_map_data(kube: Kube, namespace: str, name: str) -> dict[str, str] | None:
    try:
        config_map = kube.core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading ConfigMap {namespace}/{name}") from None
    return dict(config_map.data or {})


def get_job(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        job = _batch(kube).read_namespaced_job(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading Job {namespace}/{name}") from None
    return _json(job)


def _json(response: Any) -> dict[str, Any]:
    """The answer as the API server wrote it: no typed objects built and converted back."""
    return dict(json.loads(response.data))


def list_jobs(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    try:
        jobs = _batch(kube).list_namespaced_job(
            namespace, label_selector=selector, _preload_content=False
        )
    except ApiException as exc:
        raise _api_error(exc, f"listing Jobs in {namespace}") from None
    return list(_json(jobs).get("items") or [])


def delete_job(kube: Kube, namespace: str, name: str) -> None:
    """Delete the Job and (in the background) its pods; already gone is fine."""
    try:
        _batch(kube).delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, f"deleting Job {namespace}/{name}") from None


def delete_secret(kube: Kube, namespace: str, name: str) -> None:
    try:
        kube.core.delete_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, f"deleting Secret {namespace}/{name}") from None


def job_pods(kube: Kube, namespace: str, job: str) -> list[dict[str, Any]]:
    """The pods of a Job, newest first."""
    try:
        pods = kube.core.list_namespaced_pod(
            namespace, label_selector=f"{JOB_NAME_LABEL}={job}", _preload_content=False
        )
    except ApiException as exc:
        raise _api_error(exc, f"listing the pods of Job {namespace}/{job}") from None
    items = list(_json(pods).get("items") or [])
    return sorted(items, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)


def pod_log(kube: Kube, namespace: str, pod: str, container: str, limit: int) -> str | None:
    """The container's log (at most `limit` bytes, the newest), or None if it is gone."""
    try:
        text = kube.core.read_namespaced_pod_log(
            pod, namespace, container=container, limit_bytes=limit, _preload_content=False
        )
    except ApiException as exc:
        if exc.status in (400, 404):  # pod gone, or its container never started
            return None
        raise _api_error(exc, f"reading the log of pod {namespace}/{pod}") from None
    return bytes(text.data).decode("utf-8", errors="replace")


def follow_pod_log(kube: Kube, namespace: str, pod: str, container: str) -> Iterator[str]:
    """The container's log as it is written, until the container ends."""
    stream = watch.Watch().stream(
        kube.core.read_namespaced_pod_log, pod, namespace, container=container, follow=True
    )
    try:
        for line in stream:
            yield line + "\n"
    except ApiException as exc:
        if exc.status not in (400, 404):
            raise _api_error(exc, f"following the log of pod {namespace}/{pod}") from None


def list_runs(kube: Kube, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
    return kube.list_objects(RUNS, namespace, selector)


def patch_integration_status(
    kube: Kube,
    namespace: str,
    name: str,
    status: dict[str, Any],
    resource_version: str,
    on_written: Callable[[dict[str, Any]], None] | None = None,
) -> bool:
    """Merge-patch the status if the Integration is unchanged since it was read; False on a
    conflict (409), so the caller reads again. `on_written` gets the Integration as stored."""
    body = {"metadata": {"resourceVersion": resource_version}, "status": status}
    try:
        written = kube.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, INTEGRATIONS, name, body
        )
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status == 404:
            return True  # the Integration is gone; nothing to count
        raise _api_error(exc, f"writing the status of integrations {namespace}/{name}") from None
    if on_written is not None:
        on_written(dict(written))
    return True


def patch_integration_spec(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Merge-patch the Integration's spec: only for a user's own command (`docrelay suspend`);
    the operator never writes a spec."""
    try:
        kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, INTEGRATIONS, name, {"spec": spec}
        )
    except ApiException as exc:
        raise _api_error(exc, f"changing the spec of integrations {namespace}/{name}") from None


__all__ = ["KubeError"]


MAX_REPLAY_CHAIN = 20
REPLAYABLE_PHASES = ("Failed", "DeadLettered", "TimedOut")


def mark_replayed(kube: Kube, namespace: str, replay: str, original: str) -> None:
    """Record on the failed run (and the failed replays before this one) that a replay of it
    succeeded. A missing run (deleted by retention) ends the chain."""
    seen = {replay}
    while original and original not in seen and len(seen) <= MAX_REPLAY_CHAIN:
        seen.add(original)
        obj = kube.get(RUNS, namespace, original)
        if obj is None:
            return
        status = obj.get("status") or {}
        if status.get("phase") in REPLAYABLE_PHASES and not status.get("replayedBy"):
            kube.patch_status(RUNS, namespace, original, {"replayedBy": replay})
        original = str((obj.get("spec") or {}).get("replayOf") or "")
