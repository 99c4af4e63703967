"""The egress proxy against the real control plane and the local node (docs/egress.md).

The gateway (whose process serves the broker and the proxy) and the operator run as
subprocesses with their own RBAC; the "outside world" is two loopback servers in this process,
one TLS (a self-signed certificate made here, trusted by the run's code) and one plain HTTP.
`--egress-resolve` points the test names (ledger.test, eu.api.wild.test, ...) at 127.0.0.1,
as a split-horizon setup would, so every allowed Integration also lists 127.0.0.1/32 as a
cidr: a loopback address is refused without one. Run pods are real processes running
`python -m docrelay.runner` with HTTPS_PROXY/HTTP_PROXY from the operator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from docrelay.gateway.egress import (
    RECORD_COLLECTED,
    RECORD_OPEN,
    RECORD_STATE_LABEL,
    UNNAMED_HOST,
    merge_records,
)
from docrelay.gateway.kubeapi import KubeApi
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    create_run,
    custom,
    docrelay,
    eventually,
    free_port,
    gateway_kubeconfig,
    get_run,
    kubectl,
    make_integration,
    set_secret,
    stop_stack,
    stored_log,
    wait_finished,
)
from tests.leakcheck import assert_clean, canary

RUNS = 20
CONNECTIONS_PER_RUN = 25
NAMES = ["ledger.test", "eu.api.wild.test", "evil.test"] + [f"t{i}.test" for i in range(RUNS)]


# --- the outside world ------------------------------------------------------------------------


def self_signed(names: list[str], directory: Path) -> tuple[Path, Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = directory / "sink.crt", directory / "sink.key"
    cert_path.write_text(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


class Handler(BaseHTTPRequestHandler):
    """Records (Host, method, path, body length) of every request; answers 201/200."""

    seen: ClassVar[list[tuple[str, str, str, int]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def _record(self, status: int) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        with Handler.lock:
            Handler.seen.append((self.headers.get("host", ""), self.command, self.path, len(body)))
        answer = json.dumps({"ok": True, "got": len(body)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self._record(200)

    def do_POST(self) -> None:
        self._record(201)

    def log_message(self, *_: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TLS server and a plain HTTP server on loopback, and the CA the code trusts."""
    cert, key, pem = self_signed(NAMES, tmp_path_factory.mktemp("sink"))
    tls = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    plain = Server(("127.0.0.1", 0), Handler)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (tls, plain)]
    for thread in threads:
        thread.start()
    yield {"tls": tls.server_address[1], "http": plain.server_address[1], "ca": pem}
    tls.shutdown()
    plain.shutdown()


# --- the gateway with its proxy, restartable on the same ports --------------------------------


