"""The Integration's decisions: inputs -> plan, conditions and status (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docrelay.builders.revision import revision_name
from docrelay.models import Integration
from docrelay.models.common import Runtime
from docrelay.reconcile.deploy import (
    DeployAction,
    DeployRequest,
    MalformedRequest,
    dependencies_digest,
    parse_request,
)
from docrelay.reconcile.integration import (
    Observed,
    Plan,
    RevisionInfo,
    merge_conditions,
    plan_integration,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CODE_A = "def lambda_handler(event, context):\n    return 'a'\n"
CODE_B = "def lambda_handler(event, context):\n    return 'b'\n"
BROKEN = "def lambda_handler(event, context):\n    return (\n"
REV_A = revision_name("orders", CODE_A, Runtime())
REV_B = revision_name("orders", CODE_B, Runtime())


def integration(
    code: str | None = CODE_A,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    **spec: Any,
) -> Integration:
    body: dict[str, Any] = {
        "metadata": {"name": "orders", "namespace": "team", "generation": generation, "uid": "u"},
        "spec": {"workspace": "ws", "documentType": "dt", "trigger": "DocumentValidated", **spec},
        "status": status,
    }
    if code is not None:
        body["spec"]["code"] = code
    else:
        body["spec"]["instructions"] = "export it"
    return Integration.model_validate(body)


def revision(name: str, minutes: int = 0, valid: bool | None = True) -> RevisionInfo:
    return RevisionInfo(name, "orders", NOW - timedelta(minutes=60 - minutes), valid)


def observe(obj: Integration, *revisions: RevisionInfo, **kwargs: Any) -> Plan:
    defaults: dict[str, Any] = {
        "present_secret_keys": frozenset(),
        "present_accounts": frozenset(),
        "request": None,
        "now": NOW,
    }
    return plan_integration(Observed(obj, tuple(revisions), **{**defaults, **kwargs}))


def conditions(plan: Plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in plan.status.conditions}


def history(revision: str, previous: str | None = None, reason: str = "CodeApplied") -> dict:
    return {
        "revision": revision,
        "previousRevision": previous,
        "deployedBy": "docrelay-operator",
        "deployedAt": "2026-01-01T00:00:00Z",
        "reason": reason,
    }


def request(revision: str, action: DeployAction = DeployAction.DEPLOY, rid: str = "r1"):
    return DeployRequest(rid, action, revision, "alice", NOW)


# --- the code lifecycle ----------------------------------------------------------------------


def test_new_integration_creates_and_deploys_its_code_revision() -> None:
    plan = observe(integration())
    assert plan.create_code_revision and plan.validate_code_revision
    assert plan.deployed_revision == REV_A
    assert plan.status.code_revision == REV_A
    assert plan.status.latest_revision == REV_A
    assert [(h.revision, h.previous_revision, h.reason) for h in plan.status.history] == [
        (REV_A, None, "CodeApplied")
    ]
    assert conditions(plan) == {
        "Ready": ("True", "Ready"),
        "CodeReady": ("True", "Deployed"),
        "SecretsReady": ("True", "NoSecretsNeeded"),
        "AccountsReady": ("True", "NoAccountsNeeded"),
    }
    assert plan.status.conditions[0].type == "Ready"
    assert all(c.observed_generation == 1 for c in plan.status.conditions)
    assert [e.reason for e in plan.events] == ["CodeApplied"]


def test_same_code_again_changes_nothing() -> None:
    first = observe(integration())
    again = observe(integration(status=first.status_patch()), revision(REV_A, minutes=1))
    assert not again.create_code_revision and not again.validate_code_revision
    assert again.status.history == first.status.history
    assert again.events == ()
    # lastTransitionTime stays when the status does not change
    assert again.status.conditions == first.status.conditions


def test_changed_code_makes_and_deploys_a_new_revision() -> None:
    status = observe(integration()).status_patch()
    plan = observe(integration(CODE_B, status=status, generation=2), revision(REV_A))
    assert plan.create_code_revision
    assert plan.deployed_revision == REV_B
    assert plan.status.history[-1].previous_revision == REV_A
    assert conditions(plan)["CodeReady"] == ("True", "Deployed")
    assert all(c.observed_generation == 2 for c in plan.status.conditions)


def test_syntax_error_keeps_the_deployed_revision_and_says_where() -> None:
    status = observe(integration()).status_patch()
    plan = observe(integration(BROKEN, status=status, generation=2), revision(REV_A))
    broken = revision_name("orders", BROKEN, Runtime())
    assert plan.create_code_revision  # the invalid revision is kept, to show and fix
    assert plan.deployed_revision == REV_A
    code_ready = next(c for c in plan.status.conditions if c.type == "CodeReady")
    assert (code_ready.status.value, code_ready.reason) == ("False", "SyntaxError")
    assert code_ready.message == (
        f"spec.code (revision {broken}) line 2, column 12: '(' was never closed; "
        f"revision {REV_A} stays deployed"
    )
    assert conditions(plan)["Ready"] == ("False", "SyntaxError")
    assert [e.reason for e in plan.events] == ["InvalidCode"]


def test_instructions_only_has_no_code_yet() -> None:
    plan = observe(integration(code=None))
    assert plan.code_revision is None and not plan.create_code_revision
    assert conditions(plan)["CodeReady"] == ("False", "NoCode")
    assert conditions(plan)["Ready"] == ("False", "NoCode")


def test_deployed_revision_deleted_by_someone() -> None:
    status = {**observe(integration()).status_patch(), "deployedRevision": "orders-gone"}
    plan = observe(integration(status=status), revision(REV_A))
    assert conditions(plan)["CodeReady"] == ("False", "DeployedRevisionMissing")


# --- deploy and revert -----------------------------------------------------------------------


def deployed_b_status() -> dict[str, Any]:
    first = observe(integration()).status_patch()
    return observe(integration(CODE_B, status=first), revision(REV_A)).status_patch()


@pytest.mark.parametrize(
    ("req", "deployed", "reason", "event"),
    [
        (request(REV_A), REV_A, "Deployed", "Deployed"),
        (request(REV_A, DeployAction.REVERT), REV_A, "Reverted", "Reverted"),
        (request("orders-missing"), REV_B, None, "DeployRejected"),
        (request("orders-invalid"), REV_B, None, "DeployRejected"),
        (request("orders-unchecked"), REV_B, None, "DeployRejected"),
        (MalformedRequest("x-1"), REV_B, None, "DeployRejected"),
        (request(REV_B), REV_B, None, None),  # already deployed: nothing to record
    ],
)
def test_deploy_requests(
    req: DeployRequest | MalformedRequest, deployed: str, reason: str | None, event: str | None
) -> None:
    plan = observe(
        integration(CODE_B, status=deployed_b_status(), generation=2),
        revision(REV_A),
        revision(REV_B, minutes=1),
        revision("orders-invalid", minutes=2, valid=False),
        revision("orders-unchecked", minutes=3, valid=None),
        request=req,
    )
    assert plan.deployed_revision == deployed
    assert plan.status.handled_deploy_request == req.id
    assert plan.status.history[-1].reason == (reason or "CodeApplied")
    assert [e.reason for e in plan.events] == ([event] if event else [])
    if reason:
        record = plan.status.history[-1]
        assert (record.revision, record.previous_revision, record.deployed_by) == (
            REV_A,
            REV_B,
            "alice",
        )
        code_ready = next(c for c in plan.status.conditions if c.type == "CodeReady")
        assert code_ready.reason == "ManualDeploy"
        assert f"by alice at {NOW.isoformat()}" in code_ready.message
        assert f"spec.code is revision {REV_B}" in code_ready.message


def test_a_handled_request_is_not_carried_out_twice() -> None:
    status = deployed_b_status()
    kwargs = {"request": request(REV_A)}
    revs = (revision(REV_A), revision(REV_B, minutes=1))
    once = observe(integration(CODE_B, status=status, generation=2), *revs, **kwargs)
    # spec.code changes after the manual deploy: the code wins, the old request stays handled
    code_c = CODE_B.replace("'b'", "'c'")
    later = observe(integration(code_c, status=once.status_patch(), generation=3), *revs, **kwargs)
    assert later.deployed_revision == revision_name("orders", code_c, Runtime())
    assert later.status.history[-1].reason == "CodeApplied"
    assert later.status.history[-1].previous_revision == REV_A
    assert len(later.status.history) == len(once.status.history) + 1


def test_manual_deploy_stays_while_spec_code_is_unchanged() -> None:
    revs = (revision(REV_A), revision(REV_B, minutes=1))
    pinned = observe(
        integration(CODE_B, status=deployed_b_status(), generation=2),
        *revs,
        request=request(REV_A),
    )
    # a later, unrelated spec change (generation 3) does not undo the deploy
    again = observe(
        integration(CODE_B, status=pinned.status_patch(), generation=3, timeoutSeconds=60),
        *revs,
        request=request(REV_A),
    )
    assert again.deployed_revision == REV_A


# --- retention -------------------------------------------------------------------------------


def test_oldest_non_deployed_revisions_beyond_the_limit_are_deleted() -> None:
    old = [revision(f"orders-{i:02d}", minutes=i) for i in range(5)]
    # orders-00 was deployed by hand; spec.code (REV_A, the newest) is unchanged
    status = {**observe(integration()).status_patch(), "deployedRevision": "orders-00"}
    plan = observe(integration(status=status), *old, revision(REV_A, minutes=10), history_limit=3)
    # 6 revisions, keep 3: neither the deployed one nor spec.code's is deleted
    assert plan.deployed_revision == "orders-00"
    assert plan.delete_revisions == ("orders-01", "orders-02", "orders-03")
    assert plan.status.latest_revision == REV_A
    assert [e.reason for e in plan.events] == ["RevisionsPruned"]


# --- secrets and accounts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secrets", "present", "expected", "message_part"),
    [
        (["API_KEY", "TOKEN"], set(), ("False", "SecretsMissing"), "with key API_KEY, TOKEN;"),
        (["API_KEY", "TOKEN"], {"TOKEN"}, ("False", "SecretsMissing"), "with key API_KEY;"),
        (["API_KEY"], {"API_KEY", "OTHER"}, ("True", "SecretsPresent"), "API_KEY"),
        ([], {"OTHER"}, ("True", "NoSecretsNeeded"), "spec.secrets is empty"),
    ],
)
def test_secrets_ready(
    secrets: list[str], present: set[str], expected: tuple[str, str], message_part: str
) -> None:
    plan = observe(integration(secrets=secrets), present_secret_keys=frozenset(present))
    condition = next(c for c in plan.status.conditions if c.type == "SecretsReady")
    assert (condition.status.value, condition.reason) == expected
    assert message_part in condition.message
    assert conditions(plan)["Ready"][0] == expected[0]


@pytest.mark.parametrize(
    ("accounts", "present", "expected", "message_part"),
    [
        (["xero", "hubspot"], set(), ("False", "AccountsMissing"), "team: xero, hubspot;"),
        (["xero", "hubspot"], {"xero"}, ("False", "AccountsMissing"), "team: hubspot;"),
        (["xero"], {"xero"}, ("True", "AccountsPresent"), "xero"),
    ],
)
def test_accounts_ready(
    accounts: list[str], present: set[str], expected: tuple[str, str], message_part: str
) -> None:
    plan = observe(integration(connectedAccounts=accounts), present_accounts=frozenset(present))
    condition = next(c for c in plan.status.conditions if c.type == "AccountsReady")
    assert (condition.status.value, condition.reason) == expected
    assert message_part in condition.message


def test_condition_transition_time_moves_only_when_status_changes() -> None:
    missing = observe(integration(secrets=["API_KEY"]))
    later = NOW + timedelta(minutes=5)
    still = observe(
        integration(secrets=["API_KEY"], status=missing.status_patch()), revision(REV_A), now=later
    )
    fixed = observe(
        integration(secrets=["API_KEY"], status=missing.status_patch()),
        revision(REV_A),
        now=later,
        present_secret_keys=frozenset({"API_KEY"}),
    )

    def transition(plan: Plan, kind: str) -> datetime:
        return next(c for c in plan.status.conditions if c.type == kind).last_transition_time

    assert transition(still, "SecretsReady") == NOW.replace(microsecond=0)
    assert transition(fixed, "SecretsReady") == later
    assert transition(fixed, "CodeReady") == NOW  # unchanged


# --- the request annotation ------------------------------------------------------------------


def test_request_round_trip() -> None:
    req = request(REV_A, DeployAction.REVERT)
    assert parse_request(req.encode()) == req


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "{}",
        '{"id": "a", "action": "explode", "revision": "r", "requestedBy": "x",'
        ' "requestedAt": "2026-01-01T00:00:00+00:00"}',
        '{"id": "a b", "action": "deploy", "revision": "r", "requestedBy": "x",'
        ' "requestedAt": "2026-01-01T00:00:00+00:00"}',
        '{"id": "a", "action": "deploy", "revision": "Not A Name", "requestedBy": "x",'
        ' "requestedAt": "2026-01-01T00:00:00+00:00"}',
    ],
)
def test_malformed_requests_are_recognised(raw: str) -> None:
    parsed = parse_request(raw)
    assert isinstance(parsed, MalformedRequest)
    assert parse_request(raw) == parsed  # a stable id: handled once


def test_dependencies_digest_changes_only_with_presence() -> None:
    assert dependencies_digest({"A", "B"}, {"x"}) == dependencies_digest({"B", "A"}, {"x"})
    assert dependencies_digest({"A"}, {"x"}) != dependencies_digest({"A", "B"}, {"x"})
    assert dependencies_digest({"A"}, set()) != dependencies_digest({"A"}, {"x"})


def test_status_patch_leaves_the_run_counters_to_the_run_handlers() -> None:
    counted = {
        **observe(integration()).status_patch(),
        "runCounts": {"succeeded": 7},
        "consecutiveFailures": 2,
        "activeRuns": 1,
    }
    patch = observe(integration(status=counted)).status_patch()
    # A merge patch without these keys leaves whatever the run handlers wrote since.
    assert not {"lastRun", "runCounts", "consecutiveFailures", "activeRuns"} & set(patch)
    assert patch["deployedRevision"]


def _c(kind: str, status: str, reason: str = "R") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason}


def test_a_condition_another_writer_set_since_survives_the_status_write() -> None:
    """The runs paused the integration and the agent became unavailable after kopf's body was
    read: the reconciler's write keeps their latest values and owns only its four types."""
    ours = [_c("Ready", "True"), _c("CodeReady", "True"), _c("AgentAvailable", "True")]
    stored = [
        _c("Ready", "False", "Old"),
        _c("AgentAvailable", "False", "Unreachable"),
        _c("Paused", "True", "ConsecutiveFailures"),
    ]
    assert merge_conditions(ours, stored) == [
        _c("Ready", "True"),
        _c("CodeReady", "True"),
        _c("AgentAvailable", "False", "Unreachable"),
        _c("Paused", "True", "ConsecutiveFailures"),
    ]


