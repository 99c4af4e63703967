"""Gateway throughput against raw API-server creates, and event -> Job latency at a set rate.

Starts the local control plane (no node: the latency wanted ends at the Job's creation, not
its pod), one Integration, and `docrelay gateway`; then
1. raw: N IntegrationRuns created straight through the API (the ceiling),
2. gateway: N distinct signed events, each making one run (answered once it exists),
from the same bounded thread pool. Prints both rates, their ratio, and p50/p99 from event
sent to run created (the 202 is sent after the create returns).
3. event -> Job: in a second namespace, a second gateway and the operator (tenant mode, the
RBAC of devkit.rbac); M signed events sent open-loop at RATE per second (each on schedule,
whatever the answers before it); each run's Job is seen through a watch on Jobs, and the run
is then deleted (without a node no run would finish, and the pile would slow the operator's
poller in a way a live system does not see). Prints
p50/p99/max from the event sent to (a) its 202 and (b) its Job's ADDED watch event (the
watch's delivery delay included; creationTimestamp has only one-second resolution).
Asserts nothing. BENCH_OPERATOR_SRC names another checkout's operator/ directory to run an
older gateway and operator with the same bench.

Usage: python bench/bench_gateway.py [EVENTS] [CONCURRENCY] [RATE] [LATENCY_EVENTS]
       (default 400 8 1 60; EVENTS 0 skips parts 1 and 2)
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "operator"),
]

import httpx  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from bench.cluster_harness import open_loop, percentile  # noqa: E402
from devkit import rbac  # noqa: E402
from devkit.cluster import Cluster  # noqa: E402
from devkit.cluster.apply import install_crds  # noqa: E402
from docrelay.gateway.signatures import sign_resthook  # noqa: E402
from tests.cluster.harness import free_port  # noqa: E402

KEY = b"bench-signing-key"
NS = "bench-gateway"
LATENCY_NS = "bench-latency"
ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(os.environ.get("BENCH_OPERATOR_SRC") or ROOT / "operator")
PYTHONPATH = os.pathsep.join((str(SOURCE), str(ROOT)))


def tenant(api: client.ApiClient, ns: str, max_concurrency: int = 5) -> None:
    """A namespace with the signing key and one Integration matching ws1/dt1."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "docrelay-gateway-signing"},
            "data": {"resthook-1": base64.b64encode(KEY).decode()},
        },
    )
    custom.create_namespaced_custom_object(
        "docrelay.io",
        "v1alpha1",
        ns,
        "integrations",
        {
            "apiVersion": "docrelay.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "bench"},
            "spec": {
                "workspace": "ws1",
                "documentType": "dt1",
                "trigger": "DocumentParseCompleted",
                "maxConcurrency": max_concurrency,
                "code": "def lambda_handler(event, context):\n    return None\n",
            },
        },
    )


def start(argv: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb") if log else None
    return subprocess.Popen(
        [sys.executable, "-m", "docrelay.cli", *argv],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )


def start_gateway(kubeconfig: Path, ns: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = start(
        [
            "gateway",
            "-n",
            ns,
            "--port",
            str(port),
            "--kubeconfig",
            str(kubeconfig),
            "--log-level",
            "WARNING",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").json()["integrations"] == 1:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the gateway did not load its index")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def signed_event(document: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event": "document.parse.completed",
            "timestamp": datetime.now(UTC).isoformat(),
            "payload": {"identifier": document, "workspace": "ws1", "documentType": "dt1"},
        }
    ).encode()
    headers = {
        "content-type": "application/json",
        "X-Hook-Signature": sign_resthook(body, KEY, int(time.time())),
    }
    return body, headers


def throughput(api: client.ApiClient, kubeconfig: Path, events: int, workers: int) -> None:
    """Parts 1 and 2: raw creates/s and gateway events/s, same pool, same run."""
    custom = client.CustomObjectsApi(api)
    tenant(api, NS)
    gateway, url = start_gateway(kubeconfig, NS)
    try:

        def raw(i: int) -> float:
            started = time.perf_counter()
            custom.create_namespaced_custom_object(
                "docrelay.io",
                "v1alpha1",
                NS,
                "integrationruns",
                {
                    "apiVersion": "docrelay.io/v1alpha1",
                    "kind": "IntegrationRun",
                    "metadata": {"name": f"raw-{i}"},
                    "spec": {
                        "integration": "bench",
                        "documentIdentifier": f"raw{i}",
                        "trigger": "DocumentParseCompleted",
                        "eventId": f"raw-{i}",
                        "idempotencyKey": f"raw-{i}",
                    },
                },
            )
            return time.perf_counter() - started

        session = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=workers))

        def event(i: int) -> float:
            body, headers = signed_event(f"doc{i}")
            started = time.perf_counter()
            answer = session.post(f"{url}/v1/events/{NS}", content=body, headers=headers)
            if answer.status_code != 202:
                raise RuntimeError(f"gateway answered {answer.status_code}: {answer.text}")
            return time.perf_counter() - started

        results = {}
        for label, fn in (("raw API creates", raw), ("gateway events", event)):
            with ThreadPoolExecutor(workers) as pool:
                started = time.perf_counter()
                latencies = list(pool.map(fn, range(events)))
                elapsed = time.perf_counter() - started
            results[label] = events / elapsed
            print(
                f"{label:<16} n={events} concurrency={workers} {events / elapsed:7.1f}/s "
                f"p50={statistics.median(latencies) * 1000:.1f}ms "
                f"p99={percentile(latencies, 0.99) * 1000:.1f}ms",
                flush=True,
            )
        ratio = results["gateway events"] / results["raw API creates"]
        print(
            f"gateway events/s accepted / raw creates/s ({workers} senders): {ratio:.2f} "
            "(event -> run created, per the 202's timing)"
        )
        session.close()
    finally:
        stop(gateway)


