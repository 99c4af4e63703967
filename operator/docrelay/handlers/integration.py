"""The Integration's handler: gather, decide (reconcile.integration), act, write status once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from docrelay.builders.revision import build_code_config_map, build_revision
from docrelay.handlers.boundary import DomainError, boundary, post_event
from docrelay.handlers.context import OperatorContext, from_memo
from docrelay.kube import ACCOUNTS, INTEGRATIONS, REVISIONS, SECRETS, ObjectRef
from docrelay.kube import runs as kube_runs
from docrelay.models import API_VERSION, Integration
from docrelay.reconcile.accounts import accounts_health
from docrelay.reconcile.deploy import DEPLOY_REQUEST_ANNOTATION, parse_request
from docrelay.reconcile.integration import (
    Observed,
    Plan,
    merge_conditions,
    plan_integration,
    with_ready_json,
)
from docrelay.reconcile.revision import revision_info, revision_status
from docrelay.reconcile.secrets import usable_secret_keys


def integration_ref(body: Mapping[str, Any]) -> ObjectRef:
    metadata = body.get("metadata") or {}
    return ObjectRef(
        api_version=API_VERSION,
        kind="Integration",
        namespace=metadata.get("namespace") or "",
        name=metadata.get("name") or "",
        uid=metadata.get("uid"),
    )


def parse_integration(body: Mapping[str, Any]) -> Integration:
    """kopf's body or the cache's object as an Integration."""
    try:
        return Integration.model_validate(
            {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "metadata": dict(body.get("metadata") or {}),
                "spec": dict(body.get("spec") or {}),
                "status": dict(body.get("status") or {}) or None,
            }
        )
    except ValidationError:
        raise DomainError(
            "the Integration does not match the API this operator knows; check that the "
            "CRDs and the operator are the same version",
            permanent=True,
            reason="UnsupportedSpec",
        ) from None


def reconcile_integration(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """create and update (spec or a docrelay annotation) come here; a start resumes every
    Integration through resume_integrations instead."""
    context = from_memo(memo)
    about = integration_ref(body)
    with boundary(context.kube, about, "reconciling the integration"):
        integration = parse_integration(body)
        observed = gather(context, integration)
        carry_out(context, about, integration, plan_integration(observed), observed.now)


def carry_out(
    context: OperatorContext, about: ObjectRef, integration: Integration, plan: Plan, now: datetime
) -> None:
    act(context, integration, plan, now)
    for note in plan.events:
        post_event(context.kube, about, note.type, note.reason, note.message)
    write_status(context, about, plan.status_patch())


def write_status(context: OperatorContext, about: ObjectRef, status: dict[str, Any]) -> None:
    """Write the status against a fresh read, guarded by its resourceVersion: kopf's body may
    be seconds old, and a condition another writer set since (Paused, AgentAvailable) must
    not be dropped by writing the whole list back."""
    for _ in range(5):
        current = context.kube.get(INTEGRATIONS, about.namespace, about.name)
        if current is None:
            return
        stored = (current.get("status") or {}).get("conditions") or []
        conditions = merge_conditions(status.get("conditions", []), stored)
        # Ready follows the freshly read Paused too (the run handler may have paused it since).
        conditions = with_ready_json(
            conditions,
            status.get("observedGeneration"),
            status.get("deployedRevision"),
            datetime.now(UTC),
        )
        merged = {**status, "conditions": conditions}
        version = current["metadata"]["resourceVersion"]
        if kube_runs.patch_integration_status(
            context.kube, about.namespace, about.name, merged, version
        ):
            return
    raise kopf.TemporaryError("the Integration kept changing while its status was written", delay=1)


def gather(context: OperatorContext, integration: Integration) -> Observed:
    kube = context.kube
    namespace = integration.metadata.namespace or ""
    name = integration.metadata.name or ""
    return observed_from(
        context,
        integration,
        kube.list_revisions(namespace, name),
        kube.list_objects(SECRETS, namespace),
        kube.list_objects(ACCOUNTS, namespace),
    )


def observed_from(
    context: OperatorContext,
    integration: Integration,
    revisions: Iterable[dict[str, Any]],
    secrets: Iterable[Mapping[str, Any]],
    accounts: Iterable[Mapping[str, Any]],
) -> Observed:
    """The plan's inputs from the integration's revisions (oldest first) and the namespace's
    IntegrationSecrets and ConnectedAccounts, however they were read."""
    name = integration.metadata.name or ""
    # A key counts only if its Active secret opens (reconcile.secrets writes that status).
    secret_keys = usable_secret_keys(secrets, name)
    health = accounts_health(accounts)
    return Observed(
        integration=integration,
        revisions=tuple(revision_info(r) for r in revisions),
        present_secret_keys=secret_keys,
        present_accounts=frozenset(health),
        account_health=health,
        request=parse_request(integration.metadata.annotations.get(DEPLOY_REQUEST_ANNOTATION)),
        now=datetime.now(UTC),
        history_limit=context.settings.revision_history_limit,
    )


def act(context: OperatorContext, integration: Integration, plan: Plan, now: datetime) -> None:
    """Create (idempotently) and check the code revision, then delete the revisions beyond the
    limit. Deleting a revision deletes its ConfigMap (owner reference)."""
    kube = context.kube
    namespace = integration.metadata.namespace or ""
    name = integration.metadata.name or ""
    code = integration.spec.code
    if code is not None and (plan.create_code_revision or plan.validate_code_revision):
        manifest = build_revision(
            integration=name,
            integration_uid=integration.metadata.uid or "",
            code=code,
            runtime=integration.spec.runtime,
        )
        revision = kube.create_or_get(REVISIONS, namespace, manifest)
        revision_name = revision["metadata"]["name"]
        if revision.get("spec", {}).get("codeHash") != manifest["spec"]["codeHash"]:
            raise DomainError(
                f"an IntegrationRevision named {revision_name} already exists with other code; "
                "delete it or rename the integration",
                permanent=True,
                reason="RevisionConflict",
            )
        kube.create_config_map(
            namespace,
            build_code_config_map(
                integration=name,
                revision=revision_name,
                revision_uid=revision["metadata"]["uid"],
                code=code,
            ),
        )
        if plan.code_check is not None:
            kube.patch_status(
                REVISIONS,
                namespace,
                revision_name,
                revision_status(plan.code_check, now, revision["metadata"].get("generation")),
            )
    for old in plan.delete_revisions:
        kube.delete(REVISIONS, namespace, old)