def test_a_condition_another_writer_removed_since_stays_removed() -> None:
    """`docrelay resume` cleared Paused after the body was read: it is not written back."""
    ours = [_c("Ready", "False"), _c("Paused", "True", "ConsecutiveFailures")]
    assert merge_conditions(ours, [_c("Ready", "False")]) == [_c("Ready", "False")]


JS_CODE = "export async function handler(event) {\n  return { summary: 'ok' };\n}\n"


def test_an_end_of_life_nodejs_line_still_deploys_and_says_so_once_per_spec_change() -> None:
    """Node.js 20 is past its end of life: an Integration naming it keeps working (its code is
    deployed, it is Ready) and gets one Warning Event naming the supported lines, not one per
    reconcile; the lines still supported get none."""
    old = integration(JS_CODE, runtime={"nodejs": "20"})
    plan = observe(old)
    assert conditions(plan)["Ready"] == ("True", "Ready")
    warned = [(e.type, e.reason, e.message) for e in plan.events if e.type == "Warning"]
    assert warned == [(
        "Warning", "EndOfLifeRuntime",
        'spec.runtime.nodejs "20": Node.js 20 is past its end of life (since April 2026; no '
        'more security fixes upstream). It still runs; move to a supported line ("22", "24", '
        '"26")',
    )]
    revision_20 = revision_name("orders", JS_CODE, old.spec.runtime)
    again = observe(integration(JS_CODE, status=plan.status_patch(), runtime={"nodejs": "20"}),
                    revision(revision_20, minutes=1))
    assert again.events == ()  # the same generation: said already
    edited = observe(integration(JS_CODE, status=plan.status_patch(), generation=2,
                                 runtime={"nodejs": "20"}), revision(revision_20, minutes=1))
    assert [e.reason for e in edited.events] == ["EndOfLifeRuntime"]
    for supported in ("22", "24", "26"):
        fresh = observe(integration(JS_CODE, runtime={"nodejs": supported}))
        assert [e.reason for e in fresh.events] == ["CodeApplied"], supported