class ProxyGateway:
    def __init__(self, tmp: Path, namespace: str, kubeconfig: Path) -> None:
        self.port, self.proxy_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self.args = [
            sys.executable, "-m", "docrelay.cli", "gateway", "-n", namespace,
            "--port", str(self.port), "--proxy-port", str(self.proxy_port),
            *[a for n in NAMES for a in ("--egress-resolve", f"{n}=127.0.0.1")],
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "DOCRELAY_GATEWAY_KEYS_CACHE_SECONDS": "1",
        }
        self.tmp, self.starts = tmp, 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.tmp / f"gateway-{self.port}-{self.starts}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json()["indexSynced"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready\n{self.log()}")

    def log(self) -> str:
        return "".join(
            (self.tmp / f"gateway-{self.port}-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
        )[-8000:]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
            self._log.close()


@pytest.fixture
def stack(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[tuple[Tenant, ProxyGateway]]:
    kubeconfig = gateway_kubeconfig(api, namespace, tmp_path / "gateway.kubeconfig")
    gateway = ProxyGateway(tmp_path, namespace, kubeconfig)
    tenant = Tenant(
        api,
        namespace,
        tmp_path,
        env={"DOCRELAY_BROKER_URL": gateway.url, "DOCRELAY_EGRESS_PROXY_URL": gateway.proxy_url},
    )
    Handler.seen = []
    try:
        tenant.start()
        yield tenant, gateway
    finally:
        stop_stack(api, namespace, tenant, gateway)  # type: ignore[arg-type]


# --- helpers ----------------------------------------------------------------------------------

CODE = """
import json, ssl, urllib.request

CA = {ca!r}


def call(url, data=None):
    context = ssl.create_default_context(cadata=CA)
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        return answer.status, answer.read()

{body}
"""


def code(world: dict[str, Any], body: str, **more: Any) -> str:
    return CODE.format(ca=world["ca"], body=body.format(**world, **more))


def record(api: client.ApiClient, ns: str, run: str, attempt: int = 1) -> dict[str, Any]:
    cm = client.CoreV1Api(api).read_namespaced_config_map(f"{run}-{attempt}-egress", ns)
    return merge_records(json.loads(v) for v in (cm.data or {}).values())


def wait_record(
    api: client.ApiClient, ns: str, run: str, connections: int, attempt: int = 1
) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        try:
            return record(api, ns, run, attempt)
        except client.ApiException as exc:
            if exc.status == 404:
                return {"connections": 0}
            raise

    return eventually(
        fetch, lambda r: r["connections"] >= connections, f"the egress record of {run}"
    )


def allowed(**egress: Any) -> dict[str, Any]:
    return {"egress": egress, "retry": {"maxAttempts": 3, "backoffBaseSeconds": 1}}


# --- the tests --------------------------------------------------------------------------------


def test_listed_hosts_pass_and_every_connection_is_recorded(
    api: client.ApiClient, namespace: str, stack: Any, world: dict[str, Any]
) -> None:
    body = """
import os, time

def lambda_handler(event, context):
    print("proxy:", os.environ["HTTPS_PROXY"])  # the token in it is masked
    first, _ = call("https://ledger.test:{tls}/bills", b"x" * 5000)
    second, _ = call("https://eu.api.wild.test:{tls}/wild")
    third, _ = call("http://ledger.test:{http}/status?token=t0ps3cret")
    time.sleep(1.5)  # the proxy writes its record within 0.5 s of a connection's end
    return {{"summary": f"{{first}} {{second}} {{third}}"}}
"""
    hosts = [f"ledger.test:{world['tls']}", f"ledger.test:{world['http']}",
             f"*.wild.test:{world['tls']}"]  # fmt: skip
    make_integration(
        api, namespace, "export", code(world, body),
        **allowed(hosts=hosts, cidrs=["127.0.0.1/32"]),
    )  # fmt: skip
    name = create_run(api, namespace, "export")
    status = wait_finished(api, namespace, name)
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == "201 200 200"
    assert sorted(Handler.seen) == sorted([
        (f"ledger.test:{world['tls']}", "POST", "/bills", 5000),
        (f"eu.api.wild.test:{world['tls']}", "GET", "/wild", 0),
        (f"ledger.test:{world['http']}", "GET", "/status?token=t0ps3cret", 0),
    ])  # fmt: skip
    got = wait_record(api, namespace, name, 3)
    assert (got["connections"], got["denied"]) == (3, 0)
    # The operator counted it into the run's status when it collected the attempt.
    assert status["egress"] == {
        "connections": 3, "denied": 0, "bytesOut": got["bytesOut"], "bytesIn": got["bytesIn"]
    }  # fmt: skip
    assert status["egress"]["bytesOut"] > 5000
    by_host = {(e["method"], e["host"], e["port"]): e for e in got["entries"]}
    bills = by_host[("CONNECT", "ledger.test", world["tls"])]
    assert bills["allowed"] and bills["status"] == 200
    assert bills["bytesOut"] > 5000 and bills["bytesIn"] > 0  # TLS: sizes, not contents
    assert "path" not in bills
    assert by_host[("CONNECT", "eu.api.wild.test", world["tls"])]["allowed"]
    plain = by_host[("GET", "ledger.test", world["http"])]
    assert (plain["path"], plain["status"]) == ("/status", 200)  # no query: tokens live there
    assert "t0ps3cret" not in json.dumps(got)
    # The pod's token, the proxy password, never shows in the log.
    log = stored_log(api, namespace, name, 1)
    assert f"proxy: http://run:***@127.0.0.1:{stack[1].proxy_port}" in log, log
    assert "eyJ" not in log  # a JWT's header
    # What a user reads: the log with a summary on stderr, and the list with --egress.
    logs = docrelay("logs", name, "-n", namespace)
    assert "egress: 3 connection(s), 0 denied" in logs.stderr, logs.stderr
    listed = docrelay("logs", name, "-n", namespace, "--egress").stdout
    assert f"yes      200     CONNECT  ledger.test:{world['tls']}" in listed, listed
    assert f"GET      ledger.test:{world['http']}" in listed and "/status" in listed, listed
    assert listed.splitlines()[-1].startswith("egress: 3 connection(s), 0 denied, "), listed


def test_a_secret_in_a_plain_http_url_never_reaches_the_record(
    api: client.ApiClient, namespace: str, stack: Any, world: dict[str, Any]
) -> None:
    """Code that puts a secret value into a plain-HTTP URL (path and query): the destination
    gets it, the record keeps the path with the value masked by the operator (the gateway
    cannot know it) and never the query; nor do status.egress or `docrelay logs --egress`.
    The last call ends as the pod exits, so the gateway may write its part after the operator
    collected the attempt: that write drops the paths instead of putting the value back."""
    value = canary(header=True)
    set_secret(api, namespace, "leaky", "API_KEY", value)
    body = """
import os, time, urllib.parse

def lambda_handler(event, context):
    key = urllib.parse.quote(os.environ["API_KEY"])
    first, _ = call("http://ledger.test:{http}/v1/" + key + "/bills?api_key=" + key)
    time.sleep(1.5)  # written by the gateway while the run is still going
    last, _ = call("http://ledger.test:{http}/v2/" + key)
    return {{"summary": f"{{first}} {{last}}"}}
"""
    make_integration(
        api, namespace, "leaky", code(world, body), secrets=["API_KEY"],
        **allowed(hosts=[f"ledger.test:{world['http']}"], cidrs=["127.0.0.1/32"]),
    )  # fmt: skip
    name = create_run(api, namespace, "leaky")
    status = wait_finished(api, namespace, name)
    assert status["phase"] == "Succeeded" and status["resultSummary"] == "200 200", status
    quoted = quote(value)
    assert (f"ledger.test:{world['http']}", "GET", f"/v1/{quoted}/bills?api_key={quoted}", 0) in (
        Handler.seen
    )  # the destination got the value: the code really sent it
    got = wait_record(api, namespace, name, 2)
    paths = sorted(x.get("path") for x in got["entries"] if x.get("path"))
    assert "/v1/***/bills" in paths, got  # masked by the operator, query dropped
    cm = client.CoreV1Api(api).read_namespaced_config_map(f"{name}-1-egress", namespace)
    assert cm.metadata.labels[RECORD_STATE_LABEL] == RECORD_COLLECTED
    listed = docrelay("logs", name, "-n", namespace, "--egress").stdout
    assert "/v1/***/bills" in listed, listed
    described = kubectl("describe", "integrationrun", name, "-n", namespace).stdout
    for where, text in [("the record ConfigMap", json.dumps(cm.data)),
                        ("the run's status", json.dumps(get_run(api, namespace, name)["status"])),
                        ("docrelay logs --egress", listed), ("kubectl describe", described),
                        ("the gateway's log", stack[1].log())]:  # fmt: skip
        assert_clean(text, [value], where)
    # The API server applies the gateway's guarded write as tests/unit/test_egress.py assumes:
    # a `test` of the label that no longer holds is refused (422), nothing written.
    gateway_api = KubeApi(api.configuration, 10)
    label = "/metadata/labels/" + RECORD_STATE_LABEL.replace("/", "~1")
    where = f"/api/v1/namespaces/{namespace}/configmaps/{name}-1-egress"

    async def guarded(expect: str) -> int:
        try:
            return await gateway_api.json_patch(where, [
                {"op": "test", "path": label, "value": expect},
                {"op": "add", "path": "/data/probe.json", "value": "{}"},
            ])  # fmt: skip
        finally:
            await gateway_api.aclose()

    assert asyncio.run(guarded(RECORD_OPEN)) == 422
    after = client.CoreV1Api(api).read_namespaced_config_map(f"{name}-1-egress", namespace)
    assert "probe.json" not in after.data
    assert asyncio.run(guarded(RECORD_COLLECTED)) == 200


DENIED = """
def lambda_handler(event, context):
    call("{url}")
    return {{"summary": "reached"}}
"""


@pytest.mark.parametrize(
    ("url", "cidrs", "reason"),
    [
        pytest.param(
            "https://evil.test:{tls}/",
            ["127.0.0.1/32"],
            "evil.test:{tls} is not allowed; list it in spec.egress.hosts of the Integration",
            id="unlisted-host",
        ),
        pytest.param(
            "https://ledger.test:{http}/",
            ["127.0.0.1/32"],
            "ledger.test:{http} is not allowed: port {http} is not listed; list it in "
            "spec.egress.hosts of the Integration as ledger.test:{http}",
            id="port-not-listed",
        ),
        pytest.param(
            "https://ledger.test:{tls}/",
            [],
            "ledger.test resolves to 127.0.0.1, a loopback address; such a destination needs "
            "an entry in spec.egress.cidrs of the Integration",
            id="loopback-without-cidrs",
        ),
    ],
)
def test_refused_destinations_fail_as_egress_denied(
    api: client.ApiClient,
    namespace: str,
    stack: Any,
    world: dict[str, Any],
    url: str,
    cidrs: list[str],
    reason: str,
) -> None:
    make_integration(
        api, namespace, "denied", code(world, DENIED, url=url.format(**world)),
        **allowed(hosts=[f"ledger.test:{world['tls']}"], cidrs=cidrs),
    )  # fmt: skip
    name = create_run(api, namespace, "denied")
    status = wait_finished(api, namespace, name)
    expected = reason.format(**world)
    assert (status["phase"], status["errorClass"], status["attempt"]) == (
        "Failed", "EgressDenied", 1,
    ), status  # fmt: skip
    assert status["retryable"] is False  # permanent: not retried
    assert status["errorMessage"].startswith(f"EgressDenied: {expected} (the egress proxy"), status
    assert Handler.seen == []
    got = wait_record(api, namespace, name, 1)
    (entry,) = got["entries"]
    assert (entry["allowed"], entry["status"], entry["reason"]) == (False, 403, expected)
    # kubectl describe shows it: a Warning Event on the run.
    events = eventually(
        lambda: (
            client.CoreV1Api(api)
            .list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name},reason=EgressDenied"
            )
            .items
        ),
        lambda items: len(items) == 1,
        "the EgressDenied Event",
    )
    # The gateway's Event names a host only when the user listed it: an unlisted one is the
    # code's text, which can carry a value the gateway cannot mask (the record masks it).
    announced = expected.replace("evil.test", UNNAMED_HOST)
    assert (events[0].type, events[0].message) == ("Warning", f"attempt 1: {announced}")


