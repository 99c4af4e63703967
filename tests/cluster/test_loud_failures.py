"""Failures a user sees, against the real control plane and the local node: a paused integration
is not Ready in `kubectl get -o wide`, missing secrets and accounts post Events, and a failed run
that was replayed successfully says so (Argo CD counts it as handled).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.cluster.harness import (
    CODE_UNAVAILABLE,
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
    kubectl,
    make_integration,
    wait_finished,
)

CODE_OK = """
def lambda_handler(event, context):
    return {"summary": "exported"}
"""

CODE_RAISES = """
def lambda_handler(event, context):
    total = {}["total"]
"""

def wide_row(ns: str, name: str) -> dict[str, str]:
    """`kubectl get dri NAME -o wide` as the user reads it: header -> value."""
    lines = kubectl("get", "dri", name, "-n", ns, "-o", "wide").stdout.splitlines()
    header, row = lines[0], lines[1]
    # kubectl aligns each column at its header; headers such as LAST RUN hold one space.
    starts = [
        i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")
    ]
    ends = [*starts[1:], max(len(header), len(row))]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def test_a_paused_integration_is_not_ready_and_has_its_own_column(
    api: client.ApiClient, namespace: str, pausing_tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "fragile", CODE_RAISES)
    eventually(
        lambda: get_integration(api, ns, "fragile"),
        lambda o: condition(o, "Ready").get("status") == "True",
        "the integration to be Ready",
    )
    row = wide_row(ns, "fragile")
    assert (row["READY"], row["REASON"]) == ("True", "Ready")
    for document in ("d1", "d2"):
        assert wait_finished(api, ns, create_run(api, ns, "fragile", document))["phase"] == "Failed"

    obj = eventually(
        lambda: get_integration(api, ns, "fragile"),
        lambda o: condition(o, "Ready").get("reason") == "Paused",
        "Ready=False with reason Paused",
    )
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "2 runs in a row failed" in ready["message"]
    row = wide_row(ns, "fragile")
    assert (row["READY"], row["PAUSED"], row["REASON"]) == ("False", "True", "Paused")
    assert row["SUSPENDED"] in ("", "<none>", "false")

    assert "resumed" in docrelay("resume", "fragile", "-n", ns).stdout
    eventually(
        lambda: get_integration(api, ns, "fragile"),
        lambda o: condition(o, "Ready").get("status") == "True",
        "Ready again after docrelay resume",
    )
    row = wide_row(ns, "fragile")
    assert (row["READY"], row["PAUSED"], row["REASON"]) == ("True", "False", "Ready")


def events_about(api: client.ApiClient, ns: str, name: str, reason: str) -> list[Any]:
    found = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return list(found.items)


def test_missing_secrets_and_accounts_post_one_event_per_change(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "needy", CODE_OK, secrets=["API_KEY"], connectedAccounts=["xero"])
    secrets = eventually(
        lambda: events_about(api, ns, "needy", "SecretsMissing"),
        bool,
        "a SecretsMissing Event",
    )
    accounts = eventually(
        lambda: events_about(api, ns, "needy", "AccountsMissing"),
        bool,
        "an AccountsMissing Event",
    )
    assert secrets[0].type == "Warning" and "with key API_KEY;" in secrets[0].message
    assert accounts[0].type == "Warning" and "xero" in accounts[0].message

    # Another reconcile with the same keys missing posts nothing new; a change posts one more.
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", "needy", {"spec": {"timeoutSeconds": 60}}
    )
    eventually(
        lambda: get_integration(api, ns, "needy"),
        lambda o: o["status"].get("observedGeneration") == 2,
        "the operator to see generation 2",
    )
    assert len(events_about(api, ns, "needy", "SecretsMissing")) == 1
    assert len(events_about(api, ns, "needy", "AccountsMissing")) == 1
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", "needy", {"spec": {"secrets": ["API_KEY", "TOKEN"]}}
    )
    both = eventually(
        lambda: events_about(api, ns, "needy", "SecretsMissing"),
        lambda found: len(found) == 2,
        "a second SecretsMissing Event for the new key",
    )
    assert any("API_KEY, TOKEN" in e.message for e in both)
    assert len(events_about(api, ns, "needy", "AccountsMissing")) == 1


def test_a_dead_letter_replayed_successfully_says_so(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    once = {"maxAttempts": 1, "backoffBaseSeconds": 1, "backoffCapSeconds": 1}
    make_integration(api, ns, "flaky", CODE_UNAVAILABLE, retry=once)
    dead = create_run(api, ns, "flaky", "d1")
    assert wait_finished(api, ns, dead)["phase"] == "DeadLettered"
    before = get_integration(api, ns, "flaky")["status"]["deployedRevision"]

    # The downstream system is fixed (here: the code), then the dead letter is replayed.
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", "flaky", {"spec": {"code": CODE_OK}}
    )
    eventually(
        lambda: get_integration(api, ns, "flaky"),
        lambda o: o["status"].get("deployedRevision") not in (None, before),
        "the new code to be deployed",
    )
    after = get_integration(api, ns, "flaky")["status"]["deployedRevision"]
    # The dry run says which revision each replay would run: by default the deployed one.
    assert docrelay("replay", "flaky", "-n", ns, "--dry-run").stdout == (
        f"would replay {dead} with deployed revision {after}\n"
    )
    pinned = docrelay("replay", "flaky", "-n", ns, "--dry-run", "--revision", "pinned").stdout
    assert pinned == f"would replay {dead} with pinned revision {before}\n"
    out = docrelay("replay", "flaky", "-n", ns).stdout  # the fix just deployed
    replay = out.split(" replayed as ")[1].strip()
    assert wait_finished(api, ns, replay)["phase"] == "Succeeded"
    original = eventually(
        lambda: get_run(api, ns, dead),
        lambda o: bool(o["status"].get("replayedBy")),
        "the dead letter to name its successful replay",
    )
    assert original["status"]["replayedBy"] == replay
    assert original["status"]["phase"] == "DeadLettered"  # history is not rewritten
