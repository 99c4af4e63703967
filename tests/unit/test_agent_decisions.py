"""The agent worker's decisions around its API calls (reconcile.agent), without a cluster:
which Integrations it looks at, what it writes to a revision, a run and an Integration, and
when it asks for a deploy. handlers/agent.py gathers, calls these, and acts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from docrelay.agent.prompts import AccountRef, GenerateRequest
from docrelay.models.agent import (
    AgentState,
    AgentTask,
    FixAttempt,
    IntegrationAgentStatus,
    RunFixStatus,
)
from docrelay.models.conditions import Condition, ConditionStatus
from docrelay.models.integration import IntegrationSpec
from docrelay.models.revision import RevisionTestRun
from docrelay.models.run import IntegrationRunStatus, RunPhase
from docrelay.reconcile.agent import (
    AGENT_ACTOR,
    FIX_REQUEST_ANNOTATION,
    TEST_DOCUMENTS_ANNOTATION,
    AgentReason,
    GenerationDue,
    ProviderHealth,
    after_tests,
    agent_candidates,
    agent_status_patch,
    belongs_to,
    condition_tested,
    deploy_request_due,
    deploy_request_id,
    failed_test_names,
    failure_fields,
    failure_text,
    fix_proposed_message,
    fix_test_plan,
    fix_unchanged,
    followed_fix,
    generated_message,
    listed_document_ids,
    no_documents_message,
    prompt_context,
    refused_message,
    revision_test_runs,
    revision_tests_patch,
    run_errors,
    unconfigured_generation,
    wants_fix,
)
from docrelay.reconcile.deploy import DeployAction

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
HASH = "sha256:" + "a" * 64


def obj(ns: str, name: str, spec: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, **more}, "spec": spec or {}}


def run(
    name: str, integration: str, phase: str | None = None, fix: bool = False, ns: str = "team"
) -> dict[str, Any]:
    annotations = {FIX_REQUEST_ANNOTATION: "{}"} if fix else {}
    body = obj(ns, name, {"integration": integration}, annotations=annotations)
    if phase:
        body["status"] = {"phase": phase, "completionTime": "2026-03-04T05:00:00Z"}
    return body


# --- what the worker looks at -----------------------------------------------------------------


def test_the_agent_looks_at_integrations_with_instructions_an_agent_status_or_a_fix_asked() -> None:
    integrations = [
        obj("team", "written", {"instructions": "Export it."}),
        {**obj("team", "followed"), "status": {"agent": {"generation": {"state": "Testing"}}}},
        obj("team", "fixed"),
        obj("team", "plain", {"code": "def handler(event, ctx): pass"}),
        obj("other", "fixed"),  # same name, another namespace: its run is not in "other"
    ]
    runs = [run("r1", "fixed", fix=True), run("r2", "plain")]
    chosen = agent_candidates(integrations, runs)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in chosen] == [
        ("team", "written"),
        ("team", "followed"),
        ("team", "fixed"),
    ]
    assert agent_candidates([obj("team", "plain")], []) == []


def test_a_run_asks_for_a_fix_only_with_the_annotation() -> None:
    assert wants_fix(run("r1", "i", fix=True))
    assert not wants_fix(run("r1", "i"))
    assert not wants_fix({"metadata": {"annotations": None}})


def test_runs_and_revisions_belong_to_an_integration_by_namespace_and_spec() -> None:
    assert belongs_to(run("r1", "inv"), "team", "inv")
    assert not belongs_to(run("r1", "inv", ns="other"), "team", "inv")
    assert not belongs_to(run("r1", "other"), "team", "inv")
    assert not belongs_to({"metadata": {"namespace": "team"}}, "team", "inv")


# --- generation without a provider ----------------------------------------------------------


def test_without_a_provider_the_generation_fails_once_with_what_is_missing() -> None:
    task = unconfigured_generation(GenerationDue(HASH, "req-1"), "not set: X", NOW)
    assert task.state is AgentState.FAILED
    assert (task.input_hash, task.request_id, task.updated_at) == (HASH, "req-1", NOW)
    assert task.message == "the agent is not configured for this install: not set: X"


# --- documents to test on ---------------------------------------------------------------------


def test_listed_documents_give_their_identifiers_up_to_the_limit() -> None:
    listed: list[dict[str, Any]] = [
        {"meta": {"identifier": "INV-1"}},
        {"identifier": "INV-2"},
        {"meta": {}},  # no identifier: skipped
        {"meta": {"identifier": "INV-3"}},
    ]
    assert listed_document_ids(listed, 5) == ["INV-1", "INV-2", "INV-3"]
    assert listed_document_ids(listed, 2) == ["INV-1", "INV-2"]
    assert listed_document_ids([], 3) == []


def test_a_fix_is_tested_on_the_failed_runs_document_and_says_when_it_is_gone() -> None:
    failed = obj("team", "r1", {"documentIdentifier": "INV-7", "trigger": "DocumentValidated"})
    assert fix_test_plan(failed) == [("INV-7", "DocumentValidated")]
    assert fix_test_plan(None) is None
    said = no_documents_message("invoice")
    assert "no document of type invoice" in said
    assert TEST_DOCUMENTS_ANNOTATION in said


# --- what a revision's status says of its tests ----------------------------------------------


def test_test_entries_are_queued_until_their_run_has_a_phase() -> None:
    runs = {"t1": run("t1", "i", "Succeeded"), "t2": run("t2", "i")}
    entries = revision_test_runs(("t1", "t2", "t3"), runs)
    assert [(e.name, e.phase) for e in entries] == [
        ("t1", RunPhase.SUCCEEDED),
        ("t2", RunPhase.QUEUED),
        ("t3", RunPhase.QUEUED),
    ]
    assert entries[0].completion_time == datetime(2026, 3, 4, 5, tzinfo=UTC)
    assert entries[1].completion_time is None


def test_the_revision_is_patched_only_when_its_tests_say_something_new() -> None:
    entries = [RevisionTestRun(name="t1", phase=RunPhase.SUCCEEDED)]
    condition = condition_tested(True, entries, NOW, 1)
    patch = revision_tests_patch({}, entries, condition, NOW)
    assert patch is not None
    assert patch["testRuns"] == [{"name": "t1", "phase": "Succeeded"}]
    assert [(c["type"], c["status"]) for c in patch["conditions"]] == [("Tested", "True")]
    # Written: the same look again changes nothing.
    assert revision_tests_patch(patch, entries, condition, NOW) is None
    # A run that moved on is a new patch.
    moved = [RevisionTestRun(name="t1", phase=RunPhase.FAILED)]
    again = revision_tests_patch(patch, moved, condition_tested(False, moved, NOW, 1), NOW)
    assert again is not None and again["testRuns"] == [{"name": "t1", "phase": "Failed"}]
    assert again["conditions"][0]["status"] == "False"


# --- deploy requests --------------------------------------------------------------------------


def test_a_deploy_is_requested_once_per_revision() -> None:
    request = deploy_request_due("inv-abc", None, None, NOW)
    assert request is not None
    assert (request.id, request.action, request.revision) == (
        deploy_request_id("inv-abc"),
        DeployAction.DEPLOY,
        "inv-abc",
    )
    assert (request.requested_by, request.requested_at) == (AGENT_ACTOR, NOW)
    # Already handled, or already in the annotation: nothing more.
    assert deploy_request_due("inv-abc", request.id, None, NOW) is None
    assert deploy_request_due("inv-abc", None, request.encode(), NOW) is None
    # Another revision's request in the annotation does not stand for this one.
    other = deploy_request_due("inv-def", None, None, NOW)
    assert other is not None
    assert deploy_request_due("inv-abc", other.id, other.encode(), NOW) is not None


# --- the Integration's status -----------------------------------------------------------------


def test_the_integration_status_patch_carries_the_agent_and_its_availability() -> None:
    agent = IntegrationAgentStatus(
        generation=AgentTask(state=AgentState.TESTING, revision="inv-abc", updated_at=NOW)
    )
    health = ProviderHealth(True, "model m at llm.local")
    patch = agent_status_patch({}, agent, health, 3, NOW)
    assert patch["agent"]["generation"]["state"] == "Testing"
    assert patch["agent"]["fix"] is None  # a merge patch removes what is no longer reported
    [condition] = patch["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "AgentAvailable",
        "True",
        AgentReason.AVAILABLE,
    )
    assert condition["observedGeneration"] == 3
    # Once stored (as the API returns it, nulls dropped), nothing is written again.
    stored = {
        "agent": agent.model_dump(mode="json", by_alias=True, exclude_none=True),
        "conditions": patch["conditions"],
    }
    assert agent_status_patch(stored, agent, health, 3, NOW) == {}
    # A new generation of the spec is a new observedGeneration.
    assert set(agent_status_patch(stored, agent, health, 4, NOW)) == {"conditions"}
    # The provider failing changes the condition, not the agent status.
    down = ProviderHealth(True, "model m at llm.local", AgentReason.UNREACHABLE, "timed out")
    [failing] = agent_status_patch(stored, agent, down, 3, NOW)["conditions"]
    assert (failing["status"], failing["reason"]) == ("False", AgentReason.UNREACHABLE)


def test_without_instructions_no_availability_is_written() -> None:
    assert agent_status_patch({}, IntegrationAgentStatus(), None, 1, NOW) == {}
    agent = IntegrationAgentStatus(generation=AgentTask(state=AgentState.FAILED, updated_at=NOW))
    assert set(agent_status_patch({}, agent, None, 1, NOW)) == {"agent"}


# --- runs' fix status and the fix prompt ------------------------------------------------------


def test_a_runs_fix_status_is_written_only_when_it_changes() -> None:
    fix = RunFixStatus(state=AgentState.TESTING, revision="inv-abc", message="testing")
    raw: dict[str, Any] = {"status": {}}
    assert not fix_unchanged(raw, fix)
    raw["status"]["fix"] = fix.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert fix_unchanged(raw, fix)
    assert not fix_unchanged(raw, fix.model_copy(update={"state": AgentState.TEST_PASSED}))


@pytest.mark.parametrize(
    ("status", "fields", "text"),
    [
        (
            {
                "revision": "inv-abc",
                "errorClass": "CodeError",
                "exceptionType": "KeyError",
                "errorMessage": "'po'",
            },
            {"error_class": "CodeError", "exception_type": "KeyError", "error_message": "'po'"},
            "run r1 failed on revision inv-abc: KeyError: 'po'",
        ),
        (
            {"revision": "inv-abc", "errorClass": "Timeout"},
            {"error_class": "Timeout", "exception_type": None, "error_message": ""},
            "run r1 failed on revision inv-abc: Timeout: ",
        ),
        (
            {"revision": "inv-abc"},
            {"error_class": "Unknown", "exception_type": None, "error_message": ""},
            "run r1 failed on revision inv-abc: Error: ",
        ),
    ],
)
def test_a_fix_says_what_the_failed_run_reported(
    status: dict[str, Any], fields: dict[str, Any], text: str
) -> None:
    parsed = IntegrationRunStatus.model_validate(status)
    assert failure_fields(parsed) == fields
    assert failure_text("r1", parsed) == text


def test_a_proposed_fix_names_its_revision_and_test_run() -> None:
    said = fix_proposed_message("inv-def", "inv-def-test-1")
    assert said == (
        "the agent proposed revision inv-def; it is test-run on this run's document "
        "(inv-def-test-1)"
    )


def test_a_tested_condition_from_a_judge_is_kept_as_given() -> None:
    # The judge's condition (handlers/judge.py) goes through revision_tests_patch unchanged.
    entries = [RevisionTestRun(name="t1", phase=RunPhase.SUCCEEDED)]
    judged = Condition(
        type="Tested",
        status=ConditionStatus.FALSE,
        reason="JudgedFailed",
        message="no POST was made",
        last_transition_time=NOW,
    )
    patch = revision_tests_patch({}, entries, judged, NOW)
    assert patch is not None
    [condition] = patch["conditions"]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "JudgedFailed",
        "no POST was made",
    )


# --- after the tests ---------------------------------------------------------------------------


ENTRIES = [
    RevisionTestRun(name="t1", phase=RunPhase.SUCCEEDED),
    RevisionTestRun(name="t2", phase=RunPhase.FAILED),
    RevisionTestRun(name="t3", phase=RunPhase.RUNNING),
]


def test_the_failed_test_runs_are_those_that_did_not_succeed() -> None:
    assert failed_test_names(ENTRIES) == "t2, t3"
    assert failed_test_names(ENTRIES[:1]) == ""


def test_each_test_runs_error_is_read_for_the_dry_run_stops() -> None:
    runs: dict[str, dict[str, Any]] = {"t1": {"status": {"errorMessage": "boom"}}, "t2": {}}
    assert run_errors(("t1", "t2", "t3"), runs) == ["boom", None, None]


def test_after_the_tests_the_message_says_why_and_what_next() -> None:
    failed = AgentState.TEST_FAILED
    # Plain failure: which runs failed.
    message, event = after_tests("inv-a", "inv", failed, False, ENTRIES, (), None)
    assert message == "revision inv-a failed its test runs (t2, t3); it cannot be deployed"
    assert event == ("Warning", AgentReason.TEST_FAILED)
    # A dry test stopped at direct HTTPS: how to test it live.
    message, _ = after_tests("inv-a", "inv", failed, False, ENTRIES, ("api.example",), None)
    assert "connects directly over HTTPS to api.example" in message
    assert "docrelay chat inv --change --live-test --revision inv-a" in message
    # Judged: the judge's reasons.
    message, _ = after_tests("inv-a", "inv", failed, False, ENTRIES[:1], (), "no POST was made")
    assert "judged not to do what the instructions ask: no POST was made" in message
    # Passed: deploy it, or it deploys itself.
    passed = AgentState.TEST_PASSED
    message, event = after_tests("inv-a", "inv", passed, False, ENTRIES[:1], (), None)
    assert message.endswith("deploy it with `docrelay deploy inv-a`")
    assert event == ("Normal", AgentReason.TEST_PASSED)
    message, _ = after_tests("inv-a", "inv", passed, True, ENTRIES[:1], (), None)
    assert message.endswith("deploying it (deployPolicy Automatic)")


def test_a_runs_fix_follows_its_proposals_tests_only_for_that_revision() -> None:
    stored = RunFixStatus(
        state=AgentState.TESTING,
        revision="inv-b",
        history=(
            FixAttempt(
                request_id="r1",
                requested_by="alice",
                state=AgentState.TESTING,
                revision="inv-b",
                at=NOW,
            ),
        ),
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    later = NOW.replace(hour=6)
    task = AgentTask(state=AgentState.TEST_PASSED, revision="inv-b", message="passed")
    fix = followed_fix(stored, "inv-b", task, later)
    assert fix is not None
    assert (fix.state, fix.message) == (AgentState.TEST_PASSED, "passed")
    assert [(a.state, a.at) for a in fix.history] == [(AgentState.TEST_PASSED, later)]
    # The run's fix is now of another revision (a newer request): left alone.
    assert followed_fix(stored, "inv-c", task, later) is None


def test_the_events_of_a_generation_name_the_revision_and_the_refusals_count() -> None:
    said = generated_message("inv-a", 2, "gpt-x")
    assert said.startswith("the agent wrote revision inv-a from spec.instructions (2 question(s)")
    assert said.endswith("it is test-run before it can be deployed")
    assert refused_message(3, fix=True) == ("the model's fix was refused 3 time(s); see status.fix")
    assert refused_message(3, fix=False).startswith("the model's code was refused 3 time(s)")


def test_every_prompt_names_the_integrations_parts_and_no_value() -> None:
    spec = IntegrationSpec.model_validate(
        {
            "workspace": "ws",
            "documentType": "invoice",
            "trigger": "DocumentValidated",
            "instructions": "Export the invoice.",
            "secrets": ["API_KEY"],
            "egress": {"hosts": ["api.example.com"]},
        }
    )
    accounts = [AccountRef(name="sheets", app="google_sheets", account_id="apn_123")]
    context = prompt_context("inv", spec, {"type": "object"}, accounts, False)
    assert context["secret_names"] == ("API_KEY",)
    assert context["accounts"] == tuple(accounts)
    assert context["egress_hosts"] == ("api.example.com",)
    assert (context["python_version"], context["nodejs_version"]) == ("3.12", None)
    # It is exactly what a request takes: the prompt is built from it.
    request = GenerateRequest(**context, instructions="Export the invoice.")
    assert (request.integration, request.document_type, request.trigger) == (
        "inv",
        "invoice",
        "DocumentValidated",
    )
    assert request.allow_document_values is False
