"""Typos caught early, nothing stuck forever (no cluster; tests/cluster/test_typos.py runs them
for real): orphaned secrets, `seal`'s warning, bounded waits in Queued, what suspend means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from docrelay.cli.seal import missing_integration_warning
from docrelay.models.integration import IntegrationSpec
from docrelay.models.run import IntegrationRunSpec, IntegrationRunStatus, RunPhase
from docrelay.reconcile.orphans import orphan_condition, orphan_patch
from docrelay.reconcile.run import RevisionView, RunObserved, decide, format_duration

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

# --- orphaned secrets -----------------------------------------------------------------------


def test_a_secret_for_a_missing_integration_is_orphaned_and_says_which_exist() -> None:
    condition = orphan_condition("team", "ordres", False, ["orders", "invoices"], 1, NOW)
    assert (condition.type, condition.status.value, condition.reason) == (
        "Orphaned",
        "True",
        "IntegrationNotFound",
    )
    assert "no Integration named ordres in namespace team" in condition.message
    assert "(integrations here: invoices, orders)" in condition.message
    patch, became = orphan_patch({"conditions": []}, condition, NOW)
    assert became and patch is not None
    assert [c["type"] for c in patch["conditions"]] == ["Orphaned"]


def test_orphaned_is_written_once_and_cleared_when_the_integration_appears() -> None:
    orphaned = orphan_condition("team", "orders", False, [], 1, NOW)
    assert "(there are none)" in orphaned.message
    patch, _ = orphan_patch(None, orphaned, NOW)
    assert patch is not None
    stored = {"conditions": [{"type": "Ready", "status": "True", "reason": "Sealed",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"},
                             *patch["conditions"]]}  # fmt: skip
    assert orphan_patch(stored, orphaned, NOW) == (None, False)  # unchanged: no write, no Event
    found = orphan_condition("team", "orders", True, [], 1, NOW)
    cleared, became = orphan_patch(stored, found, NOW)
    assert not became and cleared is not None
    by_type = {c["type"]: c for c in cleared["conditions"]}
    assert by_type["Orphaned"]["status"] == "False"
    assert by_type["Ready"]["reason"] == "Sealed"  # the other writer's condition is kept
    # A secret that was never orphaned gets no condition at all.
    assert orphan_patch({"conditions": []}, found, NOW) == (None, False)


def test_argocd_counts_an_orphaned_secret_as_degraded() -> None:
    from tests.unit.test_argocd_health import cond, health, resource

    status = {
        "state": "Active",
        "conditions": [
            cond("Ready", "True", "Sealed"),
            cond("Orphaned", "True", "IntegrationNotFound", "no Integration named ordres"),
        ],
    }
    assert health("IntegrationSecret", resource(status)) == (
        "Degraded",
        "Orphaned: no Integration named ordres",
    )


def test_seal_warns_when_the_integration_is_not_found() -> None:
    assert missing_integration_warning("team", "orders", True, []) is None
    warning = missing_integration_warning("team", "ordres", False, ["orders"])
    assert warning is not None and warning.startswith("warning: no Integration named ordres")
    assert "integrations here: orders" in warning


# --- bounded waits in Queued ----------------------------------------------------------------

SPEC = IntegrationRunSpec.model_validate(
    {
        "integration": "orders",
        "documentIdentifier": "doc-1",
        "trigger": "DocumentParseCompleted",
        "eventId": "evt-1",
        "idempotencyKey": "idem-" + "0" * 48,
    }
)


def waiting(minutes: float, **kw: Any) -> RunObserved:
    defaults: dict[str, Any] = {
        "name": "run",
        "created": NOW - timedelta(minutes=minutes),
        "generation": 1,
        "spec": SPEC,
        "status": IntegrationRunStatus(),
        "now": NOW,
        "deployed_revision": "orders-abc",
        "revision": RevisionView("orders-abc", "orders-abc-code", "handler.py"),
        "may_start": True,
        "queue_timeout_seconds": 600,
    }
    return RunObserved(**{**defaults, **kw})


MISSING = "no usable IntegrationSecret for API_KEY (see SecretsReady)"


@pytest.mark.parametrize(
    ("case", "given", "phase", "says"),
    [
        ("secret missing: waits", waiting(1, config_problem=MISSING), "Queued", MISSING),
        ("secret missing too long", waiting(11, config_problem=MISSING), "DeadLettered", MISSING),
        (
            "no code deployed: waits",
            waiting(1, deployed_revision=None, revision=None),
            "Queued",
            "no deployed revision",
        ),
        (
            "no code deployed too long",
            waiting(10, deployed_revision=None, revision=None),
            "DeadLettered",
            "no deployed revision",
        ),
        (
            "revision not created yet, too long",
            waiting(30, revision=None),
            "DeadLettered",
            "IntegrationRevision orders-abc does not exist yet",
        ),
        ("a full gate is not a fault", waiting(60, may_start=False), "Queued", "maxConcurrency"),
        ("suspended is a choice", waiting(60, suspended=True), "Queued", "suspended"),
        ("paused is a choice", waiting(60, paused=True), "Queued", "paused"),
        (
            "a test run says it at once",
            waiting(0, config_problem=MISSING, spec=SPEC.model_copy(update={"test": True})),
            "Failed",
            MISSING,
        ),
    ],
)
def test_a_run_waits_for_what_it_needs_then_dead_letters(
    case: str, given: RunObserved, phase: str, says: str
) -> None:
    decision = decide(given)
    status = decision.status
    assert status.phase == RunPhase(phase), case
    ready = next(c for c in status.conditions if c.type == "Ready")
    if phase == "Queued":
        assert says in ready.message
        assert decision.finished is None
    else:
        assert decision.finished == RunPhase(phase)
        assert status.error_class == "ConfigurationError"
        assert says in (status.error_message or "")
        assert [e[1] for e in decision.events] == [
            "DeadLettered" if phase == "DeadLettered" else "RunFailed"
        ]


def test_the_dead_letter_says_how_long_it_waited_and_why() -> None:
    decision = decide(waiting(11, config_problem=MISSING))
    assert decision.status.error_message == (
        f"waited 11 min in Queued (queueTimeoutSeconds 600): {MISSING}"
    )
    within = decide(waiting(1, config_problem=MISSING))
    ready = next(c for c in within.status.conditions if c.type == "Ready")
    assert ready.message == f"waiting: {MISSING}; dead-lettered at 12:09:00 unless resolved"


def test_a_retry_waits_from_when_it_became_due() -> None:
    status = IntegrationRunStatus(
        phase=RunPhase.QUEUED, attempt=1, next_attempt_at=NOW - timedelta(minutes=1)
    )
    assert decide(waiting(60, status=status, config_problem=MISSING)).status.phase == "Queued"


def test_queue_timeout_has_a_default_and_bounds() -> None:
    spec = {"workspace": "w", "documentType": "d", "trigger": "DocumentValidated", "code": "x"}
    assert IntegrationSpec.model_validate(spec).queue_timeout_seconds == 3600
    with pytest.raises(ValueError, match="greater than or equal to 10"):
        IntegrationSpec.model_validate({**spec, "queueTimeoutSeconds": 5})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5.99975, "6 s"), (59.4, "59 s"), (61, "1 min 1 s"), (600, "10 min"), (659, "10 min"),
     (3600, "1 h"), (3930, "1 h 6 min")],
)  # fmt: skip
def test_durations_are_printed_to_a_sensible_precision(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- what suspend means ---------------------------------------------------------------------


def test_kubectl_explain_says_what_suspend_does() -> None:
    """Runs are created while suspended and wait in Queued: the text says so, and no longer
    that events are not turned into runs."""
    crd = yaml.safe_load((REPO / "crds" / "docrelay.io_integrations.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    text = spec["properties"]["suspend"]["description"]
    assert "Events still create runs, which wait in Queued" in text
    assert "not turned into runs" not in text
    assert "queueTimeoutSeconds" in spec["properties"]
    assert spec["properties"]["queueTimeoutSeconds"]["default"] == 3600
