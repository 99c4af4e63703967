"""An Integration's `spec.egress.cidrs` as a NetworkPolicy for its run pods (docs/egress.md):
created, kept in step with the spec, deleted when the cidrs go (and with the Integration, by
its owner reference). Thin: gather, decide (reconcile.egress), act (kube.egress). A start
syncs it from handlers.resume, for the Integrations whose spec has cidrs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from docrelay.builders.egress import build_egress_policy, egress_policy_name
from docrelay.handlers.context import from_memo
from docrelay.kube import Kube
from docrelay.kube import egress as kube_egress
from docrelay.reconcile.egress import egress_policy_action

log = logging.getLogger("docrelay.egress")


def sync_egress_policy(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    if namespace is None or meta.get("deletionTimestamp"):
        return  # the garbage collector removes the policy with its owner
    cidrs = (spec.get("egress") or {}).get("cidrs") or ()
    sync_policy(from_memo(memo).kube, namespace, name, uid, cidrs)


def sync_policy(kube: Kube, namespace: str, name: str, uid: str, cidrs: Iterable[Any]) -> None:
    """Create, replace or delete the Integration's policy as its cidrs say."""
    wanted_cidrs = tuple(str(c) for c in cidrs)
    wanted = build_egress_policy(namespace, name, uid, wanted_cidrs)
    policy = egress_policy_name(name)
    existing = kube_egress.get_policy(kube, namespace, policy)
    action = egress_policy_action(wanted, existing)
    if action == "create" and wanted is not None:
        kube_egress.create_policy(kube, namespace, wanted)
    elif action == "replace" and wanted is not None:
        kube_egress.replace_policy(kube, namespace, wanted)
    elif action == "delete":
        kube_egress.delete_policy(kube, namespace, policy)
    if action != "none":
        log.info("egress NetworkPolicy %s/%s: %s (%d cidrs)", namespace, policy, action,
                 len(wanted_cidrs))  # fmt: skip