def test_the_proxy_restarting_mid_run_is_a_clear_transient_error(
    api: client.ApiClient, namespace: str, stack: Any, world: dict[str, Any]
) -> None:
    _, gateway = stack
    body = """
import time

def lambda_handler(event, context):
    call("https://ledger.test:{tls}/attempt-%d" % context.attempt)
    if context.attempt == 1:
        time.sleep(4)  # the test stops the gateway now
        call("https://ledger.test:{tls}/second")
    return {{"summary": "done on attempt %d" % context.attempt}}
"""
    make_integration(
        api, namespace, "restart", code(world, body),
        egress={"hosts": [f"ledger.test:{world['tls']}"], "cidrs": ["127.0.0.1/32"]},
        retry={"maxAttempts": 6, "backoffBaseSeconds": 5, "backoffCapSeconds": 5},
    )  # fmt: skip
    name = create_run(api, namespace, "restart")
    eventually(lambda: list(Handler.seen), lambda s: len(s) == 1, "the first call")
    gateway.stop()
    failed = eventually(
        lambda: get_run(api, namespace, name).get("status") or {},
        lambda s: s.get("errorClass") is not None,
        "the first attempt to fail",
    )
    assert (failed["attempt"], failed["errorClass"], failed["retryable"]) == (
        1, "TransientError", True,
    ), failed  # fmt: skip
    assert (
        f"the egress proxy at 127.0.0.1:{gateway.proxy_port} is not reachable; retried"
        in (failed["errorMessage"])
    ), failed
    gateway.start()
    # Retried (every few seconds while the gateway starts again) until the proxy is back.
    status = wait_finished(api, namespace, name)
    last = status["attempt"]
    assert status["phase"] == "Succeeded" and last >= 2, status
    assert status["resultSummary"] == f"done on attempt {last}"
    assert [s[2] for s in Handler.seen] == ["/attempt-1", f"/attempt-{last}"]


