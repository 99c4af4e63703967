"""Sending and seeing events, against the real control plane, the local node, a real gateway and
the platform stand-in: `docrelay platform` lists what the tenant's credentials see, `docrelay
send` signs a document event as the platform does, shows what it matches and the run it made.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from devkit.standins.platform import PlatformState
from docrelay.gateway.signatures import sign_resthook
from tests.cluster.harness import (
    PLATFORM_KEY,
    Gateway,
    Tenant,
    docrelay,
    eventually,
    gateway_kubeconfig,
    make_integration,
    platform_secret,
    platform_standin,
    stop_stack,
    wait_finished,
)

WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"  # examples/documents: two invoices
HARBOURSIDE, RESUME = "XqLmNoPa", "RsUmEiOp"
SIGNING_KEY = b"send-tests-signing-key-0123456789"
CODE = """
def lambda_handler(event, context):
    return {"summary": "exported " + event["document_identifier"]}
"""


@pytest.fixture
def stack(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[tuple[Gateway, PlatformState]]:
    ns = namespace
    with platform_standin() as platform:
        platform_secret(api, ns, platform)
        client.CoreV1Api(api).create_namespaced_secret(
            ns,
            {
                "metadata": {"name": "docrelay-gateway-signing"},
                "data": {"resthook-current": base64.b64encode(SIGNING_KEY).decode()},
            },
        )
        kubeconfig = gateway_kubeconfig(api, ns, tmp_path / "gateway.kubeconfig")
        gateway = Gateway(tmp_path, ["-n", ns], env={"KUBECONFIG": str(kubeconfig)})
        tenant = Tenant(api, ns, tmp_path)
        try:
            gateway.wait_ready()
            tenant.start()
            yield gateway, platform
        finally:
            stop_stack(api, ns, tenant, gateway)
            print(f"\n--- gateway log ---\n{gateway.log()}\n--- operator log ---\n")
            print(tenant.log_text())


def test_platform_lists_workspaces_and_document_types(
    namespace: str, stack: tuple[Gateway, PlatformState]
) -> None:
    out = docrelay("platform", "-n", namespace).stdout
    lines = [line.split(None, 1) for line in out.splitlines() if line.strip()]
    assert ["mEFayXdO", "Accounts payable"] in lines
    assert ["kWpRsTuV", "Recruitment"] in lines
    assert ["tVpGRBWd", "Invoice"] in lines and ["pLmNbVcX", "Resume"] in lines
    assert PLATFORM_KEY not in out
    only = docrelay("platform", "-n", namespace, "--workspace", "kWpRsTuV").stdout
    assert "pLmNbVcX" in only and "tVpGRBWd" not in only and "WORKSPACE" not in only


def test_send_signs_an_event_shows_matching_and_the_run(
    api: client.ApiClient, namespace: str, stack: tuple[Gateway, PlatformState]
) -> None:
    ns = namespace
    gateway, _ = stack
    make_integration(api, ns, "invoices", CODE, workspace=WORKSPACE, documentType=DOCTYPE)
    make_integration(api, ns, "resumes", CODE, workspace="kWpRsTuV", documentType="pLmNbVcX")
    gateway.wait_ready(integrations=2)

    sent = docrelay("send", HARBOURSIDE, "--gateway-url", gateway.url, "-n", ns)
    lines = sent.stdout.splitlines()
    assert lines[0] == f"document {HARBOURSIDE}: workspace {WORKSPACE}, document type {DOCTYPE}"
    assert lines[1] == "matches integration invoices"
    assert lines[2].startswith("sent document.parse.completed at ")
    assert lines[2].endswith(")") and ": accepted (event id " in lines[2]
    assert lines[3].startswith("run invoices-") and lines[3].endswith(
        "for integration invoices: created"
    )
    assert len(lines) == 4
    run = lines[3].split()[1]
    assert wait_finished(api, ns, run)["resultSummary"] == f"exported {HARBOURSIDE}"
    assert SIGNING_KEY.decode() not in sent.stdout + sent.stderr

    # A trigger no integration listens to: said before sending; the gateway answers unmatched.
    none = docrelay(
        "send", RESUME, "--trigger", "DocumentValidated", "--gateway-url", gateway.url, "-n", ns
    ).stdout
    assert "matches no integration in namespace" in none
    assert ": unmatched (event id " in none


def events_table(ns: str, *extra: str) -> list[str]:
    return docrelay("events", "-n", ns, *extra).stdout.splitlines()


def test_events_shows_each_delivery_and_why_refused_ones_were(
    api: client.ApiClient, namespace: str, stack: tuple[Gateway, PlatformState]
) -> None:
    ns = namespace
    gateway, _ = stack
    assert events_table(ns) == [f"no deliveries recorded for namespace {ns}"]
    make_integration(api, ns, "invoices", CODE, workspace=WORKSPACE, documentType=DOCTYPE)
    gateway.wait_ready(integrations=1)
    sent = docrelay("send", HARBOURSIDE, "--gateway-url", gateway.url, "-n", ns).stdout
    run = sent.splitlines()[-1].split()[1]
    docrelay("send", RESUME, "--gateway-url", gateway.url, "-n", ns)  # matches nothing

    # Refusals: a wrong key, and a correctly signed body whose timestamp is an hour old.
    body = json.dumps(
        {"event": "document.parse.completed", "timestamp": int(time.time()),
         "payload": {"identifier": "AbCdEfGh", "workspace": WORKSPACE, "documentType": DOCTYPE}}
    ).encode()  # fmt: skip
    url = f"{gateway.url}/v1/events/{ns}"
    headers = {"content-type": "application/json"}
    wrong = sign_resthook(body, b"not-the-key-0123456789", int(time.time()))
    answer = httpx.post(url, content=body, headers={**headers, "X-Hook-Signature": wrong})
    assert answer.status_code == 401
    old = int(time.time()) - 3600
    stale_body = body.replace(str(json.loads(body)["timestamp"]).encode(), str(old).encode())
    stale = sign_resthook(stale_body, SIGNING_KEY, old)
    answer = httpx.post(url, content=stale_body, headers={**headers, "X-Hook-Signature": stale})
    assert answer.status_code == 401

    lines = eventually(
        lambda: events_table(ns), lambda t: len(t) == 5, "four deliveries in docrelay events"
    )
    header, accepted, unmatched, signature, too_old = lines
    assert header.split()[:3] == ["TIME", "EVENT", "DOCUMENT"]
    assert "document.parse.completed" in accepted and HARBOURSIDE in accepted
    assert "accepted" in accepted and "runs created" in accepted and accepted.endswith(run)
    assert RESUME in unmatched and "unmatched: no Integration for this workspace" in unmatched
    assert "refused" in signature and "signature missing or wrong" in signature
    assert "AbCdEfGh" not in signature  # an unverified body is never recorded
    assert "refused" in too_old and "timestamp outside the tolerance" in too_old
    refused = events_table(ns, "--refused")
    assert len(refused) == 3 and all("refused" in line for line in refused[1:])
    as_json = json.loads(docrelay("events", "-n", ns, "-o", "json").stdout)["deliveries"]
    assert as_json[0]["runs"] == [run] and as_json[0]["workspace"] == WORKSPACE
    assert SIGNING_KEY.decode() not in json.dumps(as_json)
