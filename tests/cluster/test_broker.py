"""The run broker, the runner and the SDK against the real control plane and the local node.

The operator and the gateway (whose process serves the broker) run as subprocesses, each with
its own ServiceAccount and only the RBAC docs/broker.md lists; the platform stand-in and an
HTTP sink (the "downstream API") run in this process. Run pods are real local processes
executing `python -m docrelay.runner`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from devkit.cluster import Cluster
from devkit.standins.platform import PlatformState
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Gateway,
    Sink,
    Tenant,
    canary,
    canary_crawl,
    create_run,
    custom,
    docrelay,
    eventually,
    get_run,
    make_integration,
    platform_secret,
    set_secret,
    sink_by_name,
    sink_egress,
    stop_stack,
    stored_log,
    tenant_gateway,
    wait_finished,
)
from tests.leakcheck import assert_clean

WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"  # examples/documents: two invoices
HARBOURSIDE, NORTHWIND, RESUME = "XqLmNoPa", "VbTrEwQz", "RsUmEiOp"


@pytest.fixture
def stack(
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    platform: PlatformState,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Tenant, Gateway]]:
    """Gateway + broker + egress proxy (tenant mode, its own RBAC), then the operator
    pointing runs at the broker and the proxy."""
    ns = namespace
    platform_secret(api, ns, platform)
    gateway, runs_env = tenant_gateway(api, ns, tmp_path)
    for name, value in runs_env.items():
        monkeypatch.setenv(name, value)
    tenant = Tenant(api, ns, tmp_path)
    try:
        gateway.wait_ready()
        tenant.start()
        yield tenant, gateway
    finally:
        stop_stack(api, ns, tenant, gateway)


SCOPE = {"workspace": WORKSPACE, "documentType": DOCTYPE}

CODE_EXPORT = """
import json, os, urllib.request
from docrelay.sdk import get_document

