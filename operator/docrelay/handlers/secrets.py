"""IntegrationSecrets: open each in memory, decide Active/Superseded, write statuses.

A kopf event handler, on purpose: it keeps no state on the object, so kopf writes neither
its progress nor its diff-base annotation (`last-handled-configuration`) on secrets; the
spec of a secret is never copied anywhere. Any change in a group (integration + key)
re-plans the whole group, so creating or deleting one secret updates the others.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from docrelay.handlers.boundary import boundary, post_event
from docrelay.handlers.context import from_memo
from docrelay.handlers.keys import Sealing, sealing_from_memo
from docrelay.kube import SECRETS, Kube, ObjectRef
from docrelay.models import API_VERSION
from docrelay.models.conditions import READY, ConditionStatus, find_condition
from docrelay.reconcile.secrets import plan_secret_statuses, secret_info, status_patch

log = logging.getLogger("docrelay.sealing")


def secret_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    context = from_memo(memo)
    namespace = body.metadata.namespace or ""
    spec = body.get("spec", {})
    about = ObjectRef(
        API_VERSION, "IntegrationSecret", namespace, body.metadata.name or "", body.metadata.uid
    )
    with boundary(context.kube, about, "checking the integration's secrets"):
        reconcile_group(
            context.kube,
            sealing_from_memo(memo),
            namespace,
            str(spec.get("integration", "")),
            str(spec.get("key", "")),
        )


def reconcile_group(
    kube: Kube, sealing: Sealing | None, namespace: str, integration: str, key: str
) -> None:
    """Plan and write the status of every secret of one integration and key."""
    objects = [
        o
        for o in kube.list_objects(SECRETS, namespace)
        if (o.get("spec") or {}).get("integration") == integration
        and (o.get("spec") or {}).get("key") == key
    ]
    secrets = {s.name: (s, o) for o in objects for s in [secret_info(o)]}
    now = datetime.now(UTC)
    planned = plan_secret_statuses(
        [s for s, _ in secrets.values()], sealing.ring if sealing else None, now
    )
    for name, status in planned.items():
        secret, obj = secrets[name]
        patch = status_patch(obj.get("status"), status)
        if not patch:
            continue
        kube.patch_status(SECRETS, namespace, name, patch)
        old_ready = find_condition(secret.status.conditions, READY)
        ready = find_condition(status.conditions, READY)
        if ready is None or (old_ready is not None and old_ready.reason == ready.reason):
            continue
        about = ObjectRef(
            API_VERSION, "IntegrationSecret", namespace, name, obj["metadata"].get("uid")
        )
        if ready.status is ConditionStatus.FALSE and ready.reason != "Superseded":
            post_event(kube, about, "Warning", ready.reason, ready.message)
        elif ready.reason == "Superseded" and status.superseded_by:
            post_event(kube, about, "Normal", "Superseded", f"superseded by {status.superseded_by}")
        log.info("IntegrationSecret %s/%s: %s (%s)", namespace, name, status.state, ready.reason)


def resync_all(kube: Kube, namespaces: list[str], sealing: Sealing) -> None:
    """Re-check every secret, e.g. once the keys are loaded after a failed first load."""
    for namespace in namespaces:
        groups = {
            (str(o["spec"].get("integration", "")), str(o["spec"].get("key", "")))
            for o in kube.list_objects(SECRETS, namespace)
            if isinstance(o.get("spec"), dict)
        }
        for integration, key in sorted(groups):
            reconcile_group(kube, sealing, namespace, integration, key)


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "docrelay.io", "v1alpha1", "integrationsecrets", registry=registry, id="check-secrets"
    )(secret_event)
