"""Keep an Integration's egress NetworkPolicy in step with its `spec.egress.cidrs`; count a
run attempt's egress record. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from docrelay.models.run import EgressSummary

Action = Literal["create", "replace", "delete", "none"]


def _managed(obj: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    metadata = obj.get("metadata") or {}
    return (obj.get("spec"), metadata.get("labels"), metadata.get("ownerReferences"))


def egress_policy_action(
    wanted: Mapping[str, Any] | None, existing: Mapping[str, Any] | None
) -> Action:
    """What to do so the cluster holds `wanted` (None: no policy)."""
    if wanted is None:
        return "none" if existing is None else "delete"
    if existing is None:
        return "create"
    labels = (existing.get("metadata") or {}).get("labels") or {}
    wanted_labels = (wanted.get("metadata") or {}).get("labels") or {}
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    wanted_owners = (wanted.get("metadata") or {}).get("ownerReferences") or []
    same_owner = [o.get("uid") for o in owners] == [o.get("uid") for o in wanted_owners]
    same = (
        existing.get("spec") == wanted.get("spec")
        and wanted_labels.items() <= labels.items()
        and same_owner
    )
    return "none" if same else "replace"


def egress_summary(record_data: Mapping[str, str] | None) -> EgressSummary | None:
    """The counts of an attempt's record ConfigMap (`<job>-egress`, one JSON part per gateway
    process, docs/egress.md); None when there is none (no proxy, or no connection)."""
    if not record_data:
        return None
    totals = {"connections": 0, "denied": 0, "bytesOut": 0, "bytesIn": 0}
    for text in record_data.values():
        try:
            part = json.loads(text)
        except ValueError:
            continue
        if not isinstance(part, dict):
            continue
        for key in totals:
            value = part.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                totals[key] += value
    return EgressSummary.model_validate(totals)
