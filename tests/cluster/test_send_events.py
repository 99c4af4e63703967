"""Sending and seeing events, against the real control plane, the local node, a real gateway and
the platform stand-in: `docrelay platform` lists what the tenant's credentials see, `docrelay
send` signs a document event as the platform does, shows what it matches and the run it made.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from devkit.standins.platform import PlatformState
from tests.cluster.harness import (
    PLATFORM_KEY,
    Gateway,
    Tenant,
    docrelay,
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