def test_many_runs_at_once_each_reach_only_their_own_hosts(
    api: client.ApiClient, namespace: str, stack: Any, world: dict[str, Any]
) -> None:
    """20 runs, 25 concurrent HTTPS connections each (500), each to its own host; each run
    also tries the next run's host, which its own Integration does not list."""
    body = """
from concurrent.futures import ThreadPoolExecutor

def lambda_handler(event, context):
    with ThreadPoolExecutor({n}) as pool:
        results = list(pool.map(lambda i: call("https://{own}:{tls}/c%d" % i)[0], range({n})))
    try:
        call("https://{other}:{tls}/crossed")
        crossed = "crossed"
    except OSError as exc:
        crossed = "refused" if "Egress Denied" in str(exc) else repr(exc)
    return {{"summary": "%d %s" % (results.count(200), crossed)}}
"""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(
            lambda i: make_integration(
                api, namespace, f"t{i}",
                code(
                    world, body, n=CONNECTIONS_PER_RUN, own=f"t{i}.test",
                    other=f"t{(i + 1) % RUNS}.test",
                ),
                egress={"hosts": [f"t{i}.test:{world['tls']}"], "cidrs": ["127.0.0.1/32"]},
                maxConcurrency=1,
                timeoutSeconds=240,
            ),
            range(RUNS),
        ))  # fmt: skip
    names = [create_run(api, namespace, f"t{i}") for i in range(RUNS)]
    for i, name in enumerate(names):
        status = wait_finished(api, namespace, name, 300)
        assert status["phase"] == "Succeeded", (i, status)
        assert status["resultSummary"] == f"{CONNECTIONS_PER_RUN} refused", (i, status)
    for i in range(RUNS):
        host = f"t{i}.test:{world['tls']}"
        assert len([s for s in Handler.seen if s[0] == host]) == CONNECTIONS_PER_RUN, i
    assert not [s for s in Handler.seen if s[2] == "/crossed"]
    for i, name in enumerate(names):
        got = wait_record(api, namespace, name, CONNECTIONS_PER_RUN + 1)
        assert (got["connections"], got["denied"]) == (CONNECTIONS_PER_RUN + 1, 1), i
        hosts = {e["host"] for e in got["entries"] if e["allowed"]}
        assert hosts == {f"t{i}.test"}, i


