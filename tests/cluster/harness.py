"""What the cluster tests share: the operator and the gateway as subprocesses with the RBAC
the docs list, the CLI and kubectl as a user runs them, and small API helpers.

Fixtures built from these live in conftest.py; test modules import from here, never from
each other.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import yaml
from kubernetes import client

from devkit import rbac, toolchain
from devkit.cluster import Cluster
from devkit.standins import server as standin_server
from devkit.standins.platform import PlatformState
from devkit.standins.platform import create_app as platform_app
from docrelay.builders.run import new_run
from tests.leakcheck import canary as canary  # the tests take their canaries from here
from tests.leakcheck import found

GROUP, VERSION = "docrelay.io", "v1alpha1"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "docrelay"


def chart_objects(namespace: str, template: str, *sets: str) -> list[dict[str, Any]]:
    """The objects one template of the chart renders for a release in `namespace`
    (`helm template -s templates/<template>`), as a platform team's install would create them."""
    args = [str(toolchain.ensure("helm")), "template", "t", str(CHART), "-n", namespace]
    args += ["-s", f"templates/{template}"] + [f"--set={s}" for s in sets]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


# A bound on waiting for the operator, not a pause: every wait polls and returns when done.
WAIT_SECONDS = 90
FINISHED = {"Succeeded", "Failed", "TimedOut", "DeadLettered", "Cancelled"}
# The platform API key the stand-in accepts and the tenants' docrelay-platform Secret holds.
PLATFORM_KEY = "platform-api-key-for-tests"
# Subprocesses import the product and the devkit from this checkout.
PYTHONPATH = f"{REPO_ROOT / 'operator'}{os.pathsep}{REPO_ROOT}"

# --- permissions (docs/operator.md, docs/secrets.md, docs/broker.md, docs/pipedream.md) ------
# The same grants the demo and the benchmarks use: devkit.rbac is their one source.

RUN_RULES, TENANT_RULES = rbac.RUN_RULES, rbac.TENANT_RULES
SEALING_RULES, WEBHOOK_RULES = rbac.SEALING_RULES, rbac.WEBHOOK_RULES
OPERATOR_KEYS_RULES, GATEWAY_KEYS_RULES = rbac.OPERATOR_KEYS_RULES, rbac.GATEWAY_KEYS_RULES
GATEWAY_RULES, TOKEN_REVIEW_RULES = rbac.GATEWAY_RULES, rbac.TOKEN_REVIEW_RULES
grant, grant_cluster, token_kubeconfig = rbac.grant, rbac.grant_cluster, rbac.token_kubeconfig
gateway_kubeconfig, keys_namespace = rbac.gateway_kubeconfig, rbac.keys_namespace


def tenant_kubeconfig(api: client.ApiClient, namespace: str, path: Path) -> Path:
    """The operator's ServiceAccount with its namespaced Role, as a kubeconfig."""
    grant(api, namespace, "docrelay-operator", TENANT_RULES)
    return token_kubeconfig(api, namespace, "docrelay-operator", path, namespace)


def grant_sealing(api: client.ApiClient, namespace: str) -> None:
    """What sealing adds: a Role here, the keys namespace with the operator's Role there (as
    the chart makes them), and the ClusterRole for the two webhook configurations."""
    rbac.grant_operator_keys(api, namespace)
    grant_cluster(
        api, namespace, "docrelay-operator", f"docrelay-webhooks-{namespace}", WEBHOOK_RULES
    )


def cleanup_cluster_scoped(api: client.ApiClient, namespace: str) -> None:
    """The webhook ClusterRole and configurations, and the keys namespace."""
    admission = client.AdmissionregistrationV1Api(api)
    rbac.delete_keys_namespace(api, namespace)
    cleanup_cluster_role(api, f"docrelay-webhooks-{namespace}")
    for delete in (
        lambda: admission.delete_mutating_webhook_configuration(f"docrelay-secrets.{namespace}"),
        lambda: admission.delete_validating_webhook_configuration(f"docrelay-secrets.{namespace}"),
    ):
        try:
            delete()
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def cleanup_broker_rbac(api: client.ApiClient, ns: str) -> None:
    cleanup_cluster_role(api, f"docrelay-broker-{ns}")
    rbac.delete_keys_namespace(api, ns)


