"""Failures a user sees: a paused integration is not Ready, missing secrets and accounts post an
Event once per change (no cluster; tests/cluster/test_loud_failures.py runs them for real)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from docrelay.models import Integration
from docrelay.models.integration import IntegrationStatus
from docrelay.reconcile.integration import (
    Observed,
    Plan,
    merge_conditions,
    plan_integration,
    with_ready_json,
)
from docrelay.reconcile.run import count_finished, pause_if_due, resumed

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CODE = "def lambda_handler(event, context):\n    return 'a'\n"


def integration(status: dict[str, Any] | None = None, **spec: Any) -> Integration:
    return Integration.model_validate(
        {
            "metadata": {"name": "orders", "namespace": "team", "generation": 1, "uid": "u"},
            "spec": {
                "workspace": "ws",
                "documentType": "dt",
                "trigger": "DocumentValidated",
                "code": CODE,
                **spec,
            },
            "status": status,
        }
    )


def plan(obj: Integration, **kwargs: Any) -> Plan:
    defaults: dict[str, Any] = {
        "revisions": (),
        "present_secret_keys": frozenset(),
        "present_accounts": frozenset(),
        "request": None,
        "now": NOW,
    }
    return plan_integration(Observed(obj, **{**defaults, **kwargs}))


def ready(conditions: Any) -> tuple[str, str, str]:
    found = [c for c in conditions if (c["type"] if isinstance(c, dict) else c.type) == "Ready"]
    (c,) = found
    if isinstance(c, dict):
        return c["status"], c["reason"], c.get("message", "")
    return c.status.value, c.reason, c.message


def paused_condition(status: str = "True") -> dict[str, Any]:
    return {
        "type": "Paused",
        "status": status,
        "reason": "ConsecutiveFailures" if status == "True" else "Resumed",
        "message": "3 runs in a row failed; new runs wait in Queued until `docrelay resume`",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


# --- a paused integration is not Ready ------------------------------------------------------


def test_a_paused_integration_is_not_ready_and_says_why() -> None:
    healthy = plan(integration()).status_patch()
    assert ready(healthy["conditions"])[:2] == ("True", "Ready")
    stored = {**healthy, "conditions": [*healthy["conditions"], paused_condition()]}
    status, reason, message = ready(plan(integration(status=stored)).status.conditions)
    assert (status, reason) == ("False", "Paused")
    assert "3 runs in a row failed" in message and "docrelay resume" in message


def test_a_resumed_integration_is_ready_again() -> None:
    healthy = plan(integration()).status_patch()
    stored = {**healthy, "conditions": [*healthy["conditions"], paused_condition("False")]}
    assert ready(plan(integration(status=stored)).status.conditions)[:2] == ("True", "Ready")


def test_paused_comes_first_and_other_problems_are_still_named() -> None:
    missing = plan(integration(secrets=["API_KEY"])).status_patch()
    stored = {**missing, "conditions": [*missing["conditions"], paused_condition()]}
    status, reason, message = ready(
        plan(integration(status=stored, secrets=["API_KEY"])).status.conditions
    )
    assert (status, reason) == ("False", "Paused")
    assert "SecretsReady: no usable IntegrationSecret" in message


def test_the_status_write_follows_a_pause_made_since_the_body_was_read() -> None:
    """kopf's body predates the pause: the write merges the stored Paused and derives Ready from
    it, so Ready=True is never written next to Paused=True."""
    ours = plan(integration()).status_patch()
    stored = [*ours["conditions"], paused_condition()]
    merged = merge_conditions(ours["conditions"], stored)
    assert ready(merged)[:2] == ("True", "Ready")  # what the merge alone would write
    assert ready(with_ready_json(merged, 1, ours["deployedRevision"], NOW))[:2] == (
        "False",
        "Paused",
    )


def test_the_run_handler_pause_and_resume_move_ready_too() -> None:
    status = IntegrationStatus.model_validate(plan(integration()).status_patch())
    for name in ("r1", "r2", "r3"):
        status = count_finished(status, name, "Failed", NOW)  # type: ignore[arg-type]
    paused, now_paused = pause_if_due(status, 3, NOW, 1)
    assert now_paused
    assert ready(paused.conditions)[:2] == ("False", "Paused")
    assert paused.conditions[0].type == "Ready"
    again = resumed(paused, NOW + timedelta(minutes=1), 1)
    assert ready(again.conditions)[:2] == ("True", "Ready")


def test_kubectl_get_wide_has_a_paused_column() -> None:
    crd = yaml.safe_load((REPO / "crds" / "docrelay.io_integrations.yaml").read_text())
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Paused"]["jsonPath"] == '.status.conditions[?(@.type=="Paused")].status'
    assert columns["Paused"]["priority"] == 1


# --- SecretsMissing and AccountsMissing post an Event per change ----------------------------


def events(p: Plan) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in p.events if e.reason != "CodeApplied"]


def test_missing_secrets_post_one_event_per_change() -> None:
    first = plan(integration(secrets=["API_KEY", "TOKEN"]))
    assert events(first) == [("Warning", "SecretsMissing")]
    assert "API_KEY, TOKEN" in next(e.message for e in first.events if e.type == "Warning")
    again = plan(integration(status=first.status_patch(), secrets=["API_KEY", "TOKEN"]))
    assert events(again) == []  # the same keys are still missing: no new Event
    fewer = plan(
        integration(status=again.status_patch(), secrets=["API_KEY", "TOKEN"]),
        present_secret_keys=frozenset({"TOKEN"}),
    )
    assert events(fewer) == [("Warning", "SecretsMissing")]
    assert "with key API_KEY;" in fewer.events[-1].message
    fixed = plan(
        integration(status=fewer.status_patch(), secrets=["API_KEY", "TOKEN"]),
        present_secret_keys=frozenset({"TOKEN", "API_KEY"}),
    )
    assert events(fixed) == []


def test_missing_accounts_post_one_event_per_change() -> None:
    first = plan(integration(connectedAccounts=["xero"]))
    assert events(first) == [("Warning", "AccountsMissing")]
    again = plan(integration(status=first.status_patch(), connectedAccounts=["xero"]))
    assert events(again) == []


# --- Argo CD: a failure that was replayed successfully is handled ---------------------------


def test_argocd_a_dead_lettered_run_replayed_successfully_is_healthy() -> None:
    from tests.unit.test_argocd_health import health, resource

    dead = {"phase": "DeadLettered", "errorClass": "TransientError"}
    assert health("IntegrationRun", resource(dead))[0] == "Degraded"
    assert health("IntegrationRun", resource({**dead, "replayedBy": "orders-r-1"})) == (
        "Healthy",
        "DeadLettered, replayed successfully by orders-r-1",
    )
    assert health("IntegrationRun", resource({"phase": "Failed", "replayedBy": "x"}))[0] == (
        "Healthy"
    )


def test_argocd_a_paused_integration_is_suspended_not_degraded() -> None:
    from tests.unit.test_argocd_health import cond, health, resource

    status = {
        "observedGeneration": 2,
        "conditions": [
            cond("Ready", "False", "Paused", "Paused: 3 runs in a row failed"),
            cond("Paused", "True", "ConsecutiveFailures", "3 runs in a row failed"),
        ],
    }
    assert health("Integration", resource(status)) == ("Suspended", "3 runs in a row failed")
