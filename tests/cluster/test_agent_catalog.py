"""The accounts a prompt names, grounded in Pipedream's catalog, read from the real API
server: a ConnectedAccount of a Slack account and the tenant's docrelay-pipedream Secret
(pointing at the stand-in) -> Slack's real action keys, their props and this account's
channels, as the agent's generate/fix/conversation prompts get them; no Secret -> the
accounts as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.server import serving
from docrelay.agent.prompts import GenerateRequest, build_generate_prompt
from docrelay.kube import Kube
from docrelay.kube.catalog import grounded_account_refs
from tests.cluster.harness import GROUP, VERSION, custom
from tests.leakcheck import assert_clean, canary

pytestmark = pytest.mark.cluster

INSTRUCTIONS = "Post the invoice number and total to the #finance Slack channel."


@pytest.fixture(scope="module")
def pipedream() -> Iterator[tuple[PipedreamStandin, str]]:
    pd = PipedreamStandin(client_secret=canary(header=True))
    with serving(pd.app) as server:
        yield pd, server.base_url


def connected_slack(api: client.ApiClient, ns: str, pd: PipedreamStandin) -> str:
    account = pd.add_account("finance-team", "slack", app_name="Slack", environment="development")
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "connectedaccounts", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ConnectedAccount",
        "metadata": {"name": "slack-finance"},
        "spec": {"app": "slack", "accountId": account.id, "externalUserId": "finance-team",
                 "environment": "development"},
    })
    return account.id


def test_a_connected_slack_account_is_grounded_in_the_catalog(
    api: client.ApiClient, namespace: str, pipedream: tuple[PipedreamStandin, str]
) -> None:
    pd, url = pipedream
    pd.reset()
    account_id = connected_slack(api, namespace, pd)
    kube = Kube(api)
    # No credentials Secret yet: the accounts as before, nothing looked up.
    (bare,) = grounded_account_refs(kube, namespace, ["slack-finance"], INSTRUCTIONS)
    assert bare.account_id == account_id and bare.actions == ()
    client.CoreV1Api(api).create_namespaced_secret(namespace, {
        "metadata": {"name": "docrelay-pipedream"},
        "stringData": {"client_id": pd.client_id, "client_secret": pd.client_secret,
                       "project_id": pd.project_id, "environment": "development", "url": url},
    })
    (slack,) = grounded_account_refs(kube, namespace, ["slack-finance"], INSTRUCTIONS)
    send = {a.key: a for a in slack.actions}["slack-send-message"]
    channel = {p.name: p for p in send.props}["channel"]
    assert "#finance=C0FINANCE1" in channel.options
    prompt = build_generate_prompt(GenerateRequest(
        integration="invoices-to-slack", workspace="w", document_type="d",
        trigger="DocumentValidated", instructions=INSTRUCTIONS, accounts=(slack,),
    )).messages[0].content
    assert "- `slack-send-message` (Send Message" in prompt
    assert_clean(prompt, [pd.client_secret, *pd.issued_tokens], "the prompt")
    # A second turn of the same conversation is answered from what was kept.
    before = len(pd.recorded("/actions"))
    grounded_account_refs(kube, namespace, ["slack-finance"], INSTRUCTIONS)
    assert len(pd.recorded("/actions")) == before
