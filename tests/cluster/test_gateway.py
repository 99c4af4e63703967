"""The gateway against the real API server: `docrelay gateway` as a subprocess, real HTTP on
127.0.0.1, signed deliveries in, IntegrationRuns out (counted through the API; no operator)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import hypothesis
import pytest
import schemathesis
import yaml
from kubernetes import client

from docrelay.gateway.signatures import sign_resthook, sign_standard_webhook
from docrelay.models.run import IntegrationRunSpec
from tests.cluster.harness import GROUP, VERSION, Gateway, eventually

pytestmark = pytest.mark.cluster

KEY = b"tenant-a-signing-key-0123456789"
OLD_KEY = b"tenant-a-previous-key-9876543210"
OTHER_TENANT_KEY = b"tenant-b-signing-key-abcdefabcdef"
STANDARD_KEY = b"standard-webhooks-key-32-bytes!!"
WORKSPACE, DOCTYPE = "wsInvoices", "dtInvoice"


# --- helpers ----------------------------------------------------------------------------------


def signing_secret(api: client.ApiClient, namespace: str, data: dict[str, bytes]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "docrelay-gateway-signing"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )


def integration(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    workspace: str = WORKSPACE,
    document_type: str = DOCTYPE,
    trigger: str = "DocumentParseCompleted",
    suspend: bool = False,
) -> None:
    spec: dict[str, Any] = {
        "workspace": workspace,
        "documentType": document_type,
        "trigger": trigger,
        "code": "def lambda_handler(event, context):\n    return None\n",
    }
    if suspend:
        spec["suspend"] = True
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "integrations",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Integration",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def runs(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrationruns"
    )
    return list(listed["items"])


def event_body(
    document: str,
    event: str = "document.parse.completed",
    when: datetime | None = None,
    workspace: str = WORKSPACE,
) -> bytes:
    moment = when or datetime.now(UTC)
    return json.dumps(
        {
            "event": event,
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "payload": {
                "identifier": document,
                "workspace": {"identifier": workspace, "name": "Invoices"},
                "documentType": {"identifier": DOCTYPE},
                "fileName": "invoice.pdf",
            },
        }
    ).encode()


def signed_headers(body: bytes, key: bytes = KEY, timestamp: int | None = None) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "X-Hook-Signature": sign_resthook(body, key, timestamp or int(time.time())),
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=30)


class Recorder(BaseHTTPRequestHandler):
    """The platform API stand-in for activation: records what it was sent."""

    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        Recorder.seen.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": 7}')

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def platform() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def gateway(
    cluster: Any, tmp_path_factory: pytest.TempPathFactory, platform: str
) -> Iterator[Gateway]:
    """One gateway for every namespace (cluster mode): each test's namespace is a tenant."""
    started = Gateway(
        tmp_path_factory.mktemp("gateway"),
        ["--all-namespaces", "--api-timeout-seconds", "5"],
        env={
            "DOCRELAY_GATEWAY_PLATFORM_URL": platform,
            "DOCRELAY_GATEWAY_PLATFORM_TOKEN": "platform-token",
            "DOCRELAY_GATEWAY_KEYS_CACHE_SECONDS": "1",
        },
    )
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


@pytest.fixture
def tenant(api: client.ApiClient, namespace: str) -> str:
    signing_secret(
        api,
        namespace,
        {
            "resthook-current": KEY,
            "resthook-previous": OLD_KEY,
            "standard-current": b"whsec_" + base64.b64encode(STANDARD_KEY),
        },
    )
    return namespace


# --- intake and matching -----------------------------------------------------------------------


