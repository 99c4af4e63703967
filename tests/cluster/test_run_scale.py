"""The runs machinery at scale, counted at the wire: the operator talks to the API server
through a counting proxy on loopback (every request it makes, kopf's included, passes through
and is recorded by method and path), so what is asserted is what the API server saw.

- A restart beside thousands of finished runs makes no call per run: one list of the runs
  (the watch-fed cache), none of them read, written or driven, and their counts not counted
  again.
- A crash between a run's final status and the Integration's counters loses no count: the
  counters are written from the runs cache, and a restarted operator counts exactly the runs
  that finished since the last write.
"""

from __future__ import annotations

import re
import time

import pytest
from kubernetes import client

from tests.cluster.counting import CountingProxy, by_kind, through_proxy
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    custom,
    eventually,
    finished_runs,
    get_integration,
    get_run,
    make_integration,
    operator_rules,
    run_manifest,
    wait_finished,
    withhold_from_operator,
)

CODE_OK = "def lambda_handler(event, context):\n    return {'summary': 'ok'}\n"
FINISHED = 2000


@pytest.mark.timeout(1200)  # making 2,000 runs takes minutes on a loaded machine
def test_a_restart_beside_thousands_of_finished_runs_makes_no_call_per_run(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    # Retention keeps them all: its deletes would be calls per run, by design.
    make_integration(api, ns, "bulk", CODE_OK, runRetention={"successfulRuns": 10000})
    eventually(
        lambda: get_integration(api, ns, "bulk"),
        lambda o: (o.get("status") or {}).get("deployedRevision"),
        "the integration's code to be deployed",
    )
    tenant.stop()
    began = time.monotonic()
    names = finished_runs(api, ns, ["bulk"], FINISHED)
    print(f"{FINISHED} finished runs made in {time.monotonic() - began:.0f} s")
    counts_before = (get_integration(api, ns, "bulk").get("status") or {}).get("runCounts")

    proxy = CountingProxy(api.configuration.host, api.configuration.ssl_ca_cert)
    try:
        through_proxy(tenant, proxy)
        tenant.start()
        time.sleep(5)
        proxy.quiet()
        requests = proxy.snapshot()
        kinds = by_kind(requests)
        print(f"restart beside {FINISHED} finished runs: {len(requests)} requests", dict(kinds))
        # No request names a run: none read, written or deleted one by one.
        run_paths = [p for _, p, _ in requests if re.search(r"/integrationruns/[^/]+", p)]
        assert run_paths == [], run_paths[:10]
        # Runs, Jobs and pods are only listed and watched: the caches' one list each (and the
        # agent worker's own list of runs if it ticks before the runs cache has listed).
        resources = ("integrationruns", "jobs", "pods")  # a subresource counts as its resource
        machinery = {k: n for k, n in kinds.items() if k.split()[1].split("/")[0] in resources}
        assert set(k.split()[0] for k in machinery) <= {"list", "watch"}, machinery
        assert kinds["list integrationruns"] <= 3 and kinds["list jobs"] == 1, machinery
        assert kinds["list pods"] == 1, machinery
        # The finished runs were not counted again.
        status = get_integration(api, ns, "bulk").get("status") or {}
        assert status.get("runCounts") == counts_before, status.get("runCounts")
        assert status.get("activeRuns", 0) == 0

        # And the operator still works: a new run goes through (its calls are the run's own).
        before = len(proxy.snapshot())
        body = run_manifest(ns, "bulk", "new-doc")
        name = body["metadata"]["name"]
        custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", body)
        assert wait_finished(api, ns, name)["phase"] == "Succeeded"
        proxy.quiet(3)
        per_run = by_kind(proxy.snapshot()[before:])
        print("one run after the restart:", sum(per_run.values()), dict(per_run))
        assert not any(n in p for _, p, _ in proxy.snapshot()[before:] for n in names[:50])
    finally:
        tenant.stop()
        proxy.stop()


CODE_SLOW = """
import time

def lambda_handler(event, context):
    time.sleep(3)
    return {"summary": "done"}
"""


def test_a_crash_between_the_final_status_and_the_counters_loses_no_count(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "counted", CODE_SLOW)
    eventually(
        lambda: get_integration(api, ns, "counted"),
        lambda o: (o.get("status") or {}).get("deployedRevision"),
        "the integration's code to be deployed",
    )
    body = run_manifest(ns, "counted", "doc-1")
    first = body["metadata"]["name"]
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", body)
    assert wait_finished(api, ns, first)["phase"] == "Succeeded"
    eventually(
        lambda: get_integration(api, ns, "counted")["status"],
        lambda s: (s.get("runCounts") or {}).get("succeeded") == 1,
        "the first run counted",
    )
    # The window: the run's final status is written, the Integration's counters are not
    # (every write of the Integration's status is refused), and then the operator dies.
    granted = withhold_from_operator(api, ns, "integrations/status")
    body = run_manifest(ns, "counted", "doc-2")
    second = body["metadata"]["name"]
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", body)
    assert wait_finished(api, ns, second)["phase"] == "Succeeded"
    time.sleep(2)  # the counters' write was tried (and refused)
    status = get_integration(api, ns, "counted")["status"]
    assert status["runCounts"]["succeeded"] == 1  # the count is not written yet
    assert tenant.operator is not None
    tenant.operator.process.kill()  # SIGKILL, in that window
    tenant.operator.process.wait()
    tenant.operator.log.close()
    tenant.operator = None
    operator_rules(api, ns, granted)

    tenant.start()
    eventually(
        lambda: get_integration(api, ns, "counted")["status"],
        lambda s: (s.get("runCounts") or {}).get("succeeded") == 2,
        "the run that finished before the crash to be counted after the restart",
    )
    status = get_integration(api, ns, "counted")["status"]
    assert status["lastRun"]["name"] == second
    # Counted once: another restart counts nothing again.
    tenant.stop()
    tenant.start()
    time.sleep(5)
    status = get_integration(api, ns, "counted")["status"]
    assert status["runCounts"]["succeeded"] == 2, status["runCounts"]
    assert get_run(api, ns, second)["status"]["phase"] == "Succeeded"
