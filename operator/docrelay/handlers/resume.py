"""Resuming every Integration at a start, from the caches (docs/operator.md, "A restart").

kopf's resume handlers ran the Integration handler once per Integration at each start: three
lists, a read and a status write each, and two patches of kopf's own progress annotations,
whether or not anything had changed. Here a start lists the revisions and the accounts once,
reads the Integrations and IntegrationSecrets from the runs machinery's caches, decides each
Integration's plan as the handler would (reconcile.integration) and carries it out only where
it changes something: an Integration whose world changed while no operator ran (its deployed
revision deleted, a secret or an account gone) is written, the others cost no call. What kopf's
create and update handlers reconcile (a new Integration, a changed spec, a deploy request) is
left to them (reconcile.integration.left_to_kopf).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import kopf

from docrelay.builders.revision import INTEGRATION_LABEL
from docrelay.handlers.boundary import DomainError, boundary
from docrelay.handlers.context import OperatorContext
from docrelay.handlers.egress import sync_policy
from docrelay.handlers.integration import (
    carry_out,
    integration_ref,
    observed_from,
    parse_integration,
)
from docrelay.kube import ACCOUNTS, REVISIONS, KubeError
from docrelay.kube.cache import Key, Store
from docrelay.reconcile.integration import left_to_kopf, plan_integration, resume_needs_nothing

if TYPE_CHECKING:
    from docrelay.handlers.run_controller import Runs

log = logging.getLogger("docrelay.operator")

RETRY_SECONDS = 10.0  # an Integration whose resume failed is tried again after this
ATTEMPTS = 5


def resume_integrations(context: OperatorContext, runs: Runs) -> None:
    """Once the Integrations and IntegrationSecrets caches have listed, resume every
    Integration; the ones that failed are tried again a few times."""
    integrations, secrets = runs.integrations, runs.secrets
    if integrations is None or secrets is None:
        return
    for store in (integrations, secrets):
        while not store.wait_synced(5.0):
            if runs.stop_event.is_set():
                return
    pending: set[Key] | None = None
    for _ in range(ATTEMPTS):
        if runs.stop_event.is_set():
            return
        pending = resume_once(context, integrations, secrets, pending)
        if not pending or runs.stop_event.wait(RETRY_SECONDS):
            return
    log.warning("resume: %d integration(s) could not be resumed; kopf's next event will",
                len(pending or ()))  # fmt: skip


def resume_once(
    context: OperatorContext, integrations: Store, secrets: Store, only: set[Key] | None
) -> set[Key]:
    """Resume the Integrations (`only` these keys, if given); the keys that failed."""
    kube = context.kube
    objects = [
        o
        for o in integrations.list_shallow()
        if only is None or ((o["metadata"].get("namespace", ""), o["metadata"]["name"]) in only)
    ]
    try:
        revisions = revisions_by_integration(kube.list_objects(REVISIONS, integrations.namespace))
        accounts = by_namespace(kube.list_objects(ACCOUNTS, integrations.namespace))
    except KubeError as exc:
        log.warning("resume: %s; will retry", exc)
        return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}
    failed: set[Key] = set()
    written = 0
    for raw in objects:
        metadata = raw["metadata"]
        key = (metadata.get("namespace", ""), metadata["name"])
        if metadata.get("deletionTimestamp"):
            continue
        about = integration_ref(raw)
        try:
            with boundary(kube, about, "resuming the integration"):
                cidrs = ((raw.get("spec") or {}).get("egress") or {}).get("cidrs") or ()
                if cidrs:  # none: a policy left over is egress-update's (spec.egress changed)
                    sync_policy(kube, key[0], key[1], about.uid or "", cidrs)
                try:
                    integration = parse_integration(raw)
                except DomainError:
                    continue  # kopf's create or update handler says so on the Integration
                observed = observed_from(
                    context,
                    integration,
                    revisions.get(key, ()),
                    secrets.list_shallow(key[0]),
                    accounts.get(key[0], ()),
                )
                if left_to_kopf(integration, observed.request):
                    continue
                plan = plan_integration(observed)
                if resume_needs_nothing(plan, raw.get("status"), observed.now):
                    continue
                carry_out(context, about, integration, plan, observed.now)
                written += 1
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.warning("resume of integration %s/%s failed: %s", key[0], key[1], exc)
            if isinstance(exc, kopf.TemporaryError):
                failed.add(key)
    log.info("resume: %d integration(s) seen, %d written", len(objects), written)
    return failed


def revisions_by_integration(items: Iterable[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    """The revisions of each (namespace, integration), oldest first, as Kube.list_revisions
    gives one integration's."""
    grouped: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        metadata = item.get("metadata") or {}
        integration = (item.get("spec") or {}).get("integration")
        if integration and (metadata.get("labels") or {}).get(INTEGRATION_LABEL) == integration:
            grouped[(metadata.get("namespace", ""), integration)].append(item)
    for revisions in grouped.values():
        revisions.sort(key=lambda i: (i["metadata"]["creationTimestamp"], i["metadata"]["name"]))
    return grouped


def by_namespace(items: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        grouped[(item.get("metadata") or {}).get("namespace", "")].append(item)
    return grouped