def test_signed_events_create_one_run_per_matching_integration(
    api: client.ApiClient, tenant: str, gateway: Gateway
) -> None:
    integration(api, tenant, "to-xero")
    integration(api, tenant, "paused", suspend=True)  # suspended: its runs wait, still made
    integration(api, tenant, "on-validate", trigger="DocumentValidated")
    integration(api, tenant, "other-ws", workspace="wsOther")
    integration(api, tenant, "other-type", document_type="dtReceipt")
    gateway.wait_ready(integrations=5)
    url = f"{gateway.url}/v1/events/{tenant}"

    body = event_body("docA1")
    first = post(url, body, signed_headers(body))
    assert first.status_code == 202, first.text
    made = first.json()
    assert made["outcome"] == "accepted"
    assert [(r["integration"], r["created"]) for r in made["runs"]] == [
        ("paused", True),
        ("to-xero", True),
    ]
    # A redelivery (same body, later signature, the previous key): same runs, nothing new.
    again = post(url, body, signed_headers(body, key=OLD_KEY))
    assert again.status_code == 202
    assert [r["created"] for r in again.json()["runs"]] == [False, False]
    assert [r["name"] for r in again.json()["runs"]] == [r["name"] for r in made["runs"]]

    validated = event_body("docA1", event="document.validate.completed")
    answer = post(url, validated, signed_headers(validated))
    assert [r["integration"] for r in answer.json()["runs"]] == ["on-validate"]

    # Standard Webhooks: the webhook-id names the event.
    body = event_body("docA2")
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_2Lh9",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_standard_webhook(body, STANDARD_KEY, "msg_2Lh9", now),
    }
    standard = post(f"{gateway.url}/v1/standard-webhooks/{tenant}", body, headers)
    assert standard.status_code == 202, standard.text
    assert len(standard.json()["runs"]) == 2

    # No integration matches: acknowledged, nothing created.
    body = event_body("docA3", workspace="wsNobody")
    assert post(url, body, signed_headers(body)).json()["outcome"] == "unmatched"

    made_runs = runs(api, tenant)
    assert len(made_runs) == 5
    by_name = {r["metadata"]["name"]: r for r in made_runs}
    one = by_name[made["runs"][1]["name"]]
    spec = IntegrationRunSpec.model_validate(one["spec"])
    assert spec.integration == "to-xero"
    assert spec.document_identifier == "docA1"
    assert spec.trigger == "DocumentParseCompleted"
    assert spec.event_id.startswith("rh-")
    assert spec.idempotency_key.startswith("idem-")
    docs_a2 = [r for r in made_runs if r["spec"]["documentIdentifier"] == "docA2"]
    assert {r["spec"]["eventId"] for r in docs_a2} == {"msg_2Lh9"}


def test_refusals_create_nothing(
    api: client.ApiClient, tenant: str, gateway: Gateway, namespace: str
) -> None:
    integration(api, tenant, "to-xero")
    gateway.wait_ready(integrations=1)
    url = f"{gateway.url}/v1/events/{tenant}"
    body = event_body("docR1")
    old = datetime.now(UTC) - timedelta(minutes=6)
    stale = event_body("docR1", when=old)
    tampered = body.replace(b"docR1", b"docR2")
    oversized = json.dumps({"event": "document.parse.completed", "pad": "x" * 300_000}).encode()
    unknown = event_body("docR1", event="annotation.validated")
    malformed = b'{"event": "document.parse.completed",'
    schemaless = json.dumps({"event": "document.parse.completed", "payload": []}).encode()
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("forged signature", body, signed_headers(body, key=b"not-the-key"), 401),
        ("other tenant's key", body, signed_headers(body, key=OTHER_TENANT_KEY), 401),
        ("6 minutes old", stale, signed_headers(stale, timestamp=int(old.timestamp())), 401),
        ("old body, fresh header", stale, signed_headers(stale), 401),
        ("tampered body", tampered, signed_headers(body), 401),
        ("no signature", body, {"content-type": "application/json"}, 401),
        ("oversized", oversized, signed_headers(oversized), 413),
        ("not JSON media type", body, {**signed_headers(body), "content-type": "text/plain"}, 415),
        ("malformed JSON", malformed, signed_headers(malformed), 400),
        ("schema", schemaless, signed_headers(schemaless), 422),
        ("unknown event", unknown, signed_headers(unknown), 200),
    ]
    for label, content, headers, status in cases:
        answer = post(url, content, headers)
        assert answer.status_code == status, (label, answer.text)
        if status != 200:
            assert answer.json()["error"], label
    ignored = post(url, unknown, signed_headers(unknown)).json()
    assert ignored["outcome"] == "ignored"
    # A namespace that is not a tenant (no keys there) and a namespace name that cannot be.
    assert post(f"{gateway.url}/v1/events/Bad_NS", body, signed_headers(body)).status_code == 404
    # Standard Webhooks with a forged signature.
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_x",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_standard_webhook(body, b"wrong" * 7, "msg_x", now),
    }
    assert post(f"{gateway.url}/v1/standard-webhooks/{tenant}", body, headers).status_code == 401
    assert runs(api, tenant) == []
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'outcome="refused",reason="signature"' in metrics
    assert 'outcome="ignored",reason="event_type"' in metrics


