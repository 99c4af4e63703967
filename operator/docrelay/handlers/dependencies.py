"""Wake an Integration when one of its IntegrationSecrets or ConnectedAccounts appears, goes, or
(an account) changes health.

The handler sets one annotation, trigger.docrelay.io/dependencies, to a digest of which of the
integration's secrets and accounts exist. The digest changes exactly when SecretsReady or
AccountsReady may change, so the Integration is written only then; kopf sees the annotation
change and runs the Integration's handler, the one writer of its status.
"""

from __future__ import annotations

from typing import Any

import kopf

from docrelay.handlers.accounts import check_if_new
from docrelay.handlers.boundary import boundary
from docrelay.handlers.context import from_memo
from docrelay.kube import ACCOUNTS, INTEGRATIONS, SECRETS, Kube, ObjectRef
from docrelay.models import API_VERSION
from docrelay.reconcile.accounts import accounts_health
from docrelay.reconcile.deploy import DEPENDENCIES_ANNOTATION, dependencies_digest
from docrelay.reconcile.secrets import usable_secret_keys


def secret_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    kube = from_memo(memo).kube
    namespace = body.metadata.namespace or ""
    integration_name = body.get("spec", {}).get("integration")
    if not integration_name:
        return
    about = ObjectRef(API_VERSION, "IntegrationSecret", namespace, body.metadata.name or "")
    with boundary(kube, about, "updating the integration's secrets"):
        integration = kube.get(INTEGRATIONS, namespace, integration_name)
        if integration is not None:
            touch(kube, integration)


def account_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    kube = from_memo(memo).kube
    namespace = body.metadata.namespace or ""
    account = body.metadata.name or ""
    about = ObjectRef(API_VERSION, "ConnectedAccount", namespace, account)
    if kwargs.get("type") != "DELETED":
        check_if_new(body, memo)  # a new or edited spec is checked with Pipedream at once
    with boundary(kube, about, "updating the integrations of the account"):
        for integration in kube.list_objects(INTEGRATIONS, namespace):
            if account in integration.get("spec", {}).get("connectedAccounts", []):
                touch(kube, integration)


def touch(kube: Kube, integration: dict[str, Any]) -> None:
    """Set the dependencies digest on the Integration if it changed."""
    metadata = integration["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    spec = integration.get("spec", {})
    keys = usable_secret_keys(kube.list_objects(SECRETS, namespace), name)  # Active and opening
    wanted_accounts = set(spec.get("connectedAccounts", []))
    # Name and health: AccountsReady changes when an account appears, goes, or turns dead.
    accounts = {
        f"{name}={health}"
        for name, health in accounts_health(kube.list_objects(ACCOUNTS, namespace)).items()
        if name in wanted_accounts
    }
    digest = dependencies_digest(keys & set(spec.get("secrets", [])), accounts)
    if (metadata.get("annotations") or {}).get(DEPENDENCIES_ANNOTATION) != digest:
        kube.patch_annotations(INTEGRATIONS, namespace, name, {DEPENDENCIES_ANNOTATION: digest})
