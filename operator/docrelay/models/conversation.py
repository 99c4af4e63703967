"""IntegrationConversation: one thread between a user and the agent about one integration.

A thread has one purpose: build an integration from a description, fix a failed run, or change
a deployed integration. The user's turns are the spec: appended, never edited or removed (the
API server enforces it), so who may write a turn is who may patch the object, and the admission
policy in the chart (docs/agent.md, "Who may talk") narrows that to who may patch the
Integration. The agent's turns are the status, written by the operator only: a copy of each
user turn (masked) and each answer, with what it produced (a question, a revision, a test
verdict, a deploy). Every text is bounded here and masked (every form of every secret value of
the integration becomes `***`, docrelay/masking.py) before it is written or put in a prompt.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from docrelay.models.common import (
    Actor,
    ApiModel,
    CrdInfo,
    CustomResource,
    IntegrationName,
    PrinterColumn,
    RevisionName,
    RunName,
    SpecModel,
    cel,
    rules,
)
from docrelay.models.conditions import ObservedStatus

MAX_USER_TURNS = 100
MAX_THREAD_TURNS = 100
MAX_TURN_TEXT = 4000
MAX_REASON = 300
MAX_REASONS = 10
MAX_TEST_RUNS = 10

TurnId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=64, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    ),
]
"""A turn's id: unique in its thread (the user's turns are keyed by it)."""

TurnText = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_TURN_TEXT)]

FIX_NEEDS_RUN_MESSAGE = "run is required when purpose is Fix, and only then"
TEXT_REQUIRED_MESSAGE = "text is required for Say and Override (an override states its reason)"
TURN_IMMUTABLE_MESSAGE = "a turn cannot be changed once written; append a new one"
TURNS_APPEND_ONLY_MESSAGE = "turns are append-only: a turn cannot be removed"


class ConversationPurpose(StrEnum):
    """What a thread is for; one thread per purpose."""

    BUILD = "Build"  # write the integration's first code from a description
    FIX = "Fix"  # fix the failed run spec.run ("Fix in Chat")
    CHANGE = "Change"  # change a deployed integration


class UserAction(StrEnum):
    """What a user turn asks of the agent."""

    SAY = "Say"  # words: a description, an answer, guidance; the agent answers
    TEST = "Test"  # test the revision again (dry, unless LiveTest)
    LIVE_TEST = "LiveTest"  # test it for real: actions and writes reach downstream
    APPROVE = "Approve"  # deploy the revision (a passed one)
    OVERRIDE = "Override"  # take the revision's failed verdict as passed, for the reason given
    CLOSE = "Close"  # end the thread


class UserTurn(ApiModel):
    """One thing the user said or asked, as written (immutable once in the list)."""

    model_config = ConfigDict(
        hide_input_in_errors=True,
        json_schema_extra=rules(
            cel(
                "!(self.action in ['Say', 'Override']) || has(self.text)",
                TEXT_REQUIRED_MESSAGE,
                field_path=".text",
            ),
            cel("self == oldSelf", TURN_IMMUTABLE_MESSAGE),
        ),
    )

    id: TurnId = Field(description="Unique in the thread; `docrelay chat` uses u-<n>.")
    action: UserAction = Field(default=UserAction.SAY, description="What the turn asks.")
    text: TurnText | None = Field(
        default=None,
        description="The user's words (for Override: the reason). Masked before it is shown "
        "in status.turns or put in a prompt.",
    )
    revision: RevisionName | None = Field(
        default=None,
        description="Test, LiveTest, Approve, Override: the revision meant; default the "
        "thread's latest proposal (status.revision).",
    )
    by: Actor | None = Field(
        default=None,
        description="Who wrote it; the admission policy requires the writer's own user name.",
    )
    at: datetime | None = Field(default=None, description="When it was written.")

    @model_validator(mode="after")
    def _text_when_needed(self) -> Self:
        if self.action in (UserAction.SAY, UserAction.OVERRIDE) and self.text is None:
            raise ValueError(TEXT_REQUIRED_MESSAGE)
        return self


class IntegrationConversationSpec(SpecModel):
    """The thread's subject and the user's turns."""

    immutable_fields = ("integration", "purpose", "run")
    model_config = ConfigDict(
        hide_input_in_errors=True,
        json_schema_extra=rules(
            cel("has(self.run) == (self.purpose == 'Fix')", FIX_NEEDS_RUN_MESSAGE, ".run"),
        ),
    )

    integration: IntegrationName = Field(description="The Integration the thread is about.")
    purpose: ConversationPurpose = Field(description="Build, Fix (a failed run) or Change.")
    run: RunName | None = Field(
        default=None,
        description="For Fix: the failed IntegrationRun; the thread starts with its error and "
        "masked log.",
    )
    turns: tuple[UserTurn, ...] = Field(
        default_factory=tuple,
        max_length=MAX_USER_TURNS,
        description="The user's turns, oldest first; append-only (start a new thread past "
        f"{MAX_USER_TURNS}).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["id"],
            **rules(cel("oldSelf.all(t, self.exists(n, n.id == t.id))", TURNS_APPEND_ONLY_MESSAGE)),
        },
    )

    @model_validator(mode="after")
    def _run_for_fix(self) -> Self:
        if (self.run is not None) != (self.purpose is ConversationPurpose.FIX):
            raise ValueError(FIX_NEEDS_RUN_MESSAGE)
        ids = [t.id for t in self.turns]
        if len(ids) != len(set(ids)):
            raise ValueError("turn ids must be unique")
        return self

    def update_errors(self, old: Self) -> list[str]:
        errors = super().update_errors(old)
        new = {t.id: t for t in self.turns}
        for turn in old.turns:
            if turn.id not in new:
                errors.append(TURNS_APPEND_ONLY_MESSAGE)
            elif new[turn.id] != turn:
                errors.append(TURN_IMMUTABLE_MESSAGE)
        return errors


class ConversationState(StrEnum):
    """Where the thread stands."""

    THINKING = "Thinking"  # a user turn is not answered yet: the agent owes an answer
    WAITING_FOR_USER = "WaitingForUser"  # the agent asked, or proposed and reported
    TESTING = "Testing"  # the latest revision's test runs are running
    DEPLOYED = "Deployed"  # the revision the thread made is deployed
    FAILED = "Failed"  # the agent could not go on (provider refused, the run is gone)
    CLOSED = "Closed"


class TurnRole(StrEnum):
    """Who wrote a turn."""

    USER = "User"
    AGENT = "Agent"


class TurnKind(StrEnum):
    """What an agent turn produced."""

    QUESTION = "Question"  # a clarifying question; the agent waits for the answer
    REVISION = "Revision"  # code proposed as an IntegrationRevision, its explanation the text
    TEST_VERDICT = "TestVerdict"  # a test run's outcome judged against the instructions
    DEPLOY = "Deploy"  # the revision was deployed (approved, or policy Automatic)
    NOTE = "Note"  # anything else said: a refusal, a reminder of what to do next
    ERROR = "Error"  # the agent could not answer (provider unavailable or refused)


class Verdict(StrEnum):
    """The agent's judgement of a test run against the instructions."""

    PASS = "Pass"  # no error, and the evidence shows the instructions were followed
    FAIL = "Fail"  # an error, or the evidence shows an instruction ignored
    NEEDS_LIVE_TEST = "NeedsLiveTest"  # a dry run could not show it (direct HTTPS egress)


