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
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHILD = len(sys.argv) > 2 and sys.argv[1] == "--child"
# The operator child finds docrelay through its PYTHONPATH (BENCH_OPERATOR_SRC first).
sys.path[:0] = [str(ROOT)] if CHILD else [str(ROOT), str(ROOT / "operator")]

import httpx  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from devkit.cluster import Cluster  # noqa: E402
from devkit.cluster.apply import install_crds  # noqa: E402
from tests.cluster.harness import (  # noqa: E402
    create_run,
    eventually,
    free_port,
    get_run,
    grant_sealing,
    make_integration,
    run_manifest,
    tenant_kubeconfig,
)

GROUP, VERSION = "docrelay.io", "v1alpha1"
NS = "bench-api-calls"
CODE = "def lambda_handler(event, context):\n    return {'ok': True}\n"
SETTLE = 3.0
IDLE = 10.0


def _child(count_file: str, argv: list[str]) -> None:
    """In the operator's process: count each HTTP request to the API server, then run it."""
    import runpy

    import aiohttp
    from kubernetes.client import rest

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def key(method: str, url: str) -> str:
        path = re.sub(r"\?.*", "", str(url).split("://", 1)[-1].split("/", 1)[-1])
        watching = "watch=true" in str(url).lower() or "watch=1" in str(url).lower()
        parts = path.split("/")
        # the resource: the part after namespaces/<ns> (or after the group version)
        if "namespaces" in parts and parts.index("namespaces") + 2 < len(parts):
            rest_parts = parts[parts.index("namespaces") + 2 :]
        else:
            rest_parts = parts[-1:]
        what = rest_parts[0] + ("/" + rest_parts[2] if len(rest_parts) > 2 else "")
        named = len(rest_parts) > 1
        verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch"}.get(
            method.upper(), method.lower()
        )
        return f"{'watch' if watching else verb} {what}"

    original = rest.RESTClientObject.request

    def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        query = kwargs.get("query_params") or []
        full = url + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        with lock:
            counts[key(method, full)] += 1
        return original(self, method, url, *args, **kwargs)

    setattr(rest.RESTClientObject, "request", counted)  # noqa: B010
    original_async = aiohttp.ClientSession._request

    async def counted_async(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        params = kwargs.get("params") or {}
        full = str(url) + ("?" + "&".join(f"{k}={v}" for k, v in dict(params).items()))
        with lock:
            counts["kopf " + key(method, full)] += 1
        return await original_async(self, method, url, *args, **kwargs)

    setattr(aiohttp.ClientSession, "_request", counted_async)  # noqa: B010

    def dump() -> None:
        while True:
            time.sleep(0.25)
            with lock:
                text = json.dumps(counts)
            Path(count_file + ".tmp").write_text(text)
            os.replace(count_file + ".tmp", count_file)

    threading.Thread(target=dump, daemon=True).start()
    sys.argv = ["docrelay", *argv]
    runpy.run_module("docrelay.cli", run_name="__main__")


def read_counts(path: Path) -> Counter[str]:
    time.sleep(0.6)  # two dumps
    return Counter(json.loads(path.read_text())) if path.exists() else Counter()


def quiet(count_file: Path, limit: float = 180) -> None:
    """Wait until the operator has worked off its backlog: no read of a run for 5 s."""
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = read_counts(count_file)
        runs = sum(n for what, n in counts.items() if "integrationruns" in what)
        if runs != last:
            last, since = runs, time.monotonic()
        elif time.monotonic() - since >= 5:
            return
        time.sleep(0.5)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    finished = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    source = Path(os.environ.get("BENCH_OPERATOR_SRC") or ROOT / "operator")
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-calls-"))
    cluster = Cluster(tmp / "cluster", audit=True)
    cluster.start()
    operator = None
    try:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        install_crds(api, ROOT / "crds")
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        kubeconfig = tenant_kubeconfig(api, NS, tmp / "tenant.kubeconfig")
        grant_sealing(api, NS)
        count_file = tmp / "counts.json"
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join((str(source), str(ROOT))),
            "PATH": f"{cluster.bin_dir}{os.pathsep}{os.environ['PATH']}",
        }
        health = free_port()
        args = ["operator", "--health-host", "127.0.0.1", "--health-port", str(health)]
        args += ["--webhook-host", "127.0.0.1", "--webhook-port", str(free_port())]
        log = (tmp / "operator.log").open("w")

        def start(count_file: Path) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, __file__, "--child", str(count_file), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        operator = start(count_file)
        custom = client.CustomObjectsApi(api)
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
        quiet(count_file)
        before = read_counts(count_file)
        time.sleep(IDLE)
        after = read_counts(count_file)
        rate = (sum(after.values()) - sum(before.values())) / IDLE
        print(f"idle beside {finished + runs} finished runs: {rate:.2f} calls/s")
        for what, n in sorted((after - before).items(), key=lambda kv: -kv[1]):
            print(f"  {n / IDLE:6.2f}/s  {what}")

        stop(operator)
        restarted = tmp / "counts-restart.json"
        operator = start(restarted)
        eventually(
            partial(httpx.get, f"http://127.0.0.1:{health}/healthz"),
            lambda r: r.status_code == 200,
            "the restarted operator to be healthy",
            120,
            not_yet=lambda exc: isinstance(exc, httpx.HTTPError),
        )
        time.sleep(5)
        quiet(restarted)
        counts = read_counts(restarted)
        print(f"restart beside {finished + runs} finished runs: {sum(counts.values())} calls")
        for what, n in sorted(counts.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {n:6d}  {what}")
    finally:
        if operator is not None:
            stop(operator)
        cluster.stop()


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


def stop(operator: subprocess.Popen[bytes]) -> None:
    operator.terminate()
    try:
        operator.wait(timeout=15)
    except subprocess.TimeoutExpired:
        operator.kill()


if __name__ == "__main__":
    if CHILD:
        _child(sys.argv[2], sys.argv[3:])
    else:
        main()
