"""The chart's tenant role `docrelay-editor` (docs/secrets.md, "Who can read what"), as
rendered: a Role in tenant mode, the same rules as a ClusterRole in cluster mode, bound to
nobody, and no rule that opens a run's secret values. tests/cluster/test_tenant_role.py asks
the API server what it allows."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.unit.test_chart import CHART, NAMESPACE, by_kind, helm, render

__all__ = ["helm"]  # the module's helm fixture

# Resources (and subresources) that would open a value: a live pod's env, the Secrets, pods or
# Jobs of one's own beside a run's, tokens of the namespace's ServiceAccounts.
NEVER = {
    "secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/ephemeralcontainers",
    "serviceaccounts/token", "*",
}  # fmt: skip


def editor(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (role,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == "docrelay-editor"]
    return role


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize(("mode", "kind"), [("tenant", "Role"), ("cluster", "ClusterRole")])
def test_docrelay_editor_grants_a_tenants_work_and_no_door_to_a_value(
    helm: str, mode: str, kind: str
) -> None:
    objects = render(helm, f"mode={mode}")
    role = editor(objects, kind)
    assert role["metadata"].get("namespace") == (NAMESPACE if mode == "tenant" else None)
    granted = grants(role)
    assert {resource for _, resource, _ in granted} & NEVER == set()
    writes = {"create", "update", "patch", "delete"}
    # Writes only to docrelay's own kinds, never their status.
    assert {(g, r) for g, r, v in granted if v in writes} == {
        ("docrelay.io", kind_)
        for kind_ in (
            "integrations", "integrationrevisions", "integrationruns", "integrationsecrets",
            "connectedaccounts", "integrationconversations",
        )
    }  # fmt: skip
    assert ("", "pods/log", "get") in granted and ("", "configmaps", "get") in granted
    # Nobody is bound to it by the chart, and it aggregates into nothing.
    refs = [b["roleRef"]["name"] for b in objects if b["kind"].endswith("RoleBinding")]
    assert "docrelay-editor" not in refs
    assert not any("aggregate-to" in k for k in role["metadata"].get("labels") or {})


def test_both_modes_ship_the_same_rules(helm: str) -> None:
    tenant = editor(render(helm), "Role")
    cluster = editor(render(helm, "mode=cluster"), "ClusterRole")
    assert tenant["rules"] == cluster["rules"]


def test_notes_say_to_bind_people_to_docrelay_editor(helm: str) -> None:
    for sets, flag in (([], "--role"), (["--set", "mode=cluster"], "--clusterrole")):
        out = subprocess.run(
            [helm, "install", "--dry-run=client", "acme", str(CHART), "-n", NAMESPACE, *sets],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        notes = out[out.index("NOTES:") :]
        assert "create rolebinding <name>-docrelay --user=<name> \\\n" in notes
        assert f"{flag}=docrelay-editor" in notes
        assert "not the built-in edit or admin" in notes
