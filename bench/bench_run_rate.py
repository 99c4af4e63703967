"""The operator's run machinery under a steady rate: run created -> Job created.

Starts the local control plane (no node: no run is executed) and the operator (tenant mode,
the RBAC of devkit.rbac), and measures in one run, so that each row stands beside its floor:
1. floors: raw IntegrationRun creates/s through the API (16 threads), and the create -> watch
   hop (from a create call to its ADDED event on a watch, at 20/s),
2. RATE runs/s to ONE integration for SECONDS, open loop: run created -> its Job's ADDED event
   on a watch (p50/p99), and the Jobs/s that followed,
3. the same over 10 integrations (round robin),
4. over 10 integrations, rates doubling from 2 x RATE for 15 s each while they keep up (p99
   under 1 s and every Job within 10 s of the last create): the highest that keeps up, as a
   share of the raw create rate.
The runs are IntegrationRuns as the gateway creates them (one per event), made here directly:
the gateway's own share is bench_gateway.py's. Each run and its Job are deleted once the Job
exists (freeing the slot): without a node no run would ever finish. Integrations
have maxConcurrency 50. Asserts nothing.

Usage: python bench/bench_run_rate.py [RATE] [SECONDS]   (default 20 60)
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from kubernetes import client, watch  # noqa: E402

from bench.cluster_harness import CODE, GROUP, VERSION, percentile, tenant_cluster  # noqa: E402
from tests.cluster.harness import integration_manifest, run_manifest  # noqa: E402

NS = "bench-rate"
KEEPS_UP_P99 = 1.0


class JobWatch:
    """The time each run's first Job appears; deletes the run then (its Job goes with it)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.deleter = ThreadPoolExecutor(8)
        self.stream = watch.Watch()
        threading.Thread(target=self._run, daemon=True).start()
        time.sleep(1)

    def _run(self) -> None:
        while True:
            try:
                for item in self.stream.stream(self.batch.list_namespaced_job, NS):
                    if item["type"] != "ADDED":
                        continue
                    run = (item["object"].metadata.labels or {}).get("docrelay.io/run")
                    with self.lock:
                        if not run or run in self.seen:
                            continue
                        self.seen[run] = time.perf_counter()
                    self.deleter.submit(self._delete, run, item["object"].metadata.name)
            except Exception:
                time.sleep(0.2)

    def _delete(self, run: str, job: str) -> None:
        """The run and its Job at once: the slot frees without waiting for the garbage
        collector, which is not what is measured."""
        with contextlib.suppress(client.ApiException):
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, NS, "integrationruns", run, propagation_policy="Background"
            )
        with contextlib.suppress(client.ApiException):
            self.batch.delete_namespaced_job(job, NS, propagation_policy="Background")

    def wait(self, runs: list[str], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if all(r in self.seen for r in runs):
                    return True
            time.sleep(0.1)
        return False


def floors(api: client.ApiClient) -> tuple[float, list[float]]:
    custom = client.CustomObjectsApi(api)
    bodies = [run_manifest(NS, "floor", f"raw-{i}") for i in range(400)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda b: custom.create_namespaced_custom_object(
                    GROUP, VERSION, NS, "integrationruns", b
                ),
                bodies,
            )
        )
    raw_rate = len(bodies) / (time.perf_counter() - t0)
    for b in bodies:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, NS, "integrationruns", b["metadata"]["name"]
        )
    # create -> ADDED on a watch, at 20/s
    added: dict[str, float] = {}
    stream = watch.Watch()

    def follow() -> None:
        with contextlib.suppress(Exception):  # the stream ends when stopped
            _follow()

    def _follow() -> None:
        for item in stream.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, NS, "integrationruns"
        ):
            if item["type"] == "ADDED":
                added.setdefault(item["object"]["metadata"]["name"], time.perf_counter())

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(1)
    done: dict[str, float] = {}
    for i in range(100):
        body = run_manifest(NS, "floor", f"hop-{i}")
        done[body["metadata"]["name"]] = time.perf_counter()  # as the rows: from the call
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns", body)
        time.sleep(0.05)
    time.sleep(2)
    stream.stop()
    hops = [(added[n] - t) * 1000 for n, t in done.items() if n in added]
    for n in done:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns", n)
    return raw_rate, hops


