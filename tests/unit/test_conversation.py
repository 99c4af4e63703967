"""The agent's decisions about a conversation (reconcile/conversation.py) and the model."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from docrelay.agent.chat import Completion, Message, Usage
from docrelay.agent.loop import converse
from docrelay.agent.prompts import GenerateRequest, build_chat_prompt
from docrelay.models.conversation import (
    MAX_THREAD_TURNS,
    ConversationPurpose,
    ConversationState,
    IntegrationConversationSpec,
    IntegrationConversationStatus,
    ThreadTurn,
    TurnKind,
    TurnRole,
    UserAction,
    UserTurn,
)
from docrelay.reconcile.conversation import (
    RunEvidence,
    StepKind,
    agent_turn,
    approve_refusal,
    cut_text,
    history,
    in_conversation,
    judge_prompt,
    next_step,
    outbound_lines,
    parse_judgement,
    user_copy,
    with_turns,
)

NOW = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


def spec(*turns: UserTurn) -> IntegrationConversationSpec:
    return IntegrationConversationSpec(
        integration="bills", purpose=ConversationPurpose.BUILD, turns=turns
    )


def test_each_user_turn_is_answered_once_in_order() -> None:
    said = UserTurn(id="u-1", text="post invoices")
    approve = UserTurn(id="u-2", action=UserAction.APPROVE)
    status = IntegrationConversationStatus()

    assert next_step(spec(said, approve), status).turn == said
    status = status.model_copy(update={"answered": "u-1"})
    step = next_step(spec(said, approve), status)
    assert (step.kind, step.turn) == (StepKind.APPROVE, approve)
    status = status.model_copy(update={"answered": "u-2"})
    assert next_step(spec(said, approve), status).kind is StepKind.NOTHING


def test_tests_are_followed_when_no_turn_is_owed_and_a_closed_thread_rests() -> None:
    testing = IntegrationConversationStatus(state=ConversationState.TESTING, revision="bills-1")
    assert next_step(spec(), testing).kind is StepKind.FOLLOW
    closed = IntegrationConversationStatus(state=ConversationState.CLOSED)
    assert next_step(spec(UserTurn(id="u-1", text="hi")), closed).kind is StepKind.NOTHING


def test_a_user_turn_is_shown_masked_and_bounded() -> None:
    # Longer than a spec allows (the API server refuses it), to show the copy is bounded anyway.
    turn = UserTurn.model_construct(id="u-1", text="my key is sk-live-123 " + "x" * 5000)
    shown = user_copy(turn, lambda t: t.replace("sk-live-123", "***"), NOW)
    assert shown.text is not None and "sk-live-123" not in shown.text
    assert len(shown.text) <= 4000 and "more characters" in shown.text
    assert user_copy(turn, None, NOW).text.startswith("[withheld")  # type: ignore[union-attr]


def test_the_thread_keeps_its_newest_turns_and_counts_the_rest() -> None:
    status = IntegrationConversationStatus()
    for n in range(MAX_THREAD_TURNS + 5):
        status = with_turns(status, [agent_turn(status, TurnKind.NOTE, f"note {n}", NOW)], NOW)
    assert len(status.turns) == MAX_THREAD_TURNS and status.trimmed == 5
    assert status.turns[-1].id == f"a-{MAX_THREAD_TURNS + 5}"


def test_the_prompt_history_keeps_the_description_and_the_newest_turns() -> None:
    turns = [ThreadTurn(id="u-1", role=TurnRole.USER, text="the description")]
    turns += [ThreadTurn(id=f"a-{n}", role=TurnRole.AGENT, text="y" * 100) for n in range(50)]
    status = IntegrationConversationStatus(turns=tuple(turns))
    description, kept = history(status, budget=1000)
    assert description.startswith("the description")
    assert "40 older turn(s)" in description and len(kept) == 10


def test_approve_deploys_only_a_passed_or_overridden_revision() -> None:
    assert approve_refusal(None, None, False) is not None
    assert "failed its tests" in (approve_refusal("r", False, False) or "")
    assert "still being tested" in (approve_refusal("r", None, False) or "")
    assert approve_refusal("r", True, False) is None
    assert approve_refusal("r", False, True) is None


def test_turns_are_bounded_and_say_needs_words() -> None:
    with pytest.raises(ValidationError, match="text is required"):
        UserTurn(id="u-1")
    with pytest.raises(ValidationError, match="at most 4000"):
        UserTurn(id="u-1", text="x" * 4001)
    with pytest.raises(ValidationError, match="run is required"):
        IntegrationConversationSpec(integration="bills", purpose=ConversationPurpose.FIX)
    old = spec(UserTurn(id="u-1", text="a"))
    assert spec().update_errors(old) == ["turns are append-only: a turn cannot be removed"]
    assert spec(UserTurn(id="u-1", text="b")).update_errors(old) == [
        "a turn cannot be changed once written; append a new one"
    ]
    assert cut_text("short") == "short"


def test_a_build_thread_sets_the_one_shot_generation_aside() -> None:
    assert in_conversation({"agent.docrelay.io/conversation": "bills-build-1"})
    assert not in_conversation(None)


class Scripted:
    model = "m"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.seen: list[list[Message]] = []

    def complete(self, system: str, messages: list[Message], max_tokens: int | None = None):
        self.seen.append(list(messages))
        return Completion(self.replies.pop(0), "m", Usage(10, 5), "stop", False)


REQUEST = GenerateRequest(
    integration="bills",
    workspace="mEFayXdO",
    document_type="tVpGRBWd",
    trigger="DocumentParseCompleted",
    instructions="post invoices",
)


def test_a_reply_without_code_is_a_question_and_code_is_checked() -> None:
    prompt = build_chat_prompt(REQUEST, [("assistant", "which field?"), ("user", "number")])
    assert [m.role for m in prompt.messages] == ["user", "assistant", "user"]
    assert "one short question" in prompt.system

    asked = converse(Scripted("Which field is the PO number?"), prompt, REQUEST)
    assert asked.question == "Which field is the PO number?" and asked.code is None

    code = "```python\ndef lambda_handler(event, context):\n    return 1\n```\nIt returns 1."
    answered = converse(Scripted(code), prompt, REQUEST)
    assert answered.code is not None and answered.explanation == "It returns 1."


def test_the_judge_sees_each_runs_evidence_and_an_unreadable_judgement_fails() -> None:
    outbound = outbound_lines(
        [
            {
                "entries": [
                    {
                        "method": "POST",
                        "host": "erp",
                        "port": 443,
                        "path": "/bills",
                        "status": 201,
                        "allowed": True,
                    }
                ]
            },
            {"entries": [{"method": "CONNECT", "host": "evil", "port": 443, "status": 403}]},
        ]
    )
    assert outbound == ("POST erp:443 /bills -> 201", "CONNECT evil:443 -> 403 (refused)")
    prompt = judge_prompt(
        "post each invoice",
        [
            RunEvidence("t-1", "Succeeded", "exported 1", None, "sent ***", ()),
        ],
    )
    assert "post each invoice" in prompt and "outbound connections:\n(none)" in prompt
    assert "exported 1" not in prompt and "sent ***" not in prompt and "withheld" in prompt
    allowed = judge_prompt(
        "post", [RunEvidence("t-1", "Succeeded", "exported 1", None, "sent ***", ())], True
    )
    assert "exported 1" in allowed and "sent ***" in allowed

    assert parse_judgement('{"verdict": "pass", "reasons": ["posted"]}') == (True, ("posted",))
    assert parse_judgement('Sure! {"verdict": "fail", "reasons": ["no POST"]}') == (
        False,
        ("no POST",),
    )
    passed, reasons = parse_judgement("looks fine to me")
    assert not passed and "could not be read" in reasons[0]