FRONTING = """
import os, socket, ssl, urllib.parse

def through_proxy(server_name):
    proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])  # the runner put the token in it
    raw = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
    auth = __import__("base64").b64encode(f"run:{{proxy.password}}".encode()).decode()
    raw.sendall(f"CONNECT ledger.test:{tls} HTTP/1.1\\r\\n"
                f"Proxy-Authorization: Basic {{auth}}\\r\\n\\r\\n".encode())
    head = raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    context = ssl.create_default_context(cadata=CA)
    context.check_hostname = False  # the code wants evil.test, whatever the certificate says
    try:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(b"GET /fronted HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n")
            return "reached " + tls.recv(100).decode(errors="replace").split("\\r\\n")[0]
    except (OSError, ssl.SSLError) as exc:
        return "closed " + type(exc).__name__

def lambda_handler(event, context):
    return {{"summary": through_proxy("evil.test") + " | " + through_proxy("ledger.test")}}
"""


def test_a_tunnel_to_a_listed_host_cannot_ask_tls_for_another_name(
    api: client.ApiClient, namespace: str, stack: Any, world: dict[str, Any]
) -> None:
    """Hostile code opens a tunnel to its listed host, then asks TLS for an unlisted name
    served at the same address (domain fronting): the proxy reads the ClientHello, closes the
    tunnel before a byte reaches the server, and records and announces the refusal; the same
    tunnel with the listed name works."""
    make_integration(
        api, namespace, "fronting", code(world, FRONTING),
        **allowed(hosts=[f"ledger.test:{world['tls']}"], cidrs=["127.0.0.1/32"]),
    )  # fmt: skip
    name = create_run(api, namespace, "fronting")
    status = wait_finished(api, namespace, name)
    assert status["phase"] == "Succeeded", status
    refused, listed = status["resultSummary"].split(" | ")
    assert refused.startswith("closed "), status["resultSummary"]
    assert listed == "reached HTTP/1.0 200 OK", status["resultSummary"]
    assert [seen for seen in Handler.seen if seen[2] == "/fronted"] == [
        ("evil.test", "GET", "/fronted", 0)
    ]  # only the second tunnel's request arrived (its Host header is the code's own)
    got = wait_record(api, namespace, name, 2)
    denied = [x for x in got["entries"] if not x["allowed"]]
    assert len(denied) == 1 and denied[0]["status"] == 403, got
    reason = (
        f"ledger.test:{world['tls']} was opened with another TLS server name inside the tunnel; "
        "a tunnel reaches only the name it was opened for, so connect to the host you listed"
    )
    assert denied[0]["reason"] == reason and "evil.test" not in json.dumps(got)
    eventually(
        lambda: [
            e.message
            for e in client.CoreV1Api(api)
            .list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name},reason=EgressDenied"
            )
            .items
        ],
        lambda messages: messages == [f"attempt 1: {reason}"],
        "the EgressDenied Event",
    )


