"""Connected accounts against the real control plane and the local node (docs/pipedream.md).

The gateway (whose process serves the broker) and the operator run as subprocesses with their
own ServiceAccounts and only the rules the docs list; the Pipedream Connect stand-in and its
"upstream" API run in this process, on 127.0.0.1. Run pods are real local processes executing
`python -m docrelay.runner`, reaching Pipedream only through the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from kubernetes import client

from devkit.standins.pipedream import PipedreamStandin, StandinAccount, echo_upstream
from devkit.standins.server import serving
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Gateway,
    Tenant,
    canary,
    condition,
    create_run,
    custom,
    docrelay,
    eventually,
    gateway_kubeconfig,
    get_integration,
    make_integration,
    stop_stack,
    stored_log,
    wait_finished,
)
from tests.leakcheck import assert_clean

EXTERNAL_USER = "finance-team"
PUBLIC_URL = "https://docrelay.example.com"  # the ingress; the test fetches from the gateway
class Upstream:
    """The app's API behind the proxy: records what reached it; /expire ends every Pipedream
    server token while a run is between two calls."""

    def __init__(self, pd: PipedreamStandin) -> None:
        self.received: list[dict[str, Any]] = []
        self.app: FastAPI = echo_upstream(self.received)

        @self.app.get("/expire")
        async def expire() -> dict[str, bool]:
            pd.expire_tokens()
            return {"expired": True}


@pytest.fixture(scope="module")
def pipedream() -> Iterator[tuple[PipedreamStandin, Upstream, str, str]]:
    # ASCII: Pipedream's token endpoint compares it with secrets.compare_digest.
    pd = PipedreamStandin(client_secret=canary(header=True))
    upstream = Upstream(pd)
    with serving(pd.app) as connect, serving(upstream.app) as api:
        yield pd, upstream, connect.base_url, api.base_url


class Stack:
    def __init__(self, api: client.ApiClient, ns: str, pd: PipedreamStandin,
                 upstream: Upstream, upstream_url: str, tenant: Tenant,
                 gateway: Gateway) -> None:
        self.api, self.ns, self.pd, self.upstream = api, ns, pd, upstream
        self.upstream_url, self.tenant, self.gateway = upstream_url, tenant, gateway

    def account(self, name: str, app: str = "xero_accounting_api", **fields: Any) -> StandinAccount:
        """An account at Pipedream and its ConnectedAccount here."""
        account = self.pd.add_account(EXTERNAL_USER, app, environment="development", **fields)
        custom(self.api).create_namespaced_custom_object(
            GROUP, VERSION, self.ns, "connectedaccounts",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ConnectedAccount",
                "metadata": {"name": name},
                "spec": {"app": app, "accountId": account.id, "externalUserId": EXTERNAL_USER,
                         "environment": "development"},
            },
        )
        return account

    def secrets(self, *accounts: StandinAccount) -> list[str]:
        """Every Pipedream credential: the client secret, server tokens, account tokens."""
        return [self.pd.client_secret, *self.pd.issued_tokens,
                *(a.access_token for a in accounts)]


@pytest.fixture
def stack(
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    pipedream: tuple[PipedreamStandin, Upstream, str, str],
) -> Iterator[Stack]:
    pd, upstream, connect_url, upstream_url = pipedream
    pd.reset()
    upstream.received.clear()
    ns = namespace
    client.CoreV1Api(api).create_namespaced_secret(ns, {
        "metadata": {"name": "docrelay-pipedream"},
        "stringData": {"client_id": pd.client_id, "client_secret": pd.client_secret,
                       "project_id": pd.project_id, "environment": "development",
                       "url": connect_url},
    })
    kubeconfig = gateway_kubeconfig(api, ns, tmp_path / "gateway.kubeconfig")
    gateway = Gateway(tmp_path, ["-n", ns], env={
        "KUBECONFIG": str(kubeconfig), "DOCRELAY_GATEWAY_PUBLIC_URL": PUBLIC_URL,
    })
    tenant = Tenant(api, ns, tmp_path, env={
        "DOCRELAY_BROKER_URL": gateway.url, "DOCRELAY_ACCOUNT_CHECK_SECONDS": "2",
    })
    try:
        gateway.wait_ready()
        tenant.start()
        yield Stack(api, ns, pd, upstream, upstream_url, tenant, gateway)
    finally:
        stop_stack(api, ns, tenant, gateway)


def get_account(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "connectedaccounts", name)


def ready_reason(stack: Stack, name: str, reason: str) -> dict[str, Any]:
    return eventually(
        lambda: get_account(stack.api, stack.ns, name),
        lambda o: condition(o, "Ready").get("reason") == reason,
        f"ConnectedAccount {name} to be {reason}",
    )


CODE_PROBE = """
import json, os
from docrelay import sdk

