"""The Kubernetes calls of an Integration's egress NetworkPolicy and of a run attempt's
records: the egress proxy's `<job>-egress` (docs/egress.md) and the broker's `<job>-broker`
(docs/broker.md), masked alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from docrelay.gateway.egress import RECORD_COLLECTED, RECORD_STATE_LABEL, mask_record_part
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


def _read_record(kube: Kube, namespace: str, name: str) -> Any:
    """A record's ConfigMap; None when there is none."""
    try:
        return kube.core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading ConfigMap {namespace}/{name}") from None


def collect_record(
    kube: Kube, namespace: str, name: str, mask: Callable[[str], str] | None
) -> dict[str, str] | None:
    """An attempt's record (`<job>-egress` or `<job>-broker`), its free text masked with the
    run's values (`mask`; None: the values could not be opened, so it is dropped) and marked
    collected, so a gateway writing after this leaves it out (docs/egress.md). An update with
    the record's resourceVersion: a gateway write in between is read again and masked too. The
    masked data; None when there is no record."""
    for tries_left in range(4, -1, -1):
        config_map = _read_record(kube, namespace, name)
        if config_map is None:
            return None
        data = dict(config_map.data or {})
        masked = {key: mask_record_part(text, mask) for key, text in data.items()}
        labels = dict(config_map.metadata.labels or {})
        if masked == data and labels.get(RECORD_STATE_LABEL) == RECORD_COLLECTED:
            return masked
        config_map.data = masked
        config_map.metadata.labels = {**labels, RECORD_STATE_LABEL: RECORD_COLLECTED}
        try:
            kube.core.replace_namespaced_config_map(name, namespace, config_map)
            return masked
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status != 409 or not tries_left:
                raise _api_error(exc, f"masking ConfigMap {namespace}/{name}") from None
    return None  # not reached


def read_masked_record(
    kube: Kube, namespace: str, name: str, mask: Callable[[str], str] | None = None
) -> dict[str, str] | None:
    """An attempt's record as a reader outside the operator's collection may see it: as
    stored once collected (masked with the run's values); before that (the attempt still
    running, its collection failed, or a gateway created the record only after the operator
    had looked), its free text masked with `mask` (the caller's masker of the integration's
    values), or left out without one. None when there is no record."""
    config_map = _read_record(kube, namespace, name)
    if config_map is None:
        return None
    data = dict(config_map.data or {})
    if (config_map.metadata.labels or {}).get(RECORD_STATE_LABEL) == RECORD_COLLECTED:
        return data
    return {key: mask_record_part(text, mask) for key, text in data.items()}


def read_record_parts(
    kube: Kube, namespace: str, name: str, mask: Callable[[str], str] | None = None
) -> list[dict[str, Any]] | None:
    """The parts of a run attempt's record (one JSON object per gateway process that wrote
    one), read as read_masked_record reads them; a part that is not a JSON object is left out.
    None when there is no record."""
    data = read_masked_record(kube, namespace, name, mask)
    if data is None:
        return None
    parts = []
    for text in data.values():
        try:
            part = json.loads(text)
        except ValueError:
            continue
        if isinstance(part, dict):
            parts.append(part)
    return parts