def test_other_tenants_key_cannot_create_runs_in_this_tenant(
    api: client.ApiClient, tenant: str, gateway: Gateway
) -> None:
    # Tenant B's namespace has its own key; B's key signs for B only.
    other = f"{tenant[:50]}-b"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": other}})
    try:
        signing_secret(api, other, {"resthook-current": OTHER_TENANT_KEY})
        integration(api, tenant, "to-xero")
        integration(api, other, "to-xero")
        gateway.wait_ready(integrations=2)
        body = event_body("docT1")
        to_a = post(
            f"{gateway.url}/v1/events/{tenant}", body, signed_headers(body, OTHER_TENANT_KEY)
        )
        assert to_a.status_code == 401
        to_b = post(
            f"{gateway.url}/v1/events/{other}", body, signed_headers(body, OTHER_TENANT_KEY)
        )
        assert to_b.status_code == 202
        assert runs(api, tenant) == []
        assert len(runs(api, other)) == 1
    finally:
        client.CoreV1Api(api).delete_namespace(other)


def test_handshake_echoes_the_secret_and_activates(tenant: str, gateway: Gateway) -> None:
    Recorder.seen.clear()
    answer = httpx.post(
        f"{gateway.url}/v1/events/{tenant}", headers={"X-Hook-Secret": "hs-123"}, timeout=10
    )
    assert answer.status_code == 200
    assert answer.headers["X-Hook-Secret"] == "hs-123"
    eventually(lambda: Recorder.seen, bool, "the activation call")
    path, headers, _ = Recorder.seen[0]
    assert path == "/v3/resthook_subscriptions/activate"
    sent = {k.lower(): v for k, v in headers.items()}
    assert sent["x-hook-secret"] == "hs-123"
    assert sent["authorization"] == "Bearer platform-token"


# --- exactly once under concurrency ------------------------------------------------------------


def _deliver_all(urls: list[str], bodies: list[bytes], times: int) -> list[int]:
    """Every body `times` times, interleaved, from a bounded pool; returns the statuses."""
    jobs = [(i + round_, body) for round_ in range(times) for i, body in enumerate(bodies)]
    local = threading.local()

    def send(job: tuple[int, bytes]) -> int:
        spread, body = job  # one event's deliveries alternate between the gateways
        session = getattr(local, "client", None)
        if session is None:
            session = local.client = httpx.Client(timeout=30)
        url = urls[spread % len(urls)]
        return session.post(url, content=body, headers=signed_headers(body)).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(send, jobs))


@pytest.mark.timeout(900)  # 2,500 requests on a shared machine: bounded, but not quick
@pytest.mark.parametrize("gateways", [1, 2])
def test_500_events_delivered_5_times_make_exactly_500_runs(
    api: client.ApiClient,
    tenant: str,
    gateway: Gateway,
    gateways: int,
    tmp_path: Path,
) -> None:
    integration(api, tenant, "to-xero")
    started: list[Gateway] = []
    try:
        urls = [f"{gateway.url}/v1/events/{tenant}"]
        gateway.wait_ready(integrations=1)
        if gateways == 2:
            second = Gateway(tmp_path, ["-n", tenant])
            started.append(second)
            second.wait_ready(integrations=1)
            urls.append(f"{second.url}/v1/events/{tenant}")
        bodies = [event_body(f"docC{i:04d}") for i in range(500)]
        statuses = _deliver_all(urls, bodies, 5)
        assert statuses.count(202) == 2500, {s: statuses.count(s) for s in set(statuses)}
        made = runs(api, tenant)
        assert len(made) == 500
        assert len({r["spec"]["documentIdentifier"] for r in made}) == 500
    finally:
        for extra in started:
            extra.stop()


