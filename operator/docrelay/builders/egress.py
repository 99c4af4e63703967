"""The NetworkPolicy of an Integration's `spec.egress.cidrs` (docs/egress.md). Pure.

Host names are enforced by the egress proxy; address blocks also by the CNI: this policy lets
the Integration's run pods reach its cidrs (any port), on top of the chart's base run policy
(cluster DNS, the broker, the proxy). NetworkPolicies add up, so it only ever widens that
Integration's pods, never another's. Owned by the Integration: it goes with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from docrelay.builders.revision import (
    INTEGRATION_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    owner_reference,
)
from docrelay.models.common import API_VERSION

COMPONENT_LABEL = "app.kubernetes.io/component"
POLICY_PREFIX = "docrelay-egress-"


def egress_policy_name(integration: str) -> str:
    return f"{POLICY_PREFIX}{integration}"


def build_egress_policy(
    namespace: str, integration: str, integration_uid: str, cidrs: Sequence[str]
) -> dict[str, Any] | None:
    """The policy that lets this Integration's run pods reach its cidrs; None without any."""
    if not cidrs:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": egress_policy_name(integration),
            "namespace": namespace,
            "labels": {
                INTEGRATION_LABEL: integration,
                MANAGED_BY_LABEL: MANAGED_BY,
                COMPONENT_LABEL: "egress",
            },
            "ownerReferences": [
                owner_reference(API_VERSION, "Integration", integration, integration_uid)
            ],
        },
        "spec": {
            # The labels every run pod of this Integration carries (builders/run.py).
            "podSelector": {
                "matchLabels": {
                    INTEGRATION_LABEL: integration,
                    MANAGED_BY_LABEL: MANAGED_BY,
                    COMPONENT_LABEL: "run",
                }
            },
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}} for cidr in sorted(cidrs)]}],
        },
    }
