"""The agent's decisions (reconcile.agent) and how deploys treat agent revisions (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docrelay.builders.agent import build_agent_revision, build_test_run
from docrelay.models import Integration
from docrelay.models.agent import (
    AgentState,
    AgentTask,
    FixAttempt,
    IntegrationAgentStatus,
    RunFixStatus,
)
from docrelay.models.common import Runtime
from docrelay.models.integration import DeployPolicy, IntegrationSpec, IntegrationStatus
from docrelay.models.revision import IntegrationRevision, RevisionTestRun, SourceType
from docrelay.models.run import RunPhase
from docrelay.reconcile.agent import (
    AGENT_ACTOR,
    AgentReason,
    AgentRequest,
    ProviderHealth,
    agent_condition,
    condition_tested,
    deploy_request_id,
    fix_decision,
    generation_due,
    input_hash,
    model_label,
    parse_agent_request,
    pick_test_documents,
    record_fix,
    task_after_tests,
    untested_refusal,
    update_fix_history,
    verdict_of,
    waiting_until,
)
from docrelay.reconcile.deploy import DeployAction, DeployRequest
from docrelay.reconcile.integration import Observed, RevisionInfo, plan_integration
from docrelay.reconcile.revision import revision_info

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
HASH = "sha256:" + "a" * 64


def spec(**changes: Any) -> IntegrationSpec:
    body: dict[str, Any] = {
        "workspace": "ws",
        "documentType": "dt",
        "trigger": "DocumentValidated",
        "instructions": "Export the invoice.",
        "secrets": ["API_KEY"],
        **changes,
    }
    return IntegrationSpec.model_validate({k: v for k, v in body.items() if v is not None})


def request(rid: str = "r1") -> AgentRequest:
    return AgentRequest(rid, "alice", NOW)


# --- requests ---------------------------------------------------------------------------------


def test_agent_requests_round_trip_and_garbage_is_ignored() -> None:
    assert parse_agent_request(request().encode()) == request()
    for raw in (
        None,
        "",
        "not json",
        '{"id": "a b", "requestedAt": "2026-01-01T00:00:00"}',
        '{"requestedAt": "2026-01-01T00:00:00"}',
        '{"id": "x"}',
    ):
        assert parse_agent_request(raw) is None


# --- generation -------------------------------------------------------------------------------


def test_input_hash_follows_what_the_prompt_is_made_from() -> None:
    base = input_hash(spec())
    assert input_hash(spec()) == base
    assert input_hash(spec(instructions="Export it twice.")) != base
    assert input_hash(spec(secrets=["API_KEY", "OTHER"])) != base
    assert input_hash(spec(timeoutSeconds=30)) == base  # not in the prompt


@pytest.mark.parametrize(
    ("changes", "agent", "req", "due"),
    [
        ({}, IntegrationAgentStatus(), None, (True, None)),  # never generated
        ({"code": "def lambda_handler(e, c): pass"}, IntegrationAgentStatus(), None, None),
        ({"instructions": None, "code": "x = 1"}, IntegrationAgentStatus(), None, None),
        # done for this input: nothing, whatever its outcome
        ({}, "Failed", None, None),
        ({}, "TestPassed", None, None),
        # a new request: again, even after a failure
        ({}, "Failed", request("r2"), (True, "r2")),
        # a handled request is not served twice
        ({}, "Failed", request("r1"), None),
        # waiting for the provider: again once due, not before
        ({}, "Waiting-due", None, (True, "r1")),
        ({}, "Waiting-later", None, None),
        # changed instructions: a new generation
        ({"instructions": "Something else."}, "TestPassed", None, (True, None)),
    ],
)
def test_generation_due(changes: dict[str, Any], agent: Any, req: Any, due: Any) -> None:
    wanted = spec(**changes)
    if isinstance(agent, str):
        state, _, when = agent.partition("-")
        agent = IntegrationAgentStatus(
            handled_generate_request="r1",
            generation=AgentTask(
                state=AgentState(state),
                input_hash=input_hash(spec()),
                request_id="r1",
                next_attempt_at=(NOW - timedelta(seconds=1))
                if when == "due"
                else (NOW + timedelta(seconds=5))
                if when == "later"
                else None,
            ),
        )
    result = generation_due(wanted, agent, req, NOW)
    if due is None:
        assert result is None
    else:
        assert result is not None
        assert (result.input_hash, result.request_id) == (input_hash(wanted), due[1])


def test_waiting_honours_retry_after_but_never_less_than_our_wait() -> None:
    assert waiting_until(NOW, None, 60) == NOW + timedelta(seconds=60)
    assert waiting_until(NOW, 300.0, 60) == NOW + timedelta(seconds=300)
    assert waiting_until(NOW, 1.0, 60) == NOW + timedelta(seconds=60)


def test_model_label_fits_the_revision_field() -> None:
    assert model_label("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"
    assert model_label("claude sonnet 4") == "claude-sonnet-4"
    assert model_label("  ") == "unknown"
    assert len(model_label("m" * 300)) == 128


# --- fixes ------------------------------------------------------------------------------------


def history(*states: AgentState) -> RunFixStatus:
    attempts = tuple(FixAttempt(request_id=f"r{i}", state=s) for i, s in enumerate(states, 1))
    return RunFixStatus(state=states[-1], history=attempts)


@pytest.mark.parametrize(
    ("fix", "req", "phase", "expected"),
    [
        (None, None, RunPhase.FAILED, "nothing"),
        (None, request("r1"), RunPhase.FAILED, "due"),
        (None, request("r1"), RunPhase.DEAD_LETTERED, "due"),
        (None, request("r1"), RunPhase.TIMED_OUT, "due"),
        (None, request("r1"), RunPhase.SUCCEEDED, "refused"),
        (None, request("r1"), RunPhase.RUNNING, "refused"),
        (history(AgentState.TEST_FAILED), request("r1"), RunPhase.FAILED, "nothing"),  # handled
        (history(AgentState.TEST_FAILED), request("r2"), RunPhase.FAILED, "due"),
        (
            history(AgentState.TEST_FAILED, AgentState.FAILED, AgentState.TEST_FAILED),
            request("r4"),
            RunPhase.FAILED,
            "refused",  # three attempts already: bounded
        ),
    ],
)
def test_fix_decision(
    fix: RunFixStatus | None, req: AgentRequest | None, phase: RunPhase, expected: str
) -> None:
    decision = fix_decision(fix, req, phase, 3, NOW)
    outcome = "due" if decision.due else "refused" if decision.refusal else "nothing"
    assert outcome == expected, decision


def test_a_waiting_fix_is_tried_again_when_due() -> None:
    waiting = record_fix(
        None, request("r1"), AgentState.WAITING, NOW, next_attempt_at=NOW + timedelta(seconds=5)
    )
    assert not fix_decision(waiting, request("r1"), RunPhase.FAILED, 3, NOW).due
    later = fix_decision(waiting, request("r1"), RunPhase.FAILED, 3, NOW + timedelta(seconds=6))
    assert later.due and later.request is not None and later.request.id == "r1"


def test_each_fix_attempt_is_recorded_once_and_follows_its_proposal() -> None:
    first = record_fix(None, request("r1"), AgentState.WAITING, NOW, message="provider down")
    first = record_fix(first, request("r1"), AgentState.TESTING, NOW, revision="orders-abc")
    assert [(a.request_id, a.state) for a in first.history] == [("r1", AgentState.TESTING)]
    second = record_fix(first, request("r2"), AgentState.FAILED, NOW, message="x" * 5000)
    assert [a.request_id for a in second.history] == ["r1", "r2"]
    assert second.message is not None and len(second.message) <= 2048
    deployed = update_fix_history(first, AgentState.DEPLOYED, NOW)
    assert deployed.state is AgentState.DEPLOYED
    assert deployed.history[-1].state is AgentState.DEPLOYED
    assert deployed.history[-1].revision == "orders-abc"


# --- tests and deploy -------------------------------------------------------------------------


def test_test_documents_prefer_the_annotation_then_recent_runs() -> None:
    recent = [
        (NOW - timedelta(minutes=3), "docA"),
        (NOW - timedelta(minutes=1), "docB"),
        (NOW - timedelta(minutes=2), "docA"),
        (NOW - timedelta(minutes=9), "docC"),
    ]
    assert pick_test_documents(None, recent, 2) == ["docB", "docA"]
    assert pick_test_documents(None, recent, 5) == ["docB", "docA", "docC"]
    assert pick_test_documents(" docX, docY ,bad id!,docX", recent, 5) == ["docX", "docY"]
    assert pick_test_documents(None, [], 3) == []


@pytest.mark.parametrize(
    ("phases", "verdict"),
    [
        ([], None),
        ([RunPhase.SUCCEEDED, RunPhase.SUCCEEDED], True),
        ([RunPhase.SUCCEEDED, None], None),
        ([RunPhase.SUCCEEDED, RunPhase.RUNNING], None),
        ([RunPhase.FAILED, RunPhase.RUNNING], False),  # one failure decides
        ([RunPhase.SUCCEEDED, RunPhase.CANCELLED], False),
    ],
)
def test_test_verdict(phases: list[RunPhase | None], verdict: bool | None) -> None:
    assert verdict_of(phases) is verdict


def test_tested_condition_names_the_runs() -> None:
    runs = [
        RevisionTestRun(name="o-1", phase=RunPhase.SUCCEEDED),
        RevisionTestRun(name="o-2", phase=RunPhase.FAILED),
    ]
    failed = condition_tested(False, runs, NOW, 1)
    assert (failed.status.value, failed.reason) == ("False", "TestFailed")
    assert failed.message == "test runs failed: o-2 (Failed)"
    assert condition_tested(True, runs[:1], NOW, 1).reason == "TestPassed"
    assert condition_tested(None, runs, NOW, 1).status.value == "Unknown"


def task(state: AgentState = AgentState.TESTING) -> AgentTask:
    return AgentTask(state=state, revision="orders-abc", input_hash=HASH)


@pytest.mark.parametrize(
    ("state", "verdict", "policy", "deployed", "new_state", "deploy"),
    [
        (AgentState.TESTING, None, DeployPolicy.AUTOMATIC, None, AgentState.TESTING, False),
        (AgentState.TESTING, False, DeployPolicy.AUTOMATIC, None, AgentState.TEST_FAILED, False),
        (AgentState.TESTING, True, DeployPolicy.MANUAL, None, AgentState.TEST_PASSED, False),
        (AgentState.TESTING, True, DeployPolicy.AUTOMATIC, None, AgentState.TEST_PASSED, True),
        # Automatic keeps asking until the deploy shows (the request id is per revision)
        (AgentState.TEST_PASSED, True, DeployPolicy.AUTOMATIC, "x", AgentState.TEST_PASSED, True),
        (
            AgentState.TEST_PASSED,
            True,
            DeployPolicy.MANUAL,
            "orders-abc",
            AgentState.DEPLOYED,
            False,
        ),
        (AgentState.FAILED, True, DeployPolicy.AUTOMATIC, None, AgentState.FAILED, False),
    ],
)
def test_task_after_tests(
    state: AgentState,
    verdict: bool | None,
    policy: DeployPolicy,
    deployed: str | None,
    new_state: AgentState,
    deploy: bool,
) -> None:
    new, asked = task_after_tests(task(state), verdict, policy, deployed, NOW)
    assert (new.state, asked) == (new_state, deploy)


def test_deploy_request_id_is_one_per_revision() -> None:
    assert deploy_request_id("orders-a") == deploy_request_id("orders-a")
    assert deploy_request_id("orders-a") != deploy_request_id("orders-b")
    assert len(deploy_request_id("orders-a")) <= 64


@pytest.mark.parametrize(
    ("source", "tested", "refused"),
    [
        ("User", None, False),
        ("Agent", True, False),
        ("Agent", None, True),
        ("Agent", False, True),
        ("Fix", None, True),
        ("Fix", True, False),
    ],
)
def test_only_tested_agent_revisions_may_be_deployed(
    source: str, tested: bool | None, refused: bool
) -> None:
    assert (untested_refusal(source, tested) is not None) is refused


def orders(status: dict[str, Any] | None = None) -> Integration:
    return Integration.model_validate(
        {
            "metadata": {"name": "orders", "namespace": "team", "generation": 1, "uid": "u"},
            "spec": {
                "workspace": "ws",
                "documentType": "dt",
                "trigger": "DocumentValidated",
                "instructions": "Export it.",
            },
            "status": status,
        }
    )


def agent_revision(name: str, tested: bool | None, source: str = "Agent") -> RevisionInfo:
    return RevisionInfo(name, "orders", NOW - timedelta(minutes=5), True, None, source, tested)


@pytest.mark.parametrize(
    ("by", "tested", "deployed", "reason"),
    [
        ("alice", True, "orders-abc", "Deployed"),
        (AGENT_ACTOR, True, "orders-abc", "AgentAutomatic"),
        ("alice", None, None, None),
        ("alice", False, None, None),
    ],
)
def test_the_operator_deploys_agent_revisions_only_once_tested(
    by: str, tested: bool | None, deployed: str | None, reason: str | None
) -> None:
    plan = plan_integration(
        Observed(
            orders(),
            (agent_revision("orders-abc", tested),),
            frozenset(),
            frozenset(),
            DeployRequest("q1", DeployAction.DEPLOY, "orders-abc", by, NOW),
            NOW,
        )
    )
    assert plan.deployed_revision == deployed
    if reason:
        assert plan.status.history[-1].reason == reason
        assert plan.status.history[-1].deployed_by == by
    else:
        (event,) = plan.events
        assert event.reason == "DeployRejected" and "test runs" in event.message
    code_ready = next(c for c in plan.status.conditions if c.type == "CodeReady")
    if deployed is None:
        assert "spec.instructions" in code_ready.message


def test_the_integration_handler_never_writes_the_agent_status() -> None:
    status = IntegrationStatus(agent=IntegrationAgentStatus(generation=task())).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    plan = plan_integration(Observed(orders(status), (), frozenset(), frozenset(), None, NOW))
    assert "agent" not in plan.status_patch()


# --- the AgentAvailable condition -------------------------------------------------------------


def test_agent_condition() -> None:
    missing = agent_condition(ProviderHealth(False, "not set: DOCRELAY_AGENT_KIND"), 2, NOW)
    assert missing is not None
    assert (missing.status.value, missing.reason) == ("False", "NotConfigured")
    assert "DOCRELAY_AGENT_KIND" in missing.message and missing.observed_generation == 2
    fine = agent_condition(ProviderHealth(True, "model m at api.example"), 1, NOW)
    assert fine is not None and (fine.status.value, fine.reason) == ("True", "Available")
    down = ProviderHealth(True, "model m at api.example", AgentReason.UNREACHABLE, "503 x")
    condition = agent_condition(down, 1, NOW)
    assert condition is not None and condition.reason == "Unreachable"
    assert condition.message == "model m at api.example: 503 x"


# --- builders ---------------------------------------------------------------------------------


def test_agent_revision_manifest_is_a_valid_revision() -> None:
    code = "def lambda_handler(event, context):\n    return 1\n"
    manifest = build_agent_revision(
        integration="orders",
        integration_uid="u",
        code=code,
        runtime=Runtime(),
        source=SourceType.FIX,
        model="standin-model",
        prompt_hash=HASH,
        user="alice",
        fix_of_run="orders-0123456789abcde",
        parent="orders-1111111111",
    )
    revision = IntegrationRevision.model_validate(manifest)
    assert revision.spec.source.fix_of_run == "orders-0123456789abcde"
    assert revision.spec.parent == "orders-1111111111"
    info = revision_info(
        {
            **manifest,
            "metadata": {**manifest["metadata"], "creationTimestamp": NOW.isoformat()},
            "status": {
                "conditions": [{"type": "Tested", "status": "True"}],
                "validation": {"valid": True},
            },
        }
    )
    assert (info.source, info.tested, info.valid) == ("Fix", True, True)


def test_test_runs_are_named_per_revision_and_document() -> None:
    one = build_test_run(
        namespace="team",
        integration="orders",
        revision="orders-a",
        document="docA",
        trigger="DocumentValidated",
    )
    again = build_test_run(
        namespace="team",
        integration="orders",
        revision="orders-a",
        document="docA",
        trigger="DocumentValidated",
    )
    other = build_test_run(
        namespace="team",
        integration="orders",
        revision="orders-b",
        document="docA",
        trigger="DocumentValidated",
    )
    assert one == again and one["metadata"]["name"] != other["metadata"]["name"]
    assert one["spec"]["test"] is True and one["spec"]["revision"] == "orders-a"
    assert len(one["metadata"]["name"]) <= 56
    # The agent's own test runs are dry; a user's later rounds, dry or live, are new runs.
    assert one["spec"]["dryRun"] is True
    names = {one["metadata"]["name"]}
    for round_, dry in ((1, True), (1, False), (2, False)):
        later = build_test_run(
            namespace="team", integration="orders", revision="orders-a", document="docA",
            trigger="DocumentValidated", dry_run=dry, round_=round_,
        )  # fmt: skip
        assert later["spec"]["dryRun"] is dry
        names.add(later["metadata"]["name"])
    assert len(names) == 4


# --- settings -----------------------------------------------------------------------------------


def test_agent_settings_build_the_provider_or_say_what_is_missing() -> None:
    from docrelay.handlers.agent import provider_settings
    from docrelay.settings import load_settings

    none, missing = provider_settings(load_settings(namespace="team"))
    assert none is None
    assert missing == (
        "not set: DOCRELAY_AGENT_KIND, DOCRELAY_AGENT_BASE_URL, DOCRELAY_AGENT_MODEL"
    )
    configured, description = provider_settings(
        load_settings(
            namespace="team",
            agent_kind="anthropic",
            agent_base_url="https://user:pw@api.anthropic.example",
            agent_model="claude-x",
            agent_api_key_secret="llm-key",
            agent_http_attempts=2,
        )
    )
    assert configured is not None and configured.kind == "anthropic"
    assert configured.api_key_secret is not None
    assert (configured.api_key_secret.name, configured.api_key_secret.key) == ("llm-key", "api-key")
    assert configured.max_attempts == 2
    # The description goes into conditions: no credentials from the URL.
    assert description == "model claude-x at api.anthropic.example"
    assert not load_settings(namespace="team").agent_allow_document_values


def test_the_message_and_event_after_the_tests_say_what_to_do_next() -> None:
    from docrelay.reconcile.agent import tests_message

    passed, event = tests_message("r-1", AgentState.TEST_PASSED, False, "")
    assert passed.endswith("deploy it with `docrelay deploy r-1`") and event == (
        "Normal",
        "AgentTestPassed",
    )
    failed, event = tests_message("r-1", AgentState.TEST_FAILED, False, "t-1, t-2")
    assert "(t-1, t-2); it cannot be deployed" in failed and event == ("Warning", "AgentTestFailed")
    assert tests_message("r-1", AgentState.DEPLOYED, False, "") == (
        "revision r-1 is deployed",
        None,
    )


def test_a_condition_is_rewritten_only_when_it_says_something_new() -> None:
    from datetime import UTC, datetime

    from docrelay.models.conditions import Condition, ConditionStatus
    from docrelay.reconcile.agent import condition_update

    now = datetime(2026, 12, 6, tzinfo=UTC)
    tested = Condition(
        type="Tested", status=ConditionStatus.TRUE, reason="TestPassed", message="ok",
        observed_generation=1, last_transition_time=now,
    )  # fmt: skip
    stored = condition_update([], tested, now, generation=True)
    assert stored is not None and stored[0]["reason"] == "TestPassed"
    assert condition_update(stored, tested, now, generation=True) is None
    newer = tested.model_copy(update={"observed_generation": 2})
    assert condition_update(stored, newer, now, generation=False) is None
    assert condition_update(stored, newer, now, generation=True) is not None


def test_a_one_shot_revision_stopped_at_https_in_its_dry_test_says_how_to_test_it_live() -> None:
    from docrelay.reconcile.agent import judge_words, needs_live_test_message

    said = needs_live_test_message("orders-a", "orders", ["erp.example:443"])
    assert "could not be tested dry" in said and "erp.example:443" in said
    assert "docrelay chat orders --change --live-test --revision orders-a" in said
    assert judge_words("generation", "  ", None) is None  # nothing to judge against
    assert "fixes the failed run r-1" in (judge_words("fix", "Post it.", "r-1") or "")
