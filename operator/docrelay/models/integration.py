"""Integration: what runs, for which documents, on which event, with which credentials."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from docrelay.models.agent import IntegrationAgentStatus
from docrelay.models.common import (
    INTEGRATION_NAME_MAX,
    Actor,
    ApiModel,
    CamelCaseReason,
    Cidr,
    CrdInfo,
    CustomResource,
    EnvVarName,
    Hostname,
    ObjectName,
    PlatformId,
    PrinterColumn,
    Quantity,
    RevisionName,
    RunName,
    Runtime,
    SpecModel,
    Trigger,
    UniqueTuple,
    cel,
    condition_path,
    parse_quantity,
    rules,
)
from docrelay.models.conditions import READY, ObservedStatus
from docrelay.models.run import RunPhase

# Inline code is copied into two annotations (kubectl's last-applied-configuration and kopf's
# last-handled-configuration) that share a 256 KiB budget; larger code belongs in a revision.
MAX_INLINE_CODE = 65536
MAX_INSTRUCTIONS = 16384
MAX_TIMEOUT_SECONDS = 3600
MAX_DEPLOY_HISTORY = 20
DEFAULT_QUEUE_TIMEOUT = 3600


class IntegrationConditionType(StrEnum):
    """The condition types of an Integration."""

    READY = READY
    CODE_READY = "CodeReady"
    SECRETS_READY = "SecretsReady"
    ACCOUNTS_READY = "AccountsReady"
    PAUSED = "Paused"
    AGENT_AVAILABLE = "AgentAvailable"


class DeployPolicy(StrEnum):
    """Whether a revision made by the agent goes live by itself."""

    MANUAL = "Manual"
    AUTOMATIC = "Automatic"


RETRY_BACKOFF_MESSAGE = "backoffCapSeconds must be at least backoffBaseSeconds"


class RetryPolicy(ApiModel):
    """How a failed run is retried: attempt n waits base * 2^(n-2) seconds, at most the cap."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "self.backoffCapSeconds >= self.backoffBaseSeconds",
                RETRY_BACKOFF_MESSAGE,
                field_path=".backoffCapSeconds",
            )
        )
    )

    max_attempts: Annotated[int, Field(strict=True, ge=1, le=10)] = Field(
        default=3,
        description=(
            "Attempts in all, the first included (1 = never retry). Only retryable errors "
            "are retried; after the last attempt the run is dead-lettered."
        ),
    )
    backoff_base_seconds: Annotated[int, Field(strict=True, ge=1, le=3600)] = Field(
        default=30, description="The delay before the second attempt; each later delay doubles."
    )
    backoff_cap_seconds: Annotated[int, Field(strict=True, ge=1, le=86400)] = Field(
        default=3600, description="The longest delay between two attempts."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> Self:
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError(RETRY_BACKOFF_MESSAGE)
        return self


DRY_RUN_SAFE_UNLISTED_MESSAGE = (
    "every entry of dryRunSafeHosts must be listed in hosts too, exactly as written there"
)


class Egress(ApiModel):
    """Where the run may connect besides the broker and DNS (everything else is blocked)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.dryRunSafeHosts) || "
                "self.dryRunSafeHosts.all(h, has(self.hosts) && h in self.hosts)",
                DRY_RUN_SAFE_UNLISTED_MESSAGE,
                field_path=".dryRunSafeHosts",
            )
        )
    )

    hosts: UniqueTuple[Hostname] = Field(
        default_factory=tuple,
        max_length=32,
        description=(
            "Host names the code may reach through the egress proxy, e.g. api.example.com, "
            "*.example.com (one or more labels below it) or api.example.com:8443 (without a "
            "port: 443, or 80 for plain HTTP). Calls through connected accounts go via the "
            "broker and need no entry here."
        ),
    )
    cidrs: UniqueTuple[Cidr] = Field(
        default_factory=tuple,
        max_length=32,
        description=(
            "IP blocks the code may reach, e.g. 203.0.113.0/24 (a NetworkPolicy ipBlock, and "
            "through the proxy). Needed for private, loopback or link-local destinations, "
            "which the proxy refuses otherwise even for a listed host."
        ),
    )
    dry_run_safe_hosts: UniqueTuple[Hostname] = Field(
        default_factory=tuple,
        max_length=32,
        description=(
            "Entries of hosts that a dry test run (the agent's automatic tests) may reach over "
            "HTTPS for real: you mark them safe to call (a read-only API, a sandbox). The proxy "
            "cannot see what goes through an HTTPS tunnel, so a dry run stops at any other "
            "HTTPS destination with 'needs a live test'; a tunnel to one of these is opened and "
            "recorded as 'dry run: sent live (marked safe)'. Plain-HTTP writes stay simulated."
        ),
    )

    @model_validator(mode="after")
    def _safe_hosts_listed(self) -> Self:
        if any(h not in self.hosts for h in self.dry_run_safe_hosts):
            raise ValueError(DRY_RUN_SAFE_UNLISTED_MESSAGE)
        return self


class ResourceList(ApiModel):
    """CPU and memory amounts."""

    cpu: Quantity | None = Field(default=None, description="CPU, in cores: 1, 0.5 or 500m.")
    memory: Quantity | None = Field(default=None, description="Memory, in bytes: 256Mi, 1Gi.")


def _request_within_limit_rule(resource: str) -> dict[str, str]:
    return cel(
        f"!has(self.requests) || !has(self.requests.{resource}) || !has(self.limits) || "
        f"!has(self.limits.{resource}) || quantity(string(self.requests.{resource}))"
        f".compareTo(quantity(string(self.limits.{resource}))) <= 0",
        f"requests.{resource} must not exceed limits.{resource}",
    )


class Resources(ApiModel):
    """CPU and memory of the run's container; unset amounts come from the operator's defaults."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            _request_within_limit_rule("cpu"), _request_within_limit_rule("memory")
        )
    )

    requests: ResourceList | None = Field(default=None, description="What the scheduler reserves.")
    limits: ResourceList | None = Field(
        default=None, description="The most the run may use; above the memory limit it is killed."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Self:
        for resource in ("cpu", "memory"):
            request = getattr(self.requests, resource, None) if self.requests else None
            limit = getattr(self.limits, resource, None) if self.limits else None
            if (
                request is not None
                and limit is not None
                and parse_quantity(request) > parse_quantity(limit)
            ):
                raise ValueError(f"requests.{resource} must not exceed limits.{resource}")
        return self


class RunRetention(ApiModel):
    """How many finished runs are kept, and for how long."""

    successful_runs: Annotated[int, Field(strict=True, ge=0, le=10000)] = Field(
        default=100, description="Succeeded runs kept (the newest); older ones are deleted."
    )
    failed_runs: Annotated[int, Field(strict=True, ge=0, le=10000)] = Field(
        default=500,
        description="Failed, timed-out, dead-lettered and cancelled runs kept (the newest).",
    )
    max_age_days: Annotated[int, Field(strict=True, ge=1, le=365)] = Field(
        default=30,
        description="Finished runs older than this are deleted, whatever the counts say.",
    )


class NotifyFormat(StrEnum):
    """How a notification is sent."""

    SLACK = "Slack"
    STANDARD_WEBHOOKS = "StandardWebhooks"


class NotifyEvent(StrEnum):
    """What a notification is sent for."""

    DEAD_LETTERED = "DeadLettered"
    PAUSED = "Paused"
    AGENT_TEST_FAILED = "AgentTestFailed"


SIGNING_KEY_MESSAGE = "signingSecret is needed for format StandardWebhooks"


class Notify(ApiModel):
    """Where to tell someone that the integration needs attention (docs/runs.md)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "self.format != 'StandardWebhooks' || has(self.signingSecret)",
                SIGNING_KEY_MESSAGE,
                field_path=".signingSecret",
            )
        )
    )

    url_secret: EnvVarName = Field(
        description=(
            "The key of an IntegrationSecret of this integration whose value is the webhook "
            "URL (a Slack incoming webhook, or any JSON endpoint): sealed like any secret, "
            "since such a URL is a credential. It is not given to runs unless spec.secrets "
            "lists it."
        )
    )
    format: NotifyFormat = Field(
        default=NotifyFormat.SLACK,
        description=(
            'Slack: {"text": ...} for an incoming webhook. StandardWebhooks: a JSON event '
            "signed as Standard Webhooks specifies (webhook-id, webhook-timestamp, "
            "webhook-signature) with signingSecret."
        ),
    )
    signing_secret: EnvVarName | None = Field(
        default=None,
        description=(
            "For StandardWebhooks: the key of an IntegrationSecret holding the signing secret "
            "(whsec_<base64>)."
        ),
    )
    events: UniqueTuple[NotifyEvent] = Field(
        default_factory=tuple,
        max_length=3,
        description=(
            "What to notify about: DeadLettered (a run), Paused (the integration), "
            "AgentTestFailed (the agent's revision failed its test runs). Empty: all three. "
            "The same notice is sent once; at most 10 per integration per 10 minutes."
        ),
    )

    def wants(self, event: NotifyEvent) -> bool:
        return not self.events or event in self.events

    @model_validator(mode="after")
    def _signing_secret_for_standard(self) -> Self:
        if self.format is NotifyFormat.STANDARD_WEBHOOKS and self.signing_secret is None:
            raise ValueError(SIGNING_KEY_MESSAGE)
        return self


CODE_OR_INSTRUCTIONS_MESSAGE = "set code, instructions, or both"

DeployRequestId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
]
"""The id of a deploy or revert request (docrelay.reconcile.deploy)."""


class IntegrationSpec(SpecModel):
    """The desired integration. Written by users or Git; the operator never writes it."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel("has(self.code) || has(self.instructions)", CODE_OR_INSTRUCTIONS_MESSAGE)
        )
    )

    workspace: PlatformId = Field(
        description="The identifier of the document platform workspace whose documents run this."
    )
    document_type: PlatformId = Field(
        description="The identifier of the document type whose documents run this."
    )
    trigger: Trigger = Field(
        description=(
            "The event that runs the code: DocumentParseCompleted (parsing finished) or "
            "DocumentValidated (a person confirmed the document)."
        )
    )
    code: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_INLINE_CODE)] | None = (
        Field(
            default=None,
            description=(
                "Python source defining lambda_handler(event, context), or for runtime.nodejs "
                "JavaScript exporting handler(event, context). Applying new code "
                "creates a revision and deploys it. At most 64 KiB inline."
            ),
        )
    )
    instructions: (
        Annotated[str, Field(strict=True, min_length=1, max_length=MAX_INSTRUCTIONS)] | None
    ) = Field(
        default=None,
        description=(
            "What the integration should do, in plain language, for the agent: it writes the "
            "code when code is empty and reads this when it proposes a fix."
        ),
    )
    runtime: Runtime = Field(
        default=Runtime(),  # frozen, so one shared instance is safe
        description=(
            "The language and its version (python, the default, or nodejs), and optionally "
            "an image or runtime class."
        ),
    )
    connected_accounts: UniqueTuple[ObjectName] = Field(
        default_factory=tuple,
        max_length=16,
        description=(
            "Names of ConnectedAccount objects in this namespace the code may use through the "
            "broker. An account that is not listed is refused."
        ),
    )
    secrets: UniqueTuple[EnvVarName] = Field(
        default_factory=tuple,
        max_length=64,
        description=(
            "Environment variable names the code reads with os.environ. Each needs an "
            "IntegrationSecret with that key; the values never appear here."
        ),
    )
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=MAX_TIMEOUT_SECONDS)] = Field(
        default=300, description="How long one attempt may run before it is stopped (1 to 3600)."
    )
    retry: RetryPolicy = Field(
        default=RetryPolicy(),  # frozen, so one shared instance is safe
        description="How failed runs are retried.",
    )
    max_concurrency: Annotated[int, Field(strict=True, ge=1, le=100)] = Field(
        default=5, description="Runs of this integration at the same time; more wait in Queued."
    )
    queue_timeout_seconds: Annotated[int, Field(strict=True, ge=10, le=604800)] = Field(
        default=DEFAULT_QUEUE_TIMEOUT,
        description=(
            "How long a run may wait in Queued for what it cannot start without (a deployed "
            "revision, its revision, a secret) before it is dead-lettered with that reason "
            "(10 to 604800; default 3600). Waiting for a free slot (maxConcurrency), or while "
            "suspended or paused, does not count."
        ),
    )
    egress: Egress | None = Field(
        default=None, description="Destinations the code may reach directly. Empty: none."
    )
    resources: Resources | None = Field(
        default=None, description="CPU and memory of each run; unset: the operator's defaults."
    )
    suspend: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description=(
            "True: no run starts. Events still create runs, which wait in Queued (nothing is "
            "lost) and start once suspend is false again; running runs finish; test runs "
            "still run."
        ),
    )
    deploy_policy: DeployPolicy = Field(
        default=DeployPolicy.MANUAL,
        description=(
            "For revisions the agent makes: Manual waits for `docrelay deploy`; Automatic "
            "deploys once the revision is valid and its test run succeeded."
        ),
    )
    run_retention: RunRetention = Field(
        default=RunRetention(),  # frozen, so one shared instance is safe
        description="How many finished runs are kept.",
    )
    notify: Notify | None = Field(
        default=None,
        description=(
            "A webhook told when a run is dead-lettered, the integration is paused or the "
            "agent's revision fails its tests. Empty: Events only."
        ),
    )

    @model_validator(mode="after")
    def _has_code_or_instructions(self) -> Self:
        if self.code is None and self.instructions is None:
            raise ValueError(CODE_OR_INSTRUCTIONS_MESSAGE)
        return self


