"""A restart beside many Integrations, counted at the wire (the counting proxy of
test_run_scale.py: what is asserted is what the API server saw).

kopf resumes every Integration at each start. Resuming decides from the watch-fed caches
(revisions, secrets, accounts, the Integration's own status) and writes only what changed, so
a restart beside N Integrations makes a few list calls, not a few per Integration, and no call
names one of them; an Integration whose world changed while no operator ran (here: the revision its
spec.code names deleted, its egress NetworkPolicy deleted, the Integration of a secret
deleted) is still put right.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest
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
    set_secret,
)

INTEGRATIONS = 40
WITH_CIDRS = "int-002"  # its runs' egress is also a NetworkPolicy
CODE = "def lambda_handler(event, context):\n    return {'summary': 'ok'}\n"
# What the Integration handlers read and write (runs, Jobs and pods are test_run_scale's;
# ConfigMaps and Secrets are also read on the sealing key check's clock).
RESUME_PATHS = re.compile(
    r"/(integrations|integrationrevisions|integrationsecrets|connectedaccounts|networkpolicies)"
    r"(/|$)"
)


def all_deployed(api: client.ApiClient, ns: str, names: list[str]) -> list[dict]:
    items = custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, "integrations")["items"]
    ready = [i for i in items if (i.get("status") or {}).get("deployedRevision")]
    return ready if len(ready) == len(names) else []


@pytest.mark.timeout(900)
def test_a_restart_beside_many_integrations_makes_a_few_list_calls_not_a_few_per_integration(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    names = [f"int-{i:03d}" for i in range(INTEGRATIONS)]
    for i, name in enumerate(names):
        # A third expect a secret that does not exist: their status is stable but not Ready.
        spec: dict[str, Any] = {"secrets": ["API_KEY"]} if i % 3 == 0 else {}
        if name == WITH_CIDRS:
            spec["egress"] = {"hosts": ["api.example.com"], "cidrs": ["203.0.113.0/24"]}
        body = integration_manifest(name, CODE, **spec)
        custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", body)
    eventually(
        lambda: all_deployed(api, ns, names),
        bool,
        f"all {INTEGRATIONS} integrations to have their code deployed",
        300,
    )
    # Some have their secret: kopf's events for the IntegrationSecrets at a start read the
    # caches too (no list per secret).
    with_secret = names[0:15:3]
    for name in with_secret:
        set_secret(api, ns, name, "API_KEY", "not-a-real-key")
    for name in with_secret:
        eventually(
            lambda name=name: get_integration(api, ns, name),
            lambda o: condition(o, "SecretsReady").get("status") == "True",
            f"{name}'s SecretsReady to be True",
        )
    time.sleep(3)  # the last status writes
    tenant.stop()
    before = {n: get_integration(api, ns, n) for n in names}

    # While no operator runs, the deployed revision of one integration is deleted.
    changed = names[1]
    gone = before[changed]["status"]["deployedRevision"]
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, ns, "integrationrevisions", gone)
    # One with a secret is deleted: its secret is orphaned (said at the start, from the
    # secret's own listing event).
    deleted = with_secret[-1]
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, ns, "integrations", deleted)
    # And the egress NetworkPolicy of the one with spec.egress.cidrs.
    networking = client.NetworkingV1Api(api)
    networking.delete_namespaced_network_policy(f"docrelay-egress-{WITH_CIDRS}", ns)

    proxy = CountingProxy(api.configuration.host, api.configuration.ssl_ca_cert)
    try:
        through_proxy(tenant, proxy)
        tenant.start()
        time.sleep(5)
        proxy.quiet(5.0, 300.0, paths=RESUME_PATHS)  # what the Integration handlers touch
        requests = proxy.snapshot()
        kinds = by_kind(requests)
        print(f"restart beside {INTEGRATIONS} integrations: {len(requests)} requests", dict(kinds))

        # A few lists, whatever the number of Integrations (each kind: kopf's watch, a cache).
        lists = Counter({k: n for k, n in kinds.items() if k.startswith("list ")})
        for kind in ("integrations", "integrationrevisions", "integrationsecrets"):
            assert lists[f"list {kind}"] <= 3, dict(lists)
        assert lists["list connectedaccounts"] <= 3, dict(lists)
        assert sum(lists.values()) < INTEGRATIONS, dict(lists)
        # No request names an Integration that nothing changed for: none read, patched or
        # annotated one by one.
        named = Counter(
            m.group(1)
            for _, p, _ in requests
            if (m := re.search(r"/integrations/([^/]+)", p)) is not None
        )
        assert set(named) <= {changed, deleted}, dict(named)
        # The egress policy is read for the one Integration with cidrs only.
        assert kinds["get networkpolicies"] == 1, dict(kinds)

        # What a user sees: the revision spec.code names, deleted while no operator ran, is
        # made again (as kopf's resume made it); every status is as it was.
        revision = custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrationrevisions", gone
        )
        assert (revision.get("status") or {}).get("validation", {}).get("valid") is True
        policy = networking.read_namespaced_network_policy(f"docrelay-egress-{WITH_CIDRS}", ns)
        assert [p.ip_block.cidr for r in policy.spec.egress for p in r.to] == ["203.0.113.0/24"]
        eventually(
            lambda: custom(api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "integrationsecrets", f"{deleted}-api-key"
            ),
            lambda o: condition(o, "Orphaned").get("status") == "True",
            "the secret of the integration deleted while no operator ran to be Orphaned",
        )
        for name in names:
            if name == deleted:
                continue
            after = get_integration(api, ns, name)
            assert after["status"] == before[name]["status"], name
    finally:
        tenant.stop()
        proxy.stop()