Reason = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_REASON)]


class TestVerdict(ApiModel):
    """A judged test of a revision."""

    __test__ = False  # not a pytest class

    verdict: Verdict = Field(description="Pass, Fail or NeedsLiveTest.")
    reasons: tuple[Reason, ...] = Field(
        default_factory=tuple,
        max_length=MAX_REASONS,
        description="Why, one line each, e.g. 'no POST to the ERP was made, the instructions "
        "ask for one'.",
    )
    test_runs: tuple[RunName, ...] = Field(
        default_factory=tuple, max_length=MAX_TEST_RUNS, description="The runs judged."
    )
    dry_run: Annotated[bool, Field(strict=True)] = Field(
        default=True, description="True: writes were simulated and recorded, not sent."
    )
    overridden_by: Actor | None = Field(
        default=None, description="A user who took a failed verdict as passed (Override)."
    )
    override_reason: TurnText | None = Field(default=None, description="Their reason.")


class TokenUsage(ApiModel):
    """Tokens spent with the model."""

    input_tokens: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Prompt tokens, as the provider counted them."
    )
    output_tokens: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Answer tokens, as the provider counted them."
    )


class PromptTokens(ApiModel):
    """The latest answer's prompt: its size as estimated before it was sent, and as the
    provider counted it (`usage.prompt_tokens` / `input_tokens`); the next prompt's budget is
    scaled by their ratio when the provider counted more (docs/agent.md, "Budget")."""

    estimated: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Tokens estimated for the prompt (on the high side)."
    )
    reported: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        default=None, description="Prompt tokens the provider reported for it, when it did."
    )
    budget: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="The per-turn prompt budget it was fitted to, in tokens."
    )
    left_out: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Older turns summarised or counted instead of sent whole."
    )


