"""Two tenants on a real node (`make e2e-node`) or a kind cluster (`make e2e-kind`), from the
chart and the real images.

What the local control plane cannot show: the chart's Deployments running from the images,
the webhook called through its Service with the operator's certificate, run pods reaching
the broker through the gateway Service, NetworkPolicies enforced (kube-router here; kindnet
enforces them since kind v0.24), and hostile code in a real container. The same behaviour
with the chart's RBAC is proven without images by tests/cluster/test_chart_install.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from docrelay.gateway.signatures import sign_resthook
from tests.cluster import harness
from tests.e2e.kind_suite import NAMESPACES, images

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "docrelay"
CONTEXT = os.environ.get("DOCRELAY_E2E_CONTEXT", "")
WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"  # examples/integration-minimal.yaml's
RELEASES = ("alpha", "beta")
# Set by the harness where the NetworkPolicy enforcer programs a pod only after it started
# (kind on a kernel kindnetd's enforcer cannot use): why a fence check may fail, said with it.
POLICY_ENFORCER = os.environ.get("DOCRELAY_E2E_POLICY_ENFORCER", "")
# Real images on a real kubelet: slower than the local control plane's WAIT_SECONDS.
E2E_WAIT_SECONDS = 300

pytestmark = pytest.mark.skipif(
    not CONTEXT, reason="run through `make e2e-node` or `make e2e-kind` (they create the cluster)"
)

# A run's code: its secret (by digest), then the API server and a pod outside its
# allow-list, both of which the NetworkPolicy must block.
PROBE = """
import hashlib, os, socket, sys

def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except OSError:
        return "blocked"

def lambda_handler(event, context):
    key_ok = hashlib.sha256(os.environ["API_KEY"].encode()).hexdigest() == KEY_SHA
    api = reach("kubernetes.default.svc", 443)
    operator = reach(OPERATOR_SERVICE, 443)
    python = "%d.%d" % sys.version_info[:2]
    return {"summary": "key=%s api=%s operator=%s python=%s" % (key_ok, api, operator, python)}
"""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl that says why (the API server's answer), in the test's report."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def kubectl(*args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["kubectl", "--context", CONTEXT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def helm(*args: str) -> str:
    result = subprocess.run(
        ["helm", "--kube-context", CONTEXT, *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def get(kind: str, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def eventually(fetch: Any, ok: Any, what: str, seconds: float = E2E_WAIT_SECONDS) -> Any:
    """harness.eventually with the kind tier's bound; a failing `kubectl get` is not yet."""
    return harness.eventually(
        fetch,
        ok,
        what,
        seconds,
        every=2,
        not_yet=lambda exc: isinstance(exc, subprocess.CalledProcessError),
    )


