"""Resuming at a start (handlers.resume): which Integrations are kopf's to reconcile, and when
the plan for one changes nothing, so the resume makes no call for it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from docrelay.reconcile.deploy import DeployAction, DeployRequest
from docrelay.reconcile.integration import left_to_kopf, resume_needs_nothing
from tests.unit.test_reconcile import NOW, REV_A, integration, observe, revision

LATER = NOW + timedelta(hours=5)


def written(**spec: Any) -> dict[str, Any]:
    """The status the handler wrote for the integration at NOW, as the API stores it."""
    plan = observe(integration(**spec), revision(REV_A))
    return plan.status_patch()


def test_a_status_as_the_handler_wrote_it_needs_nothing_hours_later() -> None:
    stored = written()
    plan = observe(integration(status=stored), revision(REV_A), now=LATER)
    assert resume_needs_nothing(plan, stored, LATER)


def test_another_writers_condition_does_not_make_a_write() -> None:
    """Paused (the runs') and AgentAvailable (the agent's) are merged as write_status merges
    them: the stored status with them is still what the resume would write."""
    stored = written()
    paused = {
        "type": "Paused",
        "status": "False",
        "reason": "Resumed",
        "message": "resumed by `docrelay resume`",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    stored["conditions"] = [*stored["conditions"], paused]
    plan = observe(integration(status=stored), revision(REV_A), now=LATER)
    assert resume_needs_nothing(plan, stored, LATER)


def test_what_changed_while_no_operator_ran_is_written() -> None:
    # The revision spec.code names was deleted: it is made again.
    stored = written()
    plan = observe(integration(status=stored), now=LATER)
    assert plan.create_code_revision
    assert not resume_needs_nothing(plan, stored, LATER)
    # A secret the integration needs went: SecretsReady turns False (and an Event says so).
    stored = written(secrets=["API_KEY"])
    plan = observe(integration(status=stored, secrets=["API_KEY"]), revision(REV_A), now=LATER)
    assert resume_needs_nothing(plan, stored, LATER)  # it was missing then too
    before = observe(
        integration(secrets=["API_KEY"]), revision(REV_A), present_secret_keys={"API_KEY"}
    ).status_patch()
    plan = observe(integration(status=before, secrets=["API_KEY"]), revision(REV_A), now=LATER)
    assert not resume_needs_nothing(plan, before, LATER)
    # Only the run counters differ: they are not the resume's, nothing is written.
    counted = {**written(), "runCounts": {"succeeded": 3}}
    plan = observe(integration(status=counted), revision(REV_A), now=LATER)
    assert resume_needs_nothing(plan, counted, LATER)


def test_what_kopf_reconciles_is_left_to_it() -> None:
    stored = written()
    assert left_to_kopf(integration(), None)  # no status yet: kopf's create handler
    assert left_to_kopf(integration(status=stored, generation=2), None)  # spec changed
    pending = DeployRequest("r9", DeployAction.REVERT, REV_A, "alice", NOW)
    assert left_to_kopf(integration(status=stored), pending)
    handled = {**stored, "handledDeployRequest": "r9"}
    assert not left_to_kopf(integration(status=handled), pending)
    assert not left_to_kopf(integration(status=stored), None)
