"""The Kubernetes calls of an Integration's egress NetworkPolicy (docs/egress.md)."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from docrelay.kube import Kube, _api_error


def _networking(kube: Kube) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(kube.api_client)


def get_policy(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        policy = _networking(kube).read_namespaced_network_policy(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading NetworkPolicy {namespace}/{name}") from None
    return dict(kube.api_client.sanitize_for_serialization(policy))


def create_policy(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    try:
        _networking(kube).create_namespaced_network_policy(namespace, body)
    except ApiException as exc:
        if exc.status == 409:  # created meanwhile: the next reconcile compares it
            return
        raise _api_error(exc, f"creating NetworkPolicy {namespace}/{name}") from None


def replace_policy(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    """Merge-patch spec, labels and owner onto the existing policy."""
    name = body["metadata"]["name"]
    patch = {
        "metadata": {
            "labels": body["metadata"]["labels"],
            "ownerReferences": body["metadata"]["ownerReferences"],
        },
        "spec": body["spec"],
    }
    try:
        _networking(kube).patch_namespaced_network_policy(name, namespace, patch)
    except ApiException as exc:
        raise _api_error(exc, f"updating NetworkPolicy {namespace}/{name}") from None


def delete_policy(kube: Kube, namespace: str, name: str) -> None:
    try:
        _networking(kube).delete_namespaced_network_policy(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, f"deleting NetworkPolicy {namespace}/{name}") from None
