"""Gateway throughput against raw API-server creates, measured in the same run.

Starts the local control plane (no node), one Integration, and `docrelay gateway`; then
1. raw: N IntegrationRuns created straight through the API (the ceiling),
2. gateway: N distinct signed events, each making one run (answered once it exists),
from the same bounded thread pool. Prints both rates, their ratio, and p50/p99 from event
sent to run created (the 202 is sent after the create returns). Asserts nothing.

Usage: python bench/bench_gateway.py [EVENTS] [CONCURRENCY]   (default 400 16)
"""

from __future__ import annotations

import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "operator"),
]

import httpx  # noqa: E402
from kubernetes import client, config  # noqa: E402

from devkit.cluster import Cluster  # noqa: E402
from devkit.cluster.apply import install_crds  # noqa: E402
from docrelay.gateway.signatures import sign_resthook  # noqa: E402

KEY = b"bench-signing-key"
NS = "bench-gateway"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as state:
        cluster = Cluster(Path(state), with_node=False)
        cluster.start(log=lambda _message: None)
        gateway = None
        try:
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            install_crds(api, root / "crds")
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            core.create_namespace({"metadata": {"name": NS}})
            core.create_namespaced_secret(
                NS,
                {
                    "metadata": {"name": "docrelay-gateway-signing"},
                    "data": {"resthook-1": base64.b64encode(KEY).decode()},
                },
            )
            custom.create_namespaced_custom_object(
                "docrelay.io",
                "v1alpha1",
                NS,
                "integrations",
                {
                    "apiVersion": "docrelay.io/v1alpha1",
                    "kind": "Integration",
                    "metadata": {"name": "bench"},
                    "spec": {
                        "workspace": "ws1",
                        "documentType": "dt1",
                        "trigger": "DocumentParseCompleted",
                        "code": "def lambda_handler(event, context):\n    return None\n",
                    },
                },
            )
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            gateway = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "docrelay.cli",
                    "gateway",
                    "-n",
                    NS,
                    "--port",
                    str(port),
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "--log-level",
                    "WARNING",
                ],
                env={**os.environ, "PYTHONPATH": str(root / "operator")},
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/healthz").json()["integrations"] == 1:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)

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
                now = datetime.now(UTC).isoformat()
                body = json.dumps(
                    {
                        "event": "document.parse.completed",
                        "timestamp": now,
                        "payload": {
                            "identifier": f"doc{i}",
                            "workspace": "ws1",
                            "documentType": "dt1",
                        },
                    }
                ).encode()
                headers = {
                    "content-type": "application/json",
                    "X-Hook-Signature": sign_resthook(body, KEY, int(time.time())),
                }
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
                    f"p99={percentile(latencies, 0.99) * 1000:.1f}ms"
                )
            ratio = results["gateway events"] / results["raw API creates"]
            print(f"gateway/raw ratio: {ratio:.2f} (event -> run created, per the 202's timing)")
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(10)
            cluster.stop()


if __name__ == "__main__":
    main()
