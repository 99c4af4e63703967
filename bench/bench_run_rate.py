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

Beside rows 2 and 3, what does not depend on the machine's load: CPU seconds per run of the
operator, the kube-apiserver and etcd (/proc utime+stime over the burst until the operator is
quiet, less each process's idle rate measured before; the API server's and etcd's share
includes the bench's own creates and deletes and the Job controller's), and the operator's API
requests per run by verb (the operator runs in the benches' counting child).

With --profile the operator runs under a CPU profiler (cProfile on every thread, by thread
CPU time) for row 2 only, and the top functions by cumulative and own CPU are printed; the
profiler slows the operator, so that run's figures are not the operator's own.

Usage: python bench/bench_run_rate.py [--profile] [RATE] [SECONDS]   (default 20 60)
"""

from __future__ import annotations

import contextlib
import statistics
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
    open_loop,
    percentile,
    profile_command,
    quiet,
    read_counts,
    tenant_cluster,
)
from tests.cluster.harness import integration_manifest, run_manifest  # noqa: E402

NS = "bench-rate"
KEEPS_UP_P99 = 1.0
IDLE_SECONDS = 10.0  # the processes' idle CPU, measured before the bursts
PROCESSES = ("operator", "kube-apiserver", "etcd")


class Cost:
    """CPU seconds of the operator, the API server and etcd, and the operator's API requests,
    over one burst, per run: what the machine's load does not change."""

    def __init__(self, bench: BenchTenant, count_file: Path) -> None:
        self.bench, self.count_file = bench, count_file
        self.idle: dict[str, float] = {}

    def pids(self) -> dict[str, int]:
        assert self.bench.operator is not None
        found = {"operator": self.bench.operator.pid}
        for name in PROCESSES[1:]:
            pid = self.bench.cluster.pid(name)
            if pid is not None:
                found[name] = pid
        return found

    def sample(self) -> tuple[float, dict[str, float]]:
        return time.monotonic(), {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def measure_idle(self) -> None:
        t0, before = self.sample()
        time.sleep(IDLE_SECONDS)
        t1, after = self.sample()
        self.idle = {n: (after[n] - before[n]) / (t1 - t0) for n in before}

    def begin(self) -> tuple[float, dict[str, float], Counter[str]]:
        return (*self.sample(), read_counts(self.count_file))

    def end(self, began: tuple[float, dict[str, float], Counter[str]], runs: int) -> str:
        """Once the operator is quiet (no request for 3 s): the figures per run, as lines."""
        quiet(self.count_file, lambda _what: True, 3.0, 60.0)
        t0, cpu0, counts0 = began
        t1, cpu1 = self.sample()
        counts = read_counts(self.count_file)
        counts.subtract(counts0)
        per_run = {
            n: max(0.0, cpu1[n] - cpu0[n] - self.idle.get(n, 0.0) * (t1 - t0)) / runs for n in cpu1
        }
        lines = [
            "    CPU per run (net of idle): "
            + ", ".join(f"{n} {per_run[n] * 1000:.1f} ms" for n in PROCESSES if n in per_run)
        ]
        calls = {what: n for what, n in counts.items() if n > 0}
        lines.append(f"    API calls per run: {sum(calls.values()) / runs:.1f}")
        lines.append(
            "    by verb: "
            + ", ".join(
                f"{what} {n / runs:.2f}"
                for what, n in sorted(calls.items(), key=lambda item: -item[1])
                if n / runs >= 0.01
            )
        )
        return "\n".join(lines)


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
        open_loop(pool, count, rate, create)
    complete = jobs.wait(list(started), 10.0)
    with jobs.lock:
        latencies = [(jobs.seen[n] - t) * 1000 for n, t in started.items() if n in jobs.seen]
        first = min(started.values())
        last = max((jobs.seen[n] for n in started if n in jobs.seen), default=first)
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
    args = [a for a in sys.argv[1:] if a != "--profile"]
    profile = "--profile" in sys.argv[1:]
    rate = float(args[0]) if args else 20.0
    seconds = float(args[1]) if len(args) > 1 else 60.0
    with tenant_cluster(NS, with_node=False, say=lambda _message: None) as bench:
        api, custom = bench.api, bench.custom
        names = [f"rate-{i}" for i in range(10)]
        for name in names:
            body = integration_manifest(name, CODE, maxConcurrency=50)
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, "integrations", body)
        raw_rate, hops = floors(api)  # before the operator: the API server alone
        count_file = bench.tmp / "operator.counts"
        operator = bench.start_operator(
            "--log-level", "WARNING", count_file=count_file, profile=profile
        )
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
        cost = Cost(bench, count_file)
        cost.measure_idle()
        print(
            "idle CPU: "
            + ", ".join(f"{n} {share * 100:.1f}% of a core" for n, share in cost.idle.items())
        )
        n = int(rate * seconds)
        if profile:
            profile_command(count_file, "clear")
        began = cost.begin()
        lat, got, ok = steady(api, jobs, names[:1], rate, seconds, "one")
        print(row(f"{rate:g} runs/s to ONE integration, {seconds:g} s", lat, got, ok, n))
        print(cost.end(began, n))
        if profile:
            print("operator profile over that row (under the profiler, which slows it):")
            print(profile_command(count_file, "dump"))
        began = cost.begin()
        lat, got, ok = steady(api, jobs, names, rate, seconds, "ten")
        print(row(f"{rate:g} runs/s over 10 integrations, {seconds:g} s", lat, got, ok, n))
        print(cost.end(began, n))
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
