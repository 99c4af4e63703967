"""IntegrationSecret: one sealed value for one environment variable of one integration."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from docrelay.models.common import (
    CrdInfo,
    CustomResource,
    EnvVarName,
    IntegrationName,
    ObjectName,
    PrinterColumn,
    SpecModel,
    cel,
    condition_path,
    rules,
)
from docrelay.models.conditions import READY, ObservedStatus

MAX_PLAINTEXT = 32768
# RSA-4096-wrapped data key, nonce, AES-GCM ciphertext of 32 KiB and tag, base64: about 45 KB.
MAX_SEALED = 65536

ONE_VALUE_MESSAGE = "set exactly one of value and encryptedValue"
KEY_ID_REQUIRED_MESSAGE = "keyId is required with encryptedValue"
KEY_ID_WITH_VALUE_MESSAGE = "keyId is set by the sealing webhook; leave it out with value"

KeyId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    ),
]
Fingerprint = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9:+/=_-]+$"),
]


class SecretState(StrEnum):
    """Whether runs use this secret."""

    ACTIVE = "Active"
    SUPERSEDED = "Superseded"


class IntegrationSecretSpec(SpecModel):
    """One value for one environment variable, sealed; readable by no one, runs excepted."""

    immutable_fields = ("integration", "key")
    model_config = ConfigDict(
        # A validation error must not quote the plaintext value (it may reach a log).
        hide_input_in_errors=True,
        json_schema_extra=rules(
            cel("has(self.value) != has(self.encryptedValue)", ONE_VALUE_MESSAGE),
            cel(
                "!has(self.encryptedValue) || has(self.keyId)",
                KEY_ID_REQUIRED_MESSAGE,
                field_path=".keyId",
            ),
            cel("!has(self.value) || !has(self.keyId)", KEY_ID_WITH_VALUE_MESSAGE, ".keyId"),
        ),
    )

    integration: IntegrationName = Field(
        description="The Integration whose runs receive this value. Part of the seal."
    )
    key: EnvVarName = Field(
        description=(
            "The environment variable name the code reads (os.environ[key]); one of the "
            "Integration's spec.secrets. Part of the seal."
        )
    )
    value: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_PLAINTEXT)] | None = (
        Field(
            default=None,
            description=(
                "Plaintext, for convenience: the operator's webhook seals it into "
                "encryptedValue before the object is stored, so it is never saved or read back."
            ),
        )
    )
    encrypted_value: (
        Annotated[
            str,
            StringConstraints(
                strict=True, min_length=1, max_length=MAX_SEALED, pattern=r"^[A-Za-z0-9+/]+={0,2}$"
            ),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "The sealed value (base64), from `docrelay seal`: opens only for this namespace, "
            "integration and key."
        ),
    )
    key_id: KeyId | None = Field(
        default=None, description="The sealing key that sealed encryptedValue."
    )

    @model_validator(mode="after")
    def _one_sealed_or_plain_value(self) -> Self:
        if (self.value is None) == (self.encrypted_value is None):
            raise ValueError(ONE_VALUE_MESSAGE)
        if self.encrypted_value is not None and self.key_id is None:
            raise ValueError(KEY_ID_REQUIRED_MESSAGE)
        if self.value is not None and self.key_id is not None:
            raise ValueError(KEY_ID_WITH_VALUE_MESSAGE)
        return self


class IntegrationSecretStatus(ObservedStatus):
    """What can be shown about the value, which is never the value. Condition Ready: True when
    sealed with a known key and Active."""

    state: SecretState | None = Field(
        default=None,
        description="Active (runs use it) or Superseded (a newer secret has the same key).",
    )
    superseded_by: ObjectName | None = Field(
        default=None, description="The newer IntegrationSecret with the same integration and key."
    )
    fingerprint: Fingerprint | None = Field(
        default=None, description="Tells two values apart without revealing either."
    )
    sealed_at: datetime | None = Field(default=None, description="When the value was sealed.")
    key_id: KeyId | None = Field(default=None, description="The sealing key in use.")


class IntegrationSecret(CustomResource):
    """A sealed value for one environment variable of one integration."""

    crd = CrdInfo(
        kind="IntegrationSecret",
        plural="integrationsecrets",
        short_names=("drsec",),
        selectable_fields=(".spec.integration", ".spec.key"),
        printer_columns=(
            PrinterColumn("Integration", ".spec.integration"),
            PrinterColumn("Key", ".spec.key"),
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Ready", condition_path(READY)),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Orphaned", condition_path("Orphaned"), priority=1),
            PrinterColumn("Fingerprint", ".status.fingerprint", priority=1),
            PrinterColumn("Key ID", ".status.keyId", priority=1),
            PrinterColumn("Sealed", ".status.sealedAt", "date", priority=1),
        ),
    )

    model_config = ConfigDict(hide_input_in_errors=True)

    kind: Literal["IntegrationSecret"] = "IntegrationSecret"
    spec: IntegrationSecretSpec
    status: IntegrationSecretStatus | None = None
