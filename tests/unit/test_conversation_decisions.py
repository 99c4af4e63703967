"""What a look at a conversation decides around its API calls (reconcile.conversation), without
a cluster: the texts a user reads in the thread, when a test round may start, what the prompt
and the judge are given, and retention. handlers/conversation.py gathers, calls these, acts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from docrelay.models.conversation import (
    ConversationState,
    IntegrationConversationStatus,
    ThreadTurn,
    TokenUsage,
    TurnKind,
    TurnRole,
)
from docrelay.reconcile.conversation import (
    NO_TEST_DOCUMENT,
    no_revision_text,
    override_text,
    parse_time,
    retention_days,
    revision_tested,
    revision_text,
    round_refusal,
    round_runs,
    run_versions,
    spent,
    user_thread_words,
    with_current_code,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def turn(n: int, role: TurnRole, text: str | None, kind: TurnKind | None = None) -> ThreadTurn:
    return ThreadTurn(id=f"t{n}", role=role, kind=kind, text=text, at=NOW)


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2026-03-04T05:06:07Z", NOW),
        ("2026-03-04T05:06:07+00:00", NOW),
        (None, None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_timestamps_the_api_wrote_are_read_and_garbage_is_none(
    text: str | None, when: datetime | None
) -> None:
    assert parse_time(text) == when


@pytest.mark.parametrize(
    ("integration", "days"),
    [
        ({"spec": {"runRetention": {"maxAgeDays": 7}}}, 7),
        ({"spec": {"runRetention": {}}}, 30),
        ({"spec": {}}, 30),
        ({}, 30),
    ],
)
def test_a_thread_is_kept_as_long_as_its_integrations_runs(
    integration: dict[str, Any], days: int
) -> None:
    assert retention_days(integration) == days


def test_a_look_fingerprints_each_run_by_namespace_and_name() -> None:
    runs = [
        {"metadata": {"namespace": "a", "name": "r1", "resourceVersion": "10"}},
        {"metadata": {"namespace": "b", "name": "r1", "resourceVersion": "11"}},
        {"metadata": {"namespace": "a", "name": "r2"}},
    ]
    assert run_versions(runs) == {("a", "r1"): "10", ("b", "r1"): "11", ("a", "r2"): ""}


def test_the_tokens_of_an_answer_add_up_its_attempts_and_unknown_counts_are_zero() -> None:
    assert spent([(100, 20), (None, 5), (7, None)]) == TokenUsage(
        input_tokens=107, output_tokens=25
    )
    assert spent([]) == TokenUsage(input_tokens=0, output_tokens=0)


def test_the_prompt_sees_the_current_code_just_before_the_newest_turn() -> None:
    turns = [("user", "export invoices"), ("assistant", "done"), ("user", "PO may be empty")]
    said = with_current_code(turns, "inv-abc", "def handler(event, ctx): pass")
    assert said[:2] == turns[:2]
    assert said[2] == (
        "assistant",
        "The code of revision inv-abc now:\n```\ndef handler(event, ctx): pass\n```",
    )
    assert said[3] == turns[2]
    # Without code (or without turns) nothing is added.
    assert with_current_code(turns, "inv-abc", None) == turns
    assert with_current_code([], "inv-abc", "code") == []


@pytest.mark.parametrize(
    ("revision", "known", "state", "testing", "refusal"),
    [
        (None, False, ConversationState.WAITING_FOR_USER, None, "there is no revision to test"),
        (
            "inv-x",
            False,
            ConversationState.WAITING_FOR_USER,
            None,
            "there is no revision inv-x to test",
        ),
        (
            "inv-b",
            True,
            ConversationState.TESTING,
            "inv-a",
            "revision inv-a is still being tested; ask again after",
        ),
        ("inv-b", True, ConversationState.WAITING_FOR_USER, "inv-a", None),
        ("inv-b", True, None, None, None),
    ],
)
def test_a_test_round_starts_only_for_a_known_revision_and_not_during_another(
    revision: str | None,
    known: bool,
    state: ConversationState | None,
    testing: str | None,
    refusal: str | None,
) -> None:
    assert round_refusal(revision, known, state, testing) == refusal


def test_a_round_reports_each_runs_phase_and_error() -> None:
    runs = {
        "t1": {"status": {"phase": "Succeeded"}},
        "t2": {"status": {"phase": "Failed", "errorMessage": "KeyError: 'po'"}},
    }
    assert round_runs(("t1", "t2", "t3"), runs) == [
        ("t1", "Succeeded", None),
        ("t2", "Failed", "KeyError: 'po'"),
        ("t3", None, None),
    ]


@pytest.mark.parametrize(
    ("status", "reason", "tested"),
    [
        ("True", "JudgedPassed", (True, "JudgedPassed")),
        ("False", "NeedsLiveTest", (False, "NeedsLiveTest")),
        ("Unknown", "Running", (None, None)),
        (None, None, (None, None)),
    ],
)
def test_a_revisions_tested_condition_reads_as_passed_failed_or_unknown(
    status: str | None, reason: str | None, tested: tuple[bool | None, str | None]
) -> None:
    assert revision_tested(status, reason) == tested


def test_the_judge_gets_every_user_word_of_the_thread_and_none_of_the_agents() -> None:
    status = IntegrationConversationStatus(
        turns=(
            turn(1, TurnRole.USER, "Export each invoice."),
            turn(2, TurnRole.AGENT, "Which field is the PO number?", TurnKind.QUESTION),
            turn(3, TurnRole.USER, None),
            turn(4, TurnRole.USER, "The PO can be empty: send null."),
        )
    )
    assert user_thread_words(status) == "Export each invoice.\n\nThe PO can be empty: send null."
    assert user_thread_words(IntegrationConversationStatus()) == ""


def test_the_texts_a_user_reads_in_the_thread() -> None:
    assert revision_text("It POSTs each invoice.", "inv-abc") == (
        "It POSTs each invoice.\n\nI proposed it as revision inv-abc; it is being test-run now."
    )
    assert revision_text(None, "inv-abc").startswith("Here is the code.\n\n")
    assert override_text("inv-abc", "the sink was down") == (
        "recorded: revision inv-abc counts as passed (the sink was down). Approve it to deploy."
    )
    assert no_revision_text(None, "override") == "there is no revision to override"
    assert no_revision_text("inv-x", "override") == "there is no revision inv-x to override"
    assert "no runs" in NO_TEST_DOCUMENT
