"""Wake an Integration when one of its IntegrationSecrets or ConnectedAccounts appears, goes, or
(an account) changes health.

The handler sets one annotation, trigger.docrelay.io/dependencies, to a digest of which of the
integration's secrets and accounts exist. The digest changes exactly when SecretsReady or
AccountsReady may change, so the Integration is written only then; kopf sees the annotation
change and runs the Integration's handler, the one writer of its status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from docrelay.handlers.accounts import check_if_new
from docrelay.handlers.boundary import boundary, post_event
from docrelay.handlers.context import from_memo
from docrelay.handlers.run_controller import RUNS_MEMO_KEY
from docrelay.kube import ACCOUNTS, INTEGRATIONS, SECRETS, Kube, ObjectRef
from docrelay.kube.cache import integration_or_get
from docrelay.models import API_VERSION
from docrelay.reconcile.accounts import accounts_health
from docrelay.reconcile.deploy import DEPENDENCIES_ANNOTATION, dependencies_digest
from docrelay.reconcile.orphans import ORPHANED, orphan_condition, orphan_patch
from docrelay.reconcile.secrets import usable_secret_keys

SECRETS_SYNC_WAIT = 10.0


def secret_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    kube = from_memo(memo).kube
    namespace = body.metadata.namespace or ""
    integration_name = body.get("spec", {}).get("integration")
    if not integration_name:
        return
    about = ObjectRef(
        API_VERSION, "IntegrationSecret", namespace, body.metadata.name or "", body.metadata.uid
    )
    # At a start (kopf's listing, no change) the Integration and the secrets come from the
    # runs machinery's caches, listed at the same start: no call per secret. A change reads
    # them from the API (a cache a moment behind this process's own last digest write could
    # hide a change back).
    at_start = kwargs.get("type") is None
    with boundary(kube, about, "updating the integration's secrets"):
        if at_start:
            integration = cached_integration(memo, kube, namespace, integration_name)
        else:
            integration = kube.get(INTEGRATIONS, namespace, integration_name)
        if integration is not None:
            touch(kube, integration, cached_secrets(memo, kube, namespace) if at_start else None)
        if kwargs.get("type") != "DELETED" and not body.metadata.get("deletionTimestamp"):
            cached = memo if at_start else None
            names = [] if integration is not None else integration_names(kube, namespace, cached)
            mark_orphan(kube, dict(body), integration is not None, names)


def cached_secrets(memo: Any, kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """The namespace's IntegrationSecrets from the runs machinery's cache (waiting a little
    for its first list at a start, when every Integration is seen at once), else listed."""
    store = getattr(memo.get(RUNS_MEMO_KEY), "secrets", None)
    if store is not None and store.wait_synced(SECRETS_SYNC_WAIT):
        return store.list_shallow(namespace)
    return kube.list_objects(SECRETS, namespace)


def cached_integration(memo: Any, kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The Integration from the runs machinery's cache (waiting a little for its first list),
    else read; a missing one is only ever concluded from the API."""
    store = getattr(memo.get(RUNS_MEMO_KEY), "integrations", None)
    if store is not None and not store.wait_synced(SECRETS_SYNC_WAIT):
        store = None
    return integration_or_get(store, kube, namespace, name)


def appeared_or_went(**kwargs: Any) -> bool:
    """kopf's filter for integration_seen: an Integration created or deleted."""
    return kwargs.get("type") in ("ADDED", "DELETED")


