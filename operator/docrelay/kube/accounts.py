"""API calls of connected accounts: list them (one namespace or all), read the tenant's
Pipedream Secret. Beside the client in kube/__init__.py (same 404 policy and error messages)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from docrelay.kube import ACCOUNTS, Kube, _api_error
from docrelay.models.common import GROUP, VERSION


def list_accounts(kube: Kube, namespace: str | None) -> list[dict[str, Any]]:
    """ConnectedAccounts of one namespace, or of every namespace (None)."""
    if namespace is not None:
        return kube.list_objects(ACCOUNTS, namespace)
    try:
        result = kube.custom.list_cluster_custom_object(GROUP, VERSION, ACCOUNTS)
    except ApiException as exc:
        raise _api_error(exc, f"listing {ACCOUNTS} in every namespace") from None
    return list(result.get("items", []))


def read_secret_data(kube: Kube, namespace: str, name: str) -> dict[str, str] | None:
    """A Secret's data (base64 values), or None if it does not exist. The values never go
    into a message."""
    try:
        secret = kube.core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading Secret {namespace}/{name}") from None
    return dict(secret.data or {})