def cleanup_cluster_role(api: client.ApiClient, name: str) -> None:
    rbac_api = client.RbacAuthorizationV1Api(api)
    for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
        try:
            delete(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    """`docrelay operator` as a subprocess; its log is printed when a test fails."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        extra: list[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.health_port = free_port()
        self.log_path = log_path
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "docrelay.cli",
                "operator",
                "--health-host",
                "127.0.0.1",
                "--health-port",
                str(self.health_port),
                *extra,
            ],
            env={**env, "PYTHONPATH": PYTHONPATH},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"operator exited:\n{self.output()}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.health_port}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"operator never became healthy:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@contextlib.contextmanager
def running_tenant(
    api: client.ApiClient, namespace: str, tmp_path: Path, env: dict[str, str] | None = None
) -> Iterator[Tenant]:
    """The operator in tenant mode for `namespace` (with `env`), stopped afterwards with its
    cluster-scoped objects removed; its log is printed, which pytest shows only on failure."""
    started = Tenant(api, namespace, tmp_path, env=env)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        cleanup_cluster_scoped(api, namespace)
        print(f"\n--- operator log ---\n{started.log_text()}")


# Integration code that fails with a retryable error on every attempt.
CODE_UNAVAILABLE = """
class DownstreamError(Exception):
    def __init__(self, status_code):
        super().__init__(f"downstream answered {status_code}")
        self.status_code = status_code

def lambda_handler(event, context):
    raise DownstreamError(503)
"""


class Tenant:
    """One tenant namespace with its operator, which can be stopped and started again."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        tmp_path: Path,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`extra` arguments and `env` are added to every start of the operator."""
        self.api, self.namespace, self.tmp_path = api, namespace, tmp_path
        self.extra, self.env = list(extra or []), dict(env or {})
        self.kubeconfig = tenant_kubeconfig(api, namespace, tmp_path / f"{namespace}.kubeconfig")
        grant_sealing(api, namespace)
        self.operator: Operator | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        log = self.tmp_path / f"operator-{self.namespace}-{len(self.logs)}.log"
        self.logs.append(log)
        port = free_port()
        self.operator = Operator(
            self.kubeconfig,
            log,
            [
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(port),
                "--key-check-seconds",
                "1",
                *self.extra,
            ],
            self.env,
        )
        self.operator.wait_healthy()
        # Each start has a new serving certificate (and here a new port): wait until both
        # configurations point at this process.
        admission = client.AdmissionregistrationV1Api(self.api)
        name = f"docrelay-secrets.{self.namespace}"
        for read in (
            admission.read_mutating_webhook_configuration,
            admission.read_validating_webhook_configuration,
        ):
            eventually(
                lambda read=read: read(name).to_dict(),
                lambda o: f":{port}/" in o["webhooks"][0]["client_config"]["url"],
                f"the webhooks of {self.namespace} to be registered",
            )

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def log_text(self) -> str:
        return "".join(p.read_text() for p in self.logs if p.exists())


class Gateway:
    """`python -m docrelay.cli gateway` in a subprocess, its log kept for failures."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"gateway-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docrelay.cli", "gateway", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, integrations: int | None = None, timeout: float = 30) -> None:
        """Ready, and (if given) the watch has seen this many Integrations."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=2).json()
                if health["indexSynced"] and (
                    integrations is None or health["integrations"] >= integrations
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready\n{self.log()}")

    def log(self) -> str:
        """The end of the log, for a failure report; leak checks read log_text()."""
        return self.log_path.read_text(errors="replace")[-5000:]

    def log_text(self) -> str:
        """The whole log."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


class Sink(BaseHTTPRequestHandler):
    """The downstream API the integration exports to: records what it was sent."""

    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        Sink.seen.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "bill-1"}')

    def log_message(self, *_: Any) -> None:
        pass


# --- the CLI and the API ---------------------------------------------------------------------


def run(argv: list[str], stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    if expect is not None:
        assert result.returncode == expect, (
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def docrelay(*args: str, stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "docrelay.cli", *args], stdin, expect)


def kubectl(*args: str, stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
    return run(["kubectl", *args], stdin, expect)


def plaintext_secret(name: str, integration: str, key: str, value: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IntegrationSecret",
            "metadata": {"name": name},
            "spec": {"integration": integration, "key": key, "value": value},
        }
    )


def get_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrationsecrets", name
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def _not_found(exc: Exception) -> bool:
    return isinstance(exc, client.ApiException) and exc.status == 404


def eventually(
    fetch: Callable[[], Any],
    ok: Callable[[Any], bool],
    what: str,
    seconds: float = WAIT_SECONDS,
    *,
    every: float = 0.25,
    not_yet: Callable[[Exception], bool] = _not_found,
) -> Any:
    """Poll `fetch` every `every` seconds until `ok` holds; fail naming `what` after `seconds`.
    An error of `fetch` for which `not_yet` holds (default: the API's 404) counts as not yet.
    The one polling helper of the test tiers (tests/cluster and tests/e2e)."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fetch()
        except Exception as exc:
            if not not_yet(exc):
                raise
        else:
            if ok(last):
                return last
        time.sleep(every)
    last_status = last.get("status", last) if isinstance(last, dict) else last
    raise AssertionError(f"timed out waiting for {what}; last seen: {last_status}")


def checked(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The secret once the operator has checked its current generation."""

    def fetch() -> dict[str, Any]:
        return get_secret(api, namespace, name)

    return eventually(
        fetch,
        lambda o: (
            (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
            and bool(condition(o, "Ready"))
        ),
        f"the operator to check {namespace}/{name}",
    )


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(api: client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> None:
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def integration_manifest(name: str, code: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Integration",
        "metadata": {"name": name},
        "spec": {
            "workspace": "ws1",
            "documentType": "invoice",
            "trigger": "DocumentParseCompleted",
            "code": code,
            **spec,
        },
    }


def get_integration(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "integrations", name)


def make_integration(api: client.ApiClient, ns: str, name: str, code: str, **spec: Any) -> None:
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", integration_manifest(name, code, **spec)
    )
    eventually(
        lambda: custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "integrations", name),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        f"integration {name} to have a deployed revision",
    )


def run_manifest(ns: str, integration: str, document: str, event_id: str | None = None) -> dict:
    """A run as the gateway makes one for an event (a new event unless `event_id`)."""
    event_id = event_id or uuid.uuid4().hex
    return new_run(ns, integration, event_id, document, "DocumentParseCompleted")


def create_run(api: client.ApiClient, ns: str, integration: str, document: str = "doc1") -> str:
    body = run_manifest(ns, integration, document)
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", body)
    return str(body["metadata"]["name"])


def get_run(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", name)


def wait_finished(api: client.ApiClient, ns: str, name: str, seconds: float = WAIT_SECONDS) -> dict:
    run = eventually(
        lambda: get_run(api, ns, name),
        lambda o: (o.get("status") or {}).get("phase") in FINISHED,
        f"run {name} to finish",
        seconds,
    )
    return dict(run["status"])


def operator_rules(api: client.ApiClient, ns: str, rules: list[dict[str, Any]]) -> None:
    """Replace the rules of the operator's Role (the tenant fixture's `docrelay-operator`)."""
    client.RbacAuthorizationV1Api(api).patch_namespaced_role(
        "docrelay-operator", ns, {"rules": rules}
    )


def withhold_from_operator(api: client.ApiClient, ns: str, resource: str) -> list[dict[str, Any]]:
    """Take `resource` (say `integrationruns/status`) out of the operator's Role, so that every
    request of the operator on it is refused from then on: a crash's window, made by the real
    operator. The rules it had, to put back with operator_rules."""
    role = client.RbacAuthorizationV1Api(api).read_namespaced_role("docrelay-operator", ns)
    granted = [api.sanitize_for_serialization(rule) for rule in role.rules]
    kept = [
        {**rule, "resources": [r for r in rule["resources"] if r != resource]}
        for rule in granted
        if rule.get("resources") != [resource]
    ]
    operator_rules(api, ns, kept)
    return granted


def finished_runs(
    api: client.ApiClient, ns: str, integrations: list[str], count: int, threads: int = 8
) -> list[str]:
    """`count` runs that finished long ago, round robin over `integrations` (each created,
    then its status written Succeeded as the operator writes it); made while no operator runs,
    for the scale test and bench/bench_scale.py."""
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
    api_ = custom(api)

    def make(i: int) -> str:
        body = run_manifest(ns, integrations[i % len(integrations)], f"old-{i:06d}")
        name = str(body["metadata"]["name"])
        api_.create_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", body)
        api_.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, "integrationruns", name, {"status": status}
        )
        return name

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(make, range(count)))


def api_request_kind(method: str, url: str) -> str:
    """A request to the API server (a URL or a path, with its query) as 'verb resource', the
    resource with its subresource ('patch integrationruns/status'): a collection GET is 'list',
    a named one 'get', a POST 'create', a watch 'watch'. How the scale test and the benchmarks
    count an operator's calls."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if "namespaces" in path and path.index("namespaces") + 2 < len(path):
        resource = path[path.index("namespaces") + 2 :]
    else:
        resource = path[-1:]
    what = resource[0] + ("/" + resource[2] if len(resource) > 2 else "") if resource else "?"
    verb = {"GET": "get" if len(resource) > 1 else "list", "POST": "create"}.get(
        method.upper(), method.lower()
    )
    query = parts.query.lower()
    return f"{'watch' if 'watch=true' in query or 'watch=1' in query else verb} {what}"


def jobs_of(api: client.ApiClient, ns: str, run: str) -> list[str]:
    jobs = client.BatchV1Api(api).list_namespaced_job(ns, label_selector=f"docrelay.io/run={run}")
    return [j.metadata.name for j in jobs.items]


def stored_log(api: client.ApiClient, ns: str, run: str, attempt: int) -> str:
    cm = client.CoreV1Api(api).read_namespaced_config_map(f"{run}-{attempt}-log", ns)
    return gzip.decompress(base64.b64decode(cm.binary_data["log.gz"])).decode()


def set_secret(api: client.ApiClient, ns: str, integration: str, key: str, value: str) -> None:
    """Apply a plaintext IntegrationSecret (sealed by the webhook) and wait until Active."""
    name = f"{integration}-{key.lower().replace('_', '-')}"
    kubectl("apply", "-n", ns, "-f", "-", stdin=plaintext_secret(name, integration, key, value))
    assert checked(api, ns, name)["status"]["state"] == "Active"


# --- the platform stand-in and a whole stack ------------------------------------------------


@contextlib.contextmanager
def platform_standin() -> Iterator[PlatformState]:
    """The platform stand-in serving examples/ on 127.0.0.1; `base_url` is set on the state."""
    state = PlatformState.from_dir(REPO_ROOT / "examples", PLATFORM_KEY)
    running = standin_server.start(platform_app(state))
    state.base_url = running.base_url  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        running.stop()


def platform_secret(api: client.ApiClient, ns: str, platform: PlatformState) -> None:
    """The tenant's docrelay-platform Secret: the broker and the agent call the stand-in."""
    client.CoreV1Api(api).create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "docrelay-platform"},
            "stringData": {"token": PLATFORM_KEY, "url": platform.base_url},  # type: ignore[attr-defined]
        },
    )


