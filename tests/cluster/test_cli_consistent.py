"""One consistent CLI against the real control plane and the local node: every revision-taking
command accepts a revision alone or an integration with --revision (the old deploy form with a
note), `revisions` shows TESTED, and suspend / pause / resume hold and release runs.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    condition,
    create_run,
    custom,
    docrelay,
    eventually,
    get_integration,
    get_run,
    make_integration,
    wait_finished,
)

CODE_V1 = """
def lambda_handler(event, context):
    return {"summary": "v1"}
"""
CODE_V2 = CODE_V1.replace("v1", "v2")


def set_code(api: client.ApiClient, ns: str, name: str, code: str, old: str) -> str:
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", name, {"spec": {"code": code}}
    )
    obj = eventually(
        lambda: get_integration(api, ns, name),
        lambda o: o["status"].get("deployedRevision") not in (None, old),
        "the new code to be deployed",
    )
    return str(obj["status"]["deployedRevision"])


def test_a_revision_is_named_the_same_way_in_every_command(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "orders", CODE_V1)
    rev1 = get_integration(api, ns, "orders")["status"]["deployedRevision"]
    rev2 = set_code(api, ns, "orders", CODE_V2, rev1)

    # code: a revision alone, an integration with --revision, an integration (deployed).
    assert docrelay("code", rev1, "-n", ns).stdout == CODE_V1
    assert docrelay("code", "orders", "--revision", rev1, "-n", ns).stdout == CODE_V1
    assert docrelay("code", "orders", "-n", ns).stdout == CODE_V2
    missing = docrelay("code", "nosuch", "-n", ns, expect=1)
    assert (
        missing.stderr.strip()
        == f"error: no revision or integration named nosuch in namespace {ns}"
    )

    # diff: two revisions, one revision (against the deployed one), an integration + --revision.
    both = docrelay("diff", rev2, rev1, "-n", ns).stdout
    assert '-    return {"summary": "v2"}' in both and '+    return {"summary": "v1"}' in both
    assert docrelay("diff", rev1, "-n", ns).stdout == both
    assert docrelay("diff", "orders", "--revision", rev1, "-n", ns).stdout == both

    # test: a revision alone runs that revision.
    tested = docrelay("test", rev1, "--document", "d1", "-n", ns)
    assert tested.stdout.rstrip().endswith("Succeeded: v1")

    # deploy: the revision alone; the old form still works and says what the form is now.
    out = docrelay("deploy", rev1, "-n", ns)
    assert out.stdout.strip() == f"integration orders: deployed revision {rev1} (was {rev2})"
    old = docrelay("deploy", "orders", rev2, "-n", ns)
    assert old.stderr.strip() == (
        "note: `docrelay deploy INTEGRATION REVISION` is the old form; "
        f"use `docrelay deploy {rev2}`"
    )
    assert old.stdout.strip() == f"integration orders: deployed revision {rev2} (was {rev1})"
    refused = docrelay("deploy", "orders", "-n", ns, expect=2)
    assert "orders is an integration: name the revision to deploy" in refused.stderr

    # revisions: TESTED and VERDICT columns (user revisions have neither: "-").
    header, *rows = docrelay("revisions", "orders", "-n", ns).stdout.strip().splitlines()
    assert header.split() == ["NAME", "SOURCE", "CREATED", "VALID", "TESTED", "VERDICT", "DEPLOYED"]
    assert {row.split()[0]: row.split()[4:6] for row in rows} == {
        rev1: ["-", "-"],
        rev2: ["-", "-"],
    }


def queued(api: client.ApiClient, ns: str, run: str, why: str) -> dict[str, Any]:
    obj = eventually(
        lambda: get_run(api, ns, run),
        lambda o: why in str(condition(o, "Ready").get("message", "")),
        f"run {run} to wait ({why})",
    )
    assert obj["status"]["phase"] == "Queued"
    return obj


def test_suspend_pause_and_resume(api: client.ApiClient, namespace: str, tenant: Tenant) -> None:
    ns = namespace
    make_integration(api, ns, "orders", CODE_V1)

    out = docrelay("suspend", "orders", "-n", ns).stdout
    assert out.startswith("integration orders suspended: runs wait in Queued")
    assert "if Git (Argo CD) manages this integration" in out
    assert get_integration(api, ns, "orders")["spec"]["suspend"] is True
    held = create_run(api, ns, "orders", "d1")
    queued(api, ns, held, "the integration is suspended")
    out = docrelay("resume", "orders", "-n", ns).stdout
    assert out.startswith("integration orders resumed: no longer suspended (spec.suspend: false)")
    assert get_integration(api, ns, "orders")["spec"]["suspend"] is False
    assert wait_finished(api, ns, held)["phase"] == "Succeeded"

    out = docrelay("pause", "orders", "-n", ns).stdout
    assert out.startswith("integration orders paused: runs wait in Queued")
    obj = get_integration(api, ns, "orders")
    assert obj["spec"]["suspend"] is False and obj["metadata"]["generation"] == 3  # spec kept
    paused = condition(obj, "Paused")
    assert (paused["status"], paused["reason"]) == ("True", "PausedByUser")
    assert "with `docrelay pause`" in paused["message"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Paused")
    assert docrelay("pause", "orders", "-n", ns).stdout.strip() == (
        "integration orders is already paused"
    )
    held = create_run(api, ns, "orders", "d2")
    queued(api, ns, held, "the integration is paused")
    assert docrelay("resume", "orders", "-n", ns).stdout.strip() == (
        "integration orders resumed: no longer paused"
    )
    assert wait_finished(api, ns, held)["phase"] == "Succeeded"
    eventually(
        lambda: get_integration(api, ns, "orders"),
        lambda o: condition(o, "Ready").get("status") == "True",
        "Ready again",
    )
    assert docrelay("resume", "orders", "-n", ns).stdout.strip() == (
        "integration orders is not paused or suspended"
    )