def lambda_handler(event, context):
    print("env", json.dumps(dict(os.environ), sort_keys=True))
    results = {}
    answer = sdk.api_request("xero", UPSTREAM + "/echo", body={"InvoiceNumber": "INV-7"},
                             headers={"Idempotency-Key": event["idempotency_key"]})
    results["status"] = answer["status_code"]
    results["body"] = answer["data"]["body"]
    for other in ("other", OTHER_ID):
        try:
            sdk.api_request(other, UPSTREAM + "/echo")
        except sdk.Forbidden as exc:
            results["unlisted:" + other[:4]] = exc.status_code
    action = sdk.execute_action("xero", "xero_accounting_api-create-invoice",
                                {"contact_name": "ACME", "invoice_number": "INV-7"})
    results["ret"] = action["result"]["ret"]["Invoices"][0]["InvoiceNumber"]
    results["file"] = sdk.upload_file("xero", b"bill INV-7", "INV-7.txt", "text/plain")
    print("done", json.dumps(results), flush=True)
    return {"summary": json.dumps(results, sort_keys=True)}
"""


def test_api_request_and_action_through_the_broker(stack: Stack) -> None:
    ns = stack.ns
    xero = stack.account("xero")
    other = stack.account("other", "slack")
    code = f"UPSTREAM = {stack.upstream_url!r}\nOTHER_ID = {other.id!r}\n{CODE_PROBE}"
    make_integration(stack.api, ns, "probe", code, connectedAccounts=["xero"],
                     retry={"maxAttempts": 1})
    ready_reason(stack, "xero", "Healthy")
    eventually(
        lambda: get_integration(stack.api, ns, "probe"),
        lambda o: condition(o, "AccountsReady").get("reason") == "AccountsPresent"
        and "not known" not in condition(o, "AccountsReady").get("message", ""),
        "AccountsReady with a checked account",
    )
    name = create_run(stack.api, ns, "probe")
    status = wait_finished(stack.api, ns, name)
    assert status["phase"] == "Succeeded", status
    results = json.loads(status["resultSummary"])
    file_url = results.pop("file")
    assert results == {
        "status": 200,
        "body": '{"InvoiceNumber":"INV-7"}',
        "unlisted:othe": 403,
        "unlisted:apn_": 403,
        "ret": "INV-7",
    }
    # upload_file's URL serves the file (here from the gateway itself, not the ingress).
    assert file_url.startswith(f"{PUBLIC_URL}/v1/files/{ns}/docrelay-file-")
    fetched = httpx.get(file_url.replace(PUBLIC_URL, stack.gateway.url))
    assert (fetched.status_code, fetched.content) == (200, b"bill INV-7")
    # The upstream got the account's credentials, inserted by Pipedream, and the run's
    # idempotency key as a forwarded header.
    (seen,) = [r for r in stack.upstream.received if r["path"] == "/echo"]
    assert seen["headers"]["authorization"] == f"Bearer {xero.access_token}"
    run = custom(stack.api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationruns", name)
    assert seen["headers"]["idempotency-key"] == run["spec"]["idempotencyKey"]
    assert len(stack.pd.recorded("/proxy/")) == 1  # the unlisted ones never reached Pipedream
    # No Pipedream credential in the pod's environment (printed whole) or any log or status.
    log = stored_log(stack.api, ns, name, 1)
    assert "env {" in log and "done" in log
    texts = [log, json.dumps(status), stack.gateway.log_text(), stack.tenant.log_text(),
             json.dumps(get_account(stack.api, ns, "xero"))]
    assert_clean("\n".join(texts), stack.secrets(xero, other), "a log or a status")
    assert "action=account.request" in stack.gateway.log_text()


def test_a_dead_account_makes_the_integration_not_ready(stack: Stack) -> None:
    ns = stack.ns
    stack.account("ledger")
    dead = stack.account("old-xero", dead=True, healthy=False)
    make_integration(stack.api, ns, "export", "def lambda_handler(e, c):\n    return 1\n",
                     connectedAccounts=["ledger", "old-xero", "nowhere"])
    dead_obj = ready_reason(stack, "old-xero", "Dead")
    assert dead_obj["status"]["dead"] is True
    assert dead.id in condition(dead_obj, "Ready")["message"]
    events = eventually(
        lambda: client.CoreV1Api(stack.api).list_namespaced_event(
            ns, field_selector="involvedObject.name=old-xero,reason=Dead").items,
        bool,
        "a Warning Event about the dead account",
    )
    assert events[0].type == "Warning" and "connect it again" in events[0].message
    integration = eventually(
        lambda: get_integration(stack.api, ns, "export"),
        lambda o: "old-xero" in condition(o, "AccountsReady").get("message", ""),
        "AccountsReady to name the dead account",
    )
    accounts = condition(integration, "AccountsReady")
    assert (accounts["status"], accounts["reason"]) == ("False", "AccountsMissing")
    assert "nowhere" in accounts["message"] and "dead at Pipedream" in accounts["message"]
    assert "ledger" not in accounts["message"]
    # The missing one connected: AccountDead, naming only the dead one.
    stack.account("nowhere")
    integration = eventually(
        lambda: get_integration(stack.api, ns, "export"),
        lambda o: condition(o, "AccountsReady").get("reason") == "AccountDead",
        "AccountsReady=False AccountDead",
    )
    assert condition(integration, "Ready")["reason"] == "AccountDead"
    # A healthy account that dies at Pipedream is noticed by the periodic check.
    (ledger,) = [a for a in stack.pd.accounts.values() if a.id != dead.id
                 and a.id == get_account(stack.api, ns, "ledger")["spec"]["accountId"]]
    ledger.dead, ledger.healthy = True, False
    integration = eventually(
        lambda: get_integration(stack.api, ns, "export"),
        lambda o: "ledger" in condition(o, "AccountsReady").get("message", ""),
        "the periodic check to notice the account died",
    )
    # The CLI shows the health, as kubectl would, and in JSON.
    table = docrelay("accounts", "-n", ns).stdout
    assert "HEALTH" in table and "Dead" in table and dead.id in table
    listed = json.loads(docrelay("accounts", "-n", ns, "-o", "json").stdout)
    assert {i["metadata"]["name"] for i in listed["items"]} == {"ledger", "old-xero", "nowhere"}
    # A connect link for an app and an external user, from the tenant's Secret.
    link = docrelay("connect", "slack", "--external-user", "ops", "-n", ns).stdout.strip()
    assert "token=ctok_" in link and link.endswith("&app=slack")
    (token_call,) = stack.pd.recorded("/tokens", "POST")
    assert token_call.json()["external_user_id"] == "ops"
    pipedream = docrelay("accounts", "--pipedream", EXTERNAL_USER, "-n", ns).stdout
    assert dead.id in pipedream and "dead" in pipedream
    texts = [table, json.dumps(listed), stack.tenant.log_text(), json.dumps(integration),
             *(str(e.message) for e in events)]
    assert_clean("\n".join(texts), stack.secrets(), "the CLI's output, a log or an Event")


CODE_ONE_CALL = """
from docrelay import sdk