def job_latency(api: client.ApiClient, state: Path, rate: float, count: int) -> None:
    """Part 3: signed events at `rate`/s through the gateway, the operator making the Jobs."""
    ns = LATENCY_NS
    tenant(api, ns, max_concurrency=100)
    gateway_kubeconfig = rbac.gateway_kubeconfig(api, ns, state / "gateway.kubeconfig")
    operator_kubeconfig = rbac.operator_kubeconfig(api, ns, state / "operator.kubeconfig")
    gateway, url = start_gateway(gateway_kubeconfig, ns)
    health = free_port()
    operator = start(
        [
            "operator",
            "-n",
            ns,
            "--kubeconfig",
            str(operator_kubeconfig),
            "--health-host",
            "127.0.0.1",
            "--health-port",
            str(health),
            "--webhook-host",
            "127.0.0.1",
            "--webhook-port",
            str(free_port()),
            "--broker-url",
            url,
            "--log-level",
            "WARNING",
        ],
        log=state / "operator.log",
    )
    jobs_seen: dict[str, float] = {}
    seen_all = threading.Event()
    stream = watch.Watch()
    try:
        custom = client.CustomObjectsApi(api)
        deadline = time.monotonic() + 90
        while True:  # the operator has deployed the Integration's revision
            status = (
                custom.get_namespaced_custom_object(
                    "docrelay.io", "v1alpha1", ns, "integrations", "bench"
                ).get("status")
                or {}
            )
            if status.get("deployedRevision"):
                break
            if operator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the operator did not deploy: {status}\n"
                    + (state / "operator.log").read_text()[-3000:]
                )
            time.sleep(0.2)

        batch = client.BatchV1Api(api)
        # Without a node no run finishes, and the operator's poller revisits every unfinished
        # run each POLL_INTERVAL: delete each run once its Job exists (the Job goes with it),
        # so the runs in flight are those of a live system, not a growing pile.
        deleter = ThreadPoolExecutor(4)

        def delete_run(run: str) -> None:
            custom.delete_namespaced_custom_object(
                "docrelay.io",
                "v1alpha1",
                ns,
                "integrationruns",
                run,
                propagation_policy="Background",
            )

        def watch_jobs() -> None:
            for item in stream.stream(batch.list_namespaced_job, ns, timeout_seconds=600):
                if item["type"] != "ADDED":
                    continue
                run = (item["object"].metadata.labels or {}).get("docrelay.io/run")
                if run and run not in jobs_seen:
                    jobs_seen[run] = time.perf_counter()
                    deleter.submit(delete_run, run)
                    if len(jobs_seen) >= count:
                        seen_all.set()
                        return

        watcher = threading.Thread(target=watch_jobs, daemon=True)
        watcher.start()
        time.sleep(1)  # the watch is established

        session = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64))
        sent: dict[int, tuple[float, float, str]] = {}

        def send(i: int) -> None:
            body, headers = signed_event(f"lat{i}")
            started = time.perf_counter()
            answer = session.post(f"{url}/v1/events/{ns}", content=body, headers=headers)
            if answer.status_code != 202:
                raise RuntimeError(f"gateway answered {answer.status_code}: {answer.text}")
            sent[i] = (started, time.perf_counter(), answer.json()["runs"][0]["name"])

        with ThreadPoolExecutor(64) as pool:
            offered = open_loop(pool, count, rate, send)
        if not seen_all.wait(120):
            raise RuntimeError(f"only {len(jobs_seen)} of {count} Jobs appeared")
        deleter.shutdown()
        accepted = [(done - begin) * 1000 for begin, done, _ in sent.values()]
        to_job = [(jobs_seen[run] - begin) * 1000 for begin, _, run in sent.values()]
        print(
            f"event -> Job   n={count} at {rate:g}/s (sent {offered:.1f}/s, open loop), "
            "gateway + operator, no node"
        )
        for label, values in (("event -> 202 (run)", accepted), ("event -> Job created", to_job)):
            print(
                f"  {label:<21} p50={statistics.median(values):7.1f}ms "
                f"p99={percentile(values, 0.99):7.1f}ms max={max(values):7.1f}ms"
            )
        session.close()
    finally:
        stream.stop()
        stop(operator)
        stop(gateway)


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    latency_events = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as state:
        cluster = Cluster(Path(state) / "cluster", with_node=False)
        cluster.start(log=lambda _message: None)
        try:
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            install_crds(api, ROOT / "crds")
            if events:  # 0: only the latency part
                throughput(api, cluster.kubeconfig, events, workers)
            job_latency(api, Path(state), rate, latency_events)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
