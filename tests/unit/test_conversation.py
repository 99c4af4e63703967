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
    Verdict,
)
from docrelay.reconcile.conversation import (
    NEEDS_LIVE_TEST_REASON,
    RunEvidence,
    StepKind,
    action_lines,
    agent_turn,
    approve_refusal,
    cut_text,
    documents_to_test,
    dry_stops,
    history,
    idle_past_retention,
    in_conversation,
    judge_prompt,
    look_fingerprint,
    next_step,
    outbound_lines,
    outcome_of_judgement,
    outcome_without_judge,
    parse_judgement,
    round_of,
    user_copy,
    with_turns,
    worth_a_look,
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
    # 100 characters are 34 tokens estimated, 38 with the message's: 750 tokens hold 19.
    description, kept = history(status, budget=1000)
    assert description.startswith("the description")
    assert len(kept) == 19 and "(31 older turn(s)" not in description
    summarised = description.count("\n- agent (Note): ")
    assert summarised >= 1
    assert f"({31 - summarised} older turn(s) of this conversation are left out.)" in description


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


def test_test_and_live_test_turns_start_a_round_named_by_their_place() -> None:
    said = UserTurn(id="u-1", text="post invoices")
    dry = UserTurn(id="u-2", action=UserAction.TEST)
    live = UserTurn(id="u-3", action=UserAction.LIVE_TEST)
    thread = spec(said, dry, live)
    status = IntegrationConversationStatus(answered="u-1")
    assert next_step(thread, status) == next_step(thread, status)
    assert next_step(thread, status).kind is StepKind.TEST
    status = status.model_copy(update={"answered": "u-2"})
    assert (next_step(thread, status).kind, next_step(thread, status).turn) == (
        StepKind.TEST,
        live,
    )
    assert (round_of(thread, dry), round_of(thread, live)) == (2, 3)


def test_a_dry_stop_at_https_is_found_in_the_runs_errors_and_blocks_approve() -> None:
    errors = [
        None,
        "EgressDenied: dry run: api.erp.example:443 was not contacted; a dry test run opens no "
        "HTTPS connection, whose requests the proxy cannot see; this needs a live test (the "
        "egress proxy refused; URLError)",
        "EgressDenied: evil.test:443 is not allowed; list it in spec.egress.hosts",
        "KeyError: 'invoiceNumber'",
    ]
    assert dry_stops(errors) == ("api.erp.example:443",)
    assert dry_stops([None, "KeyError: x"]) == ()
    refusal = approve_refusal("bills-1", False, False, NEEDS_LIVE_TEST_REASON)
    assert refusal is not None and "needs a live test" in refusal
    assert "failed its tests" in (approve_refusal("bills-1", False, False, "JudgedFailed") or "")


def test_the_judge_sees_the_broker_actions_and_what_a_dry_run_did_not_send() -> None:
    actions = action_lines(
        [
            {
                "entries": [
                    {"at": "2026-12-06T05:00:02Z", "action": "execute_action", "account": "xero",
                     "outcome": "simulated", "dryRun": True, "tool": "xero-create-bill",
                     "props": ["contact", "amount"]},
                    {"at": "2026-12-06T05:00:01Z", "action": "api_request", "account": "xero",
                     "outcome": "simulated", "dryRun": True, "method": "POST",
                     "host": "api.xero.com", "path": "/bills", "status": 200},
                ]
            },
            {"entries": [{"at": "2026-12-06T05:00:03Z", "action": "api_request",
                          "account": "crm", "outcome": "sent", "method": "GET",
                          "host": "crm.test", "path": "/contacts", "status": 200}]},
        ]
    )  # fmt: skip
    assert actions == (
        "api_request POST api.xero.com/bills as account xero -> simulated, not sent (dry run)",
        "execute_action xero-create-bill (props: contact, amount) as account xero -> "
        "simulated, not sent (dry run)",
        "api_request GET crm.test/contacts as account crm -> sent 200",
    )
    outbound = outbound_lines(
        [{"entries": [{"method": "POST", "host": "sink", "port": 80, "path": "/bills",
                       "status": 200, "allowed": True, "reason": "dry run: simulated, not sent"}]}]
    )  # fmt: skip
    assert outbound == ("POST sink:80 /bills -> 200 (dry run: simulated, not sent)",)
    prompt = judge_prompt(
        "post each invoice",
        [RunEvidence("t-1", "Succeeded", None, None, None, outbound, actions, dry_run=True)],
    )
    assert "## Test run t-1 (dry: writes simulated, not sent): Succeeded" in prompt
    assert "broker actions:\napi_request POST api.xero.com/bills" in prompt
    assert "POST sink:80 /bills -> 200 (dry run: simulated, not sent)" in prompt


def test_a_thread_is_looked_at_again_only_when_it_or_its_test_runs_changed() -> None:
    first = look_fingerprint("101", ["7", "8"])
    assert worth_a_look(None, first)  # the first look after a start
    assert not worth_a_look(first, look_fingerprint("101", ["7", "8"]))  # at rest: no call
    assert worth_a_look(first, look_fingerprint("102", ["7", "8"]))  # a turn was appended
    assert worth_a_look(first, look_fingerprint("101", ["7", "9"]))  # a test run moved on
    assert worth_a_look(first, look_fingerprint("101", ["7", "8", "3"]))  # a new round


def test_a_thread_at_rest_is_deleted_once_idle_past_the_integrations_run_retention() -> None:
    day = 86400
    old = datetime.fromtimestamp(NOW.timestamp() - 31 * day, UTC)
    recent = datetime.fromtimestamp(NOW.timestamp() - 29 * day, UTC)
    assert idle_past_retention("WaitingForUser", old, None, 30, NOW)
    assert not idle_past_retention("WaitingForUser", recent, old, 30, NOW)  # the newest turn
    assert idle_past_retention(None, None, old, 30, NOW)  # never answered: its creation
    assert not idle_past_retention("Testing", old, old, 30, NOW)  # busy: never
    assert not idle_past_retention("Thinking", old, old, 30, NOW)
    assert idle_past_retention("Closed", recent, None, 7, NOW)


def test_a_finished_round_is_judged_only_when_every_run_passed_and_nothing_stopped() -> None:
    stopped = "EgressDenied: dry run: erp.test:443 was not contacted; ... this needs a live test"
    dry = outcome_without_judge("r-1", [("t-1", "Failed", stopped)], False, False, None)
    assert dry is not None and dry.verdict is Verdict.NEEDS_LIVE_TEST
    assert dry.tested == (False, "NeedsLiveTest", dry.reasons[0]) and "erp.test:443" in dry.text
    # The same stop in a live round is just a failure (the user chose to send for real).
    live = outcome_without_judge("r-1", [("t-1", "Failed", stopped)], False, True, None)
    assert live is not None and live.verdict is Verdict.FAIL and live.tested is None
    failed = outcome_without_judge("r-1", [("t-1", "Failed", "KeyError: 'x'")], False, False, None)
    assert failed is not None and failed.verdict is Verdict.FAIL and "KeyError" in failed.text
    assert outcome_without_judge("r-1", [("t-1", "Succeeded", None)], True, False, None) is None

    good = outcome_of_judgement("r-1", [("t-1", "Succeeded", None)], True, ["posted"])
    assert (good.verdict, good.tested) == (Verdict.PASS, (True, "JudgedPassed", "posted"))
    bad = outcome_of_judgement("r-1", [("t-1", "Succeeded", None)], False, ["no POST"])
    assert (bad.verdict, bad.tested) == (Verdict.FAIL, (False, "JudgedFailed", "no POST"))
    assert "does not do what you asked" in bad.text and "- no POST" in bad.text


def test_a_new_round_tests_the_documents_of_the_last_one_else_the_failed_runs() -> None:
    runs = {
        "t-1": {"spec": {"documentIdentifier": "docA", "trigger": "DocumentValidated"}},
        "t-2": {"spec": {"documentIdentifier": "docA", "trigger": "DocumentValidated"}},
        "failed": {"spec": {"documentIdentifier": "docF", "trigger": "DocumentParseCompleted"}},
    }
    assert documents_to_test(["t-1", "t-2"], runs, "failed") == [("docA", "DocumentValidated")]
    assert documents_to_test(["gone"], runs, "failed") == [("docF", "DocumentParseCompleted")]
    assert documents_to_test([], runs, None) == []