def stop_stack(api: client.ApiClient, ns: str, tenant: Tenant, gateway: Gateway) -> None:
    """Stop the operator and the gateway, remove their cluster-scoped grants and print their
    logs (pytest shows them when the test failed)."""
    tenant.stop()
    gateway.stop()
    cleanup_cluster_scoped(api, ns)
    cleanup_broker_rbac(api, ns)
    print(f"\n--- operator log ---\n{tenant.log_text()}")
    print(f"\n--- gateway log ---\n{gateway.log()}")


# --- the canary crawl -----------------------------------------------------------------------


def api_objects_text() -> str:
    """Every object of every listable kind in every namespace (discovery through kubectl), as
    JSON, with the data of Secrets and ConfigMaps base64-decoded too, and gunzipped where it
    is gzip (the runs' stored logs)."""
    kinds = kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    assert "events" in kinds and "secrets" in kinds
    listed = json.loads(kubectl("get", ",".join(kinds), "-A", "-o", "json").stdout)
    parts: list[str] = []
    for item in listed["items"]:
        parts.append(json.dumps(item))
        for field in ("data", "binaryData"):
            for raw in (item.get(field) or {}).values():
                with contextlib.suppress(ValueError, TypeError):
                    data = base64.b64decode(raw)
                    if data[:2] == b"\x1f\x8b":
                        data = gzip.decompress(data)
                    parts.append(data.decode("utf-8", "surrogateescape"))
    text = "\n".join(parts)
    assert '"kind": "IntegrationSecret"' in text and '"kind": "Event"' in text
    return text


