"""The Argo CD health checks in docs/argocd/argocd-cm.yaml, run with a real Lua runtime (lupa)
against sample statuses, as Argo CD runs them: the object as the global `obj`, a table back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip("lupa", reason="lupa (the test extra) runs the Lua health checks")

ARGOCD_CM = Path(__file__).resolve().parents[2] / "docs" / "argocd" / "argocd-cm.yaml"
KINDS = ("Integration", "IntegrationRun", "IntegrationSecret", "ConnectedAccount")


def scripts() -> dict[str, str]:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    prefix = "resource.customizations.health.docrelay.io_"
    return {key.removeprefix(prefix): value for key, value in data.items()}


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    lua.globals().obj = table(obj)
    result = lua.execute(scripts()[kind])
    return str(result["status"]), str(result["message"])


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def resource(status: dict[str, Any] | None, generation: int = 2, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}, "spec": spec}
    if status is not None:
        obj["status"] = {"observedGeneration": 2, **status}
    return obj


def test_every_kind_has_a_check() -> None:
    assert set(scripts()) == set(KINDS)


CASES = [
    # Integration
    ("Integration", resource(None), "Progressing"),
    ("Integration", resource({"conditions": [cond("Ready", "True", "Ready")]}, 3), "Progressing"),
    ("Integration", resource({"conditions": [cond("Ready", "True", "Ready")]}), "Healthy"),
    ("Integration", resource({"conditions": [cond("Ready", "False", "NoCode")]}), "Progressing"),
    (
        "Integration",
        resource({"conditions": [cond("Ready", "False", "SyntaxError", "line 3")]}),
        "Degraded",
    ),
    (
        "Integration",
        resource({"conditions": [cond("Ready", "False", "SecretsMissing")]}),
        "Degraded",
    ),
    (
        "Integration",
        resource({"conditions": [cond("Ready", "True", "Ready")]}, suspend=True),
        "Suspended",
    ),
    (
        "Integration",
        resource(
            {
                "conditions": [
                    cond("Ready", "True", "Ready"),
                    cond("Paused", "True", "ConsecutiveFailures"),
                ]
            }
        ),
        "Suspended",
    ),
    # IntegrationRun
    ("IntegrationRun", resource(None), "Progressing"),
    ("IntegrationRun", resource({"phase": "Queued"}), "Progressing"),
    ("IntegrationRun", resource({"phase": "Running", "attempt": 2}), "Progressing"),
    ("IntegrationRun", resource({"phase": "Succeeded"}), "Healthy"),
    ("IntegrationRun", resource({"phase": "Cancelled"}), "Healthy"),
    ("IntegrationRun", resource({"phase": "Failed", "errorClass": "CodeError"}), "Degraded"),
    ("IntegrationRun", resource({"phase": "TimedOut"}), "Degraded"),
    ("IntegrationRun", resource({"phase": "DeadLettered"}), "Degraded"),
    # IntegrationSecret
    ("IntegrationSecret", resource(None), "Progressing"),
    ("IntegrationSecret", resource({"conditions": [cond("Ready", "True", "Sealed")]}), "Healthy"),
    (
        "IntegrationSecret",
        resource({"conditions": [cond("Ready", "False", "Superseded")]}),
        "Healthy",
    ),
    (
        "IntegrationSecret",
        resource({"conditions": [cond("Ready", "Unknown", "KeysUnavailable")]}),
        "Progressing",
    ),
    (
        "IntegrationSecret",
        resource({"conditions": [cond("Ready", "False", "Tampered")]}),
        "Degraded",
    ),
    (
        "IntegrationSecret",
        resource({"conditions": [cond("Ready", "False", "NotSealed")]}),
        "Degraded",
    ),
    # ConnectedAccount
    ("ConnectedAccount", resource(None), "Progressing"),
    ("ConnectedAccount", resource({"conditions": [cond("Ready", "True", "Healthy")]}), "Healthy"),
    ("ConnectedAccount", resource({"conditions": [cond("Ready", "False", "Dead")]}), "Degraded"),
    (
        "ConnectedAccount",
        resource({"conditions": [cond("Ready", "Unknown", "CheckFailed")]}),
        "Progressing",
    ),
]


@pytest.mark.parametrize(("kind", "obj", "expected"), CASES)
def test_health(kind: str, obj: dict[str, Any], expected: str) -> None:
    status, message = health(kind, obj)
    assert status == expected, message
    assert message


def test_degraded_message_names_the_reason() -> None:
    obj = resource({"conditions": [cond("Ready", "False", "SyntaxError", "line 3, column 5")]})
    assert health("Integration", obj) == ("Degraded", "SyntaxError: line 3, column 5")
    assert health("IntegrationRun", resource({"phase": "Failed", "errorClass": "CodeError"})) == (
        "Degraded",
        "Failed (CodeError)",
    )