class DeployRecord(ApiModel):
    """One deploy: which revision went live, replacing which, by whom, when and why."""

    revision: RevisionName = Field(description="The revision deployed.")
    previous_revision: RevisionName | None = Field(
        default=None, description="The revision it replaced; empty for the first deploy."
    )
    deployed_by: Actor = Field(
        description="Who deployed it: a user name, the operator (new code) or the agent."
    )
    deployed_at: datetime = Field(description="When it was deployed.")
    reason: CamelCaseReason = Field(
        description="Why: CodeApplied (spec.code), Deployed, Reverted, AgentAutomatic."
    )


class LastRun(ApiModel):
    """The most recently finished run."""

    name: RunName = Field(description="The IntegrationRun's name.")
    phase: RunPhase = Field(description="Its final phase.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")


class RunCounts(ApiModel):
    """Finished runs by outcome, since the integration was created (test runs excluded)."""

    succeeded: Annotated[int, Field(strict=True, ge=0)] = Field(default=0, description="Succeeded.")
    failed: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Failed with an error that retrying would not fix."
    )
    timed_out: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Stopped at timeoutSeconds on their last attempt."
    )
    dead_lettered: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Gave up after retryable errors on every attempt; can be replayed."
    )
    cancelled: Annotated[int, Field(strict=True, ge=0)] = Field(default=0, description="Cancelled.")


