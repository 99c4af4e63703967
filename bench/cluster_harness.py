"""What the cluster benchmarks share (bench_api_calls.py, bench_run_rate.py, bench_scale.py):
the local control plane with one tenant namespace as the chart makes it (the CRDs, the
operator's Role of devkit.rbac, the sealing grants), the operator in tenant mode in a
subprocess, optionally in the counting child below (its HTTP requests to the API server
counted in the process and dumped to a file), the wait until it is quiet, the process's own
figures from /proc, and percentiles.

The counting child is this file run as `python bench/cluster_harness.py --child COUNT_FILE
operator ...`; it finds docrelay through its PYTHONPATH (BENCH_OPERATOR_SRC first, when a
bench passes it as `source`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from devkit.cluster import Cluster
from devkit.cluster.apply import install_crds
from tests.cluster.harness import (
    api_request_kind,
    eventually,
    free_port,
    grant_sealing,
    tenant_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION = "docrelay.io", "v1alpha1"
CODE = "def lambda_handler(event, context):\n    return {'ok': True}\n"


class BenchTenant:
    """One tenant namespace on a fresh local cluster, and its operator (at most one running)."""

    def __init__(self, cluster: Cluster, api: client.ApiClient, ns: str, tmp: Path) -> None:
        self.cluster, self.api, self.ns, self.tmp = cluster, api, ns, tmp
        self.custom = client.CustomObjectsApi(api)
        self.kubeconfig = tenant_kubeconfig(api, ns, tmp / "tenant.kubeconfig")
        grant_sealing(api, ns)
        self.health_port = free_port()  # the same across restarts
        self.log_path = tmp / "operator.log"
        self.log = self.log_path.open("w")
        self.operator: subprocess.Popen[bytes] | None = None

    def start_operator(
        self,
        *extra: str,
        count_file: Path | None = None,
        source: Path = ROOT / "operator",
        profile: bool = False,
    ) -> subprocess.Popen[bytes]:
        """`docrelay operator` (tenant mode) from `source`, its output in operator.log; with
        `count_file`, in the counting child, which dumps its requests there (and, with
        `profile`, profiles every thread: see `profile_command`)."""
        command = [sys.executable, "-m", "docrelay.cli"]
        if count_file is not None:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", str(count_file)]
        args = ["operator", "--health-host", "127.0.0.1", "--health-port", str(self.health_port)]
        args += ["--webhook-host", "127.0.0.1", "--webhook-port", str(free_port()), *extra]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": os.pathsep.join((str(source), str(ROOT))),
            "PATH": f"{self.cluster.bin_dir}{os.pathsep}{os.environ['PATH']}",
        }
        if profile:
            assert count_file is not None, "the profiler runs in the counting child"
            env[PROFILE_ENV] = "1"
        self.operator = subprocess.Popen(
            [*command, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        return self.operator

    def wait_healthy(self, seconds: float = 300) -> None:
        eventually(
            partial(httpx.get, f"http://127.0.0.1:{self.health_port}/healthz"),
            lambda r: r.status_code == 200,
            "the operator to be healthy",
            seconds,
            not_yet=lambda exc: isinstance(exc, httpx.HTTPError),
        )

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-chars:]

    def stop_operator(self) -> None:
        if self.operator is not None:
            stop(self.operator)
            self.operator = None


@contextlib.contextmanager
def tenant_cluster(
    ns: str,
    *,
    with_node: bool = True,
    audit: bool = False,
    say: Callable[[str], None] | None = None,
) -> Iterator[BenchTenant]:
    """A fresh local cluster (state in a new temporary directory named after `ns`) with the
    tenant namespace `ns`; the operator, if started, and the cluster are stopped afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{ns}-"))
    cluster = Cluster(tmp / "cluster", with_node=with_node, audit=audit)
    cluster.start(log=say)
    tenant = None
    try:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        install_crds(api, ROOT / "crds")
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        tenant = BenchTenant(cluster, api, ns, tmp)
        yield tenant
    finally:
        if tenant is not None:
            tenant.stop_operator()
            tenant.log.close()
        cluster.stop()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


# --- the counting child ---------------------------------------------------------------------

PROFILE_ENV = "DOCRELAY_BENCH_PROFILE"


class _Snapshot:
    """A thread's profile as pstats reads it, taken without stopping the profiler."""

    def __init__(self, profile: Any) -> None:
        profile.snapshot_stats()
        self.stats = profile.stats

    def create_stats(self) -> None:
        pass


