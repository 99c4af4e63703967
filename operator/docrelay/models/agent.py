"""What the agent records in statuses: its work on an Integration and a fix of a run.

The agent writes code from an Integration's instructions (a generation) and proposes a fix
for a failed run. Each piece of work ends as an IntegrationRevision that is test-run before it
may be deployed; these models say where the work stands. Messages are ours: problem lists,
provider errors without keys, never a secret or a document value.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from docrelay.models.common import (
    Actor,
    ApiModel,
    RevisionName,
    RunName,
    Sha256Digest,
)

MAX_AGENT_MESSAGE = 2048
MAX_FIX_HISTORY = 10

AgentRequestId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
]
"""The id of a `docrelay generate` or `docrelay fix` request (an annotation)."""


class AgentState(StrEnum):
    """Where a generation or a fix stands."""

    WAITING = "Waiting"  # the provider is unavailable: tried again at nextAttemptAt
    FAILED = "Failed"  # the model's code was refused every time, or the provider refused
    TESTING = "Testing"  # a revision exists; its test runs are running
    TEST_PASSED = "TestPassed"  # may be deployed (Automatic: is being deployed)
    TEST_FAILED = "TestFailed"  # not deployable
    DEPLOYED = "Deployed"
    UNCHANGED = "Unchanged"  # the model answered code that is already a revision


class AgentTask(ApiModel):
    """One piece of the agent's work and its outcome."""

    state: AgentState = Field(description="Where the work stands.")
    revision: RevisionName | None = Field(
        default=None, description="The revision the agent made (Agent or Fix source)."
    )
    fix_of_run: RunName | None = Field(default=None, description="For a fix: the failed run.")
    input_hash: Sha256Digest | None = Field(
        default=None,
        description="For a generation: sha256 of what it was made from (instructions, scope, "
        "secret and account names, runtime); a change starts a new generation.",
    )
    request_id: AgentRequestId | None = Field(
        default=None, description="The `docrelay generate` or `docrelay fix` request served."
    )
    model: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="The model that answered."
    )
    attempts: Annotated[int, Field(strict=True, ge=0, le=100)] = Field(
        default=0, description="Questions asked of the model (each answer is checked)."
    )
    message: Annotated[str, Field(strict=True, max_length=MAX_AGENT_MESSAGE)] | None = Field(
        default=None, description="What happened, for people: the last problems, or the error."
    )
    test_runs: tuple[RunName, ...] = Field(
        default_factory=tuple, max_length=10, description="The revision's test runs."
    )
    updated_at: datetime | None = Field(default=None, description="When this was last written.")
    next_attempt_at: datetime | None = Field(
        default=None, description="While Waiting: when the provider is asked again."
    )


class IntegrationAgentStatus(ApiModel):
    """The agent's work on this Integration (status.agent)."""

    generation: AgentTask | None = Field(
        default=None, description="The latest code generation from spec.instructions."
    )
    fix: AgentTask | None = Field(default=None, description="The latest fix proposal.")
    handled_generate_request: AgentRequestId | None = Field(
        default=None, description="The last `docrelay generate` request acted on."
    )


class FixAttempt(ApiModel):
    """One fix request of a run and its outcome."""

    request_id: AgentRequestId = Field(description="The request (annotation) served.")
    requested_by: Actor | None = Field(default=None, description="Who asked.")
    state: AgentState = Field(description="Its outcome, or where it stands.")
    revision: RevisionName | None = Field(default=None, description="The proposal, if any.")
    at: datetime | None = Field(default=None, description="When it was last updated.")


class RunFixStatus(ApiModel):
    """The agent's fixes of this run (status.fix): the latest proposal and every attempt."""

    state: AgentState = Field(description="Where the latest fix stands.")
    revision: RevisionName | None = Field(default=None, description="The latest proposal.")
    test_run: RunName | None = Field(
        default=None, description="The proposal's test run on this run's document."
    )
    message: Annotated[str, Field(strict=True, max_length=MAX_AGENT_MESSAGE)] | None = Field(
        default=None, description="What happened, for people."
    )
    next_attempt_at: datetime | None = Field(
        default=None, description="While Waiting: when the provider is asked again."
    )
    history: tuple[FixAttempt, ...] = Field(
        default_factory=tuple,
        max_length=MAX_FIX_HISTORY,
        description="Every fix request of this run, oldest first (bounded by the operator).",
    )