def steady(
    api: client.ApiClient,
    jobs: JobWatch,
    integrations: list[str],
    rate: float,
    seconds: float,
    tag: str,
) -> tuple[list[float], float, bool]:
    """Runs at `rate`/s for `seconds`, round robin over `integrations`: created -> Job (ms),
    Jobs/s, and whether every Job came."""
    custom = client.CustomObjectsApi(api)
    count = int(rate * seconds)
    started: dict[str, float] = {}

    def create(i: int) -> None:
        body = run_manifest(NS, integrations[i % len(integrations)], f"{tag}-{i}")
        began = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrationruns", body)
        started[body["metadata"]["name"]] = began

    with ThreadPoolExecutor(32) as pool:
        t0 = time.perf_counter()
        futures = []
        for i in range(count):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(create, i))
        for future in futures:
            future.result()
    complete = jobs.wait(list(started), 10.0)
    with jobs.lock:
        latencies = [(jobs.seen[n] - t) * 1000 for n, t in started.items() if n in jobs.seen]
        last = max((jobs.seen[n] for n in started if n in jobs.seen), default=t0)
        first = min(started.values())
    return latencies, len(latencies) / max(last - first, 1e-9), complete


def row(label: str, latencies: list[float], jobs_rate: float, complete: bool, n: int) -> str:
    if not latencies:
        return f"  {label}: no Job appeared"
    return (
        f"  {label}: {len(latencies)}/{n} Jobs, {jobs_rate:.1f} Jobs/s, created -> Job "
        f"p50 {statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms"
        + ("" if complete else " (not all within 10 s of the last create: falls behind)")
    )


def main() -> None:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    with tenant_cluster(NS, with_node=False, say=lambda _message: None) as bench:
        api, custom = bench.api, bench.custom
        names = [f"rate-{i}" for i in range(10)]
        for name in names:
            body = integration_manifest(name, CODE, maxConcurrency=50)
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrations", body)
        raw_rate, hops = floors(api)  # before the operator: the API server alone
        operator = bench.start_operator("--log-level", "WARNING")
        deadline = time.monotonic() + 180
        while not all(
            (
                custom.get_namespaced_custom_object(GROUP, VERSION, NS, "integrations", n).get(
                    "status"
                )
                or {}
            ).get("deployedRevision")
            for n in names
        ):
            if time.monotonic() > deadline or operator.poll() is not None:
                raise RuntimeError(bench.log_tail())
            time.sleep(0.5)
        jobs = JobWatch(api)
        print(f"floor: raw IntegrationRun creates {raw_rate:.0f}/s (16 threads)")
        print(
            f"floor: create -> watch ADDED p50 {statistics.median(hops):.1f} ms, "
            f"p99 {percentile(hops, 0.99):.1f} ms (at 20/s)"
        )
        n = int(rate * seconds)
        lat, got, ok = steady(api, jobs, names[:1], rate, seconds, "one")
        print(row(f"{rate:g} runs/s to ONE integration, {seconds:g} s", lat, got, ok, n))
        lat, got, ok = steady(api, jobs, names, rate, seconds, "ten")
        print(row(f"{rate:g} runs/s over 10 integrations, {seconds:g} s", lat, got, ok, n))
        best, step = rate if ok and percentile(lat, 0.99) < KEEPS_UP_P99 * 1000 else 0.0, rate * 2
        while best and step <= raw_rate:
            lat, got, ok = steady(api, jobs, names, step, 15.0, f"up{int(step)}")
            print(row(f"{step:g} runs/s over 10 integrations, 15 s", lat, got, ok, int(step * 15)))
            if not (ok and lat and percentile(lat, 0.99) < KEEPS_UP_P99 * 1000):
                break
            best, step = step, step * 2
            time.sleep(3)
        print(
            f"highest rate that keeps up over 10 integrations: {best:g} runs/s = "
            f"{best / raw_rate:.2f} of raw creates ({raw_rate:.0f}/s)"
        )


if __name__ == "__main__":
    main()
