"""IntegrationSecrets: open each in memory, decide Active/Superseded, write statuses.

A kopf event handler, on purpose: it keeps no state on the object, so kopf writes neither
its progress nor its diff-base annotation (`last-handled-configuration`) on secrets; the
spec of a secret is never copied anywhere. Any change in a group (integration + key)
re-plans the whole group, so creating or deleting one secret updates the others.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from docrelay.handlers.boundary import boundary, post_event
from docrelay.handlers.context import from_memo
from docrelay.handlers.dependencies import cached_secrets
from docrelay.handlers.keys import Sealing, sealing_from_memo
from docrelay.handlers.run_controller import RUNS_MEMO_KEY
from docrelay.kube import INTEGRATIONS, SECRETS, Kube, KubeError, ObjectRef
from docrelay.kube.runs import RUNS
from docrelay.models import API_VERSION
from docrelay.models.conditions import READY, ConditionStatus, find_condition
from docrelay.models.run import RunPhase
from docrelay.reconcile.secrets import (
    RunUse,
    plan_prunes,
    plan_secret_statuses,
    secret_info,
    status_patch,
)
from docrelay.settings import OperatorSettings

log = logging.getLogger("docrelay.sealing")


def secret_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    context = from_memo(memo)
    namespace = body.metadata.namespace or ""
    spec = body.get("spec", {})
    about = ObjectRef(
        API_VERSION, "IntegrationSecret", namespace, body.metadata.name or "", body.metadata.uid
    )
    listed = None
    if kwargs.get("type") is None:
        # kopf's listing at a start (no change): the group is read from the runs machinery's
        # cache, listed at the same start, instead of one list per secret.
        listed = cached_secrets(memo, context.kube, namespace)
    with boundary(context.kube, about, "checking the integration's secrets"):
        reconcile_group(
            context.kube,
            sealing_from_memo(memo),
            namespace,
            str(spec.get("integration", "")),
            str(spec.get("key", "")),
            listed,
        )


def reconcile_group(
    kube: Kube,
    sealing: Sealing | None,
    namespace: str,
    integration: str,
    key: str,
    listed: list[dict[str, Any]] | None = None,
) -> None:
    """Plan and write the status of every secret of one integration and key (`listed`: the
    namespace's IntegrationSecrets if at hand, else they are listed)."""
    if listed is None:
        listed = kube.list_objects(SECRETS, namespace)
    objects = [
        o
        for o in listed
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


# --- pruning superseded secrets ------------------------------------------------------------

PRUNE_INTERVAL_MAX = 300.0


def run_use(obj: dict[str, Any]) -> RunUse:
    """What pruning needs of a raw IntegrationRun (an unreadable phase counts as unfinished)."""
    status = obj.get("status") or {}
    phase = status.get("phase")
    try:
        finished = RunPhase(str(phase)).finished if phase else False
    except ValueError:
        finished = False
    versions = status.get("secretVersions") or []
    return RunUse(
        integration=str((obj.get("spec") or {}).get("integration", "")),
        finished=finished,
        secrets=frozenset(str(v.get("secret", "")) for v in versions if isinstance(v, dict)),
    )


def prune_namespace(kube: Kube, namespace: str, grace: timedelta, cached: Any = None) -> list[str]:
    """Delete the superseded secrets of one namespace that `plan_prunes` lets go, each exactly
    as it was read (a secret changed since stays for the next round); post an Event on its
    Integration (names and fingerprints only). Returns the names deleted. `cached`: the runs
    machinery (docrelay.handlers.run_controller), whose caches give the secrets and the
    unfinished runs without a list (only unfinished runs keep a secret)."""
    secrets_store = getattr(cached, "secrets", None)
    runs_store = getattr(cached, "cache", None)
    if secrets_store is not None and runs_store is not None and runs_store.synced:
        listed = secrets_store.list_shallow(namespace) if secrets_store.synced else None
        unfinished = [
            o
            for ns, name in cached.index.unfinished_runs()
            if ns == namespace and (o := runs_store.get(ns, name)) is not None
        ]
    else:
        listed, unfinished = None, kube.list_objects(RUNS, namespace)
    if listed is None:
        listed = kube.list_objects(SECRETS, namespace)
    objects = {o["metadata"]["name"]: o for o in listed}
    runs = [run_use(o) for o in unfinished]
    prunes = plan_prunes([secret_info(o) for o in objects.values()], runs, datetime.now(UTC), grace)
    deleted = []
    for prune in prunes:
        metadata = objects[prune.name]["metadata"]
        preconditions = {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]}
        if not kube.delete(SECRETS, namespace, prune.name, preconditions):
            continue
        deleted.append(prune.name)
        log.info(
            "IntegrationSecret %s/%s: pruned (superseded by %s)",
            namespace,
            prune.name,
            prune.superseded_by,
        )
        integration = kube.get(INTEGRATIONS, namespace, prune.integration)
        if integration is not None:
            about = ObjectRef(
                API_VERSION,
                "Integration",
                namespace,
                prune.integration,
                integration["metadata"].get("uid"),
            )
            post_event(kube, about, "Normal", "SecretPruned", prune.message(grace))
    return deleted


class SecretPruner:
    """Deletes superseded IntegrationSecrets after the grace period (docs/secrets.md), one
    round per interval in a background thread (not a kopf timer: kopf would put a finalizer
    on every secret). The grace period is long; the interval is a fraction of it."""

    def __init__(
        self, kube: Kube, settings: OperatorSettings, namespace: str | None, memo: Any = None
    ) -> None:
        self.kube = kube
        self.memo = memo  # kopf's memo: the runs machinery's caches, once it has started
        self.grace = timedelta(seconds=settings.superseded_secret_grace_seconds)
        self.interval = min(
            max(settings.superseded_secret_grace_seconds / 4, 1.0), PRUNE_INTERVAL_MAX
        )
        self.namespace = namespace  # None: every namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="secret-pruning", daemon=True)

    def start(self) -> None:
        if self.grace > timedelta(0):  # 0: superseded secrets are kept
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.namespace is not None:
                    namespaces = [self.namespace]
                else:
                    namespaces = sorted(
                        {o["metadata"]["namespace"] for o in self.kube.list_objects(SECRETS, None)}
                    )
                cached = self.memo.get(RUNS_MEMO_KEY) if self.memo is not None else None
                for namespace in namespaces:
                    prune_namespace(self.kube, namespace, self.grace, cached)
            except KubeError as exc:
                log.warning(
                    "pruning superseded secrets: %s; next round in %.0f s", exc, self.interval
                )
            except Exception:  # a bug must not end the thread; the next round tries again
                log.exception("pruning superseded secrets failed unexpectedly")


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "docrelay.io", "v1alpha1", "integrationsecrets", registry=registry, id="check-secrets"
    )(secret_event)
