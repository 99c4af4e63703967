"""ConnectedAccount: an app account connected through Pipedream Connect."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from docrelay.models.common import (
    CrdInfo,
    CustomResource,
    PrinterColumn,
    SpecModel,
    condition_path,
)
from docrelay.models.conditions import READY, ObservedStatus

AppSlug = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_]*$"),
]
AccountId = Annotated[
    str,
    StringConstraints(strict=True, min_length=5, max_length=64, pattern=r"^apn_[A-Za-z0-9]+$"),
]
ProjectId = Annotated[
    str,
    StringConstraints(strict=True, min_length=6, max_length=64, pattern=r"^proj_[A-Za-z0-9]+$"),
]
ExternalUserId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=256, pattern=r"^[!-~]+$")
]


class PipedreamEnvironment(StrEnum):
    """Pipedream's x-pd-environment, spelled as Pipedream spells it."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ConnectedAccountSpec(SpecModel):
    """Which Pipedream account. The credentials stay with Pipedream; nothing secret is here."""

    app: AppSlug = Field(description="The app's Pipedream slug, e.g. xero_accounting_api.")
    account_id: AccountId = Field(description="The Pipedream account id, apn_...")
    external_user_id: ExternalUserId = Field(
        description="The external user id the account was connected for."
    )
    project_id: ProjectId | None = Field(
        default=None, description="The Pipedream project, proj_...; empty: the operator's project."
    )
    environment: PipedreamEnvironment | None = Field(
        default=None, description="development or production; empty: the operator's environment."
    )


class ConnectedAccountStatus(ObservedStatus):
    """What Pipedream last said about the account. Condition Ready: True when healthy."""

    healthy: Annotated[bool, Field(strict=True)] | None = Field(
        default=None, description="Pipedream's healthy flag: the credentials last worked."
    )
    dead: Annotated[bool, Field(strict=True)] | None = Field(
        default=None, description="Pipedream's dead flag: the account must be connected again."
    )
    expires_at: datetime | None = Field(
        default=None, description="When the credentials expire, if Pipedream says."
    )
    last_checked_at: datetime | None = Field(
        default=None, description="When Pipedream was last asked."
    )


class ConnectedAccount(CustomResource):
    """An app account connected through Pipedream Connect, usable by integrations that list it."""

    crd = CrdInfo(
        kind="ConnectedAccount",
        plural="connectedaccounts",
        short_names=("drca",),
        selectable_fields=(".spec.app",),
        printer_columns=(
            PrinterColumn("App", ".spec.app"),
            PrinterColumn("Ready", condition_path(READY)),
            PrinterColumn("Healthy", ".status.healthy", "boolean"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Account", ".spec.accountId", priority=1),
            PrinterColumn("External User", ".spec.externalUserId", priority=1),
            PrinterColumn("Expires", ".status.expiresAt", "date", priority=1),
            PrinterColumn("Checked", ".status.lastCheckedAt", "date", priority=1),
            PrinterColumn("Reason", condition_path(READY, "reason"), priority=1),
        ),
    )

    kind: Literal["ConnectedAccount"] = "ConnectedAccount"
    spec: ConnectedAccountSpec
    status: ConnectedAccountStatus | None = None