def etcd_dump(cluster: Cluster) -> bytes:
    """Every key and value etcd holds now."""
    etcdctl = toolchain.ensure("etcdctl")
    result = subprocess.run(
        [str(etcdctl), "get", "", "--prefix"],
        capture_output=True,
        env={**os.environ, **cluster.etcdctl_env()},  # TLS and etcd's admin client cert
        timeout=60,
        check=True,
    )
    assert len(result.stdout) > 10_000  # the whole keyspace, not an empty answer
    return result.stdout


def etcd_files(cluster: Cluster) -> bytes:
    """Every byte etcd wrote (WAL and database): what was ever stored, not only what is now."""
    files = sorted((cluster.state_dir / "etcd").rglob("*"))
    return b"".join(p.read_bytes() for p in files if p.is_file())


def canary_crawl(cluster: Cluster, canaries: list[str], logs: list[Path]) -> str:
    """After runs have executed: search every place a value could have reached for every
    canary in every form (tests/leakcheck.py, independent of the product's masker). The API
    (every object of every kind in every namespace, Events, Secret and ConfigMap data decoded,
    stored logs gunzipped), every control-plane component's log and the local node's pod logs,
    the given logs (operator, gateway: whole), etcd's keyspace and every file etcd wrote.
    Fails naming each finding; returns the API text, so a test can check the crawl saw what
    it should."""
    everything = api_objects_text()
    places: list[tuple[str, str | bytes]] = [("the API", everything)]
    places += [(f"the {name} log", path.read_bytes()) for name, path in cluster.logs().items()]
    places += [
        (str(p), p.read_bytes()) for p in sorted((cluster.state_dir / "node").rglob("*.log"))
    ]
    places += [(path.name, path.read_bytes()) for path in logs if path.exists()]
    places += [("etcd", etcd_dump(cluster)), ("etcd's files", etcd_files(cluster))]
    leaks = [f"{where}: {finding}" for where, text in places for finding in found(text, canaries)]
    assert not leaks, "canary values found:\n" + "\n".join(leaks)
    return everything