class PortForward:
    """`kubectl port-forward` to a tenant's gateway Service, on a free local port."""

    def __init__(self, namespace: str, service: str) -> None:
        self.process = subprocess.Popen(
            [
                "kubectl",
                "--context",
                CONTEXT,
                "-n",
                namespace,
                "port-forward",
                f"svc/{service}",
                ":80",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def post_event(url: str, namespace: str, key: bytes, document: str) -> httpx.Response:
    body = json.dumps(
        {
            "event": "document.parse.completed",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "payload": {
                "identifier": document,
                "workspace": {"identifier": WORKSPACE, "name": "Invoices"},
                "documentType": {"identifier": DOCTYPE},
            },
        }
    ).encode()
    headers = {
        "content-type": "application/json",
        "X-Hook-Signature": sign_resthook(body, key, int(time.time())),
    }
    return httpx.post(f"{url}/v1/events/{namespace}", content=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def tenants() -> Iterator[dict[str, dict[str, Any]]]:
    operator_image = images()[0]
    repository, tag = operator_image.rsplit(":", 1)
    out: dict[str, dict[str, Any]] = {}
    forwards: list[PortForward] = []
    try:
        for release, namespace in zip(RELEASES, NAMESPACES, strict=True):
            first = release == RELEASES[0]
            helm(
                "install",
                release,
                str(CHART),
                "-n",
                namespace,
                "--create-namespace",
                "--set",
                f"image.repository={repository}",
                "--set",
                f"image.tag={tag}",
                "--set",
                f"crds.install={'true' if first else 'false'}",
                "--wait",
                "--timeout",
                "5m",
            )
            key = f"{release}-signing-{uuid.uuid4().hex}".encode()
            kubectl(
                "-n",
                namespace,
                "create",
                "secret",
                "generic",
                "docrelay-gateway-signing",
                f"--from-literal=resthook-1={key.decode()}",
            )
            # `helm install --wait` returns once every pod is Ready, and a standby operator is
            # Ready while the active one may not serve the sealing webhook yet: a plaintext
            # secret applied at once is refused ("connection reset by peer", seen on the real
            # node). Wait until the webhook answers a server-side dry run; a webhook that never
            # serves still fails here, naming it.
            eventually(
                lambda namespace=namespace: kubectl(
                    "apply", "-n", namespace, "--dry-run=server", "-f",
                    str(REPO_ROOT / "examples" / "integrationsecret.yaml"),
                ),
                lambda result: result.returncode == 0,
                f"the sealing webhook of {namespace} to answer",
                seconds=120,
            )
            forward = PortForward(namespace, f"{release}-docrelay-gateway")
            forwards.append(forward)
            out[namespace] = {"release": release, "key": key, "url": forward.url}
        yield out
    finally:
        for forward in forwards:
            forward.close()


def test_examples_apply_and_plaintext_is_sealed_through_the_service(
    tenants: dict[str, dict[str, Any]],
) -> None:
    for namespace in tenants:
        for example in ("integration-minimal.yaml", "integrationsecret.yaml"):
            kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "examples" / example))
        secret = get("integrationsecret", namespace, "invoices-to-xero-ledger-code")
        assert "value" not in secret["spec"] and secret["spec"]["encryptedValue"]
        eventually(
            lambda namespace=namespace: get("integration", namespace, "invoice-to-webhook"),
            lambda o: (o.get("status") or {}).get("deployedRevision"),
            f"the example integration of {namespace} to be deployed",
        )


def test_signed_events_make_runs_that_succeed_and_stay_fenced(
    tenants: dict[str, dict[str, Any]],
) -> None:
    for namespace, tenant in tenants.items():
        value = f"v-{uuid.uuid4().hex}"
        manifest = {
            "apiVersion": "docrelay.io/v1alpha1",
            "kind": "IntegrationSecret",
            "metadata": {"name": "probe-api-key"},
            "spec": {"integration": "probe", "key": "API_KEY", "value": value},
        }
        kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
        webhook_service = f"{tenant['release']}-docrelay-webhook.{namespace}.svc"
        code = (
            f"KEY_SHA = {hashlib.sha256(value.encode()).hexdigest()!r}\n"
            f"OPERATOR_SERVICE = {webhook_service!r}\n"
            f"{PROBE}"
        )
        integration = {
            "apiVersion": "docrelay.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "probe"},
            "spec": {
                "workspace": WORKSPACE,
                "documentType": DOCTYPE,
                "trigger": "DocumentParseCompleted",
                "secrets": ["API_KEY"],
                "code": code,
            },
        }
        kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(integration))
        eventually(
            lambda namespace=namespace: get("integration", namespace, "probe"),
            lambda o: (o.get("status") or {}).get("deployedRevision"),
            f"probe in {namespace} to be deployed",
        )
        answer = post_event(tenant["url"], namespace, tenant["key"], "XqLmNoPa")
        assert answer.status_code == 202, answer.text
        runs = {r["integration"]: r["name"] for r in answer.json()["runs"]}
        assert set(runs) == {"probe", "invoice-to-webhook"}
        for name in runs.values():
            run = eventually(
                lambda name=name, namespace=namespace: get("integrationrun", namespace, name),
                lambda o: (
                    (o.get("status") or {}).get("phase")
                    in {"Succeeded", "Failed", "TimedOut", "DeadLettered"}
                ),
                f"run {name} to finish",
            )
            assert run["status"]["phase"] == "Succeeded", run["status"]
        probe = get("integrationrun", namespace, runs["probe"])["status"]
        # No spec.runtime: the default, Python 3.12, in runner:3.12 (no other image has it).
        assert probe["resultSummary"] == "key=True api=blocked operator=blocked python=3.12", (
            probe["resultSummary"],
            POLICY_ENFORCER,
        )


