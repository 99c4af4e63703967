"""IntegrationRevision and its code ConfigMap, built from an Integration's code and runtime."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from docrelay.models.common import API_VERSION, Runtime
from docrelay.models.revision import CODE_KEY

INTEGRATION_LABEL = "docrelay.io/integration"
REVISION_LABEL = "docrelay.io/revision"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "docrelay-operator"
NAME_HASH_LENGTH = 10


def code_digest(code: str) -> str:
    """`sha256:<hex>` of the code, as IntegrationRevision.spec.codeHash holds it."""
    return "sha256:" + hashlib.sha256(code.encode()).hexdigest()


def revision_name(integration: str, code: str, runtime: Runtime) -> str:
    """`<integration>-<hash>`: the same code and runtime always give the same name.

    The runtime is normalised through its model, so an omitted default and the same value
    spelled out name the same revision.
    """
    canonical = json.dumps(
        {
            "code": code,
            "runtime": runtime.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:NAME_HASH_LENGTH]
    return f"{integration}-{digest}"


def code_config_map_name(revision: str) -> str:
    return f"{revision}-code"


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    """The owner's reference: deleting the owner deletes what it owns."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_revision(
    *,
    integration: str,
    integration_uid: str,
    code: str,
    runtime: Runtime,
) -> dict[str, Any]:
    """The IntegrationRevision made from an Integration's spec.code, owned by the Integration."""
    name = revision_name(integration, code, runtime)
    return {
        "apiVersion": API_VERSION,
        "kind": "IntegrationRevision",
        "metadata": {
            "name": name,
            "labels": {INTEGRATION_LABEL: integration, MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [
                owner_reference(API_VERSION, "Integration", integration, integration_uid)
            ],
        },
        "spec": {
            "integration": integration,
            "codeConfigMap": {"name": code_config_map_name(name), "key": CODE_KEY},
            "codeHash": code_digest(code),
            "runtime": runtime.model_dump(mode="json", by_alias=True, exclude_none=True),
            "source": {"type": "User"},
        },
    }


def build_code_config_map(
    *, integration: str, revision: str, revision_uid: str, code: str
) -> dict[str, Any]:
    """The immutable ConfigMap holding a revision's code, owned by the revision."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": code_config_map_name(revision),
            "labels": {
                INTEGRATION_LABEL: integration,
                REVISION_LABEL: revision,
                MANAGED_BY_LABEL: MANAGED_BY,
            },
            "ownerReferences": [
                owner_reference(API_VERSION, "IntegrationRevision", revision, revision_uid)
            ],
        },
        "immutable": True,
        "data": {CODE_KEY: code},
    }