# --- the downstream sink, reached as run code reaches anything outside: through the proxy ---

# On the local node a run pod's only ways out are the broker and the egress proxy
# (docs/localnode.md), so a run reaches the sink through the gateway's proxy, by a name the
# proxy resolves to loopback (--egress-resolve), listed in the Integration's egress with the
# loopback cidr (a loopback destination is refused without one; docs/egress.md).
SINK_NAME = "sink.test"


def proxy_args(port: int) -> list[str]:
    """Gateway arguments: serve the egress proxy on `port`, resolving SINK_NAME to loopback."""
    return ["--proxy-port", str(port), "--egress-resolve", f"{SINK_NAME}=127.0.0.1"]


def tenant_gateway(
    api: client.ApiClient, ns: str, tmp_path: Path
) -> tuple[Gateway, dict[str, str]]:
    """The tenant's gateway (broker and egress proxy, with its own RBAC), not yet waited for,
    and the operator's environment that points runs at both."""
    kubeconfig = gateway_kubeconfig(api, ns, tmp_path / "gateway.kubeconfig")
    proxy_port = free_port()
    gateway = Gateway(
        tmp_path,
        ["-n", ns, *proxy_args(proxy_port)],
        env={"KUBECONFIG": str(kubeconfig), "DOCRELAY_GATEWAY_KEYS_CACHE_SECONDS": "1"},
    )
    runs_env = {
        "DOCRELAY_BROKER_URL": gateway.url,
        "DOCRELAY_EGRESS_PROXY_URL": f"http://127.0.0.1:{proxy_port}",
    }
    return gateway, runs_env


def sink_by_name(url: str) -> str:
    """The sink's URL (`http://127.0.0.1:PORT`) as run code calls it: by SINK_NAME."""
    return url.replace("//127.0.0.1:", f"//{SINK_NAME}:", 1)


def sink_egress(url: str) -> dict[str, Any]:
    """The Integration's spec.egress that lets its runs reach the sink at `url`."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    return {"hosts": [f"{SINK_NAME}:{port}"], "cidrs": ["127.0.0.1/32"]}
