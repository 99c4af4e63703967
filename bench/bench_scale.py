"""The operator beside many integrations and runs, measured (not extrapolated).

Starts the local control plane (no node: no run is executed), one tenant namespace with the
RBAC of devkit.rbac, INTEGRATIONS Integrations and RUNS finished runs spread over them (each
created, then its status written Succeeded as the operator writes it), all made before the
operator starts. Then the operator (tenant mode) in a process that counts its own HTTP
requests to the API server (cluster_harness.py's counting child), and prints
1. its first start: calls until quiet, by verb and resource, and how long that took,
2. idle beside them: resident memory (VmRSS) and CPU (share of one core over 20 s),
3. a restart: from the new process's start to the first Job of a run created at that moment
   (the caches list, every Integration is resumed by kopf, then the run is driven), and the
   list calls the restart makes until quiet.
Asserts nothing.

Usage: python bench/bench_scale.py [INTEGRATIONS] [RUNS]   (default 1000 10000)
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from kubernetes import client, watch  # noqa: E402

from bench.cluster_harness import (  # noqa: E402
    CODE,
    GROUP,
    VERSION,
    BenchTenant,
    cpu_seconds,
    print_top,
    quiet,
    read_counts,
    rss_mib,
    tenant_cluster,
)
from tests.cluster.harness import finished_runs, integration_manifest, run_manifest  # noqa: E402

NS = "bench-scale"
THREADS = 12


def integration_name(i: int) -> str:
    return f"int-{i:04d}"


def make_objects(bench: BenchTenant, integrations: int, runs: int) -> None:
    started = time.monotonic()

    def make_integration(i: int) -> None:
        body = integration_manifest(integration_name(i), CODE)
        bench.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrations", body)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(make_integration, range(integrations)))
    print(f"{integrations} Integrations made in {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    names = [integration_name(i) for i in range(integrations)]
    finished_runs(bench.api, NS, names, runs, THREADS)
    print(f"{runs} finished runs made in {time.monotonic() - started:.0f} s", flush=True)


def settled(count_file: Path) -> None:
    """Until the operator has worked off its backlog: no call for 10 s but the conversation
    worker's list every 2 s (kopf resuming every Integration included)."""
    quiet(count_file, lambda what: "integrationconversations" not in what, 10, 1800, every=1)


def first_job(api: client.ApiClient, run: str, found: dict[str, float]) -> None:
    batch = client.BatchV1Api(api)
    stream = watch.Watch()
    for event in stream.stream(batch.list_namespaced_job, NS, timeout_seconds=600):
        if event["object"].metadata.name.startswith(run):
            found["at"] = time.monotonic()
            stream.stop()
            return


def main() -> None:
    integrations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    with tenant_cluster(NS, with_node=False) as bench:
        make_objects(bench, integrations, runs)
        counts = bench.tmp / "counts-first.json"
        started = time.monotonic()
        operator = bench.start_operator(count_file=counts)
        bench.wait_healthy()
        settled(counts)
        first = read_counts(counts)
        print(
            f"first start beside {integrations} Integrations and {runs} finished runs: "
            f"{sum(first.values())} calls, quiet after {time.monotonic() - started:.0f} s"
        )
        print_top(first, 10)

        time.sleep(5)
        cpu0, t0 = cpu_seconds(operator.pid), time.monotonic()
        time.sleep(20)
        share = (cpu_seconds(operator.pid) - cpu0) / (time.monotonic() - t0)
        print(
            f"idle: operator RSS {rss_mib(operator.pid):.0f} MiB, CPU {share * 100:.1f}% of a core"
        )

        bench.stop_operator()
        body = run_manifest(NS, integration_name(0), "after-restart")
        found: dict[str, float] = {}
        watcher = threading.Thread(
            target=first_job, args=(bench.api, body["metadata"]["name"], found), daemon=True
        )
        watcher.start()
        time.sleep(1)
        counts = bench.tmp / "counts-restart.json"
        restarted = time.monotonic()
        operator = bench.start_operator(count_file=counts)
        bench.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns", body)
        watcher.join(600)
        settled(counts)
        again = read_counts(counts)
        lists = Counter({k: n for k, n in again.items() if " list " in f" {k} "})
        took = found.get("at", float("nan")) - restarted
        print(f"restart -> first new Job: {took:.1f} s (the run created as the process started)")
        print(
            f"restart: {sum(again.values())} calls until quiet, of which list calls "
            f"{sum(lists.values())}: {dict(lists)}"
        )
        print_top(again, 10)
        print(f"after the restart: operator RSS {rss_mib(operator.pid):.0f} MiB")


if __name__ == "__main__":
    main()
