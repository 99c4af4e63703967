"""Manifests of one run attempt: the hardened Job, the per-run Secret (ciphertext only), the run
ServiceAccount (no RBAC rights) and the ConfigMap keeping the run's masked log. Pure."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from docrelay.builders.revision import (
    INTEGRATION_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    owner_reference,
)
from docrelay.models.common import API_VERSION
from docrelay.models.integration import IntegrationSpec
from docrelay.models.run import IntegrationRun
from docrelay.naming import idempotency_key, job_name, run_name
from docrelay.runner import contract

RUN_LABEL = "docrelay.io/run"
ATTEMPT_LABEL = "docrelay.io/attempt"
COMPONENT_LABEL = "app.kubernetes.io/component"
RUN_SERVICE_ACCOUNT = "docrelay-run"
BROKER_AUDIENCE = contract.BROKER_AUDIENCE
BROKER_TOKEN_SECONDS = 600  # the API server's minimum
# The runner reads the token once for the egress proxy's password (docs/egress.md): it must
# outlive the run's deadline. The broker and the proxy refuse it once the run has ended.
BROKER_TOKEN_MARGIN_SECONDS = 120
CONTAINER = "run"
RUN_USER = 65532  # "nonroot" of distroless images
DEFAULT_IMAGE = "ghcr.io/docrelay/runner:{python}"
DEFAULT_NODE_IMAGE = "ghcr.io/docrelay/runner-node:{nodejs}"
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "128Mi"}
DEFAULT_LIMITS = {"cpu": "1", "memory": "512Mi"}
TMP_SIZE = "64Mi"
# The Job's deadline is a backstop behind the runner's own (which reports the timeout and
# leaves the log readable): this much later.
DEADLINE_MARGIN_SECONDS = 5
LOG_KEY = "log.gz"


@dataclass(frozen=True)
class RunAttempt:
    """What the builders need to know about one attempt of a run."""

    namespace: str
    run: str
    run_uid: str
    attempt: int
    integration: str
    revision: str
    code_config_map: str
    code_key: str
    code_hash: str
    event: Mapping[str, Any]
    idempotency_key: str
    timeout_seconds: int
    python: str = "3.12"
    nodejs: str | None = None  # a Node.js major version: the Node.js runner instead of Python's
    image: str | None = None
    # The operator's image per runtime (`python3.12`, `nodejs20`): the chart's runs.images.
    images: Mapping[str, str] | None = None
    runtime_class_name: str | None = None
    requests: Mapping[str, str] | None = None
    limits: Mapping[str, str] | None = None
    broker_url: str | None = None
    egress_proxy_url: str | None = None

    @property
    def job_name(self) -> str:
        return job_name(self.run, self.attempt)

    @property
    def runtime_key(self) -> str:
        return f"nodejs{self.nodejs}" if self.nodejs else f"python{self.python}"


def run_image(attempt: RunAttempt) -> str:
    """The Integration's own image, else the operator's image map, else the default."""
    if attempt.image:
        return attempt.image
    mapped = (attempt.images or {}).get(attempt.runtime_key)
    if mapped:
        return mapped
    if attempt.nodejs:
        return DEFAULT_NODE_IMAGE.format(nodejs=attempt.nodejs)
    return DEFAULT_IMAGE.format(python=attempt.python)


def runner_command(attempt: RunAttempt) -> list[str]:
    """The runner of the attempt's language, as the run images hold it (docs/runner.md)."""
    if attempt.nodejs:
        return ["node", contract.NODE_RUNNER]
    return ["python", "-m", "docrelay.runner"]


def code_file(attempt: RunAttempt) -> str:
    return contract.NODE_CODE_FILE if attempt.nodejs else contract.CODE_FILE


def build_run_event(
    run: IntegrationRun, integration: IntegrationSpec, attempt: int
) -> dict[str, Any]:
    """The ``event`` the code's ``lambda_handler(event, context)`` receives.

    Keys follow the platform's runtime contract (``event["document_identifier"]``), plus
    what docrelay adds: where the document lives, the trigger, the ids that make a repeated
    export detectable downstream, and whether this is a test run, and a dry one (writes
    answered with a simulated reply and not sent, docs/runner.md "Dry runs").
    """
    return {
        "document_identifier": run.spec.document_identifier,
        "trigger": run.spec.trigger,
        "workspace": integration.workspace,
        "document_type": integration.document_type,
        "event_id": run.spec.event_id,
        "idempotency_key": run.spec.idempotency_key,
        "test_run": run.spec.test,
        "dry_run": run.spec.dry_run,
        "attempt": attempt,
        "run": run.metadata.name,
        "integration": run.spec.integration,
        "replay_of": run.spec.replay_of,
    }