def lambda_handler(event, context):
    answer = sdk.api_request("xero", UPSTREAM + "/echo", "GET")
    return {"summary": f"attempt {context.attempt}: {answer['status_code']}"}
"""


def test_429_from_the_proxy_fails_retryable_and_the_retry_succeeds(stack: Stack) -> None:
    ns = stack.ns
    stack.account("xero")
    make_integration(stack.api, ns, "limited", f"UPSTREAM = {stack.upstream_url!r}\n"
                     f"{CODE_ONE_CALL}", connectedAccounts=["xero"],
                     retry={"maxAttempts": 2, "backoffBaseSeconds": 1})
    stack.pd.fail_next(429)
    name = create_run(stack.api, ns, "limited")
    status = wait_finished(stack.api, ns, name)
    assert status["phase"] == "Succeeded", status
    assert status["attempt"] == 2
    assert status["resultSummary"] == "attempt 2: 200"
    first = stored_log(stack.api, ns, name, 1)
    assert "RateLimited" in first and "429" in first
    assert [r.status for r in stack.pd.recorded("/proxy/")] == [429, 200]


CODE_TWO_CALLS = """
from docrelay import sdk

def lambda_handler(event, context):
    sdk.api_request("xero", UPSTREAM + "/expire", "GET")   # every server token ends here
    answer = sdk.api_request("xero", UPSTREAM + "/echo", "GET")
    return {"summary": str(answer["status_code"])}
"""


def test_a_server_token_expiring_mid_run_is_refreshed(stack: Stack) -> None:
    ns = stack.ns
    stack.account("xero")
    make_integration(stack.api, ns, "expiry", f"UPSTREAM = {stack.upstream_url!r}\n"
                     f"{CODE_TWO_CALLS}", connectedAccounts=["xero"], retry={"maxAttempts": 1})
    name = create_run(stack.api, ns, "expiry")
    status = wait_finished(stack.api, ns, name)
    assert (status["phase"], status.get("resultSummary")) == ("Succeeded", "200"), status
    # The second call was refused once with the old token, then made with a new one.
    assert [r.status for r in stack.pd.recorded("/proxy/")] == [200, 401, 200]
    tokens = [r.headers["authorization"] for r in stack.pd.recorded("/proxy/")]
    assert tokens[0] == tokens[1] != tokens[2]
