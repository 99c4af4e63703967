"""Apply manifests to a cluster the way `kubectl apply --server-side` does."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic

FIELD_MANAGER = "docrelay-devkit"


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def apply(
    api: client.ApiClient, docs: Iterable[dict[str, Any]], namespace: str | None = None
) -> list[Any]:
    """Server-side apply each document; namespaced ones default to ``namespace``."""
    dyn = dynamic.DynamicClient(api)
    applied = []
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = None
        if resource.namespaced:
            ns = doc.get("metadata", {}).get("namespace") or namespace
        applied.append(
            resource.server_side_apply(
                body=doc, name=doc["metadata"]["name"], namespace=ns,
                field_manager=FIELD_MANAGER, force_conflicts=True,
            )
        )
    return applied


def install_crds(api: client.ApiClient, crds_dir: Path, timeout: float = 30) -> list[str]:
    """Apply every CRD in ``crds_dir`` and wait until each is Established; returns names."""
    docs = load_documents(sorted(crds_dir.glob("*.yaml")))
    if not docs:
        return []
    apply(api, docs)
    ext = client.ApiextensionsV1Api(api)
    names = [d["metadata"]["name"] for d in docs]
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = ext.read_custom_resource_definition(name)
            conditions = crd.status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout}s: {conditions}")
            time.sleep(0.2)
    # The dynamic client caches discovery; a new client sees the new kinds.
    return names
