"""API calls the operator makes over one run's life, and while idle beside finished runs.

Starts the local control plane with its node, one tenant namespace (the RBAC of devkit.rbac)
and the operator in a subprocess whose HTTP calls to the API server are counted in the process
(the kubernetes client's requests and kopf's aiohttp requests; a watch counts once, when it is
opened). Then
1. idle: the calls per second with no run at all,
2. one run at a time: N runs of a trivial handler, each created and waited for until
   Succeeded and then a settle time; the calls in that window minus the idle rate, per run,
   printed as `API calls per run: N` from the API server's audit log (the cluster runs with
   one; the operator's own count beside it), with the calls by verb and resource,
3. idle beside FINISHED finished runs (created cancelled, so they finish without a Job):
   calls per second,
4. restart beside them: the operator stopped and started again; its calls until it is quiet
   (no call on a run for 5 s), by verb and resource.
Asserts nothing. BENCH_OPERATOR_SRC names another checkout's operator/ directory to measure
an older operator with the same bench.

Usage: python bench/bench_api_calls.py [RUNS] [FINISHED]   (default 5 500)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from kubernetes import client, watch  # noqa: E402

from bench.cluster_harness import (  # noqa: E402
    CODE,
    GROUP,
    VERSION,
    print_top,
    quiet,
    read_counts,
    tenant_cluster,
)
from devkit.cluster import Cluster  # noqa: E402
from tests.cluster.harness import (  # noqa: E402
    create_run,
    eventually,
    get_run,
    make_integration,
    run_manifest,
)

NS = "bench-api-calls"
SETTLE = 3.0
IDLE = 10.0


def settled(count_file: Path) -> None:
    """Until the operator has worked off its backlog: no read of a run for 5 s."""
    quiet(count_file, lambda what: "integrationruns" in what, 5, 180)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    finished = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    source = Path(os.environ.get("BENCH_OPERATOR_SRC") or ROOT / "operator")
    with tenant_cluster(NS, audit=True) as bench:
        api, cluster, custom = bench.api, bench.cluster, bench.custom
        count_file = bench.tmp / "counts.json"
        bench.start_operator(count_file=count_file, source=source)
        make_integration(api, NS, "bench", CODE)
        time.sleep(5)  # start-up settles
        before, idle_from = read_counts(count_file), now()
        time.sleep(IDLE)
        idle_rate = (sum(read_counts(count_file).values()) - sum(before.values())) / IDLE
        audited_idle = sum(audited(cluster, OPERATOR_USER, idle_from, now()).values()) / IDLE
        print(f"idle, no runs: {idle_rate:.2f} calls/s ({audited_idle:.2f}/s in the audit log)")

        start_counts, started, runs_from = read_counts(count_file), time.monotonic(), now()
        took = []
        for i in range(runs):
            created = time.monotonic()
            name = create_run(api, NS, "bench", f"doc-{i}")
            eventually(
                partial(get_run, api, NS, name),
                lambda o: (o.get("status") or {}).get("phase") == "Succeeded",
                f"run {name} to succeed",
                120,
                every=0.05,
            )
            took.append(time.monotonic() - created)
            time.sleep(SETTLE)
        elapsed = time.monotonic() - started
        during = read_counts(count_file) - start_counts
        total = sum(during.values()) - idle_rate * elapsed
        audit = audited(cluster, OPERATOR_USER, runs_from, now())
        audit_total = sum(audit.values()) - audited_idle * elapsed
        # The figure: the API server's own record of the operator's requests.
        print(
            f"API calls per run: {audit_total / runs:.1f} (the API server's audit log; "
            f"{total / runs:.1f} counted in the operator's process)"
        )
        for what, n in sorted(audit.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {n / runs:6.1f}  {what} (audit log)")
        took.sort()
        hops = watch_hops(api, 10)
        print(
            f"run created -> Succeeded seen (polled every 50 ms): p50 {took[len(took) // 2]:.2f} s,"
            f" max {took[-1]:.2f} s; floor, an object created -> its watch event: "
            f"p50 {hops[len(hops) // 2] * 1000:.0f} ms, max {hops[-1] * 1000:.0f} ms"
        )
        for what, n in sorted(during.items(), key=lambda kv: -kv[1]):
            print(f"  {n / runs:6.1f}  {what}")

        for i in range(finished):
            body = run_manifest(NS, "bench", f"done-{i}")
            body["spec"]["cancel"] = True
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns", body)
        eventually(
            lambda: custom.list_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns"),
            lambda o: all((i.get("status") or {}).get("phase") for i in o["items"]),
            "the cancelled runs to finish",
            600,
        )
        settled(count_file)
        before = read_counts(count_file)
        time.sleep(IDLE)
        after = read_counts(count_file)
        rate = (sum(after.values()) - sum(before.values())) / IDLE
        print(f"idle beside {finished + runs} finished runs: {rate:.2f} calls/s")
        for what, n in sorted((after - before).items(), key=lambda kv: -kv[1]):
            print(f"  {n / IDLE:6.2f}/s  {what}")

        bench.stop_operator()
        restarted = bench.tmp / "counts-restart.json"
        bench.start_operator(count_file=restarted, source=source)
        bench.wait_healthy(120)
        time.sleep(5)
        settled(restarted)
        counts = read_counts(restarted)
        print(f"restart beside {finished + runs} finished runs: {sum(counts.values())} calls")
        print_top(counts, 12)


OPERATOR_USER = f"system:serviceaccount:{NS}:docrelay-operator"


def watch_hops(api: client.ApiClient, count: int) -> list[float]:
    """The floor of any reaction: a ConfigMap created -> its ADDED event on an open watch,
    `count` times one after another, sorted (seconds)."""
    core = client.CoreV1Api(api)
    seen: dict[str, float] = {}
    ready = threading.Event()
    stream = watch.Watch()

    def follow() -> None:
        try:
            for event in stream.stream(
                core.list_namespaced_config_map,
                NS,
                label_selector="bench=hop",
                timeout_seconds=120,
            ):
                if event["type"] != "BOOKMARK":
                    seen.setdefault(event["object"].metadata.name, time.monotonic())
                    ready.set()
        except Exception:  # stopped: the stream ends mid-response
            return

    threading.Thread(target=follow, daemon=True).start()
    # The watch is open once it delivers the first object.
    core.create_namespaced_config_map(
        NS, {"metadata": {"name": "hop-open", "labels": {"bench": "hop"}}}
    )
    ready.wait(30)
    hops = []
    for i in range(count):
        name = f"hop-{i}"
        created = time.monotonic()
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": name, "labels": {"bench": "hop"}}}
        )
        eventually(
            partial(seen.__contains__, name), bool, f"the watch event of {name}", 30, every=0.005
        )
        hops.append(seen[name] - created)
    stream.stop()
    return sorted(hops)


def now() -> datetime:
    return datetime.now(UTC)


def audited(cluster: Cluster, user: str, since: datetime, until: datetime) -> Counter[str]:
    """`user`'s requests the API server received between `since` and `until`, by verb and
    resource, from its audit log (one per request: a watch's opening and end are one)."""
    seen: dict[str, str] = {}
    with cluster.audit_log.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:  # the line being written
                continue
            if (event.get("user") or {}).get("username") != user:
                continue
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since <= at <= until:
                ref = event.get("objectRef") or {}
                what = ref.get("resource", event.get("requestURI", "?").split("?")[0])
                if ref.get("subresource"):
                    what += "/" + ref["subresource"]
                seen[event["auditID"]] = f"{event['verb']} {what}"
    return Counter(seen.values())


if __name__ == "__main__":
    main()
