"""Pipedream Connect's connection webhook against the real API server: `docrelay gateway` as a
subprocess with exactly its documented rules, the Pipedream stand-in sending the webhook over
real HTTP when its Connect Link page completes, and the connection request left on the
Integration as the console leaves it (docrelay.actions.accounts.request_connection). A
verified delivery creates the ConnectedAccount; forged, replayed, expired, wrong-tenant and
wrong-account deliveries are refused and change nothing (no operator here: the account's
health is the browser test's, tests/cluster/test_console_browser.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from kubernetes import client

from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.server import serving
from docrelay.actions.accounts import request_connection
from docrelay.kube import Kube
from docrelay.pipedream import ConnectClient
from docrelay.reconcile.connections import (
    USED_ANNOTATION,
    ConnectRequest,
    digest,
    new_nonce,
    new_request,
    webhook_uri,
)
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Gateway,
    cleanup_broker_rbac,
    create,
    custom,
    docrelay,
    gateway_kubeconfig,
    integration_manifest,
)

pytestmark = pytest.mark.cluster

APP, USER, ACCOUNT = "xero_accounting_api", "finance-team", "xero-finance"
CODE = "def lambda_handler(event, context):\n    return 'ok'\n"


@dataclass
class Stack:
    api: client.ApiClient
    ns: str
    pd: PipedreamStandin
    connect_url: str
    gateway: Gateway
    kube: Kube

    def start_connection(self, integration: str = "export", **changes: Any) -> tuple[str, str]:
        """What the console does: a Connect token whose webhook_uri names a fresh nonce, and
        the request left on the Integration. (webhook_uri, connect token)."""
        nonce = new_nonce()
        uri = webhook_uri(self.gateway.url, self.ns, integration, nonce)
        with ConnectClient(self.connect_url, self.pd.project_id, "development",
                           self.pd.client_id, self.pd.client_secret) as pipedream:  # fmt: skip
            token = str(pipedream.create_connect_token(USER, webhook_uri=uri)["token"])
        made = new_request(account=ACCOUNT, app=APP, external_user=USER,
                           environment="development", nonce=nonce, connect_token=token,
                           now=time.time())  # fmt: skip
        request = ConnectRequest(**{**made.__dict__, **changes})
        request_connection(self.kube, self.ns, integration, request)
        return uri, token

    def complete_link(self, token: str, expect: tuple[int, ...] = (200, 303)) -> None:
        """The person presses Connect on Pipedream's page (the stand-in's)."""
        answer = httpx.post(
            f"{self.connect_url}/_static/connect", data={"token": token, "app": APP}
        )
        assert answer.status_code in expect, answer.text

    def accounts(self) -> dict[str, dict[str, Any]]:
        listed = custom(self.api).list_namespaced_custom_object(
            GROUP, VERSION, self.ns, "connectedaccounts"
        )["items"]
        return {o["metadata"]["name"]: o for o in listed}


@pytest.fixture
def stack(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Stack]:
    pd = PipedreamStandin()
    with serving(pd.app) as connect:
        client.CoreV1Api(api).create_namespaced_secret(namespace, {
            "metadata": {"name": "docrelay-pipedream"},
            "stringData": {"client_id": pd.client_id, "client_secret": pd.client_secret,
                           "project_id": pd.project_id, "environment": "development",
                           "url": connect.base_url},
        })  # fmt: skip
        create(api, namespace, "integrations",
               integration_manifest("export", CODE, connectedAccounts=[ACCOUNT]))  # fmt: skip
        kubeconfig = gateway_kubeconfig(api, namespace, tmp_path / "gateway.kubeconfig")
        gateway = Gateway(tmp_path, ["-n", namespace], env={"KUBECONFIG": str(kubeconfig)})
        try:
            gateway.wait_ready()
            yield Stack(api, namespace, pd, connect.base_url, gateway,
                        Kube.connect(os.environ["KUBECONFIG"]))  # fmt: skip
        finally:
            gateway.stop()
            cleanup_broker_rbac(api, namespace)
            print(f"\n--- gateway log ---\n{gateway.log()}")


def test_a_verified_connection_creates_the_account_once(stack: Stack) -> None:
    old = stack.pd.add_account(USER, APP)  # the user's older account must not be picked
    uri, token = stack.start_connection()
    stack.complete_link(token)
    ((sent_to, payload, status),) = stack.pd.webhooks
    assert (sent_to, payload["event"], status) == (uri, "CONNECTION_SUCCESS", 201)
    (new,) = stack.pd.connected
    created = stack.accounts()[ACCOUNT]
    assert created["spec"] == {"app": APP, "accountId": new.id, "externalUserId": USER,
                               "environment": "development"}  # fmt: skip
    assert new.id != old.id
    assert created["metadata"]["annotations"][USED_ANNOTATION] == digest(uri.rsplit("/", 1)[1])
    version = created["metadata"]["resourceVersion"]

    # The same delivery again (a replay, or Pipedream retrying): refused, nothing changes.
    assert stack.pd.send_webhook(uri, payload) == 409
    # The nonce of another link, or the right one under another tenant's path: unknown.
    forged = uri.rsplit("/", 1)[0] + "/" + new_nonce()
    assert stack.pd.send_webhook(forged, payload) == 404
    other_tenant = uri.replace(f"/connections/{stack.ns}/", "/connections/another-tenant/")
    assert stack.pd.send_webhook(other_tenant, payload) == 404
    answer = httpx.post(forged, json=payload)
    assert answer.json() == {"error": "no such connection request"}
    assert token not in answer.text and new.id not in answer.text
    assert list(stack.accounts()) == [ACCOUNT]
    assert stack.accounts()[ACCOUNT]["metadata"]["resourceVersion"] == version


def test_forged_and_expired_deliveries_create_nothing(stack: Stack) -> None:
    stranger = stack.pd.add_account("someone-else", APP)
    uri, token = stack.start_connection()

    def event(account: Any, **changes: Any) -> dict[str, Any]:
        body = {"event": "CONNECTION_SUCCESS", "connect_token": token,
                "environment": "development", "connect_session_id": 1,
                "account": account.public() if hasattr(account, "public") else account}  # fmt: skip
        return {**body, **changes}

    older = stack.pd.add_account(USER, APP)  # Pipedream created it now, but...
    older.created_at = older.created_at.replace(year=older.created_at.year - 1)  # ...a year ago
    refusals = {
        # What the delivery claims is checked against Pipedream's own answer.
        "another user's account": (event(stranger), 403),
        "the user's older account": (event(older), 403),
        "an account Pipedream does not know": (event({"id": "apn_forged1"}), 403),
        "a guessed Connect token": (event(stranger, connect_token="ctok_guess"), 403),
        "another environment": (event(stranger, environment="production"), 403),
        "not a connection event": ({"event": "TRIGGER_EVENT"}, 422),
    }
    for case, (body, status) in refusals.items():
        assert stack.pd.send_webhook(uri, body) == status, case
    assert stack.accounts() == {}

    # An expired request: refused even with the right token and a fresh account of the user.
    uri, token = stack.start_connection(expiresAt=int(time.time()) - 1)
    fresh = stack.pd.add_account(USER, APP)
    assert stack.pd.send_webhook(uri, event(fresh, connect_token=token)) == 410
    # A newer link replaced the request: the first link's webhook no longer matches.
    first_uri, first_token = stack.start_connection()
    stack.start_connection()
    assert stack.pd.send_webhook(first_uri, event(fresh, connect_token=first_token)) == 404
    # Pipedream reports a failed connection: heard, nothing created.
    uri, token = stack.start_connection()
    stack.pd.connect_error = "Test request failed. Please verify your credentials."
    stack.complete_link(token, expect=(400,))  # Pipedream's page shows the error
    assert stack.pd.webhooks[-1][1]["event"] == "CONNECTION_ERROR"
    assert stack.pd.webhooks[-1][2] == 200
    assert stack.accounts() == {}
    # Whoever runs the tenant sees it too (kubectl describe integration export).
    events = client.CoreV1Api(stack.api).list_namespaced_event(
        stack.ns, field_selector="involvedObject.name=export,reason=ConnectionFailed"
    )
    (failed,) = events.items
    assert failed.type == "Warning" and failed.involved_object.kind == "Integration"
    assert f"ConnectedAccount {ACCOUNT} failed; nothing was created" in failed.message
    log = stack.gateway.log_text()
    assert stack.pd.client_secret not in log and token not in log


def test_a_dead_account_connected_again_is_pointed_at_the_new_one(stack: Stack) -> None:
    dead = stack.pd.add_account(USER, APP, dead=True, healthy=False)
    create(stack.api, stack.ns, "connectedaccounts", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ConnectedAccount",
        "metadata": {"name": ACCOUNT},
        "spec": {"app": APP, "accountId": dead.id, "externalUserId": USER,
                 "environment": "development"},
    })  # fmt: skip
    uri, token = stack.start_connection()
    stack.complete_link(token)
    assert stack.pd.webhooks[-1][2] == 201
    (new,) = stack.pd.connected
    assert stack.accounts()[ACCOUNT]["spec"]["accountId"] == new.id
    assert stack.pd.send_webhook(uri, stack.pd.webhooks[-1][1]) == 409  # used up


def test_a_link_made_by_docrelay_connect_creates_the_account_from_the_webhook(
    stack: Stack,
) -> None:
    """`docrelay connect --gateway-url` (the CLI, as a person runs it with their kubeconfig)
    leaves the same request as the console: the person presses Connect on Pipedream's page and
    the gateway creates the ConnectedAccount; nobody applies it by hand."""
    made = docrelay("connect", APP, "--external-user", USER, "-n", stack.ns,
                    "--gateway-url", stack.gateway.url, "--integration", "export",
                    "--account", ACCOUNT)  # fmt: skip
    link = made.stdout.strip()
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert link.endswith(f"&app={APP}")
    assert f"the gateway, which creates ConnectedAccount {ACCOUNT}" in made.stderr
    assert stack.accounts() == {}
    stack.complete_link(token)
    ((sent_to, payload, status),) = stack.pd.webhooks
    assert sent_to.startswith(f"{stack.gateway.url}/v1/pipedream/connections/{stack.ns}/export/")
    assert (payload["event"], status) == ("CONNECTION_SUCCESS", 201)
    (new,) = stack.pd.connected
    assert stack.accounts()[ACCOUNT]["spec"] == {"app": APP, "accountId": new.id,
                                                 "externalUserId": USER,
                                                 "environment": "development"}  # fmt: skip
    assert token not in made.stderr and stack.pd.client_secret not in made.stdout + made.stderr

    # Without --gateway-url: the link only, and what to do next.
    plain = docrelay("connect", APP, "--external-user", USER, "-n", stack.ns)
    assert "create a ConnectedAccount with the new account id" in plain.stderr
    assert "--gateway-url" in plain.stderr
    (_, last) = stack.pd.recorded("/tokens", "POST")
    assert "webhook_uri" not in last.json()
    # An Integration that does not exist: refused before any link is made.
    missing = docrelay("connect", APP, "--external-user", USER, "-n", stack.ns,
                       "--gateway-url", stack.gateway.url, "--integration", "nowhere",
                       "--account", ACCOUNT, expect=None)  # fmt: skip
    assert missing.returncode != 0 and "integration nowhere not found" in missing.stderr
    assert len(stack.pd.recorded("/tokens", "POST")) == 2
