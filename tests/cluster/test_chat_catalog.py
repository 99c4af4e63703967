"""A build thread for an Integration with a connected Slack account, through the real
operator, gateway and API server (the stack of test_agent.py): the agent's prompt carries the
action key and props from Pipedream's catalog (the Connect stand-in, read with the tenant's
docrelay-pipedream Secret), and the thread's Revision turn names the action and props the
code chose."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from devkit.standins.llm import Reply
from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.server import serving
from docrelay.models import GROUP, VERSION
from tests.cluster.harness import custom
from tests.cluster.test_agent import (  # noqa: F401  (stack: a fixture)
    Stack,
    assert_prompts_clean,
    fenced,
    stack,
)
from tests.cluster.test_chat import PLURAL, agent_turns, say
from tests.leakcheck import canary

pytestmark = pytest.mark.cluster

SLACK_CODE = """
from docrelay.sdk import execute_action, get_document


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    number = document["data"].get("invoiceNumber")
    execute_action({account!r}, "slack-send-message",
                   {{"channel": "C0FINANCE1", "text": f"Invoice {{number}} is in."}})
    return {{"summary": "posted"}}
"""


@pytest.fixture(scope="module")
def pipedream() -> Iterator[tuple[PipedreamStandin, str]]:
    pd = PipedreamStandin(client_secret=canary(header=True))
    with serving(pd.app) as server:
        yield pd, server.base_url


def test_a_build_thread_uses_the_catalogs_action_and_says_which(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
    pipedream: tuple[PipedreamStandin, str],
) -> None:
    ns, llm = stack.ns, stack.llm
    pd, url = pipedream
    pd.reset()
    client.CoreV1Api(api).create_namespaced_secret(ns, {
        "metadata": {"name": "docrelay-pipedream"},
        "stringData": {"client_id": pd.client_id, "client_secret": pd.client_secret,
                       "project_id": pd.project_id, "environment": "development", "url": url},
    })
    account = pd.add_account("finance-team", "slack", app_name="Slack", environment="development")
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "connectedaccounts", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ConnectedAccount",
        "metadata": {"name": "slack-finance"},
        "spec": {"app": "slack", "accountId": account.id, "externalUserId": "finance-team",
                 "environment": "development"},
    })
    llm.script(
        Reply(fenced(SLACK_CODE.format(account=account.id), "I post to #finance with Slack.")),
        Reply.judgement(True, "each run sent one Slack message to #finance (simulated)"),
    )
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Integration",
        "metadata": {"name": "notify",
                     "annotations": {"agent.docrelay.io/conversation": "notify-build-1"}},
        "spec": {"workspace": "mEFayXdO", "documentType": "tVpGRBWd",
                 "trigger": "DocumentParseCompleted",
                 "instructions": "Written in the conversation notify-build-1.",
                 "connectedAccounts": ["slack-finance"]},
    })
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "IntegrationConversation",
        "metadata": {"name": "notify-build-1"},
        "spec": {"integration": "notify", "purpose": "Build", "turns": []},
    })

    answered = say(api, ns, "notify-build-1",
                   text="Tell #finance on Slack about each invoice, with its number.")
    # The model was shown Slack's real action, its props and this account's channels.
    prompt = llm.requests[0].prompt
    assert "## Pipedream actions of slack for the account slack-finance" in prompt
    assert "- `slack-send-message` (Send Message" in prompt
    assert "#finance=C0FINANCE1" in prompt
    assert pd.recorded("/actions/configure", "POST")  # configure-prop for the account
    # The thread says which action and props the code chose.
    revision = next(t for t in agent_turns(answered) if t["kind"] == "Revision")
    assert "I post to #finance with Slack." in revision["text"]
    assert (
        "Pipedream action chosen from the catalog: `slack-send-message` (slack: Send Message, "
        "version 0.1.4) with props channel, text on account slack-finance." in revision["text"]
    )
    assert_prompts_clean(llm.requests, [pd.client_secret, *pd.issued_tokens])
