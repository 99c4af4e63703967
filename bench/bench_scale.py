"""The operator beside many integrations and runs, measured (not extrapolated).

Starts the local control plane (no node: no run is executed), one tenant namespace with the
RBAC of devkit.rbac, INTEGRATIONS Integrations and RUNS finished runs spread over them (each
created, then its status written Succeeded as the operator writes it), all made before the
operator starts. Then the operator (tenant mode) in a process that counts its own HTTP
requests to the API server (bench_api_calls.py's counting child), and prints
1. its first start: calls until quiet, by verb and resource, and how long that took,
2. idle beside them: resident memory (VmRSS) and CPU (share of one core over 20 s),
3. a restart: from the new process's start to the first Job of a run created at that moment
   (the caches list, every Integration is resumed by kopf, then the run is driven), and the
   list calls the restart makes until quiet.
Asserts nothing.

Usage: python bench/bench_scale.py [INTEGRATIONS] [RUNS]   (default 1000 10000)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import httpx  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from bench.bench_api_calls import read_counts, stop  # noqa: E402
from devkit.cluster import Cluster  # noqa: E402
from devkit.cluster.apply import install_crds  # noqa: E402
from tests.cluster.harness import (  # noqa: E402
    eventually,
    free_port,
    grant_sealing,
    integration_manifest,
    run_manifest,
    tenant_kubeconfig,
)

GROUP, VERSION = "docrelay.io", "v1alpha1"
NS = "bench-scale"
CODE = "def lambda_handler(event, context):\n    return {'ok': True}\n"
THREADS = 12


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def integration_name(i: int) -> str:
    return f"int-{i:04d}"


def make_objects(api: client.ApiClient, integrations: int, runs: int) -> None:
    custom = client.CustomObjectsApi(api)
    started = time.monotonic()

    def make_integration(i: int) -> None:
        body = integration_manifest(integration_name(i), CODE)
        body["metadata"]["namespace"] = NS
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrations", body)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(make_integration, range(integrations)))
    print(f"{integrations} Integrations made in {time.monotonic() - started:.0f} s", flush=True)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "phase": "Succeeded",
        "attempt": 1,
        "startTime": now,
        "completionTime": now,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "succeeded on attempt 1",
                "lastTransitionTime": now,
            }
        ],
    }

    def make_run(i: int) -> None:
        body = run_manifest(NS, integration_name(i % integrations), f"old-{i:06d}")
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns", body)
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, "integrationruns", body["metadata"]["name"], {"status": status}
        )

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(make_run, range(runs)))
    print(f"{runs} finished runs made in {time.monotonic() - started:.0f} s", flush=True)


def quiet(count_file: Path, limit: float = 1800) -> None:
    """Wait until the operator has worked off its backlog: no call for 10 s but the
    conversation worker's list every 2 s (kopf resuming every Integration included)."""
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = read_counts(count_file)
        total = sum(n for what, n in counts.items() if "integrationconversations" not in what)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= 10:
            return
        time.sleep(1)


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
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    cluster = Cluster(tmp / "cluster", with_node=False)
    cluster.start()
    operator = None
    try:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        install_crds(api, ROOT / "crds")
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        kubeconfig = tenant_kubeconfig(api, NS, tmp / "tenant.kubeconfig")
        grant_sealing(api, NS)
        make_objects(api, integrations, runs)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join((str(ROOT / "operator"), str(ROOT))),
            "PATH": f"{cluster.bin_dir}{os.pathsep}{os.environ['PATH']}",
        }
        health = free_port()
        args = ["operator", "--health-host", "127.0.0.1", "--health-port", str(health)]
        args += ["--webhook-host", "127.0.0.1", "--webhook-port", str(free_port())]
        log = (tmp / "operator.log").open("w")
        child = str(ROOT / "bench" / "bench_api_calls.py")

        def start(count_file: Path) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, child, "--child", str(count_file), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def healthy() -> None:
            eventually(
                partial(httpx.get, f"http://127.0.0.1:{health}/healthz"),
                lambda r: r.status_code == 200,
                "the operator to be healthy",
                300,
                not_yet=lambda exc: isinstance(exc, httpx.HTTPError),
            )

        counts = tmp / "counts-first.json"
        started = time.monotonic()
        operator = start(counts)
        healthy()
        quiet(counts, limit=1800)
        first = read_counts(counts)
        print(
            f"first start beside {integrations} Integrations and {runs} finished runs: "
            f"{sum(first.values())} calls, quiet after {time.monotonic() - started:.0f} s"
        )
        for what, n in sorted(first.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {n:6d}  {what}")

        time.sleep(5)
        cpu0, t0 = cpu_seconds(operator.pid), time.monotonic()
        time.sleep(20)
        share = (cpu_seconds(operator.pid) - cpu0) / (time.monotonic() - t0)
        print(
            f"idle: operator RSS {rss_mib(operator.pid):.0f} MiB, CPU {share * 100:.1f}% of a core"
        )

        stop(operator)
        body = run_manifest(NS, integration_name(0), "after-restart")
        found: dict[str, float] = {}
        watcher = threading.Thread(
            target=first_job, args=(api, body["metadata"]["name"], found), daemon=True
        )
        watcher.start()
        time.sleep(1)
        counts = tmp / "counts-restart.json"
        restarted = time.monotonic()
        operator = start(counts)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, NS, "integrationruns", body
        )
        watcher.join(600)
        quiet(counts, limit=1800)
        again = read_counts(counts)
        lists = Counter({k: n for k, n in again.items() if " list " in f" {k} "})
        took = found.get("at", float("nan")) - restarted
        print(f"restart -> first new Job: {took:.1f} s (the run created as the process started)")
        print(
            f"restart: {sum(again.values())} calls until quiet, of which list calls "
            f"{sum(lists.values())}: {dict(lists)}"
        )
        for what, n in sorted(again.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {n:6d}  {what}")
        print(f"after the restart: operator RSS {rss_mib(operator.pid):.0f} MiB")
    finally:
        if operator is not None:
            stop(operator)
        cluster.stop()


if __name__ == "__main__":
    main()
