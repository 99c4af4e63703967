"""IntegrationRun: one execution of an integration's code for one document and one event."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from docrelay.models.agent import RunFixStatus
from docrelay.models.common import (
    RUN_NAME_MAX,
    ApiModel,
    CrdInfo,
    CustomResource,
    EnvVarName,
    EventId,
    IdempotencyKey,
    IntegrationName,
    ObjectName,
    PlatformId,
    PrinterColumn,
    RevisionName,
    RunName,
    SpecModel,
    Trigger,
    cel,
    rules,
)
from docrelay.models.conditions import ObservedStatus

MAX_LOG_TAIL = 10000  # the document platform's run list shows 10,000 characters too
MAX_ERROR_MESSAGE = 4096
MAX_RESULT_SUMMARY = 1024
CANCEL_MESSAGE = "a cancelled run cannot be resumed: cancel cannot go back to false"
DRY_RUN_MESSAGE = "dryRun is for test runs only: set test: true too"


class RunPhase(StrEnum):
    """Where a run is in its life."""

    QUEUED = "Queued"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    DEAD_LETTERED = "DeadLettered"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset(
    {
        RunPhase.SUCCEEDED,
        RunPhase.FAILED,
        RunPhase.TIMED_OUT,
        RunPhase.DEAD_LETTERED,
        RunPhase.CANCELLED,
    }
)


class ErrorClass(StrEnum):
    """What kind of failure ended the last attempt; decides whether it is retried."""

    CODE_ERROR = "CodeError"
    TRANSIENT_ERROR = "TransientError"
    TIMEOUT = "Timeout"
    OUT_OF_MEMORY = "OutOfMemory"
    CONFIGURATION_ERROR = "ConfigurationError"
    INFRASTRUCTURE_ERROR = "InfrastructureError"
    EGRESS_DENIED = "EgressDenied"


class IntegrationRunSpec(SpecModel):
    """What to run. Everything but cancel is fixed at creation."""

    model_config = ConfigDict(
        json_schema_extra=rules(cel("!self.dryRun || self.test", DRY_RUN_MESSAGE, ".dryRun")),
    )

    immutable_fields = (
        "integration",
        "document_identifier",
        "trigger",
        "event_id",
        "idempotency_key",
        "test",
        "dry_run",
        "revision",
        "replay_of",
    )

    integration: IntegrationName = Field(description="The Integration this run executes.")
    document_identifier: PlatformId = Field(
        description="The identifier of the document passed to the code (never its data)."
    )
    trigger: Trigger = Field(description="The event that caused the run.")
    event_id: EventId = Field(
        description=(
            "The id of the delivery that caused the run (the webhook's id); the CLI makes one "
            "for test runs and replays."
        )
    )
    idempotency_key: IdempotencyKey = Field(
        description=(
            "Given to the code as event['idempotency_key'] and the same on every attempt, so "
            "the downstream system can drop a repeated export."
        )
    )
    test: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description=(
            "A test run: never retried, not counted in the integration's status, and may run "
            "a revision that is not deployed."
        ),
    )
    dry_run: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description=(
            "A dry test run (test runs only; the agent's own test runs are dry): the broker "
            "answers execute_action, upload_file and writing api_request calls with a marked, "
            "simulated reply and the egress proxy sends no plain-HTTP write and opens no HTTPS "
            "tunnel; the run's records say what was not sent (docs/runner.md, 'Dry runs')."
        ),
    )
    revision: RevisionName | None = Field(
        default=None,
        description="Run this IntegrationRevision; empty: the integration's deployed revision.",
    )
    replay_of: RunName | None = Field(
        default=None, description="The run this one replays (same document and event, a new run)."
    )
    cancel: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description="True: stop the run (its Job is deleted) and end it as Cancelled. One-way.",
        json_schema_extra=rules(cel("!oldSelf || self", CANCEL_MESSAGE)),
    )

    @model_validator(mode="after")
    def _dry_only_when_test(self) -> Self:
        if self.dry_run and not self.test:
            raise ValueError(DRY_RUN_MESSAGE)
        return self

    def update_errors(self, old: Self) -> list[str]:
        errors = super().update_errors(old)
        if old.cancel and not self.cancel:
            errors.append(CANCEL_MESSAGE)
        return errors


class SecretVersion(ApiModel):
    """Which sealed value of one environment variable a run received."""

    key: EnvVarName = Field(description="The environment variable name.")
    secret: ObjectName = Field(description="The IntegrationSecret it came from.")
    fingerprint: Annotated[
        str,
        StringConstraints(
            strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9:+/=_-]+$"
        ),
    ] = Field(description="That secret's fingerprint (status.fingerprint), never the value.")


Count = Annotated[int, Field(strict=True, ge=0)]


class EgressSummary(ApiModel):
    """The last attempt's connections through the egress proxy (docs/egress.md), as recorded
    when its result was collected; `docrelay logs RUN --egress` lists them."""

    connections: Count = Field(default=0, description="Connections made or tried.")
    denied: Count = Field(default=0, description="Of those, refused by the proxy.")
    bytes_out: Count = Field(default=0, description="Bytes sent by the run, all connections.")
    bytes_in: Count = Field(default=0, description="Bytes received by the run.")


class IntegrationRunStatus(ObservedStatus):
    """What happened. Condition Ready: True once Succeeded; otherwise False with the phase as
    reason."""

    phase: RunPhase | None = Field(default=None, description="Where the run is in its life.")
    attempt: Annotated[int, Field(strict=True, ge=0, le=10)] = Field(
        default=0, description="The current or last attempt, from 1; 0 before the first starts."
    )
    revision: RevisionName | None = Field(
        default=None, description="The IntegrationRevision the current or last attempt ran."
    )
    job_name: ObjectName | None = Field(default=None, description="The Job of the current attempt.")
    start_time: datetime | None = Field(default=None, description="When the first attempt started.")
    completion_time: datetime | None = Field(default=None, description="When the run finished.")
    next_attempt_at: datetime | None = Field(
        default=None, description="When the next attempt starts, while a retry waits."
    )
    exit_code: Annotated[int, Field(strict=True, ge=0, le=255)] | None = Field(
        default=None, description="The exit code of the last attempt's container."
    )
    error_class: ErrorClass | None = Field(
        default=None, description="What kind of failure ended the last attempt."
    )
    exception_type: (
        Annotated[
            str,
            StringConstraints(
                strict=True, min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$"
            ),
        ]
        | None
    ) = Field(default=None, description="The Python exception type, e.g. httpx.ReadTimeout.")
    error_message: Annotated[str, Field(strict=True, max_length=MAX_ERROR_MESSAGE)] | None = Field(
        default=None, description="The last attempt's error, with secret values masked."
    )
    retryable: Annotated[bool, Field(strict=True)] | None = Field(
        default=None, description="Whether the last error is one a retry may fix."
    )
    log_tail: Annotated[str, Field(strict=True, max_length=MAX_LOG_TAIL)] | None = Field(
        default=None,
        description=(
            "The end of the last attempt's log (up to 10,000 characters), secret values masked; "
            "`docrelay logs` shows the full log."
        ),
    )
    result_summary: Annotated[str, Field(strict=True, max_length=MAX_RESULT_SUMMARY)] | None = (
        Field(
            default=None, description="What the code reported it did, e.g. 'created bill INV-1042'."
        )
    )
    secret_versions: tuple[SecretVersion, ...] = Field(
        default_factory=tuple,
        max_length=64,
        description="The sealed value of each secret the last attempt received.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key"]},
    )
    fix: RunFixStatus | None = Field(
        default=None,
        description="The agent's fix of this run (docrelay fix): its proposal and test result.",
    )
    egress: EgressSummary | None = Field(
        default=None,
        description="The last attempt's connections through the egress proxy, counted.",
    )
    replayed_by: RunName | None = Field(
        default=None,
        description=(
            "A replay of this failed run (docrelay replay) that succeeded: the failure is "
            "handled, and Argo CD no longer counts this run as Degraded."
        ),
    )


class IntegrationRun(CustomResource):
    """One run of an integration's code for one document and one event."""

    crd = CrdInfo(
        kind="IntegrationRun",
        plural="integrationruns",
        short_names=("drrun",),
        max_name_length=RUN_NAME_MAX,
        name_length_reason="the Job of each attempt is named <run>-<attempt>",
        selectable_fields=(".spec.integration", ".spec.documentIdentifier", ".status.phase"),
        printer_columns=(
            PrinterColumn("Integration", ".spec.integration"),
            PrinterColumn("Document", ".spec.documentIdentifier"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Attempt", ".status.attempt", "integer"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Trigger", ".spec.trigger", priority=1),
            PrinterColumn("Test", ".spec.test", "boolean", priority=1),
            PrinterColumn("Revision", ".status.revision", priority=1),
            PrinterColumn("Error", ".status.errorClass", priority=1),
            PrinterColumn("Job", ".status.jobName", priority=1),
        ),
    )

    kind: Literal["IntegrationRun"] = "IntegrationRun"
    spec: IntegrationRunSpec
    status: IntegrationRunStatus | None = None