class ThreadTurn(ApiModel):
    """One turn of the thread as shown: a user turn's masked copy, or an agent's answer."""

    model_config = ConfigDict(hide_input_in_errors=True)

    id: TurnId = Field(description="A user turn's id, or a-<n> for the agent's.")
    role: TurnRole = Field(description="User or Agent.")
    action: UserAction | None = Field(default=None, description="A user turn's action.")
    kind: TurnKind | None = Field(default=None, description="What an agent turn produced.")
    in_reply_to: TurnId | None = Field(
        default=None, description="An agent turn: the user turn it answers."
    )
    text: TurnText | None = Field(
        default=None,
        description=f"Masked, at most {MAX_TURN_TEXT} characters (longer is cut, saying so).",
    )
    by: Actor | None = Field(default=None, description="A user turn's author.")
    revision: RevisionName | None = Field(
        default=None, description="The revision proposed, tested or deployed."
    )
    verdict: TestVerdict | None = Field(default=None, description="A TestVerdict turn's verdict.")
    model: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="The model that answered."
    )
    tokens: TokenUsage | None = Field(default=None, description="Tokens this answer cost.")
    at: datetime | None = Field(default=None, description="When it was written.")


class IntegrationConversationStatus(ObservedStatus):
    """The thread as the operator writes it."""

    state: ConversationState | None = Field(default=None, description="Where the thread stands.")
    turns: tuple[ThreadTurn, ...] = Field(
        default_factory=tuple,
        max_length=MAX_THREAD_TURNS,
        description="The whole thread, oldest first: each user turn (masked) and each agent "
        f"turn; the newest {MAX_THREAD_TURNS} (trimmed counts the older ones dropped).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["id"],
        },
    )
    trimmed: Annotated[int, Field(strict=True, ge=0)] = Field(
        default=0, description="Older turns no longer listed."
    )
    answered: TurnId | None = Field(
        default=None, description="The last user turn the agent acted on."
    )
    revision: RevisionName | None = Field(default=None, description="The thread's latest proposal.")
    deployed_revision: RevisionName | None = Field(
        default=None, description="The revision this thread deployed, if any."
    )
    test_runs: tuple[RunName, ...] = Field(
        default_factory=tuple,
        max_length=MAX_TEST_RUNS,
        description="The test runs of the latest round (the agent's own after a proposal, or "
        "a Test or LiveTest turn's).",
    )
    live_test: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description="True: the latest round is live (a LiveTest turn: writes were sent); "
        "false: dry (writes simulated, not sent).",
    )
    tokens: TokenUsage = Field(
        default=TokenUsage(),
        description="Tokens the thread has cost (every answer and judgement, as the provider "
        "reported them).",
    )
    prompt_tokens: PromptTokens | None = Field(
        default=None, description="The latest answer's prompt: estimated, reported, budget."
    )
    last_turn_at: datetime | None = Field(
        default=None,
        description="The newest turn's time; retention deletes a thread idle past the "
        "Integration's runRetention.maxAgeDays.",
    )


class IntegrationConversation(CustomResource):
    """A conversation with the agent about one integration: build it, fix a run, change it."""

    crd = CrdInfo(
        kind="IntegrationConversation",
        plural="integrationconversations",
        short_names=("drchat",),
        selectable_fields=(".spec.integration", ".spec.purpose"),
        printer_columns=(
            PrinterColumn("Integration", ".spec.integration"),
            PrinterColumn("Purpose", ".spec.purpose"),
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Revision", ".status.revision"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Run", ".spec.run", priority=1),
            PrinterColumn("Deployed", ".status.deployedRevision", priority=1),
            PrinterColumn("Last Turn", ".status.lastTurnAt", "date", priority=1),
        ),
    )

    model_config = ConfigDict(hide_input_in_errors=True)

    kind: Literal["IntegrationConversation"] = "IntegrationConversation"
    spec: IntegrationConversationSpec
    status: IntegrationConversationStatus | None = None
