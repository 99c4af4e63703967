"""The docrelay API (group docrelay.io, version v1alpha1) as pydantic models. No I/O.

The CRDs in crds/ are generated from these models: `python -m docrelay.models.crdgen`.
"""

from docrelay.models.account import ConnectedAccount, ConnectedAccountSpec, ConnectedAccountStatus
from docrelay.models.common import API_VERSION, GROUP, VERSION, CustomResource, Trigger
from docrelay.models.conditions import Condition, ConditionStatus, find_condition, set_condition
from docrelay.models.conversation import (
    IntegrationConversation,
    IntegrationConversationSpec,
    IntegrationConversationStatus,
)
from docrelay.models.integration import Integration, IntegrationSpec, IntegrationStatus
from docrelay.models.revision import (
    IntegrationRevision,
    IntegrationRevisionSpec,
    IntegrationRevisionStatus,
)
from docrelay.models.run import IntegrationRun, IntegrationRunSpec, IntegrationRunStatus, RunPhase
from docrelay.models.secret import IntegrationSecret, IntegrationSecretSpec, IntegrationSecretStatus

RESOURCES: tuple[type[CustomResource], ...] = (
    Integration,
    IntegrationRevision,
    IntegrationRun,
    IntegrationSecret,
    ConnectedAccount,
    IntegrationConversation,
)
"""Every kind of the API, in the order docs and CRDs list them."""

KINDS: dict[str, type[CustomResource]] = {r.crd.kind: r for r in RESOURCES}

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "RESOURCES",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "ConnectedAccount",
    "ConnectedAccountSpec",
    "ConnectedAccountStatus",
    "CustomResource",
    "Integration",
    "IntegrationConversation",
    "IntegrationConversationSpec",
    "IntegrationConversationStatus",
    "IntegrationRevision",
    "IntegrationRevisionSpec",
    "IntegrationRevisionStatus",
    "IntegrationRun",
    "IntegrationRunSpec",
    "IntegrationRunStatus",
    "IntegrationSecret",
    "IntegrationSecretSpec",
    "IntegrationSecretStatus",
    "IntegrationSpec",
    "IntegrationStatus",
    "RunPhase",
    "Trigger",
    "find_condition",
    "set_condition",
]