def run_labels(attempt: RunAttempt) -> dict[str, str]:
    return {
        INTEGRATION_LABEL: attempt.integration,
        REVISION_LABEL: attempt.revision,
        RUN_LABEL: attempt.run,
        ATTEMPT_LABEL: str(attempt.attempt),
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: "run",
    }


def _owned_by_run(attempt: RunAttempt) -> list[dict[str, Any]]:
    return [owner_reference(API_VERSION, "IntegrationRun", attempt.run, attempt.run_uid)]


def run_secret_name(run: str, attempt: int) -> str:
    return f"{job_name(run, attempt)}-env"


def log_config_map_name(run: str, attempt: int) -> str:
    return f"{job_name(run, attempt)}-log"


def egress_record_name(run: str, attempt: int) -> str:
    """The attempt's record of connections through the egress proxy, written by the gateway
    (docs/egress.md): one JSON entry per gateway process."""
    return f"{job_name(run, attempt)}-egress"


def broker_record_name(run: str, attempt: int) -> str:
    """The attempt's record of its broker actions (api_request, execute_action, upload_file;
    sent or simulated), written by the gateway (docs/broker.md) as the egress record is."""
    return f"{job_name(run, attempt)}-broker"


def build_run_service_account(namespace: str) -> dict[str, Any]:
    """The identity of run pods: no token mounted, no RoleBinding anywhere (docs/runs.md)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": RUN_SERVICE_ACCOUNT,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: "run"},
        },
        "automountServiceAccountToken": False,
    }


def build_run_secret(attempt: RunAttempt, sealed: Mapping[str, str]) -> dict[str, Any]:
    """The per-run Secret: each env var's value sealed under the one-run key (never the key)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": run_secret_name(attempt.run, attempt.attempt),
            "namespace": attempt.namespace,
            "labels": run_labels(attempt),
            "ownerReferences": _owned_by_run(attempt),
        },
        "type": "Opaque",
        "immutable": True,
        "data": {
            key: base64.b64encode(value.encode()).decode() for key, value in sorted(sealed.items())
        },
    }


def _resources(attempt: RunAttempt) -> dict[str, dict[str, str]]:
    return {
        "requests": {**DEFAULT_REQUESTS, **(attempt.requests or {})},
        "limits": {**DEFAULT_LIMITS, **(attempt.limits or {})},
    }


def broker_token_seconds(attempt: RunAttempt) -> int:
    """Long enough to last the whole run (the proxy password is read once), at least the API
    server's minimum."""
    deadline = attempt.timeout_seconds + DEADLINE_MARGIN_SECONDS
    return max(BROKER_TOKEN_SECONDS, deadline + BROKER_TOKEN_MARGIN_SECONDS)