# --- the API server slow or away ----------------------------------------------------------------


class Proxy:
    """A TCP relay between the gateway and the API server that can refuse, stall or freeze."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        # "relay"; "refuse" (accept and close); "stall" (accept, say nothing); "freeze" (keep
        # every open connection open but pass nothing on: an API server that hangs).
        self.mode = "relay"
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "freeze":
            self._flowing.clear()
            return
        self._flowing.set()
        with self._lock:  # break the connections the gateway keeps alive
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                conn.close()
                continue
            with self._lock:
                self._sockets.append(conn)
            if self.mode in ("stall", "freeze"):
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets.append(upstream)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self._flowing.wait()  # frozen: hold what arrived, say nothing
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        self.set_mode("refuse")


@contextlib.contextmanager
def gateway_through_proxy(
    cluster: Any, tenant: str, tmp_path: Path
) -> Iterator[tuple[Gateway, Proxy]]:
    """A tenant-mode gateway that reaches the API server only through a Proxy."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = Proxy((host, int(port)))
    config["clusters"][0]["cluster"]["server"] = f"https://{host}:{proxy.port}"
    kubeconfig = tmp_path / "via-proxy.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    gateway = Gateway(
        tmp_path,
        ["-n", tenant, "--kubeconfig", str(kubeconfig), "--api-timeout-seconds", "1"],
    )
    try:
        yield gateway, proxy
    finally:
        gateway.stop()
        proxy.close()


def test_api_server_unavailable_answers_503_with_retry_after(
    api: client.ApiClient, tenant: str, cluster: Any, tmp_path: Path
) -> None:
    integration(api, tenant, "to-xero")
    with gateway_through_proxy(cluster, tenant, tmp_path) as (gateway, proxy):
        gateway.wait_ready(integrations=1)
        url = f"{gateway.url}/v1/events/{tenant}"
        body = event_body("docU1")
        # Keys are cached from a first, good delivery (the Secret read needs the API too).
        assert post(url, body, signed_headers(body)).status_code == 202
        refused: dict[str, bytes] = {}
        for mode in ("refuse", "stall"):
            proxy.set_mode(mode)
            fresh = refused[mode] = event_body(f"docU-{mode}")
            answer = post(url, fresh, signed_headers(fresh))
            assert answer.status_code == 503, (mode, answer.text)
            assert answer.headers["Retry-After"].isdigit()
            assert answer.json() == {"error": "temporarily unavailable; retry later"}
        # A stalled API server is answered by the gateway's own API timeout (1 s here), not
        # by the sender giving up: its log names the timeout.
        assert re.search(r"answering 503: API server unreachable \(\w*Timeout\w*\)", gateway.log())
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert (
            'docrelay_gateway_events_total{format="resthook",outcome="unavailable",'
            'reason="api_server"} 2.0'
        ) in metrics
        proxy.set_mode("relay")
        # The platform's retry succeeds once the API server is back; nothing was lost.
        retry = eventually(
            lambda: post(url, refused["refuse"], signed_headers(refused["refuse"])),
            lambda answer: answer.status_code == 202,
            "a redelivery to be accepted once the API server is back",
            seconds=30,
        )
        assert [r["created"] for r in retry.json()["runs"]] == [True]
        assert {r["spec"]["documentIdentifier"] for r in runs(api, tenant)} == {
            "docU1",
            "docU-refuse",
        }


def readyz(gateway: Gateway) -> httpx.Response:
    return httpx.get(f"{gateway.url}/readyz", timeout=5)


