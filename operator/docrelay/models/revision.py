"""IntegrationRevision: one immutable version of an integration's code and runtime."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from docrelay.models.common import (
    REVISION_NAME_MAX,
    Actor,
    ApiModel,
    CamelCaseReason,
    CrdInfo,
    CustomResource,
    IntegrationName,
    ObjectName,
    PrinterColumn,
    RevisionName,
    RunName,
    Runtime,
    Sha256Digest,
    SpecModel,
    cel,
    condition_path,
    rules,
)
from docrelay.models.conditions import READY, ObservedStatus
from docrelay.models.run import RunPhase

MAX_TEST_RUNS = 10
CODE_KEY = "handler.py"


class RevisionConditionType(StrEnum):
    """The condition types of an IntegrationRevision."""

    READY = READY
    TESTED = "Tested"


class SourceType(StrEnum):
    """Who wrote the code."""

    USER = "User"
    AGENT = "Agent"
    FIX = "Fix"


FIX_OF_RUN_MESSAGE = "fixOfRun is required when type is Fix and only allowed then"
AGENT_MODEL_MESSAGE = "model is required when type is Agent or Fix"
USER_NO_AGENT_FIELDS_MESSAGE = "a User revision sets neither model nor promptHash"

ConfigMapKey = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$"),
]
ModelName = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"
    ),
]


class RevisionSource(ApiModel):
    """Where the code came from."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel("(self.type == 'Fix') == has(self.fixOfRun)", FIX_OF_RUN_MESSAGE),
            cel("self.type == 'User' || has(self.model)", AGENT_MODEL_MESSAGE),
            cel(
                "self.type != 'User' || (!has(self.model) && !has(self.promptHash))",
                USER_NO_AGENT_FIELDS_MESSAGE,
            ),
        )
    )

    type: SourceType = Field(
        description=(
            "User (spec.code of the Integration), Agent (written from instructions) or Fix "
            "(the agent's answer to a failed run)."
        )
    )
    user: Actor | None = Field(
        default=None, description="Who applied the code or asked the agent, when known."
    )
    model: ModelName | None = Field(default=None, description="The language model the agent used.")
    prompt_hash: Sha256Digest | None = Field(
        default=None,
        description="sha256 of the prompt the agent sent (the prompt itself is not kept).",
    )
    fix_of_run: RunName | None = Field(
        default=None, description="The failed IntegrationRun this revision fixes (type Fix)."
    )

    @model_validator(mode="after")
    def _fields_match_type(self) -> Self:
        if (self.type is SourceType.FIX) != (self.fix_of_run is not None):
            raise ValueError(FIX_OF_RUN_MESSAGE)
        if self.type is not SourceType.USER and self.model is None:
            raise ValueError(AGENT_MODEL_MESSAGE)
        if self.type is SourceType.USER and (
            self.model is not None or self.prompt_hash is not None
        ):
            raise ValueError(USER_NO_AGENT_FIELDS_MESSAGE)
        return self


class CodeReference(ApiModel):
    """The ConfigMap holding the code. Immutable and owned by the revision."""

    name: ObjectName = Field(description="The ConfigMap's name, in this namespace.")
    key: ConfigMapKey = Field(default=CODE_KEY, description="The key holding the Python source.")


class IntegrationRevisionSpec(SpecModel):
    """One version of the code and the runtime it runs under. Never changes."""

    immutable_spec = True
    immutable_spec_message = "spec is immutable: a changed revision is a new IntegrationRevision"

    integration: IntegrationName = Field(description="The Integration this revision belongs to.")
    code_config_map: CodeReference = Field(
        description=(
            "Where the code is: a ConfigMap, so this object stays small and the runner mounts "
            "the code as a file."
        )
    )
    code_hash: Sha256Digest = Field(
        description=(
            "sha256 of the code, 'sha256:<hex>'. The runner refuses code whose hash differs."
        )
    )
    runtime: Runtime = Field(
        default=Runtime(),  # frozen, so one shared instance is safe
        description="The runtime the code was validated for and runs under.",
    )
    source: RevisionSource = Field(description="Who wrote the code, and how.")
    parent: RevisionName | None = Field(
        default=None, description="The revision this one was derived from (the one a fix replaces)."
    )


class ValidationResult(ApiModel):
    """The result of checking the code without running it."""

    valid: Annotated[bool, Field(strict=True)] = Field(
        description="The code compiles and defines lambda_handler(event, context)."
    )
    checked_at: datetime = Field(description="When the check ran.")
    reason: CamelCaseReason | None = Field(
        default=None, description="Why it is not valid: SyntaxError, MissingHandler, HashMismatch."
    )
    message: Annotated[str, Field(strict=True, max_length=1024)] | None = Field(
        default=None, description="The compiler's message, e.g. 'invalid syntax'."
    )
    line: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        default=None, description="The line of a syntax error, from 1."
    )
    column: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        default=None, description="The column of a syntax error, from 0."
    )


class RevisionTestRun(ApiModel):
    """A test run of this revision."""

    name: RunName = Field(description="The IntegrationRun's name.")
    phase: RunPhase = Field(description="Its phase when last seen.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")


class IntegrationRevisionStatus(ObservedStatus):
    """Validation and tests. Conditions: Ready (valid and its ConfigMap present), Tested."""

    validation: ValidationResult | None = Field(
        default=None, description="The static check's result."
    )
    test_runs: tuple[RevisionTestRun, ...] = Field(
        default_factory=tuple,
        max_length=MAX_TEST_RUNS,
        description="The newest test runs of this revision (up to 10).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )


class IntegrationRevision(CustomResource):
    """One immutable version of an integration's code, where it came from, and its checks."""

    crd = CrdInfo(
        kind="IntegrationRevision",
        plural="integrationrevisions",
        short_names=("drrev",),
        max_name_length=REVISION_NAME_MAX,
        name_length_reason="it is a label value on runs and Jobs",
        selectable_fields=(".spec.integration", ".spec.source.type"),
        printer_columns=(
            PrinterColumn("Integration", ".spec.integration"),
            PrinterColumn("Source", ".spec.source.type"),
            PrinterColumn("Valid", ".status.validation.valid", "boolean"),
            PrinterColumn("Ready", condition_path(READY)),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Tested", condition_path(RevisionConditionType.TESTED), priority=1),
            PrinterColumn("Parent", ".spec.parent", priority=1),
            PrinterColumn("Fix Of", ".spec.source.fixOfRun", priority=1),
            PrinterColumn("Hash", ".spec.codeHash", priority=1),
        ),
    )

    kind: Literal["IntegrationRevision"] = "IntegrationRevision"
    spec: IntegrationRevisionSpec
    status: IntegrationRevisionStatus | None = None
