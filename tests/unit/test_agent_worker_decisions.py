"""What the agent worker and the conversations' threads decide around their API calls, pure
(reconcile/agent.py, reconcile/conversation.py): the tasks a generation goes through, an
override's verdict, the Integration as a thread's test follower sees it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docrelay.models.agent import AgentState
from docrelay.models.conversation import UserAction, UserTurn, Verdict
from docrelay.models.integration import DeployPolicy, Integration
from docrelay.reconcile.agent import GenerationDue, generation_task, task_testing, waiting_task
from docrelay.reconcile.conversation import deploying_manually, override_verdict

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
HASH = "sha256:" + "ab" * 32


def test_a_generation_is_failed_until_code_is_accepted_then_testing() -> None:
    base = generation_task(GenerationDue(HASH, "req-1"), NOW)
    assert (base.state, base.input_hash, base.request_id) == (
        AgentState.FAILED, HASH, "req-1",
    )  # fmt: skip
    testing = task_testing(base, "bills-r2")
    assert (testing.state, testing.revision) == (AgentState.TESTING, "bills-r2")
    assert testing.message == "revision bills-r2 is being test-run"


def test_a_task_waits_for_the_providers_retry_after_at_least_our_own_wait() -> None:
    base = generation_task(GenerationDue(HASH, None), NOW)
    task, said = waiting_task(base, "the provider answered 429", 120.0, 60.0, NOW)
    assert task.state is AgentState.WAITING and task.next_attempt_at == NOW + timedelta(minutes=2)
    later = (NOW + timedelta(minutes=2)).isoformat()
    assert said == f"the provider answered 429; asked again after {later}"
    assert task.message == said
    task, _ = waiting_task(base, "down", None, 60.0, NOW)
    assert task.next_attempt_at == NOW + timedelta(minutes=1)


def test_an_override_passes_the_verdict_saying_who_and_why() -> None:
    turn = UserTurn(id="u-3", action=UserAction.OVERRIDE, text="reviewed by hand", by="ana")
    verdict = override_verdict(turn, "reviewed by hand")
    assert verdict.verdict is Verdict.PASS and verdict.overridden_by == "ana"
    assert verdict.override_reason == "reviewed by hand"
    anonymous = UserTurn(id="u-4", action=UserAction.OVERRIDE, text="x")
    assert override_verdict(anonymous, "x").overridden_by == "unknown"


def test_a_threads_test_follower_never_deploys_by_itself() -> None:
    integration = Integration.model_validate(
        {
            "metadata": {"name": "bills", "namespace": "ns"},
            "spec": {
                "workspace": "ws", "documentType": "dt", "trigger": "DocumentParseCompleted",
                "code": "def lambda_handler(event, context):\n    pass\n",
                "deployPolicy": "Automatic",
            },
        }
    )  # fmt: skip
    manual = deploying_manually(integration)
    assert manual.spec.deploy_policy is DeployPolicy.MANUAL
    assert integration.spec.deploy_policy is DeployPolicy.AUTOMATIC  # the original unchanged
    assert manual.spec.code == integration.spec.code
