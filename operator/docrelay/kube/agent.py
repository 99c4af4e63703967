"""API calls of the agent worker: Secrets it reads (the model's API key, the platform's
credentials) and listings across namespaces. Beside the client in kube/__init__.py (same 404
policy and messages)."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes.client.exceptions import ApiException

from docrelay.kube import Kube, _api_error
from docrelay.models.common import GROUP, VERSION


def read_secret_data(kube: Kube, namespace: str, name: str) -> dict[str, str] | None:
    """The Secret's values, decoded, or None if it does not exist. Callers never log them."""
    try:
        secret = kube.core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading Secret {namespace}/{name}") from None
    return {
        key: base64.b64decode(value).decode("utf-8", errors="replace")
        for key, value in (secret.data or {}).items()
    }


def list_everywhere(kube: Kube, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    """Objects of one docrelay kind in the namespace, or in every namespace (None)."""
    if namespace:
        return kube.list_objects(plural, namespace)
    try:
        result = kube.custom.list_cluster_custom_object(GROUP, VERSION, plural)
    except ApiException as exc:
        raise _api_error(exc, f"listing {plural}") from None
    return list(result.get("items", []))