def test_tenants_are_isolated(tenants: dict[str, dict[str, Any]]) -> None:
    (a, ta), (b, tb) = tenants.items()
    # A's key signs nothing for B; A's gateway serves only A.
    assert post_event(tb["url"], b, ta["key"], "XqLmNoPa").status_code == 401
    assert post_event(ta["url"], b, ta["key"], "XqLmNoPa").status_code in (403, 404)
    for component in ("operator", "gateway"):
        user = f"system:serviceaccount:{a}:{ta['release']}-docrelay-{component}"
        for what in (
            ["get", "secrets/docrelay-sealing-keys"],
            ["list", "secrets"],
            ["list", "integrations.docrelay.io"],
            ["create", "integrationruns.docrelay.io"],
        ):
            answer = kubectl("auth", "can-i", *what, "-n", b, "--as", user, check=False)
            assert answer.stdout.strip() == "no", (user, what)
        # Nor B's keys, in B's keys namespace (docs/secrets.md).
        for what in (["get", "secrets/docrelay-sealing-keys"], ["list", "secrets"]):
            answer = kubectl(
                "auth", "can-i", *what, "-n", f"{b}-docrelay-keys", "--as", user, check=False
            )
            assert answer.stdout.strip() == "no", (user, what)
    run_user = f"system:serviceaccount:{a}:docrelay-run"
    for what in (["get", "pods"], ["get", "secrets"], ["create", "configmaps"]):
        answer = kubectl("auth", "can-i", *what, "-n", a, "--as", run_user, check=False)
        assert answer.stdout.strip() == "no", what
    # The keys of each tenant are its own.
    keys = [get("configmap", ns, "docrelay-sealing-cert")["data"]["key-id"] for ns in tenants]
    assert keys[0] != keys[1]


# Hostile code on a real kubelet and runtime: what the chart and the run's pod spec promise
# must hold in a real container, not only on the local node's process sandbox.
HOSTILE = """
import errno, json, os, socket, time

def reach(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "open"
    except OSError:
        return "blocked"

def through_proxy(host):
    # CONNECT through the egress proxy (HTTPS_PROXY) to a host the Integration does not list.
    proxy = os.environ.get("HTTPS_PROXY", "")
    if not proxy:
        return "no proxy"
    from urllib.parse import urlsplit
    import base64
    parts = urlsplit(proxy)
    auth = base64.b64encode(("%s:%s" % (parts.username, parts.password)).encode()).decode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("CONNECT %s:443 HTTP/1.1\\r\\nHost: %s:443\\r\\n"
                      "Proxy-Authorization: Basic %s\\r\\n\\r\\n" % (host, host, auth)).encode())
        return sock.recv(64).decode(errors="replace").split("\\r\\n")[0]

def tasks(most):
    # Threads count against the pod's PIDs limit as processes do, and cost far less to make
    # than forks of a Python process (a fork bomb on 2 shared cores starves the node).
    import threading
    threading.stack_size(64 * 1024)
    release = threading.Event()
    started = []
    try:
        for _ in range(most):
            thread = threading.Thread(target=release.wait, daemon=True)
            thread.start()
            started.append(thread)
        outcome = "unlimited"
    except RuntimeError:
        outcome = "refused"
    release.set()
    for thread in started:
        thread.join()
    return outcome, len(started)

def lambda_handler(event, context):
    out = {"uid": os.getuid()}
    try:
        open("/written-by-hostile-code", "w").close()
        out["root"] = "writable"
    except OSError as exc:
        out["root"] = "read-only" if exc.errno == errno.EROFS else "errno %d" % exc.errno
    with open("/proc/self/status") as status:
        out["capEff"] = [l.split()[1] for l in status if l.startswith("CapEff")][0]
    out["token"] = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    out["api"] = reach(host, os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
    out["apiByName"] = reach("kubernetes.default.svc", 443)
    out["proxyUnlisted"] = through_proxy("example.org")
    out["tasks"] = tasks(3000)
    return {"summary": json.dumps(out, sort_keys=True)}
"""

HOG = """
def lambda_handler(event, context):
    chunks = []
    while True:
        chunks.append(b"x" * (8 * 1024 * 1024))
"""


def _deploy(namespace: str, name: str, code: str, **spec: Any) -> None:
    integration = {
        "apiVersion": "docrelay.io/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": name},
        "spec": {
            "workspace": WORKSPACE,
            "documentType": DOCTYPE,
            "trigger": "DocumentParseCompleted",
            "code": code,
            **spec,
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(integration))
    eventually(
        lambda: get("integration", namespace, name),
        lambda o: (o.get("status") or {}).get("deployedRevision"),
        f"{name} in {namespace} to be deployed",
    )


