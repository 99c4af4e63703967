"""The agent worker at rest, counted at the wire (the counting proxy of tests/cluster/counting.py:
what is asserted is what the API server saw).

The worker looks every `agentPollSeconds` at the Integrations it serves (here one with
instructions: the agent is not configured, so it says so once and has nothing more to do). It
reads revisions from a watch-fed store, so looking makes no IntegrationRevision list call: one
list when the store starts, then a watch (the operator's Role grants `watch` on them).
"""

from __future__ import annotations

import time

from kubernetes import client

from tests.cluster.counting import CountingProxy, by_kind, through_proxy
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    condition,
    custom,
    eventually,
    get_integration,
    integration_manifest,
)

CODE = "def lambda_handler(event, context):\n    return {'summary': 'ok'}\n"
POLL_SECONDS = 0.5
IDLE_SECONDS = 10


def test_an_idle_operator_makes_no_revision_list_per_look(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    # One Integration the agent serves (instructions) and one with inline code (a revision).
    described = integration_manifest("described", CODE)
    described["spec"].pop("code")
    described["spec"]["instructions"] = "Post each invoice's number to the ledger."
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", described)
    coded = integration_manifest("coded", CODE)
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", coded)

    # Both handled before the restart, so the counted operator resumes them (one listing of
    # the revisions) rather than creating them (a listing per Integration).
    eventually(
        lambda: get_integration(api, ns, "coded"),
        lambda o: (o.get("status") or {}).get("deployedRevision"),
        "the inline code to be deployed",
    )
    eventually(
        lambda: get_integration(api, ns, "described"),
        lambda o: condition(o, "AgentAvailable").get("reason") == "NotConfigured",
        "the agent worker to say it is not configured",
    )
    tenant.stop()
    tenant.env["DOCRELAY_AGENT_POLL_SECONDS"] = str(POLL_SECONDS)
    proxy = CountingProxy(api.configuration.host, api.configuration.ssl_ca_cert)
    try:
        through_proxy(tenant, proxy)
        tenant.start()
        # What a user sees of the agent: it is not configured (the worker has looked).
        said = eventually(
            lambda: get_integration(api, ns, "described"),
            lambda o: condition(o, "AgentAvailable").get("reason") == "NotConfigured",
            "the agent worker to say it is not configured",
        )
        assert condition(said, "AgentAvailable")["status"] == "False"
        time.sleep(3)  # the last writes of the start

        before = len(proxy.snapshot())
        time.sleep(IDLE_SECONDS)  # about 20 looks of the agent worker
        idle = by_kind(proxy.snapshot()[before:])
        everything = by_kind(proxy.snapshot())
        print(f"{IDLE_SECONDS} s idle:", dict(idle))
        print("since the start:", dict(everything))
        # No revision is listed while the operator is idle, however often the worker looks...
        assert idle["list integrationrevisions"] == 0, dict(idle)
        assert not any(k.endswith(" integrationrevisions") and not k.startswith("watch")
                       for k in idle), dict(idle)  # fmt: skip
        # ...because the revisions come from a watch: one list when its store started, one
        # read while it was syncing, and one by the start's resume of the Integrations.
        assert everything["watch integrationrevisions"] >= 1, dict(everything)
        assert 1 <= everything["list integrationrevisions"] <= 3, dict(everything)
        # Nor does the worker list the other kinds it reads (the runs machinery's caches).
        assert idle["list integrations"] == 0 and idle["list integrationruns"] == 0, dict(idle)
    finally:
        tenant.stop()
        proxy.stop()
