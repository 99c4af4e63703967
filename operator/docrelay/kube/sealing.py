"""API calls of sealed secrets: the key Secret, the certificate ConfigMap, the webhook
configurations. Beside the client in kube/__init__.py (same 404/409 policy and error
messages), kept apart so the sealing machinery has its own small surface."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from docrelay.builders.sealing import webhook_configuration_patch
from docrelay.kube import Kube, KubeError, _api_error


@dataclass(frozen=True)
class StoredSecret:
    data: dict[str, bytes]
    annotations: dict[str, str]
    resource_version: str


def read_secret(kube: Kube, namespace: str, name: str) -> StoredSecret | None:
    try:
        secret = kube.core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading Secret {namespace}/{name}") from None
    return StoredSecret(
        data={k: base64.b64decode(v) for k, v in (secret.data or {}).items()},
        annotations=dict(secret.metadata.annotations or {}),
        resource_version=str(secret.metadata.resource_version),
    )


def create_secret(kube: Kube, namespace: str, body: dict[str, Any]) -> bool:
    """Create; False if it already exists (409: someone else created it first)."""
    try:
        kube.core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise _api_error(exc, f"creating Secret {namespace}/{body['metadata']['name']}") from None
    return True


def replace_secret(kube: Kube, namespace: str, body: dict[str, Any], resource_version: str) -> bool:
    """Replace if unchanged since `resource_version`; False on a conflict (409)."""
    name = body["metadata"]["name"]
    body = {**body, "metadata": {**body["metadata"], "resourceVersion": resource_version}}
    try:
        kube.core.replace_namespaced_secret(name, namespace, body)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise _api_error(exc, f"replacing Secret {namespace}/{name}") from None
    return True


def annotate_secret(kube: Kube, namespace: str, name: str, annotations: dict[str, str]) -> None:
    try:
        kube.core.patch_namespaced_secret(
            name, namespace, {"metadata": {"annotations": annotations}}
        )
    except ApiException as exc:
        if exc.status == 404:
            raise KubeError(f"Secret {namespace}/{name} not found", 404) from None
        raise _api_error(exc, f"annotating Secret {namespace}/{name}") from None


def apply_config_map(kube: Kube, namespace: str, body: dict[str, Any]) -> bool:
    """Create, or replace when its data differ; True if anything was written."""
    name = body["metadata"]["name"]
    try:
        current = kube.core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, f"reading ConfigMap {namespace}/{name}") from None
        current = None
    try:
        if current is None:
            kube.core.create_namespaced_config_map(namespace, body)
            return True
        if dict(current.data or {}) == body["data"]:
            return False
        metadata = {**body["metadata"], "resourceVersion": current.metadata.resource_version}
        kube.core.replace_namespaced_config_map(name, namespace, {**body, "metadata": metadata})
        return True
    except ApiException as exc:
        if exc.status == 409:
            return False  # someone else wrote it meanwhile; the next check compares again
        raise _api_error(exc, f"writing ConfigMap {namespace}/{name}") from None


def apply_webhook_configuration(kube: Kube, body: dict[str, Any]) -> bool:
    """Create the Mutating/ValidatingWebhookConfiguration, or patch it: one we created is
    ours whole (replaced webhooks when our digest differs); in anyone else's (a Helm
    release's) only the clientConfig of our webhooks (the CA bundle of this start's
    certificate, where to call): labels, annotations and rules stay as they are. Always a
    patch, never an update. True if anything was written."""
    api = client.AdmissionregistrationV1Api(kube.api_client)
    kind = body["kind"]
    name = body["metadata"]["name"]
    mutating = kind == "MutatingWebhookConfiguration"
    read = (
        api.read_mutating_webhook_configuration
        if mutating
        else api.read_validating_webhook_configuration
    )
    try:
        try:
            current = read(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            create = (
                api.create_mutating_webhook_configuration
                if mutating
                else api.create_validating_webhook_configuration
            )
            create(body)
            return True
        stored = kube.api_client.sanitize_for_serialization(current)
        ops = webhook_configuration_patch(stored, body)
        if not ops:
            return False
        patch = (
            api.patch_mutating_webhook_configuration
            if mutating
            else api.patch_validating_webhook_configuration
        )
        patch(name, ops, _content_type="application/json-patch+json")
        return True
    except ApiException as exc:
        if exc.status in (409, 422):
            return False  # changed meanwhile: the next check compares again
        raise _api_error(exc, f"writing {kind} {name}") from None