HOSTILE = """
import socket, urllib.request

def reach(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return "open"
    except OSError:
        return "refused"

def lambda_handler(event, context):
    results = [reach(port) for port in ({api}, {webhook}, {http})]
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))  # around the proxy
    try:
        direct.open("http://127.0.0.1:{http}/direct", timeout=5)
        results.append("open")
    except OSError:
        results.append("refused")
    return {{"summary": " ".join(results)}}
"""


def test_hostile_code_reaches_nothing_but_the_broker_and_the_proxy(
    api: client.ApiClient, namespace: str, stack: Any, world: dict[str, Any]
) -> None:
    """The API server, the operator's webhook port, another loopback port and a direct
    connection around the proxy: each refused (the local node gives each pod a network of its
    own whose only ways out are the broker and the proxy; docs/localnode.md)."""
    pytest.importorskip("devkit.localnode.network", reason="the local node shares its network")
    api_port = int(api.configuration.host.rsplit(":", 1)[1])
    hooks = client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(
        f"docrelay-secrets.{namespace}"
    )
    webhook = int(hooks.webhooks[0].client_config.url.split("/")[2].rsplit(":", 1)[1])
    make_integration(
        api, namespace, "hostile",
        code(world, HOSTILE, api=api_port, webhook=webhook),
        egress={"hosts": [f"ledger.test:{world['tls']}"], "cidrs": ["127.0.0.1/32"]},
    )  # fmt: skip
    name = create_run(api, namespace, "hostile")
    status = wait_finished(api, namespace, name)
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == "refused refused refused refused"
    assert Handler.seen == []


def test_cidrs_become_a_network_policy_kept_in_step_with_the_spec(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    networking = client.NetworkingV1Api(api)
    name = "docrelay-egress-ledger"

    def policy() -> Any:
        try:
            return networking.read_namespaced_network_policy(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def cidrs(obj: Any) -> list[str] | None:
        if obj is None:
            return None
        return [peer.ip_block.cidr for rule in obj.spec.egress for peer in rule.to]

    make_integration(
        api, namespace, "ledger", "def lambda_handler(event, context):\n    return None\n",
        egress={"hosts": ["api.example.com"], "cidrs": ["203.0.113.0/24"]},
    )  # fmt: skip
    created = eventually(policy, lambda p: p is not None, "the egress NetworkPolicy")
    assert cidrs(created) == ["203.0.113.0/24"]
    assert created.spec.pod_selector.match_labels == {
        "docrelay.io/integration": "ledger",
        "app.kubernetes.io/component": "run",
        "app.kubernetes.io/managed-by": "docrelay-operator",
    }
    assert created.spec.policy_types == ["Egress"]
    (owner,) = created.metadata.owner_references
    assert (owner.kind, owner.name) == ("Integration", "ledger")
    patch = {"spec": {"egress": {"cidrs": ["198.51.100.0/24", "2001:db8::/32"]}}}
    custom(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, "integrations",
                                               "ledger", patch)  # fmt: skip
    eventually(policy, lambda p: cidrs(p) == ["198.51.100.0/24", "2001:db8::/32"], "updated")
    patch = {"spec": {"egress": {"hosts": ["api.example.com"], "cidrs": None}}}
    custom(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, "integrations",
                                               "ledger", patch)  # fmt: skip
    eventually(policy, lambda p: p is None, "the policy removed with the cidrs")
    patch = {"spec": {"egress": {"cidrs": ["192.0.2.0/24"]}}}
    custom(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, "integrations",
                                               "ledger", patch)  # fmt: skip
    eventually(policy, lambda p: cidrs(p) == ["192.0.2.0/24"], "the policy back")
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, "integrations",
                                                "ledger")  # fmt: skip
    eventually(policy, lambda p: p is None, "the policy gone with its Integration")