def _finished(namespace: str, name: str) -> dict[str, Any]:
    run = eventually(
        lambda: get("integrationrun", namespace, name),
        lambda o: (o.get("status") or {}).get("phase")
        in {"Succeeded", "Failed", "TimedOut", "DeadLettered"},
        f"run {name} to finish",
    )
    return dict(run["status"])


def test_hostile_code_is_contained(tenants: dict[str, dict[str, Any]]) -> None:
    namespace, tenant = next(iter(tenants.items()))
    _deploy(namespace, "hostile", HOSTILE)
    _deploy(
        namespace,
        "hog",
        HOG,
        retry={"maxAttempts": 1},
        resources={"limits": {"memory": "96Mi"}, "requests": {"memory": "64Mi"}},
    )
    answer = post_event(tenant["url"], namespace, tenant["key"], "HoStIlEe")
    assert answer.status_code == 202, answer.text
    runs = {r["integration"]: r["name"] for r in answer.json()["runs"]}

    status = _finished(namespace, runs["hostile"])
    assert status["phase"] == "Succeeded", status
    seen = json.loads(status["resultSummary"])
    assert seen["uid"] != 0, seen
    assert seen["root"] == "read-only", seen
    assert int(seen["capEff"], 16) == 0, seen  # no capability at all
    assert seen["token"] is False, seen  # no service-account token mounted
    # The API server, by the address the kubelet hands every pod and by name: closed.
    assert (seen["api"], seen["apiByName"]) == ("blocked", "blocked"), (seen, POLICY_ENFORCER)
    # The egress proxy is the only door, and it refuses what the Integration does not list.
    assert seen["proxyUnlisted"].split()[1:2] == ["403"], seen
    # A thread bomb stops at the pod's PIDs limit, well before 3000 tasks.
    outcome, started = seen["tasks"]
    # The kubelet's podPidsLimit: a pod spec cannot set one (docs/chart.md, "What the nodes need").
    assert outcome == "refused" and started < 3000, (seen, "is the kubelet's podPidsLimit set?")

    # A memory hog: killed by the kernel at its container's limit, classified as such.
    status = _finished(namespace, runs["hog"])
    assert status["errorClass"] == "OutOfMemory", status
    assert status["phase"] == "DeadLettered", status
    # Later events need not start them again.
    kubectl("delete", "integration", "hostile", "hog", "-n", namespace, "--wait=false")


EGRESS = """
import os, urllib.request

def lambda_handler(event, context):
    # Through the egress proxy (HTTP_PROXY, as every run gets it) to the one host listed.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": os.environ["HTTP_PROXY"]}))
    with opener.open("http://%s:8080/" % SINK, timeout=20) as answer:
        return {"summary": "sink=%d" % answer.status}
"""


def test_a_run_reaches_what_its_egress_lists_through_the_proxy(
    tenants: dict[str, dict[str, Any]],
) -> None:
    """The other half of the fence: what an Integration lists is reachable, through the proxy."""
    namespace, tenant = next(iter(tenants.items()))
    sink_ns = "e2e-sink"
    runner_image = images()[1]
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": sink_ns}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sink", "namespace": sink_ns, "labels": {"app": "sink"}},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "sink",
                        "image": runner_image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-m", "http.server", "8080"],
                        "workingDir": "/tmp",
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}},
                        "securityContext": {
                            "runAsUser": 65532,
                            "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "sink", "namespace": sink_ns},
            "spec": {"selector": {"app": "sink"}, "ports": [{"port": 8080}]},
        },
    ]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
    eventually(
        lambda: get("pod", sink_ns, "sink"),
        lambda o: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (o.get("status") or {}).get("conditions", [])
        ),
        "the sink pod to be ready",
    )
    sink = f"sink.{sink_ns}.svc.cluster.local"
    cluster_ip = get("service", sink_ns, "sink")["spec"]["clusterIP"]
    # A private destination needs its address in cidrs as well as its name in hosts.
    _deploy(
        namespace,
        "egress",
        f"SINK = {sink!r}\n{EGRESS}",
        egress={"hosts": [f"{sink}:8080"], "cidrs": [f"{cluster_ip}/32"]},
    )
    answer = post_event(tenant["url"], namespace, tenant["key"], "EgReSsOk")
    assert answer.status_code == 202, answer.text
    runs = {r["integration"]: r["name"] for r in answer.json()["runs"]}
    status = _finished(namespace, runs["egress"])
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == "sink=200", status