def _profile_threads() -> Callable[[str, Path], None]:
    """Profile every thread of this process by CPU time: cProfile with `time.thread_time`, one
    profiler per thread (a thread waiting on a socket or a lock costs nothing). Returns the
    command handler: 'clear' starts the figures afresh, 'dump' writes the merged figures (top
    functions by cumulative and by own CPU time) to a file."""
    import cProfile
    import io
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def begin(*_: Any) -> None:  # a new thread's first event: its own profiler from here on
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()

    threading.setprofile(begin)
    begin()  # the main thread (kopf's event loop)

    def command(what: str, out: Path) -> None:
        with lock:
            taken = list(profiles)
        if what == "clear":
            for profile in taken:
                profile.clear()
            return
        snapshots = [s for s in (_Snapshot(p) for p in taken) if s.stats]
        text = io.StringIO()
        if snapshots:
            stats = pstats.Stats(snapshots[0], stream=text)
            for snapshot in snapshots[1:]:
                stats.add(snapshot)
            stats.strip_dirs()
            print(f"CPU seconds profiled in all threads: {stats.total_tt:.2f}", file=text)
            stats.sort_stats("cumulative").print_stats(35)
            stats.sort_stats("tottime").print_stats(25)
        out.write_text(text.getvalue())

    return command


def profile_command(count_file: Path, what: str, timeout: float = 60.0) -> str:
    """Ask the profiling child to 'clear' its figures or 'dump' them; the dump's text."""
    request, out = Path(f"{count_file}.profile"), Path(f"{count_file}.profile.out")
    out.unlink(missing_ok=True)
    request.write_text(what)
    deadline = time.monotonic() + timeout
    while request.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return out.read_text() if what == "dump" and out.exists() else ""


def _child(count_file: str, argv: list[str]) -> None:
    """In the operator's process: count each HTTP request to the API server, then run it."""
    import runpy

    profiler = _profile_threads() if os.environ.get(PROFILE_ENV) else None

    import aiohttp
    from kubernetes.client import rest

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    original = rest.RESTClientObject.request

    def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        query = kwargs.get("query_params") or []
        full = url + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        with lock:
            counts[api_request_kind(method, full)] += 1
        return original(self, method, url, *args, **kwargs)

    setattr(rest.RESTClientObject, "request", counted)  # noqa: B010
    original_async = aiohttp.ClientSession._request

    async def counted_async(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        params = kwargs.get("params") or {}
        full = str(url) + ("?" + "&".join(f"{k}={v}" for k, v in dict(params).items()))
        with lock:
            counts["kopf " + api_request_kind(method, full)] += 1
        return await original_async(self, method, url, *args, **kwargs)

    setattr(aiohttp.ClientSession, "_request", counted_async)  # noqa: B010

    def dump() -> None:
        request = Path(count_file + ".profile")
        while True:
            time.sleep(0.25)
            with lock:
                text = json.dumps(counts)
            Path(count_file + ".tmp").write_text(text)
            os.replace(count_file + ".tmp", count_file)
            if profiler is not None and request.exists():
                profiler(request.read_text().strip(), Path(count_file + ".profile.out"))
                request.unlink()

    threading.Thread(target=dump, daemon=True).start()
    sys.argv = ["docrelay", *argv]
    runpy.run_module("docrelay.cli", run_name="__main__")


def read_counts(path: Path) -> Counter[str]:
    """The counting child's requests so far, as 'verb resource' (kopf's prefixed 'kopf ')."""
    time.sleep(0.6)  # two dumps
    return Counter(json.loads(path.read_text())) if path.exists() else Counter()


def quiet(
    count_file: Path,
    counted: Callable[[str], bool],
    seconds: float,
    limit: float,
    every: float = 0.5,
) -> None:
    """Wait until the operator has worked off its backlog: no new request for which
    `counted` holds for `seconds` (or `limit` passed)."""
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = read_counts(count_file)
        total = sum(n for what, n in counts.items() if counted(what))
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(every)


def print_top(counts: Counter[str], most: int) -> None:
    """The `most` most frequent requests, one a row."""
    for what, n in counts.most_common(most):
        print(f"  {n:6d}  {what}")


# --- load and figures -----------------------------------------------------------------------


def open_loop(
    pool: ThreadPoolExecutor, count: int, rate: float, task: Callable[[int], None]
) -> float:
    """`task(i)` for each i below `count` in `pool`, each started on schedule at `rate` a
    second whatever became of the ones before (open loop), then all waited for (an error is
    raised here). The rate offered: tasks started per second, over the whole time."""
    t0 = time.perf_counter()
    futures = []
    for i in range(count):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(task, i))
    for future in futures:
        future.result()
    return count / (time.perf_counter() - t0)



def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--child":
    _child(sys.argv[2], sys.argv[3:])