def integration_seen(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """An Integration appeared or went: its secrets are orphaned exactly while it does not
    exist. (At a start, each secret's own listing event checks that, in secret_changed.)"""
    kind = kwargs.get("type")
    if kind not in (None, "ADDED", "DELETED"):
        return  # a change to an existing integration does not change whether it exists
    kube = from_memo(memo).kube
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    exists = kind != "DELETED"
    about = ObjectRef(API_VERSION, "Integration", namespace, name, body.metadata.uid)
    with boundary(kube, about, "checking the integration's secrets"):
        secrets = [
            s
            for s in cached_secrets(memo, kube, namespace)
            if (s.get("spec") or {}).get("integration") == name
        ]
        if not secrets:
            return
        names = [] if exists else integration_names(kube, namespace)
        for secret in secrets:
            mark_orphan(kube, secret, exists, names)


def integration_names(kube: Kube, namespace: str, memo: Any = None) -> list[str]:
    """The namespace's Integrations, from the runs machinery's cache if `memo` is given and
    it has listed, else listed."""
    store = getattr(memo.get(RUNS_MEMO_KEY), "integrations", None) if memo is not None else None
    if store is not None and store.wait_synced(SECRETS_SYNC_WAIT):
        listed = store.list_shallow(namespace)
    else:
        listed = kube.list_objects(INTEGRATIONS, namespace)
    return [i["metadata"]["name"] for i in listed]


def mark_orphan(kube: Kube, secret: dict[str, Any], exists: bool, names: list[str]) -> None:
    """Write the secret's Orphaned condition if it changed; a Warning Event when it turns
    True (names only, never a value)."""
    metadata, spec = secret["metadata"], secret.get("spec") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    now = datetime.now(UTC)
    condition = orphan_condition(
        namespace, str(spec.get("integration", "")), exists, names, metadata.get("generation"), now
    )
    patch, became = orphan_patch(secret.get("status"), condition, now)
    if patch is None:
        return
    kube.patch_status(SECRETS, namespace, name, patch)
    if became:
        about = ObjectRef(API_VERSION, "IntegrationSecret", namespace, name, metadata.get("uid"))
        post_event(kube, about, "Warning", ORPHANED, condition.message)


def account_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    kube = from_memo(memo).kube
    namespace = body.metadata.namespace or ""
    account = body.metadata.name or ""
    about = ObjectRef(API_VERSION, "ConnectedAccount", namespace, account)
    if kwargs.get("type") != "DELETED":
        check_if_new(body, memo)  # a new or edited spec is checked with Pipedream at once
    at_start = kwargs.get("type") is None  # as in secret_changed: the caches only at a start
    with boundary(kube, about, "updating the integrations of the account"):
        store = getattr(memo.get(RUNS_MEMO_KEY), "integrations", None) if at_start else None
        if store is not None and store.wait_synced(SECRETS_SYNC_WAIT):
            integrations = store.list_shallow(namespace)
        else:
            integrations = kube.list_objects(INTEGRATIONS, namespace)
        for integration in integrations:
            if account in integration.get("spec", {}).get("connectedAccounts", []):
                secrets = cached_secrets(memo, kube, namespace) if at_start else None
                touch(kube, integration, secrets)


def touch(
    kube: Kube, integration: dict[str, Any], secrets: list[dict[str, Any]] | None = None
) -> None:
    """Set the dependencies digest on the Integration if it changed (`secrets`: the
    namespace's IntegrationSecrets, if already at hand)."""
    metadata = integration["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    spec = integration.get("spec", {})
    if secrets is None:
        secrets = kube.list_objects(SECRETS, namespace)
    keys = usable_secret_keys(secrets, name)  # Active and opening
    wanted_accounts = set(spec.get("connectedAccounts", []))
    # Name and health: AccountsReady changes when an account appears, goes, or turns dead.
    listed = kube.list_objects(ACCOUNTS, namespace) if wanted_accounts else []
    accounts = {
        f"{name}={health}"
        for name, health in accounts_health(listed).items()
        if name in wanted_accounts
    }
    digest = dependencies_digest(keys & set(spec.get("secrets", [])), accounts)
    if (metadata.get("annotations") or {}).get(DEPENDENCIES_ANNOTATION) != digest:
        kube.patch_annotations(INTEGRATIONS, namespace, name, {DEPENDENCIES_ANNOTATION: digest})
