"""Fixtures for tests against the real control plane and the local node.

One cluster per test session (start-up costs seconds once the binaries are built), a fresh
namespace per test, the CRDs from crds/ applied, every component's log printed on failure.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes import client, config

from devkit.cluster import Cluster
from devkit.cluster.apply import install_crds
from devkit.standins.platform import PlatformState
from tests.cluster.harness import Sink, Tenant, free_port, platform_standin, running_tenant

REPO_ROOT = Path(__file__).resolve().parents[2]

_session_cluster: Cluster | None = None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    global _session_cluster
    state_dir = tmp_path_factory.mktemp("cluster")
    started = Cluster(state_dir)
    started.start()
    _session_cluster = started
    # Tools the tests run (kubectl, the docrelay CLI) find the cluster as a person would.
    os.environ["KUBECONFIG"] = str(started.kubeconfig)
    os.environ["PATH"] = f"{started.bin_dir}{os.pathsep}{os.environ['PATH']}"
    try:
        api = config.new_client_from_config(config_file=str(started.kubeconfig))
        install_crds(api, REPO_ROOT / "crds")
        yield started
    finally:
        _session_cluster = None
        started.stop()


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods need it)."""
    core = client.CoreV1Api(api)
    base = request.node.name.lower().replace("_", "-")
    name = f"t-{''.join(ch for ch in base if ch.isalnum() or ch == '-')[:40].strip('-')}"
    name = f"{name}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def tenant(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Tenant]:
    """The operator in tenant mode for the test's namespace, with only the rules docs list."""
    with running_tenant(api, namespace, tmp_path) as started:
        yield started


@pytest.fixture
def pausing_tenant(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Tenant]:
    """The operator pausing an integration after 2 consecutive failed runs, serving metrics."""
    env = {
        "DOCRELAY_PAUSE_AFTER_FAILURES": "2",
        "DOCRELAY_METRICS_HOST": "127.0.0.1",
        "DOCRELAY_METRICS_PORT": str(free_port()),
    }
    with running_tenant(api, namespace, tmp_path, env) as started:
        yield started


@pytest.fixture
def platform() -> Iterator[PlatformState]:
    """The document platform's stand-in, serving examples/documents."""
    with platform_standin() as state:
        yield state


@pytest.fixture
def sink() -> Iterator[str]:
    """An HTTP server standing in for the downstream API; `Sink.seen` holds what it got."""
    Sink.seen = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_address[1]}"
    http.shutdown()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed and _session_cluster is not None:
        report.sections.append(("cluster component logs", _session_cluster.log_tails()))
