"""Typos caught early, nothing stuck forever, against the real control plane and the local node:
an IntegrationSecret for an integration that does not exist is Orphaned, `docrelay seal` warns
about it, runs that cannot start wait in Queued with the reason and are dead-lettered after
spec.queueTimeoutSeconds, and a suspended integration's runs are created and wait.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import yaml
from kubernetes import client

from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    canary,
    checked,
    condition,
    create,
    create_run,
    custom,
    docrelay,
    eventually,
    get_run,
    integration_manifest,
    kubectl,
    make_integration,
    set_secret,
    wait_finished,
)

CODE_KEY = """
import os

def lambda_handler(event, context):
    assert os.environ["API_KEY"]
    return {"summary": "exported with the key"}
"""


def events_about(api: client.ApiClient, ns: str, name: str, reason: str) -> list[Any]:
    found = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return list(found.items)


def test_a_secret_for_an_integration_that_does_not_exist_is_orphaned(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "orders", CODE_KEY)
    # `docrelay seal` with a typo: it warns, and still prints the sealed manifest.
    value = canary()
    sealed = docrelay("seal", "API_KEY", "--integration", "ordres", "-n", ns, stdin=value)
    assert "warning: no Integration named ordres in namespace" in sealed.stderr
    assert "integrations here: orders" in sealed.stderr
    assert value not in sealed.stdout + sealed.stderr
    manifest = yaml.safe_load(sealed.stdout)
    assert manifest["spec"]["integration"] == "ordres"
    right = docrelay("seal", "API_KEY", "--integration", "orders", "-n", ns, stdin=value)
    assert "warning" not in right.stderr

    kubectl("apply", "-n", ns, "-f", "-", stdin=sealed.stdout)
    name = manifest["metadata"]["name"]
    assert checked(api, ns, name)["status"]["state"] == "Active"  # it opens, but for nothing
    secret = eventually(
        lambda: custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrationsecrets", name
        ),
        lambda o: condition(o, "Orphaned").get("status") == "True",
        "the secret to be Orphaned",
    )
    orphaned = condition(secret, "Orphaned")
    assert orphaned["reason"] == "IntegrationNotFound"
    assert "no Integration named ordres" in orphaned["message"]
    assert "integrations here: orders" in orphaned["message"]
    events = eventually(lambda: events_about(api, ns, name, "Orphaned"), bool, "an Orphaned Event")
    assert events[0].type == "Warning"
    wide = kubectl("get", "drsec", name, "-n", ns, "-o", "wide").stdout.splitlines()
    assert "ORPHANED" in wide[0].split()
    assert wide[1].split()[wide[0].split().index("ORPHANED")] == "True"

    # The integration appears: no longer orphaned; it goes: orphaned again, one more Event.
    create(api, ns, "integrations", integration_manifest("ordres", CODE_KEY))
    eventually(
        lambda: custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrationsecrets", name
        ),
        lambda o: condition(o, "Orphaned").get("status") == "False",
        "the secret to be found by its new integration",
    )
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, ns, "integrations", "ordres")
    eventually(
        lambda: custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrationsecrets", name
        ),
        lambda o: condition(o, "Orphaned").get("status") == "True",
        "the secret to be Orphaned once its integration was deleted",
    )
    eventually(
        lambda: events_about(api, ns, name, "Orphaned"),
        lambda found: len(found) == 2,
        "a second Orphaned Event",
    )
    # A secret of an existing integration is never marked.
    set_secret(api, ns, "orders", "API_KEY", canary())
    time.sleep(2)
    good = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationsecrets", "orders-api-key"
    )
    assert condition(good, "Orphaned") == {}


def queued_message(run: dict[str, Any]) -> str:
    return str(condition(run, "Ready").get("message", ""))


def test_a_run_waits_for_its_secret_then_dead_letters_with_the_reason(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "patient", CODE_KEY, secrets=["API_KEY"])
    make_integration(api, ns, "hopeless", CODE_KEY, secrets=["API_KEY"], queueTimeoutSeconds=10)
    patient = create_run(api, ns, "patient", "d1")
    hopeless = create_run(api, ns, "hopeless", "d2")
    for run in (patient, hopeless):
        waiting = eventually(
            functools.partial(get_run, api, ns, run),
            lambda o: "no usable IntegrationSecret for API_KEY" in queued_message(o),
            f"run {run} to wait for its secret",
        )
        assert waiting["status"]["phase"] == "Queued"
        assert "dead-lettered at" in queued_message(waiting)

    # The secret arrives in time for one: it runs. The other gives up with the reason.
    set_secret(api, ns, "patient", "API_KEY", canary())
    assert wait_finished(api, ns, patient)["phase"] == "Succeeded"
    status = wait_finished(api, ns, hopeless)
    assert status["phase"] == "DeadLettered"
    assert status["errorClass"] == "ConfigurationError"
    assert status["errorMessage"].startswith("waited ")
    assert (
        "in Queued (queueTimeoutSeconds 10): no usable IntegrationSecret for API_KEY"
        in (status["errorMessage"])
    )
    dead = eventually(
        lambda: events_about(api, ns, hopeless, "DeadLettered"), bool, "a DeadLettered Event"
    )
    assert "no usable IntegrationSecret for API_KEY" in dead[0].message


def test_a_run_for_code_that_never_deploys_is_dead_lettered_after_the_queue_timeout(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    # Instructions only and no agent configured: no revision is ever deployed.
    body = integration_manifest("someday", "unused", queueTimeoutSeconds=10)
    del body["spec"]["code"]
    body["spec"]["instructions"] = "export the invoice total"
    create(api, ns, "integrations", body)
    run = create_run(api, ns, "someday", "d1")
    waiting = eventually(
        lambda: get_run(api, ns, run),
        lambda o: "the integration has no deployed revision" in queued_message(o),
        "the run to wait for a deployed revision",
    )
    assert waiting["status"]["phase"] == "Queued"
    status = wait_finished(api, ns, run)
    assert status["phase"] == "DeadLettered"
    assert (
        "(queueTimeoutSeconds 10): the integration has no deployed revision"
        in (status["errorMessage"])
    )


def test_suspend_creates_runs_that_wait_and_kubectl_explain_says_so(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    explained = kubectl("explain", "integrations.spec.suspend").stdout
    assert "Events still create runs, which wait in Queued" in " ".join(explained.split())
    make_integration(api, ns, "held", CODE_KEY.replace('os.environ["API_KEY"]', "True"))
    custom(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "integrations",
        "held",
        {"spec": {"suspend": True, "queueTimeoutSeconds": 10}},
    )
    time.sleep(1)
    run = create_run(api, ns, "held", "d1")
    waiting = eventually(
        lambda: get_run(api, ns, run),
        lambda o: "suspended" in queued_message(o),
        "the run to wait while suspended",
    )
    assert waiting["status"]["phase"] == "Queued"
    time.sleep(12)  # longer than queueTimeoutSeconds: a chosen wait never dead-letters
    assert get_run(api, ns, run)["status"]["phase"] == "Queued"
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", "held", {"spec": {"suspend": False}}
    )
    assert wait_finished(api, ns, run)["phase"] == "Succeeded"