class CountedRuns(ApiModel):
    """How far runCounts go, so that a restarted operator counts every finished run exactly
    once: each run that finished after `resourceVersion` (the runs' watch position when the
    counts were written) and is not among `recent` (the runs counted whose completionTime is
    within 5 s of `newest`) is counted next."""

    resource_version: Annotated[str, StringConstraints(max_length=32)] = Field(
        description="The runs' resourceVersion the counts include."
    )
    newest: datetime | None = Field(default=None, description="The latest completionTime counted.")
    recent: tuple[RunName, ...] = Field(
        default_factory=tuple,
        max_length=1000,
        description="The runs counted whose completionTime is within 5 s of `newest`.",
    )


class IntegrationStatus(ObservedStatus):
    """What the operator observed. Conditions: Ready, CodeReady, SecretsReady, AccountsReady,
    Paused, AgentAvailable."""

    deployed_revision: RevisionName | None = Field(
        default=None, description="The IntegrationRevision new runs use."
    )
    latest_revision: RevisionName | None = Field(
        default=None,
        description="The newest revision, deployed or not (e.g. a fix awaiting deploy).",
    )
    history: tuple[DeployRecord, ...] = Field(
        default_factory=tuple,
        max_length=MAX_DEPLOY_HISTORY,
        description="Deploys, oldest first; the oldest are dropped beyond 20.",
    )
    last_run: LastRun | None = Field(default=None, description="The most recently finished run.")
    run_counts: RunCounts | None = Field(default=None, description="Finished runs by outcome.")
    counted_runs: CountedRuns | None = Field(
        default=None,
        description="How far runCounts go (the operator's bookkeeping; docs/runs.md).",
    )
    consecutive_failures: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Non-test runs that ended without success since the last success."
    )
    active_runs: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Runs Pending or Running now (at most spec.maxConcurrency)."
    )
    code_revision: RevisionName | None = Field(
        default=None,
        description=(
            "The revision made from spec.code. When spec.code changes, its new revision "
            "replaces whatever is deployed, a manual deploy included."
        ),
    )
    handled_deploy_request: DeployRequestId | None = Field(
        default=None,
        description=(
            "The id of the last deploy or revert request (annotation "
            "deploy.docrelay.io/request) the operator acted on."
        ),
    )
    agent: IntegrationAgentStatus | None = Field(
        default=None,
        description="The agent's work: the latest generation from instructions and fix proposal.",
    )