def egress_proxy_env(proxy_url: str | None, broker_url: str | None) -> list[dict[str, str]]:
    """HTTPS_PROXY/HTTP_PROXY (both spellings) to the egress proxy, without credentials (the
    runner adds the pod's token), and NO_PROXY to the broker's host and port: the broker is
    reached directly, and nothing else on its host is (docs/egress.md)."""
    if not proxy_url:
        return []
    env = [{"name": name, "value": proxy_url} for name in contract.PROXY_VARIABLES]
    if broker_url:
        parts = urlsplit(broker_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.hostname:
            broker = f"{parts.hostname}:{port}"
            env += [{"name": name, "value": broker} for name in contract.NO_PROXY_VARIABLES]
    return env


def build_run_job(attempt: RunAttempt, sealed_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Job of one attempt, hardened as docs/runs.md says; owned by the run."""
    labels = run_labels(attempt)
    env: list[dict[str, Any]] = [
        {"name": contract.ENV_RUN, "value": attempt.run},
        {"name": contract.ENV_ATTEMPT, "value": str(attempt.attempt)},
        {"name": contract.ENV_TIMEOUT, "value": str(attempt.timeout_seconds)},
        {"name": contract.ENV_IDEMPOTENCY_KEY, "value": attempt.idempotency_key},
        {
            "name": contract.ENV_EVENT,
            "value": json.dumps(dict(attempt.event), sort_keys=True, separators=(",", ":")),
        },
        {"name": contract.ENV_CODE_PATH, "value": f"{contract.CODE_DIR}/{code_file(attempt)}"},
        {"name": contract.ENV_CODE_HASH, "value": attempt.code_hash},
        {"name": contract.ENV_SEALED_KEYS, "value": ",".join(sorted(sealed_keys))},
    ]
    if not attempt.nodejs:
        env += [
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ]
    else:
        # The Node.js runner sizes the code's heap below the container's memory limit, so a
        # JavaScript heap that grows too far ends as OutOfMemory with a message.
        env.append(
            {
                "name": contract.ENV_MEMORY_LIMIT_MIB,
                "valueFrom": {
                    "resourceFieldRef": {
                        "containerName": CONTAINER,
                        "resource": "limits.memory",
                        "divisor": "1Mi",
                    }
                },
            }
        )
    env.append({"name": "HOME", "value": "/tmp"})
    if attempt.broker_url:
        env.append({"name": contract.ENV_BROKER_URL, "value": attempt.broker_url})
    env += egress_proxy_env(attempt.egress_proxy_url, attempt.broker_url)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": run_image(attempt),
        "imagePullPolicy": "IfNotPresent",
        "command": runner_command(attempt),
        "env": env,
        "resources": _resources(attempt),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_USER,
            "runAsGroup": RUN_USER,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": contract.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {"name": "code", "mountPath": contract.CODE_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "broker-token", "mountPath": contract.BROKER_TOKEN_DIR, "readOnly": True},
        ],
    }
    if sealed_keys:
        container["envFrom"] = [
            {"secretRef": {"name": run_secret_name(attempt.run, attempt.attempt)}}
        ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": RUN_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_USER,
            "runAsGroup": RUN_USER,
            "fsGroup": RUN_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "code",
                "configMap": {
                    "name": attempt.code_config_map,
                    "items": [{"key": attempt.code_key, "path": code_file(attempt)}],
                    "defaultMode": 0o444,
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
            {
                "name": "broker-token",
                "projected": {
                    "defaultMode": 0o400,
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": BROKER_AUDIENCE,
                                "expirationSeconds": broker_token_seconds(attempt),
                                "path": "token",
                            }
                        }
                    ],
                },
            },
        ],
    }
    if attempt.runtime_class_name:
        pod_spec["runtimeClassName"] = attempt.runtime_class_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": attempt.job_name,
            "namespace": attempt.namespace,
            "labels": labels,
            "ownerReferences": _owned_by_run(attempt),
        },
        "spec": {
            "backoffLimit": 0,  # the operator owns retries: each attempt is a new Job
            "activeDeadlineSeconds": attempt.timeout_seconds + DEADLINE_MARGIN_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def build_log_config_map(
    namespace: str, run: str, run_uid: str, attempt: int, integration: str, gz: bytes
) -> dict[str, Any]:
    """The masked, compressed log of one attempt, owned by the run (outlives Job and pod)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": log_config_map_name(run, attempt),
            "namespace": namespace,
            "labels": {
                INTEGRATION_LABEL: integration,
                RUN_LABEL: run,
                ATTEMPT_LABEL: str(attempt),
                MANAGED_BY_LABEL: MANAGED_BY,
                COMPONENT_LABEL: "run-log",
            },
            "ownerReferences": [owner_reference(API_VERSION, "IntegrationRun", run, run_uid)],
        },
        "binaryData": {LOG_KEY: base64.b64encode(gz).decode()},
    }


MAX_LOG_BYTES = 1024 * 1024  # the stored (masked) log, uncompressed
MAX_STORED_GZ = 900 * 1024  # a ConfigMap holds at most 1 MiB


def resource_quantities(amounts: Any) -> dict[str, str] | None:
    """`cpu` and `memory` of a requests/limits model, as the Job's container wants them."""
    if amounts is None:
        return None
    out = {
        k: str(v) for k, v in (("cpu", amounts.cpu), ("memory", amounts.memory)) if v is not None
    }
    return out or None


def cap_log(text: str) -> str:
    """The last MAX_LOG_BYTES of a log, saying how much went first."""
    data = text.encode()
    if len(data) <= MAX_LOG_BYTES:
        return text
    dropped = len(data) - MAX_LOG_BYTES
    tail = data[-MAX_LOG_BYTES:].decode("utf-8", errors="ignore")
    return f"[docrelay: the first {dropped} bytes of this log were dropped (1 MiB cap)]\n{tail}"


def compress_log(text: str) -> bytes:
    """gzip, within what a ConfigMap holds (the oldest lines go first)."""
    while True:
        gz = gzip.compress(text.encode(), compresslevel=6, mtime=0)
        if len(gz) <= MAX_STORED_GZ:
            return gz
        text = "[docrelay: log shortened to fit]\n" + text[len(text) // 2 :]


def new_run(
    namespace: str,
    integration: str,
    event_id: str,
    document: str,
    trigger: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An IntegrationRun of `integration` on `document` for the event `event_id`, named from
    them (`naming.run_name`: whoever makes it for the same event computes the same name, so
    the API server's 409 makes it exactly once) with its idempotency key; `metadata` and
    `spec` add to what every run has. The gateway's, a person's test run, the agent's."""
    return {
        "apiVersion": API_VERSION,
        "kind": "IntegrationRun",
        "metadata": {
            "name": run_name(integration, event_id, document, trigger),
            **(metadata or {}),
        },
        "spec": {
            "integration": integration,
            "documentIdentifier": document,
            "trigger": trigger,
            "eventId": event_id,
            "idempotencyKey": idempotency_key(namespace, integration, event_id, document, trigger),
            **(spec or {}),
        },
    }