def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    number = document["data"]["invoiceNumber"]
    request = urllib.request.Request(
        SINK + "/bills",
        data=json.dumps({"invoiceNumber": number}).encode(),
        headers={"X-Api-Key": os.environ["API_KEY"], "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
    return {"summary": f"exported {number}"}
"""


def test_export_with_secret_and_document(
    api: client.ApiClient, namespace: str, stack: Any, sink: str
) -> None:
    ns = namespace
    value = canary(header=True)  # sent as a header: printable ASCII
    set_secret(api, ns, "export", "API_KEY", value)
    make_integration(
        api,
        ns,
        "export",
        f"SINK = {sink_by_name(sink)!r}\n{CODE_EXPORT}",
        secrets=["API_KEY"],
        egress=sink_egress(sink),
        **SCOPE,
    )
    name = create_run(api, ns, "export", HARBOURSIDE)
    status = wait_finished(api, ns, name)
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == "exported INV-2025-0418"
    assert len(Sink.seen) == 1
    path, headers, body = Sink.seen[0]
    assert path == "/bills"
    assert json.loads(body) == {"invoiceNumber": "INV-2025-0418"}
    assert {k.lower(): v for k, v in headers.items()}["x-api-key"] == value
    # The release was recorded once, by pod UID, owned by the run; it names no value.
    released = client.CoreV1Api(api).list_namespaced_config_map(
        ns, label_selector=f"docrelay.io/run={name}"
    )
    records = [c for c in released.items if c.metadata.name.startswith("docrelay-key-")]
    assert len(records) == 1
    assert_clean(json.dumps(records[0].to_dict(), default=str), [value], "the release record")
    assert_clean(json.dumps(status), [value], "the run's status")


CODE_PRINTS = """
import base64, html, json, os, shlex, sys, time, urllib.parse

def lambda_handler(event, context):
    value = os.environ["API_KEY"]
    print("raw:", value)
    print("base64:", base64.b64encode(value.encode()).decode())
    print("json:", json.dumps({"key": value}))
    print("url:", urllib.parse.quote_plus(value))
    print("quote:", urllib.parse.quote(value))
    print("hex:", value.encode().hex())
    print("json in json:", json.dumps({"body": json.dumps({"key": value})}))
    print("bytes:", value.encode())
    print("dict:", {"key": value})
    print("html:", html.escape(value))
    print("shell: curl -H", shlex.quote("X-Api-Key: " + value))
    sys.stdout.write("split: " + value[:6])
    sys.stdout.flush()
    time.sleep(0.2)
    sys.stdout.write(value[6:] + "\\n")
    print("printed", flush=True)
    time.sleep(4)
    raise KeyError("invoiceNumber " + value)
"""


def test_printed_key_is_masked_by_the_runner(
    api: client.ApiClient, namespace: str, stack: Any, cluster: Cluster
) -> None:
    ns = namespace
    tenant, gateway = stack
    value = canary()
    set_secret(api, ns, "leaky", "API_KEY", value)
    make_integration(
        api, ns, "leaky", CODE_PRINTS, secrets=["API_KEY"], retry={"maxAttempts": 1}, **SCOPE
    )
    name = create_run(api, ns, "leaky", HARBOURSIDE)
    # The live log (straight from the pod, not masked by the operator) is masked already.
    # Before the pod has written anything, `docrelay logs` says so and exits 1: poll on.
    live = eventually(
        lambda: docrelay("logs", name, "-n", ns, expect=None).stdout,
        lambda out: "printed" in out,
        "the live log",
    )
    assert_clean(live, [value], "the live log")
    for line in ("raw: ***", "base64: ***", "url: ***", "quote: ***", "hex: ***", "split: ***"):
        assert line in live, live
    status = wait_finished(api, ns, name)
    assert (status["errorClass"], status["exceptionType"]) == ("CodeError", "KeyError")
    assert status["errorMessage"] == "KeyError: 'invoiceNumber ***'"
    out = stored_log(api, ns, name, 1)
    assert "raw: ***" in out
    assert_clean(out, [value], "the stored log")
    assert_clean(json.dumps(status), [value], "the run's status")
    # After the run: every object, Event and log, etcd, the stored logs unzipped.
    everything = canary_crawl(cluster, [value], [*tenant.logs, gateway.log_path])
    assert "quote: ***" in everything  # the stored log, unzipped, was searched


CODE_PROBE = """
import json, os, urllib.request
from docrelay import sdk
from docrelay.runner.brokerclient import BrokerClient, BrokerError, token_path

def lambda_handler(event, context):
    broker = BrokerClient.from_env()
    results = {}

    def status(method, path):
        try:
            broker.request(method, path)
            return 200
        except BrokerError as exc:
            return exc.status_code

    results["own_document"] = status("GET", "/v1/broker/documents/" + OWN_DOC)
    results["other_document"] = status("GET", "/v1/broker/documents/" + OTHER_DOC)
    results["other_key"] = status("POST", "/v1/broker/key?run=" + OTHER_RUN)
    results["second_key"] = status("POST", "/v1/broker/key")
    try:
        sdk.get_document(OTHER_DOC)
    except sdk.Forbidden as exc:
        results["sdk"] = type(exc).__name__
    try:
        sdk.execute_action("apn_1", "xero-create-bill", {})
    except sdk.Forbidden as exc:  # the integration lists no connected account
        results["accounts"] = exc.status_code
    results["portal"] = sdk.get_document_portal_url(OWN_DOC)
    body = json.dumps({"results": results, "token": token_path().read_text()}).encode()
    request = urllib.request.Request(SINK + "/probe", data=body, method="POST")
    urllib.request.urlopen(request, timeout=10).read()
    return {"summary": "probed"}
"""


def test_a_pod_gets_only_its_own_run(
    api: client.ApiClient, namespace: str, stack: Any, sink: str
) -> None:
    ns = namespace
    _, gateway = stack
    value = canary()
    set_secret(api, ns, "probe", "API_KEY", value)
    make_integration(api, ns, "other", "def lambda_handler(e, c):\n    return 1\n", **SCOPE)
    other = create_run(api, ns, "other", NORTHWIND)
    code = (
        f"SINK = {sink_by_name(sink)!r}\nOWN_DOC = {HARBOURSIDE!r}\nOTHER_DOC = {NORTHWIND!r}\n"
        f"OTHER_RUN = {other!r}\n{CODE_PROBE}"
    )
    make_integration(api, ns, "probe", code, secrets=["API_KEY"], egress=sink_egress(sink), **SCOPE)
    name = create_run(api, ns, "probe", HARBOURSIDE)
    status = wait_finished(api, ns, name)
    assert status["phase"] == "Succeeded", status
    assert wait_finished(api, ns, other)["resultSummary"] == "1"
    (seen,) = [json.loads(body) for path, _, body in Sink.seen if path == "/probe"]
    assert seen["results"] == {
        "own_document": 200,
        "other_document": 403,  # run B's document
        "other_key": 403,  # run B's key
        "second_key": 403,  # the runner took this pod's key already
        "sdk": "Forbidden",
        "accounts": 403,
        "portal": "https://app.platform.example/review/XqLmNoPa",
    }
    # The finished run's token is refused (its pod is gone, or the run is no longer active).
    eventually(lambda: get_run(api, ns, name), lambda r: r["status"]["phase"] == "Succeeded", "")
    token = seen["token"].strip()
    for path, method in (
        ("/v1/broker/key", "POST"),
        (f"/v1/broker/documents/{HARBOURSIDE}", "GET"),
    ):
        answer = httpx.request(
            method, gateway.url + path, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code in (401, 403), answer.text
        assert token not in answer.text
    # No token, a malformed one, and a valid token for another audience: 401.
    core = client.CoreV1Api(api)
    other_audience = core.create_namespaced_service_account_token(
        "docrelay-run", ns, {"spec": {"audiences": ["somebody-else"], "expirationSeconds": 600}}
    ).status.token
    broker_audience_unbound = core.create_namespaced_service_account_token(
        "docrelay-run", ns, {"spec": {"audiences": ["docrelay-broker"], "expirationSeconds": 600}}
    ).status.token
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {other_audience}"},
        {"Authorization": f"Bearer {broker_audience_unbound}"},  # not bound to a pod
    ):
        answer = httpx.post(gateway.url + "/v1/broker/key", headers=headers)
        assert answer.status_code == 401, (headers.keys(), answer.text)
    # Too large a request.
    answer = httpx.post(
        gateway.url + "/v1/broker/key",
        content=b"x" * (64 * 1024),
        headers={"Authorization": "Bearer x"},
    )
    assert answer.status_code == 413
    # Every broker call was audited, without token or value.
    log = gateway.log_text()
    assert "action=key.release" in log and "refused:403" in log
    assert token not in log
    assert_clean(log, [value], "the gateway's log")
    assert custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", name)