@pytest.mark.parametrize("outage", ["refuse", "freeze"])
def test_readyz_is_503_with_a_reason_while_the_api_server_is_away(
    api: client.ApiClient, tenant: str, cluster: Any, tmp_path: Path, outage: str
) -> None:
    """A load balancer stops sending deliveries to a gateway that could only answer 503,
    and sends them again once it can take events; liveness stays 200 (no restart helps)."""
    integration(api, tenant, "to-xero")
    with gateway_through_proxy(cluster, tenant, tmp_path) as (gateway, proxy):
        gateway.wait_ready(integrations=1)
        url = f"{gateway.url}/v1/events/{tenant}"
        ready = eventually(lambda: readyz(gateway), lambda r: r.status_code == 200, "ready")
        assert ready.json() == {"status": "ok", "indexSynced": True, "integrations": 1}
        # The watch is streaming (it delivers a new Integration) before the outage begins.
        integration(api, tenant, "to-sheets", workspace="wsOther")
        gateway.wait_ready(integrations=2)

        # "refuse": the API server's port closes every connection (it was stopped);
        # "freeze": open connections stay open and silent (it hangs), the watch's too.
        proxy.set_mode(outage)
        down = eventually(
            lambda: readyz(gateway), lambda r: r.status_code == 503, f"/readyz 503 ({outage})"
        )
        assert down.headers["Retry-After"].isdigit()
        reason = down.json()["error"]
        if outage == "freeze":  # only the heartbeat can tell: the silent watch looks alive
            assert re.fullmatch(r"API server unreachable \(\w*Timeout\w*\)", reason), reason
        else:
            assert re.fullmatch(
                r"(API server unreachable \(\w+\)|integration watch interrupted \(\w+\);"
                r" relisting)",
                reason,
            ), reason
        body = event_body(f"docZ-{outage}")
        assert post(url, body, signed_headers(body)).status_code == 503  # what readiness foretold
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200

        proxy.set_mode("relay")
        back = eventually(
            lambda: readyz(gateway), lambda r: r.status_code == 200, f"/readyz 200 ({outage})"
        )
        assert back.json()["indexSynced"] is True
        accepted = post(url, body, signed_headers(body))
        assert accepted.status_code == 202, accepted.text
        assert [r["spec"]["documentIdentifier"] for r in runs(api, tenant)] == [f"docZ-{outage}"]


def test_cert_and_openapi(api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, ["-n", namespace])
    try:
        gateway.wait_ready()
        missing = httpx.get(f"{gateway.url}/v1/cert.pem")
        assert missing.status_code == 404
        pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        client.CoreV1Api(api).create_namespaced_config_map(
            namespace,
            {"metadata": {"name": "docrelay-sealing-cert"}, "data": {"cert.pem": pem}},
        )
        served = httpx.get(f"{gateway.url}/v1/cert.pem")
        assert served.status_code == 200
        assert served.text == pem
        spec = httpx.get(f"{gateway.url}/openapi.json").json()
        assert "/v1/events/{namespace}" in spec["paths"]
        assert "/v1/standard-webhooks/{namespace}" in spec["paths"]
    finally:
        gateway.stop()


# --- schemathesis: generated requests against the OpenAPI document ------------------------------


def test_generated_requests_get_no_5xx_and_create_nothing(
    api: client.ApiClient, gateway: Gateway, fuzz_tenant: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    calls: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case: Any) -> None:
            if "namespace" in (case.path_parameters or {}):  # reach the checks
                case.path_parameters = {**case.path_parameters, "namespace": fuzz_tenant}
            response = case.call(timeout=10)
            calls.append(response.status_code)
            assert response.status_code < 500, (case.path, response.text)

        check()
    assert len(calls) > 50  # hypothesis stops early where few variants exist
    assert runs(api, fuzz_tenant) == []


@pytest.fixture(scope="module")
def fuzz_tenant(api: client.ApiClient) -> Iterator[str]:
    """A tenant with keys and a matching Integration, so only a forged request is refused."""
    name = f"t-fuzz-{os.getpid()}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    signing_secret(
        api, name, {"resthook-1": KEY, "standard-1": b"whsec_" + base64.b64encode(STANDARD_KEY)}
    )
    integration(api, name, "to-xero")
    yield name
    client.CoreV1Api(api).delete_namespace(name)