class Integration(CustomResource):
    """An integration: code that exports a document's data when the document reaches a state."""

    crd = CrdInfo(
        kind="Integration",
        plural="integrations",
        short_names=("dri",),
        max_name_length=INTEGRATION_NAME_MAX,
        name_length_reason="run, revision and Job names are made from it",
        selectable_fields=(".spec.workspace", ".spec.documentType", ".spec.trigger"),
        printer_columns=(
            PrinterColumn("Ready", condition_path(READY)),
            PrinterColumn("Trigger", ".spec.trigger"),
            PrinterColumn("Revision", ".status.deployedRevision"),
            PrinterColumn("Last Run", ".status.lastRun.phase"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Workspace", ".spec.workspace", priority=1),
            PrinterColumn("Document Type", ".spec.documentType", priority=1),
            PrinterColumn("Suspended", ".spec.suspend", "boolean", priority=1),
            PrinterColumn(
                "Paused", condition_path(IntegrationConditionType.PAUSED.value), priority=1
            ),
            PrinterColumn("Failures", ".status.consecutiveFailures", "integer", priority=1),
            PrinterColumn("Reason", condition_path(READY, "reason"), priority=1),
        ),
    )

    kind: Literal["Integration"] = "Integration"
    spec: IntegrationSpec
    status: IntegrationStatus | None = None
