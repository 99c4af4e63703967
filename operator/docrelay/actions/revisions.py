"""Revisions: their code, whether one may be deployed, and asking the operator to deploy or
revert (the request annotation it acts on; docs/operator.md, "Deploy and revert")."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from docrelay.actions import Refused
from docrelay.builders.revision import code_digest
from docrelay.kube import INTEGRATIONS, REVISIONS, Kube
from docrelay.models.revision import CODE_KEY
from docrelay.reconcile.agent import untested_refusal
from docrelay.reconcile.deploy import DEPLOY_REQUEST_ANNOTATION, DeployAction, DeployRequest
from docrelay.reconcile.revision import revision_info


def revision_code(kube: Kube, namespace: str, name: str) -> tuple[dict[str, Any], str]:
    """A revision and its code, checked against its codeHash."""
    revision = kube.get(REVISIONS, namespace, name)
    if revision is None:
        raise Refused(f"revision {name} not found in namespace {namespace}")
    reference = revision["spec"]["codeConfigMap"]
    data = kube.read_config_map_data(namespace, reference["name"])
    key = reference.get("key", CODE_KEY)
    if data is None or key not in data:
        raise Refused(f"the code of revision {name} (ConfigMap {reference['name']}) is missing")
    code = data[key]
    if code_digest(code) != revision["spec"]["codeHash"]:
        raise Refused(f"the code of revision {name} does not match its codeHash")
    return revision, code


def check_deployable(kube: Kube, namespace: str, integration: str, name: str) -> None:
    """Refuse a revision that is not this integration's, not checked yet, not valid, or
    written by the agent and not tested."""
    revision = kube.get(REVISIONS, namespace, name)
    if revision is None or revision.get("spec", {}).get("integration") != integration:
        raise Refused(
            f"revision {name} of integration {integration} not found in namespace {namespace} "
            f"(list them with: docrelay revisions {integration} -n {namespace})"
        )
    info = revision_info(revision)
    if info.valid is None:
        raise Refused(f"revision {name} has not been checked yet; try again in a moment")
    if not info.valid:
        raise Refused(f"revision {name} is not valid: {info.problem}")
    untested = untested_refusal(info.source, info.tested)
    if untested:
        raise Refused(
            f"revision {name} cannot be deployed: {untested} (see: kubectl get drrev {name} "
            "-o wide, docrelay runs)"
        )


def revert_target(integration: dict[str, Any]) -> str:
    """The revision deployed before the current one, or Refused."""
    status = integration.get("status") or {}
    history = status.get("history") or []
    last = history[-1] if history else None
    if (
        not last
        or last.get("revision") != status.get("deployedRevision")
        or not last.get("previousRevision")
    ):
        raise Refused(
            f"integration {integration['metadata']['name']} has no previously deployed revision "
            "to revert to"
        )
    return str(last["previousRevision"])


def request_deploy(
    kube: Kube, namespace: str, integration: str, action: DeployAction, revision: str, user: str
) -> DeployRequest:
    """Ask the operator to deploy (or revert to) `revision`; it records the outcome in the
    integration's status (handledDeployRequest, history)."""
    request = DeployRequest(
        id=uuid.uuid4().hex,
        action=action,
        revision=revision,
        requested_by=user,
        requested_at=datetime.now(UTC).replace(microsecond=0),
    )
    kube.patch_annotations(
        INTEGRATIONS, namespace, integration, {DEPLOY_REQUEST_ANNOTATION: request.encode()}
    )
    return request
